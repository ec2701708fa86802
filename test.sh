#!/usr/bin/env sh
# Run the whole test suite (lint, then every test on SQLite and PostgreSQL).
# PostgreSQL: TEST_PG_URL (default postgresql://postgres@127.0.0.1:5432/postgres); without it
# the PostgreSQL half is skipped locally and fails in CI. Extra arguments go to pytest.
set -eu
cd "$(dirname "$0")"
sh scripts/bootstrap.sh --with-browser
.venv/bin/ruff check --quiet .
exec .venv/bin/python -m pytest -p no:cacheprovider "$@"
