#!/usr/bin/env bash
# Runs every dynamcp test on a fresh machine: installs what is missing (scripts/setup.sh), starts a
# private PostgreSQL 15 + pgvector in a temp dir on a random loopback port, runs the checks and the
# whole test suite, and stops PostgreSQL again. Extra arguments go to `cargo nextest run`.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
log() { printf '[test] %s\n' "$*" >&2; }

bash scripts/setup.sh

pgbin=/usr/lib/postgresql/15/bin
pgdir="$(mktemp -d /tmp/dynamcp-pg.XXXXXX)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"

# PostgreSQL refuses to run as root: run the private cluster as the `postgres` system user then.
run_pg() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
if [ "$(id -u)" -eq 0 ]; then chown postgres: "$pgdir"; fi

stop_pg() {
    run_pg "$pgbin/pg_ctl" -D "$pgdir/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$pgdir"
}
trap stop_pg EXIT

log "starting PostgreSQL on 127.0.0.1:$port ($pgdir)"
run_pg "$pgbin/initdb" -D "$pgdir/data" -U postgres -A trust --no-sync >/dev/null
run_pg "$pgbin/pg_ctl" -D "$pgdir/data" -l "$pgdir/server.log" -w -o \
    "-c listen_addresses=127.0.0.1 -p $port -k $pgdir -c fsync=off -c max_connections=300" start >/dev/null
export DYNAMCP_TEST_PG_URL="postgres://postgres@127.0.0.1:$port/postgres"

# A whole-suite run gains nothing from incremental state (it is ~half the target dir's size on a fresh
# build); iterating with `cargo nextest run -E …` directly keeps it.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
log "cargo nextest run"
cargo nextest run --all-targets --locked --no-fail-fast "$@"
