#!/usr/bin/env bash
# The whole GPU suite in one call on a device machine without network, within a time budget.
#
# Here, beforehand (network): bash benchmarks/setup_peers.sh gpu-wheels   # benchmarks/wheels/
# There (repository root, benchmarks/wheels carried along):
#   JAXSAL_GIT_COMMIT=<commit> [JAXSAL_GPU_PROFILE=1] bash benchmarks/gpu_run.sh \
#     [benchmarks.run options, e.g. --only ...]
# Writes $OUT/gpu.json (complete, or with the workloads the deadline cut listed in not_run),
# $OUT/gpu.md (the README table) and $OUT/gpu.log; $OUT defaults to benchmarks/results.
# JAXSAL_GPU_BUDGET_S (default 540): seconds for everything here; the suite's --deadline is
# what the setup leaves of it, and the workers stop at it keeping what they measured.
# Order: the suite (JAXSAL_GPU_SUITE=0 leaves it out), then with JAXSAL_GPU_PROFILE=1 the
# kernel profile (oneoff/gpu_profile.py, at most 200 s), then with JAXSAL_GPU_ONEOFFS=1 the
# VGG16 224x224 A/B one-offs of benchmarks/README items 12-14 (chunk_padding, cam_chunks,
# host_overhead, each at most 150 s, into $OUT/<name>.txt); the suite's deadline leaves
# them their time, each stops at what is left of the budget. Two device calls, the second
# right after the first (warm machine, the compilation cache kept):
#   JAXSAL_GPU_BUDGET_S=540 bash benchmarks/gpu_run.sh
#   JAXSAL_GPU_SUITE=0 JAXSAL_GPU_PROFILE=1 JAXSAL_GPU_ONEOFFS=1 bash benchmarks/gpu_run.sh
set -uo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
budget=${JAXSAL_GPU_BUDGET_S:-540}
out=${OUT:-benchmarks/results}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
{
  echo "== $(date -u +%FT%TZ) commit ${JAXSAL_GIT_COMMIT:-unknown}, budget ${budget} s"
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv || true
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site benchmarks/wheels/*.whl || { echo "wheel install failed" >&2; exit 1; }
  export PYTHONPATH=/tmp/site:$PWD
  # stop here, not minutes later, if either library cannot see the GPU (JAX would fall back
  # to the CPU); JAXSAL_ALLOW_CPU=1 lets the script be tried on a machine without one
  python3 -c "import os, jax, torch, flax, optax
print('jax', jax.__version__, jax.devices(), 'flax', flax.__version__, 'optax', optax.__version__)
print('torch', torch.__version__, 'cuda', torch.cuda.is_available())
gpu = jax.default_backend() == 'gpu' and torch.cuda.is_available()
assert gpu or os.environ.get('JAXSAL_ALLOW_CPU') == '1', 'JAX or PyTorch sees no GPU'" || exit 1
  # the VGG16 file: Keras's NumPy backend (no JAX/Keras version coupling, no compiles)
  KERAS_BACKEND=numpy python3 -m benchmarks.models vgg16_224 || exit 1
  # at most this long: the profile, each one-off
  profile_s=200
  oneoff_s=150
  # the one-offs (benchmarks/oneoff/NAME.py), run one after the other
  oneoffs=(chunk_padding cam_chunks host_overhead)
  # what the profile and the one-offs get when they follow the suite in the same call
  reserve=0
  [ "${JAXSAL_GPU_PROFILE:-0}" = 1 ] && reserve=$((reserve + profile_s))
  [ "${JAXSAL_GPU_ONEOFFS:-0}" = 1 ] && reserve=$((reserve + ${#oneoffs[@]} * oneoff_s))
  # bounded NAME MAX MIN FILE CMD...: CMD, its output into FILE, stopped after MAX s or at
  # what is left of the budget (less 10 s); not run (status 1) with less than MIN s left
  bounded() {
    local name=$1 max=$2 min=$3 file=$4
    shift 4
    local left=$((budget - (SECONDS - start) - 10))
    local limit=$((left < max ? left : max))
    if [ "$limit" -lt "$min" ]; then echo "== $name: not run, ${left} s left"; return 1; fi
    timeout "$limit" "$@" > "$file" 2>&1
    echo "== $name: exit $? (limit ${limit} s), $(wc -l < "$file") lines"
  }
  # one persistent compilation cache for everything here, emptied before the suite so that
  # its compile column stays a cold compile; the profile and the one-offs (which build the
  # suite's own programs again) then load what the suite compiled, in this call or in the
  # next one on the same (still warm) machine: benchmarks/.cache is kept between calls
  export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$PWD/benchmarks/.cache/jax_gpu}
  rc=0
  if [ "${JAXSAL_GPU_SUITE:-1}" = 1 ]; then
    rm -rf "$JAX_COMPILATION_CACHE_DIR"
    left=$((budget - (SECONDS - start) - reserve))
    echo "== setup took $((SECONDS - start)) s; suite deadline ${left} s"
    # --timeout: a workload that runs for minutes (e.g. a peer's Score-CAM) is stopped and
    # the next one goes on
    python3 -m benchmarks.run --suite gpu --deadline "$left" --timeout 180 \
      --out "$out/gpu.json" "$@"
    rc=$?
    json=$out/gpu.json
    [ -f "$json" ] || json=$out/gpu.json.partial
    [ -f "$json" ] && python3 - "$json" "$out/gpu.md" <<'PY'
import json, sys
from benchmarks import run
doc = json.load(open(sys.argv[1]))
if "complete" not in doc:  # the harness itself was stopped: finalize what it saved
    run.main(["--from-json", sys.argv[1], "--out", sys.argv[1]])
    doc = json.load(open(sys.argv[1]))
open(sys.argv[2], "w").write(run.table(doc) + "\n")
PY
    echo "== suite done at $((SECONDS - start)) s (harness exit $rc)"
  fi
  # JAXSAL_GPU_PROFILE=1: the kernel profile of the suite's gradient programs, the
  # bfloat16 ones and class maximization (oneoff/gpu_profile.py, parts 1, 2, 4 and 5, at most
  # 200 s) into
  # $out/gpu_profile.txt and its traces into $out/gpu_profile_xplanes.tgz
  if [ "${JAXSAL_GPU_PROFILE:-0}" = 1 ]; then
    rm -rf /tmp/jaxsal_prof
    bounded profile "$profile_s" 30 "$out/gpu_profile.txt" python3 -W ignore \
      -m benchmarks.oneoff.gpu_profile /tmp/jaxsal_prof --parts 1,2,4,5 \
      && (cd /tmp && tar czf - jaxsal_prof) > "$out/gpu_profile_xplanes.tgz"
  fi
  if [ "${JAXSAL_GPU_ONEOFFS:-0}" = 1 ]; then
    for name in "${oneoffs[@]}"; do
      bounded "$name" "$oneoff_s" 20 "$out/$name.txt" python3 -W ignore \
        -m "benchmarks.oneoff.$name" vgg16_224
    done
  fi
  echo "== done in $((SECONDS - start)) s (harness exit $rc)"
} 2>&1 | tee "$out/gpu.log"
