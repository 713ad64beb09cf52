"""One-off (issue 6): the MNIST model's ``conv2d_2`` convolution alone, forward and input
gradient, and the cheaper-arithmetic forms of it that were tried.

The MNIST top-1 saliency's profile (``mnist_top1_profile``) leaves about 17 ms of its 23.5
ms to Eigen's two ``conv2d_2`` convolutions by subtraction: XLA:CPU does not name them in
its trace. Here they are timed one by one, in one process, interleaved, with the options
jaxsal compiles with on CPU (``CPU_COMPILER_OPTIONS``), at the suite's shapes: 64 images,
``(26, 26, 32)`` in, 3x3 VALID, 64 filters, ``(24, 24, 64)`` out; 1.36 GFLOP per
convolution (random values: the time does not depend on them). Each program consumes its
convolution's result inside (a sum against a second array, or the ReLU and max pooling of
the model) as jaxsal's programs do, or returns it.

- forward: ``lax.conv_general_dilated`` (Eigen), and as gathered patches @ kernel
  (``conv_patches``, a YNNPACK dot: the importer's form for small outputs);
- input gradient: the canonical convolution of ``conv_canonical_vjp`` (jaxsal's), JAX's own
  transpose rule, and the input gradient of ``conv_patches`` (one matmul, then the shifted
  sums of its window slices);
- Winograd F(2x2, 3x3): 16 matmuls of transformed 4x4 input tiles with transformed kernels,
  2.25x fewer multiplications; forward, and forward + input gradient by JAX's rules;
- the 16 small matmuls alone (``(16, 9216, 32) @ (16, 32, 64)``): their rate decides
  whether Winograd can pay here;
- the input gradient as one matmul and shifted sums, 8 images at a time (:func:`shifted_sums`:
  the blocks keep the 9-tap product in the caches, where the unblocked patches VJP streams
  42 MB of it through memory).

With ``saliency now``, ``saliency winograd`` or ``saliency blocked``: the suite's MNIST
saliency calls (top-1 and 10 classes, 64 images, medians of 40 calls), with the importer's
convolutions as they are, or with the input gradient of every 3x3 stride-1 convolution of
more than one input channel computed as the transpose of :func:`winograd` (by JAX's rules)
or as :func:`shifted_sums` instead of the canonical convolution; one process per variant,
run them alternately. With ``passes``: the top-1 call in passes of 64, 32, 16, 8 and 2
images (``memory_budget=``), whether smaller passes that keep their activations in the
caches pay.

    python -m benchmarks.oneoff.mnist_conv_kernels
    for r in 1 2; do for v in now winograd blocked; do
      python -m benchmarks.oneoff.mnist_conv_kernels saliency $v; done; done
    python -m benchmarks.oneoff.mnist_conv_kernels passes
"""

import statistics
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from benchmarks.oneoff.gpu_chunks import interleaved_ms
from benchmarks.oneoff.mnist_top1_spread import suite_inputs
from jaxsal._src.base import compiler_options
from model_import._layers.conv import conv_canonical_vjp, conv_patches

N, H, C, K = 64, 26, 32, 64
OUT = H - 2
GFLOP = 2 * N * OUT * OUT * K * C * 9 / 1e9
VALID = ((0, 0), (0, 0))
DIMS = ("NHWC", "HWIO", "NHWC")

# Winograd F(2x2, 3x3) (Lavin and Gray, 2016): Y = A^T [(G g G^T) * (B^T d B)] A per tile
BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float32)
GW = np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]], np.float32)
AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float32)


def _combine(coefficients, terms):
    """``sum(c * t)`` over the nonzero coefficients (all of them 1, -1 or 0.5 here)."""
    out = None
    for c, t in zip(coefficients, terms):
        if c:
            v = t if c == 1 else -t if c == -1 else c * t
            out = v if out is None else out + v
    return out


def _batched_dot(v, u):
    """``v[i] @ u[i]`` for every ``i`` of the leading axis."""
    return lax.dot_general(v, u, (((2,), (1,)), ((0,), (0,))))


def winograd(x, k):
    """3x3 VALID, stride 1, channels-last; the output's height and width must be even."""
    n, h, w, c = x.shape
    th, tw = (h - 2) // 2, (w - 2) // 2
    d = [[x[:, a:a + 2 * th:2, b:b + 2 * tw:2, :] for b in range(4)] for a in range(4)]
    rows = [[_combine(BT[r], [d[a][b] for a in range(4)]) for b in range(4)] for r in range(4)]
    v = jnp.stack([_combine(BT[s], rows[r]) for r in range(4) for s in range(4)])
    u = jnp.einsum("ra,abck,sb->rsck", GW, k, GW).reshape(16, c, k.shape[-1])
    m = _batched_dot(v.reshape(16, n * th * tw, c), u)
    m = m.reshape(16, n, th, tw, -1)
    y = jnp.stack([jnp.stack([_combine(np.outer(AT[i], AT[j]).ravel(), list(m))
                              for j in range(2)], axis=3) for i in range(2)], axis=2)
    return y.reshape(n, 2 * th, 2 * tw, -1)


