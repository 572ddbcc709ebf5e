#!/usr/bin/env bash
# Deploys dynamcp with Docker Compose: PostgreSQL + pgvector and the service, on this host.
#   ./deploy.sh           build, start, wait until healthy, and create a first API key if none
#   ./deploy.sh down      stop (data volumes are kept)
# Secrets live in .env (created here with random values, mode 0600, never committed).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
log() { printf '[deploy] %s\n' "$*" >&2; }

command -v docker >/dev/null || { log "docker is not installed"; exit 1; }
docker compose version >/dev/null 2>&1 || { log "the docker compose plugin is not installed"; exit 1; }

if [ "${1:-up}" = "down" ]; then
    docker compose down
    exit 0
fi

random() { head -c 32 /dev/urandom | base64 | tr -d '\n'; }
if [ ! -f .env ]; then
    umask 077
    {
        echo "POSTGRES_PASSWORD=$(random | tr -dc 'A-Za-z0-9' | head -c 32)"
        echo "ENCRYPTION_KEY=$(random)"
        echo "ANTHROPIC_API_KEY="
        echo "OPENAI_API_KEY="
    } > .env
    log "wrote .env with a new database password and vault key: back it up, the vault key cannot be recovered"
fi

log "starting PostgreSQL and building the image"
docker compose up -d --wait postgres
docker compose build dynamcp

# Bound to 0.0.0.0 in its container, the service refuses to start without an API key.
if [ -z "$(docker compose run --rm -T dynamcp keys list)" ]; then
    log "no API key yet: creating one for tenant 'admin' (shown once, store it now)"
    docker compose run --rm -T dynamcp keys create --tenant admin --label deploy
fi

log "starting dynamcp"
docker compose up -d
for _ in $(seq 1 120); do
    if curl -fsS http://127.0.0.1:8000/health >/dev/null 2>&1; then break; fi
    sleep 2
done
curl -fsS http://127.0.0.1:8000/health >/dev/null || { docker compose logs --tail 50 dynamcp; exit 1; }
log "dynamcp is up: http://127.0.0.1:8000 (docs at /docs, metrics at http://127.0.0.1:9464/metrics)"
