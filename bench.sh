#!/usr/bin/env sh
# Run the benchmarks and print their figures (sets up .venv like run.sh/test.sh).
# Extra arguments go to the callback benchmark, e.g. ./bench.sh --seconds 10 --backends sqlite
set -eu
cd "$(dirname "$0")"
sh scripts/bootstrap.sh
exec .venv/bin/python -m bench.callback_path "$@"
