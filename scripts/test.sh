#!/usr/bin/env bash
# Installs jaxsal with its test extras into .venv (created if missing) and runs the suite.
# pytest's exit code 5 ("no tests collected") is a failure here: the suite must run tests.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then "$PY" -m venv .venv || exit 1; fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e ".[test]" || exit 1
export KERAS_BACKEND=jax JAX_PLATFORMS=cpu
.venv/bin/python -m pytest -q "$@"
rc=$?
if [ "$rc" -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi
exit "$rc"
