#!/usr/bin/env sh
# Run the whole test suite (lint, then every test on SQLite and PostgreSQL).
# PostgreSQL: TEST_PG_URL (default postgresql://postgres@127.0.0.1:5432/postgres); without it
# the PostgreSQL half is skipped locally and fails in CI. Extra arguments go to pytest.
# The tests run on one pytest-xdist worker per CPU (each with its own databases; tests/conftest.py keeps the
# multi-process tests off each other); PYTEST_XDIST_AUTO_NUM_WORKERS=N sets the count, `./test.sh -n 0` runs
# them in one process.
set -eu
cd "$(dirname "$0")"
sh scripts/bootstrap.sh --with-browser
.venv/bin/ruff check --quiet .
exec .venv/bin/python -m pytest -p no:cacheprovider -n auto --dist loadgroup "$@"