def eigen(x, k):
    return lax.conv_general_dilated(x, k, (1, 1), VALID, dimension_numbers=DIMS)


def patches(x, k):
    return conv_patches(x, k, (1, 1), VALID, (1, 1))


def canonical(x, k):
    return conv_canonical_vjp(x, k, (1, 1), VALID, (1, 1))


def shifted_sums(g, k, chunk: int = 8):
    """The input gradient of a 3x3 VALID convolution, ``chunk`` images at a time (``lax.map``):
    one matmul of the cotangent with the kernel's taps side by side, ``(n*24*24, 64) @ (64,
    9*32)``, then the 9 tap slices shifted into place and summed; the blocks keep the
    ``(chunk, 24, 24, 9*32)`` product in the caches (5.3 MB for 8 images)."""
    n, oh, ow, kk = g.shape
    kh, kw, c, _ = k.shape
    taps = k.transpose(3, 0, 1, 2).reshape(kk, kh * kw * c)

    def block(gc):
        u = (gc.reshape(-1, kk) @ taps).reshape(gc.shape[0], oh, ow, kh, kw, c)
        out = None
        for i in range(kh):
            for j in range(kw):
                t = jnp.pad(u[:, :, :, i, j, :], ((0, 0), (i, kh - 1 - i), (j, kw - 1 - j),
                                                  (0, 0)))
                out = t if out is None else out + t
        return out
    out = lax.map(block, g.reshape(n // chunk, chunk, oh, ow, kk))
    return out.reshape(n, oh + kh - 1, ow + kw - 1, c)


def _pool(y):
    return jnp.max(jnp.maximum(y, 0).reshape(N, OUT // 2, 2, OUT // 2, 2, K), axis=(2, 4))


def main():
    opts = compiler_options()
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(N, H, H, C)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(3, 3, C, K)) / np.sqrt(9 * C), jnp.float32)
    g = jnp.asarray(rng.normal(size=(N, OUT, OUT, K)), jnp.float32)
    v = jnp.asarray(rng.normal(size=(16, N * (OUT // 2) ** 2, C)), jnp.float32)
    u = jnp.asarray(rng.normal(size=(16, C, K)), jnp.float32)

    def jit(f):
        return jax.jit(f, compiler_options=opts)

    def input_grad(conv):
        return jit(lambda g, k: jnp.sum(jax.vjp(lambda xx: conv(xx, k), x)[1](g)[0] * x))

    gp = jnp.asarray(rng.normal(size=(N, OUT // 2, OUT // 2, K)), jnp.float32)

    def consumed(conv):  # the output summed against an array inside the program
        return jit(lambda x, k: jnp.sum(conv(x, k) * g))

    def fwd_and_grad(conv):  # through the model's ReLU and pooling, as in its gradient
        return jit(lambda x, k: jax.grad(lambda xx: jnp.sum(_pool(conv(xx, k)) * gp))(x))

    programs = {
        "forward, Eigen, consumed (sum against an array)": (consumed(eigen), (x, k), 1),
        "forward, Eigen, + ReLU + 2x2 max pooling":
            (jit(lambda x, k: _pool(eigen(x, k))), (x, k), 1),
        "forward, Eigen, returned": (jit(eigen), (x, k), 1),
        "forward, patches @ kernel (YNNPACK dot)": (consumed(patches), (x, k), 1),
        "forward, Winograd F(2x2,3x3)": (consumed(winograd), (x, k), 1),
        "input gradient, canonical convolution (jaxsal's)": (input_grad(canonical), (g, k), 1),
        "input gradient, JAX's transpose rule": (input_grad(eigen), (g, k), 1),
        "input gradient, patches VJP (matmul + shifted sums)": (input_grad(patches), (g, k), 1),
        "input gradient, matmul + shifted sums, 8 images at a time":
            (jit(lambda g, k: jnp.sum(shifted_sums(g, k) * x)), (g, k), 1),
        "forward + ReLU + pooling + input gradient, jaxsal's convolution":
            (fwd_and_grad(canonical), (x, k), 2),
        "forward + ReLU + pooling + input gradient, Winograd":
            (fwd_and_grad(winograd), (x, k), 2),
        "Winograd's 16 matmuls alone (16 x (9216,32) @ (32,64))":
            (jit(lambda v, u: jnp.sum(_batched_dot(v, u))), (v, u), 4 / 9),
    }
    ref = jax.jit(eigen)(x, k)
    dx = jax.vjp(lambda xx: eigen(xx, k), x)[1](g)[0]
    err = float(jnp.max(jnp.abs(jax.jit(shifted_sums)(g, k) - dx)))
    print(f"shifted sums' input gradient vs JAX's: max |diff| {err:.2e} (values up to "
          f"{float(jnp.max(jnp.abs(dx))):.1f})")
    for name, conv in (("patches", patches), ("Winograd", winograd)):
        err = float(jnp.max(jnp.abs(jax.jit(conv)(x, k) - ref)))
        print(f"{name} forward vs Eigen: max |diff| {err:.2e} (values up to "
              f"{float(jnp.max(jnp.abs(ref))):.1f})")
    print(f"device {jax.devices()[0].device_kind}, jax {jax.__version__}, "
          f"options {opts}; {GFLOP:.2f} GFLOP per convolution", flush=True)
    calls = {name: (lambda f=f, a=a: f(*a)) for name, (f, a, _) in programs.items()}
    times = interleaved_ms(calls, warmup=2, rounds=30)
    print("median of 30 interleaved calls (min), and GFLOP/s of the nominal multiplications")
    for name, (_, _, convs) in programs.items():
        med = statistics.median(times[name])
        print(f"  {med:7.2f} ms ({min(times[name]):6.2f})  {convs * GFLOP / med * 1e3:6.1f} "
              f"GFLOP/s  {name}")


def _winograd_input_gradient(canonical_bwd):
    """A replacement for ``conv_canonical_vjp``'s backward rule: the input gradient of 3x3,
    stride-1 convolutions of more than one input channel as Winograd's transpose."""
    def bwd(strides, pads, dilation, res, g):
        x, k = res
        if k.shape[:2] != (3, 3) or set(strides) != {1} or set(dilation) != {1} or \
                k.shape[-2] == 1:
            return canonical_bwd(strides, pads, dilation, res, g)
        dk = canonical_bwd(strides, pads, dilation, res, g)[1]  # its dx is dead code
        (t, b), (le, r) = pads
        oh, ow = x.shape[1] + t + b - 2, x.shape[2] + le + r - 2

        def conv(xx):  # padded so that the output is even, then cut back
            xp = jnp.pad(xx, ((0, 0), (t, b + oh % 2), (le, r + ow % 2), (0, 0)))
            return winograd(xp, k)[:, :oh, :ow, :]
        return jax.vjp(conv, x)[1](g)[0].astype(x.dtype), dk
    return bwd


def _blocked_input_gradient(canonical_bwd):
    """The same for :func:`shifted_sums` (8 images at a time), cut back to the padded input."""
    def bwd(strides, pads, dilation, res, g):
        x, k = res
        if k.shape[:2] != (3, 3) or set(strides) != {1} or set(dilation) != {1} or \
                k.shape[-2] == 1 or g.shape[0] % 8:
            return canonical_bwd(strides, pads, dilation, res, g)
        dk = canonical_bwd(strides, pads, dilation, res, g)[1]
        (t, _), (le, _) = pads
        full = shifted_sums(g, k)
        return full[:, t:t + x.shape[1], le:le + x.shape[2], :].astype(x.dtype), dk
    return bwd


VARIANTS = {"winograd": _winograd_input_gradient, "blocked": _blocked_input_gradient}


def saliency_ab(variant: str) -> None:
    from model_import._layers import conv as conv_module
    if variant in VARIANTS:
        conv_module.conv_canonical_vjp.defvjp(
            conv_module._conv_fwd, VARIANTS[variant](conv_module._conv_bwd))
    elif variant != "now":
        raise SystemExit(f"expected 'now' or one of {sorted(VARIANTS)}, got {variant!r}")
    import jaxsal

    for wid, targets in (("mnist/saliency top1 b64", None),
                         ("mnist/saliency 10cls b64", list(range(10)))):
        model, x = suite_inputs(wid)
        t = interleaved_ms({wid: lambda: jaxsal.saliency(model, x, targets)}, 3, 40)[wid]
        print(f"{variant}: {wid}, median {statistics.median(t):.2f} ms (min {min(t):.2f})",
              flush=True)


def passes() -> None:
    """The suite's top-1 call (64 images) in passes of fewer images, set through
    ``memory_budget=``: does keeping a pass's activations in the caches pay? The pass size
    the planner chose is read by wrapping ``base.split_batch``."""
    import jaxsal
    from jaxsal._src import base

    chosen = {}
    split = base.split_batch

    def spy(run, nb, *args, **kwargs):
        chosen["nb"] = nb
        return split(run, nb, *args, **kwargs)
    base.split_batch = spy
    model, x = suite_inputs()
    ref = jaxsal.saliency(model, x)
    calls = {}
    for mib in (256, 120, 64, 28, 8):
        def call(b=mib * 2 ** 20):
            return jax.block_until_ready(jaxsal.saliency(model, x, memory_budget=b))
        err = float(jnp.max(jnp.abs(call() - ref)))
        calls[f"memory_budget {mib:3d} MiB: passes of {chosen['nb']:2d} images"] = call
        print(f"{mib} MiB: passes of {chosen['nb']} images, max |diff| from the default {err:.1e}")
    times = interleaved_ms(calls, 3, 40)
    for name, t in times.items():
        print(f"  {statistics.median(t):6.2f} ms (min {min(t):6.2f})  {name}", flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["saliency"]:
        saliency_ab(sys.argv[2])
    elif sys.argv[1:] == ["passes"]:
        passes()
    else:
        main()
