# Sourced by scripts/test.sh and scripts/test_oldest.sh: the environment the suite runs in.
#   source scripts/test_env.sh PYTHON   (the interpreter the suite runs under)
# CPU only. XLA:CPU compiles about a thousand programs in this suite, and compiling is most of
# the suite's CPU time, so the tests compile cheaply:
# - at XLA's backend optimization level 0 (LLVM optimizes the machine code less). Measured on
#   the 2-core machine: 24.0 -> 17.4 CPU minutes, 13:00 -> 10:37 wall.
# - where the installed jaxlib has it (probed: older ones abort on an unknown flag), with
#   XLA:CPU's older fusion code generator (--xla_cpu_use_fusion_emitters=false; jaxlib's default
#   is the newer MLIR one). Compiling takes half the time (0.95 -> 0.48 s for 13 MNIST
#   programs; tests/test_layouts.py + test_attribution.py 1:56 -> 1:05 wall); XLA then fuses
#   and lays out a few operations differently, so the compiled programs are not the ones users
#   get and float results may differ in the last bits.
# - where the installed jaxlib has it, with each program's machine code generated in one piece
#   (--xla_cpu_parallel_codegen_split_count=1; XLA splits it into parts compiled on several
#   threads, which the suite's two workers on two cores do not use, at a cost for its small
#   programs). Measured on the 2-core machine: tests/test_layouts.py -k channels_first_equals,
#   3 alternating runs each, 23.0-28.6 -> 18.6-23.2 s of user CPU time. The same code, run
#   the same: no float result changes.
# At level 0 XLA computes some values twice with different roundings, and JAX's derivative of
# jnp.max (to the elements equal to the maximum) is then NaN for a whole slice where none is
# equal (README "Known limitations": a float64 GroupNormalization -> max -> dense repro, 97 of
# 100 inputs; none at XLA's defaults with jax 0.10.2). No test of the suite is known to take
# such a derivative in float64 (jaxsal's channel reductions and non-overlapping max pooling
# pick the maximum by position; the importer's max/min reductions -- GlobalMaxPooling, ops.max,
# tf.math.reduce_max... -- add the first maximum, found by an argmax, to jnp.max's equal
# elements; README lists what still uses jnp.max's derivative); its methods refuse non-finite
# maps, but assert_allclose passes two NaN arrays (equal_nan): compare with a finite reference.
# Set JAXSAL_TEST_XLA_DEFAULT=1 to test with XLA's defaults, which users, the examples outside
# the tests and the benchmarks get.
export JAX_PLATFORMS=cpu
if [ -z "${JAXSAL_TEST_XLA_DEFAULT:-}" ]; then
  if [[ "${XLA_FLAGS:-}" != *xla_backend_optimization_level* ]]; then
    export XLA_FLAGS="${XLA_FLAGS:+$XLA_FLAGS }--xla_backend_optimization_level=0"
  fi
  for _flag in --xla_cpu_use_fusion_emitters=false --xla_cpu_parallel_codegen_split_count=1; do
    _name=${_flag%%=*}
    if [[ "$XLA_FLAGS" != *"${_name#--}"* ]] &&
       XLA_FLAGS="$XLA_FLAGS $_flag" bash -c '"$0" -c "import jax; jax.devices()"; exit $?' \
         "${1:-python3}" >/dev/null 2>&1; then
      export XLA_FLAGS="$XLA_FLAGS $_flag"
    fi
  done
  unset _flag _name
fi
