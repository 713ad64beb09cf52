"""The ``jaxsal`` command line: ``demo``, ``summary`` and ``explain`` (batch jobs to disk).

    jaxsal demo --out jaxsal_out
    jaxsal summary model.h5
    jaxsal explain model.h5 inputs.npy --method saliency --targets all --out maps.npy

I/O lives here; the engine never prints.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from importlib import resources

import numpy as np

METHODS = ("saliency", "gradient_x_input", "guided_backprop", "deconvnet", "smoothgrad",
           "integrated_gradients", "gradcam", "gradcam_plus_plus", "layercam", "hirescam",
           "xgradcam", "scorecam", "eigencam", "guided_gradcam", "occlusion")


def _data_path(name: str) -> str:
    return str(resources.files("jaxsal").joinpath("data", name))


def _enable_cache(cache_dir: str | None) -> None:
    if cache_dir:
        import jax

        jax.config.update("jax_compilation_cache_dir", cache_dir)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def _parse_targets(s: str | None, n_classes: int):
    if s is None or s == "predicted":
        return None
    if s == "all":
        return list(range(n_classes))
    ids = [int(t) for t in s.split(",") if t.strip()]
    return ids[0] if len(ids) == 1 and "," not in s else ids


def cmd_demo(args) -> int:
    import jax

    import jaxsal
    from jaxsal import plot
    from model_import import load_keras

    os.makedirs(args.out, exist_ok=True)
    model = load_keras(_data_path("mnist_cnn_keras3.keras"))
    digits = np.load(_data_path("mnist_digits.npz"))
    x, y = digits["x"], digits["y"]
    print(model.summary())
    probs = np.asarray(model(x))
    print("\nPredictions on 10 held-out MNIST digits (bundled example):")
    for label, p in zip(y, probs):
        print(f"  digit {label}: predicted {int(p.argmax())} (p={p.max():.3f})")
    logits_model = model.with_head("logits")
    classes = list(range(probs.shape[1]))
    t0 = time.perf_counter()
    maps = jax.block_until_ready(jaxsal.saliency(logits_model, x, classes))  # (10, 10, 28, 28)
    dt = time.perf_counter() - t0
    print(f"\nSaliency for all {len(classes)} classes x {len(x)} digits in one call: "
          f"{tuple(maps.shape)} in {dt:.2f} s (including compilation)")
    fig = plot.grid(np.asarray(maps), inputs=x[..., 0], row_titles=[f"digit {d}" for d in y],
                    col_titles=[f"class {c}" for c in classes], scale="shared",
                    colorbar_label="max |d logit / d x|",
                    title="Saliency (vanilla gradient, logits head): rows are inputs, "
                          "columns the explained class")
    png = os.path.join(args.out, "saliency_all_classes.png")
    fig.savefig(png, dpi=110)
    np.save(os.path.join(args.out, "saliency_all_classes.npy"), np.asarray(maps))
    print(f"wrote {png}")
    return 0


def cmd_summary(args) -> int:
    from model_import import load_keras

    m = load_keras(args.model, head=args.head)
    print(m.summary())
    return 0


def cmd_explain(args) -> int:
    import jaxsal
    from model_import import load_keras

    _enable_cache(args.cache_dir)
    model = load_keras(args.model, head=args.head)
    if args.output is not None:
        model = model.with_output(int(args.output) if args.output.lstrip("-").isdigit()
                                  else args.output)
    inputs = np.load(args.inputs, mmap_mode="r")
    n_classes = int(np.prod(model.output_shape))
    targets = _parse_targets(args.targets, n_classes)
    options = {}
    if args.layer:
        options["layer"] = args.layer
    method = getattr(jaxsal, args.method)
    t0 = time.perf_counter()

    def progress(done, total):
        print(f"  chunk {done}/{total}  ({time.perf_counter() - t0:.1f} s)", flush=True)

    out = jaxsal.explain_to_file(method, model, inputs, args.out, targets=targets,
                                 batch_size=args.batch_size, on_chunk=progress, **options)
    print(f"wrote {args.out}: {out.shape} {out.dtype}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="jaxsal", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demo", help="run the bundled MNIST example")
    d.add_argument("--out", default="jaxsal_out")
    d.set_defaults(fn=cmd_demo)
    s = sub.add_parser("summary", help="print a model file's layers")
    s.add_argument("model")
    s.add_argument("--head", default="saved")
    s.set_defaults(fn=cmd_summary)
    e = sub.add_parser("explain", help="attribution maps for a .npy of inputs, resumable")
    e.add_argument("model")
    e.add_argument("inputs", help=".npy of inputs (N, H, W, C), read memory-mapped")
    e.add_argument("--method", default="saliency", choices=METHODS)
    e.add_argument("--targets", default="predicted",
                   help="'predicted' (default), 'all', a class id, or ids like 0,3,7")
    e.add_argument("--head", default="logits")
    e.add_argument("--output", default=None,
                   help="for a multi-output model: the output to explain (name or position)")
    e.add_argument("--layer", default=None,
                   help="layer for CAM methods (default: automatic), or the layer saliency, "
                        "gradient_x_input and integrated_gradients attribute to (e.g. the "
                        "embedding of a token model, whose inputs.npy holds integer ids)")
    e.add_argument("--batch-size", type=int, default=64)
    e.add_argument("--cache-dir", default=os.environ.get("JAXSAL_CACHE_DIR"),
                   help="persistent XLA compilation cache (reused across runs)")
    e.add_argument("--out", required=True, help="output .npy (resumes if interrupted)")
    e.set_defaults(fn=cmd_explain)
    args = p.parse_args(argv)
    try:
        return args.fn(args)
    except (ValueError, TypeError, OSError) as err:
        print(f"jaxsal: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
