#!/usr/bin/env bash
# Runs dynamcp on its embedded default: SQLite in the user's data directory (~/.local/share/dynamcp),
# no API key, http://127.0.0.1:8000.
# Fetches what the service needs first (scripts/setup.sh --service). Extra arguments go to `serve`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh --service
exec cargo run --release --locked -- serve "$@"
