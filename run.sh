#!/usr/bin/env sh
# Start qunbot: embedded SQLite under ./data, the simulated group chat at http://127.0.0.1:8080/simulator.
# Extra arguments go to `qunbot run` (e.g. ./run.sh --port 9000); set QUNBOT_CONFIG to use a config file.
set -eu
cd "$(dirname "$0")"
sh scripts/bootstrap.sh
exec .venv/bin/qunbot run "$@"
