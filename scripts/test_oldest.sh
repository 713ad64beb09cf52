#!/usr/bin/env bash
# Runs the test suite against the oldest releases pyproject.toml allows: every runtime
# dependency pinned to its lower bound (`jax>=0.4.38` -> `jax==0.4.38`), the test extras at
# whatever pip picks. Its own venv (.venv-oldest), so .venv and CI are untouched.
#   bash scripts/test_oldest.sh [pytest arguments]
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv-oldest
if [ ! -x "$VENV/bin/python" ]; then "$PY" -m venv "$VENV" || exit 1; fi
pins=$("$VENV/bin/python" - <<'PY'
import tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
bad = [d for d in deps if ">=" not in d]
assert not bad, f"expected every dependency as name>=version, got {bad}"
print(" ".join(d.replace(" ", "").split(",")[0].replace(">=", "==") for d in deps))
PY
) || exit 1
echo "oldest: $pins"
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
# the pins and the test extras in one resolve (the extras may not move a pinned package)
# shellcheck disable=SC2086
"$VENV/bin/python" -m pip install -q $pins -e ".[test]" || exit 1
"$VENV/bin/python" -m pip freeze | grep -iE "^(jax|jaxlib|flax|optax|numpy|h5py|matplotlib|keras)=="
source scripts/test_env.sh "$VENV/bin/python"  # CPU, XLA flags
"$VENV/bin/python" -m pytest -q -n "${JAXSAL_TEST_WORKERS:-2}" --dist loadfile "$@"
rc=$?
if [ "$rc" -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi
exit "$rc"
