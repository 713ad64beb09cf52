# Sourced by scripts/test.sh and scripts/test_oldest.sh: the environment the suite runs in.
# CPU only. XLA:CPU compiles about a thousand programs in this suite, and LLVM's optimization
# of each one is most of the suite's CPU time: the tests compile at XLA's backend optimization
# level 0. The optimized HLO (fusion, layouts, what runs once) is the same at any level
# (checked on a Grad-CAM + FullGrad program: identical text); only the machine code differs,
# so float results may differ in the last bits. Measured on the 2-core machine: 24.0 -> 17.4
# CPU minutes, 13:00 -> 10:37 wall. Set JAXSAL_TEST_XLA_DEFAULT=1 to test with XLA's default
# level, which users, the examples outside the tests and the benchmarks get.
export JAX_PLATFORMS=cpu
if [ -z "${JAXSAL_TEST_XLA_DEFAULT:-}" ] && [[ "${XLA_FLAGS:-}" != *xla_backend_optimization_level* ]]; then
  export XLA_FLAGS="${XLA_FLAGS:+$XLA_FLAGS }--xla_backend_optimization_level=0"
fi
