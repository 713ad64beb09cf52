"""The PyTorch peers (GPU suite): Captum, pytorch-grad-cam, and a plain PyTorch Adam loop for
activation maximization, on a PyTorch model built here from the jaxsal model's layers with its
weights copied across (so both compute the same function; :func:`check_agreement` compares the
outputs before anything is timed).

Sides: ``captum`` (Saliency, GuidedBackprop, NoiseTunnel SmoothGrad, IntegratedGradients),
``gradcam`` (pytorch-grad-cam GradCAM / ScoreCAM), ``torch`` (forward pass; maximization
loop). Every timed call ends with ``torch.cuda.synchronize()`` (on GPU) after the result is
complete. JAX runs on the CPU in this process (only to read the model file and compute the
reference outputs), so it never competes with PyTorch for GPU memory.
"""

from __future__ import annotations

import os

os.environ["JAX_PLATFORMS"] = "cpu"  # jax only reads the model and checks outputs here
os.environ.setdefault("KERAS_BACKEND", "jax")

from benchmarks import data, models  # noqa: E402
from benchmarks._measure import Case  # noqa: E402

#: How PyTorch computes float32 convolutions and matmuls here, set once at import: TF32 on
#: tensor cores for both, as JAX does by default on Ampere and later GPUs (PyTorch's own
#: default is TF32 for cuDNN convolutions but full float32 for matmuls), and cuDNN's
#: autotuner on (``benchmark=True``: the fastest algorithm per shape, found on the first
#: call, which the harness times apart). The peers run as fast as a performance-minded user
#: would set them up.
TORCH_SETTINGS = {"cudnn.benchmark": True, "cudnn.allow_tf32": True,
                  "cuda.matmul.allow_tf32": True}


def _configure() -> None:
    import torch

    torch.backends.cudnn.benchmark = TORCH_SETTINGS["cudnn.benchmark"]
    torch.backends.cudnn.allow_tf32 = TORCH_SETTINGS["cudnn.allow_tf32"]
    torch.backends.cuda.matmul.allow_tf32 = TORCH_SETTINGS["cuda.matmul.allow_tf32"]


def versions() -> dict:
    import importlib.metadata as md

    out = {}
    for p in ("torch", "torchvision", "captum", "grad-cam", "ttach", "opencv-python-headless",
              "opencv-python", "numpy", "jax", "jaxsal"):
        try:
            out[p] = md.version(p)
        except md.PackageNotFoundError:
            pass
    return out


def _device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(0)}"
    return "cpu (torch)"


def _sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def device_peak_bytes():
    import torch

    return torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None


def release_device_memory() -> None:
    """Hand PyTorch's cached GPU memory back to the device between workloads: a kept worker
    shares the GPU with the other libraries' workers."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def reset_device_peak() -> None:
    """Start a workload's peak-memory count at the memory in use now (the worker calls this
    before each workload it runs)."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


# ----------------------------------------------------------------------------- model port
def torch_model(km, upto: str | None = None):
    """A ``torch.nn.Sequential`` equal to the Sequential-style Keras model ``km`` (Conv2D,
    MaxPooling2D, Flatten, Dense, Dropout, InputLayer; ReLU as ``nn.ReLU`` modules so that
    Captum's GuidedBackprop can hook them), NCHW, logits at the end (the output layer's
    softmax is dropped, as jaxsal's ``logits`` head). Returns ``(model, {layer: index})``:
    the index of the module producing each Keras layer's (activated) output."""
    import numpy as np
    import torch
    from torch import nn

    mods, where = [], {}
    spatial = None
    layers = km.layers
    last = layers[-1].name
    for info in layers:
        cls, cfg, p = info.class_name, info.config, info.params
        if cls in ("InputLayer", "Dropout"):
            continue
        if cls == "Conv2D":
            k = np.asarray(p["kernel"])
            if tuple(cfg.get("strides", (1, 1))) not in ((1, 1), [1, 1]) and cfg.get(
                    "strides") not in (1, None):
                raise NotImplementedError("strided Conv2D in the PyTorch port")
            pad = "same" if cfg.get("padding") == "same" else 0
            conv = nn.Conv2d(k.shape[2], k.shape[3], k.shape[:2], padding=pad,
                             bias="bias" in p)
            with torch.no_grad():
                conv.weight.copy_(torch.from_numpy(k.transpose(3, 2, 0, 1).copy()))
                if "bias" in p:
                    conv.bias.copy_(torch.from_numpy(np.asarray(p["bias"])))
            mods.append(conv)
            spatial = info.output_shape
        elif cls == "MaxPooling2D":
            pool = cfg.get("pool_size", (2, 2))
            mods.append(nn.MaxPool2d(tuple(pool)))
            spatial = info.output_shape
        elif cls == "Flatten":
            mods.append(nn.Flatten())
        elif cls == "Dense":
            k = np.asarray(p["kernel"])
            if spatial is not None and k.shape[0] == int(np.prod(spatial)):
                h, w, c = spatial  # Keras flattens (H, W, C); PyTorch (C, H, W)
                k = k.reshape(h, w, c, -1).transpose(2, 0, 1, 3).reshape(h * w * c, -1)
                spatial = None
            lin = nn.Linear(k.shape[0], k.shape[1], bias="bias" in p)
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(k.T.copy()))
                if "bias" in p:
                    lin.bias.copy_(torch.from_numpy(np.asarray(p["bias"])))
            mods.append(lin)
        else:
            raise NotImplementedError(f"layer class {cls} in the PyTorch port")
        act = info.activation
        if act == "relu":
            mods.append(nn.ReLU())
        elif act not in (None, "linear") and not (info.name == last and act == "softmax"):
            raise NotImplementedError(f"activation {act} in the PyTorch port")
        where[info.name] = len(mods) - 1
        if upto is not None and info.name == upto:
            break
    return nn.Sequential(*mods).eval(), where


def _setup(spec):
    import numpy as np
    import torch

    _configure()
    km = models.logits_model(models.model_path(spec["model"]))  # cached per process
    net, where = torch_model(km)  # afresh: one peer's hooks never reach another
    dev = _device()
    net = net.to(dev)
    for q in net.parameters():
        q.requires_grad_(False)
    x_np = data.inputs(spec, spec["batch"]) if spec.get("batch") else None
    x = None if x_np is None else torch.from_numpy(x_np.transpose(0, 3, 1, 2).copy()).to(dev)

    def check():
        k = min(2, spec.get("batch") or 2)
        xr = data.inputs(spec, k)
        ref = np.asarray(km(xr))
        with torch.no_grad():
            got = net(torch.from_numpy(xr.transpose(0, 3, 1, 2).copy()).to(dev)).cpu().numpy()
        err = float(np.max(np.abs(got - ref)))
        scale = float(np.max(np.abs(ref)))
        if not err <= 1e-2 * max(scale, 1e-6):
            raise RuntimeError(f"PyTorch port disagrees with jaxsal: max |diff| {err:.3g}, "
                               f"max |ref| {scale:.3g}")
        return {"max_abs_diff_logits": err, "max_abs_logits": scale}

    return km, net, where, x, dev, check


def _targets(spec, net, x):
    import torch

    if spec["targets"] == "top1":
        with torch.no_grad():
            return [net(x).argmax(-1)]
    return [int(c) for c in data.class_ids(spec)]


def _case(run, items, check, info=None, unit="maps/s"):
    def timed():
        out = run()
        _sync()
        return out

    info = dict(info or {}, torch_settings=dict(TORCH_SETTINGS))
    return Case(timed, items=items, unit=unit, check=check, peak_device_bytes=device_peak_bytes,
                info=info)


def build_torch(spec: dict) -> Case:
    import torch

    km, net, where, x, dev, check = _setup(spec)
    if spec["method"] == "forward":
        def run():
            with torch.no_grad():
                return net(x)
        return _case(run, x.shape[0], check, unit="images/s")
    if spec["method"] == "maximize":
        return _maximize(spec, km, net, where, dev, check)
    raise NotImplementedError(f"plain PyTorch side has no workload {spec['method']!r}")


def build_captum(spec: dict) -> Case:
    from captum.attr import GuidedBackprop, IntegratedGradients, NoiseTunnel, Saliency

    km, net, where, x, dev, check = _setup(spec)
    method = spec["method"]
    targets = _targets(spec, net, x)
    n = x.shape[0]

    def reduce(a):  # max |.| over channels, as jaxsal's default reduce="max_abs"
        return a.abs().amax(dim=1)

    if method == "saliency":
        alg = Saliency(net)
        run = lambda: [reduce(alg.attribute(x, target=t, abs=True)) for t in targets]  # noqa
    elif method == "guided":
        alg = GuidedBackprop(net)
        run = lambda: [reduce(alg.attribute(x, target=t)) for t in targets]  # noqa: E731
    elif method == "smoothgrad":
        alg = NoiseTunnel(Saliency(net))
        s = spec["samples"]
        run = lambda: [reduce(alg.attribute(  # noqa: E731
            x, nt_type="smoothgrad", nt_samples=s, nt_samples_batch_size=min(s, 16),
            stdevs=0.15, target=t, abs=True)) for t in targets]
    elif method == "ig":
        alg = IntegratedGradients(net)
        st = spec["steps"]
        run = lambda: [alg.attribute(x, target=t, n_steps=st, internal_batch_size=n * 10)  # noqa
                       .sum(dim=1) for t in targets]
    else:
        raise NotImplementedError(f"Captum side has no workload {method!r}")
    x.requires_grad_(True)
    return _case(run, n * len(targets), check)


def build_gradcam(spec: dict) -> Case:
    from pytorch_grad_cam import GradCAM, ScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    km, net, where, x, dev, check = _setup(spec)
    layer = net[where[spec["layer"]]]  # the ReLU after the conv: the activated output
    n = x.shape[0]
    if spec["targets"] == "top1":
        import torch

        with torch.no_grad():
            pred = net(x).argmax(-1).tolist()
        target_lists = [[ClassifierOutputTarget(int(c)) for c in pred]]
    else:
        target_lists = [[ClassifierOutputTarget(c)] * n for c in data.class_ids(spec)]
    if spec["method"] == "gradcam":
        cam = GradCAM(model=net, target_layers=[layer])
    elif spec["method"] == "scorecam":
        cam = ScoreCAM(model=net, target_layers=[layer])
        cam.batch_size = 64
    else:
        raise NotImplementedError(f"pytorch-grad-cam side has no workload {spec['method']!r}")

    x.requires_grad_(True)  # weights are frozen: the graph to the layer starts at the input

    def run():
        return [cam(input_tensor=x, targets=t) for t in target_lists]  # numpy, on the host

    return _case(run, n * len(target_lists), check,
                 info={"note": "pytorch-grad-cam returns min-max scaled maps resized with "
                               "OpenCV on the host (its only mode)"})


def _maximize(spec, km, net, where, dev, check):
    """A plain PyTorch Adam loop with the same objective: T images, one per unit, each step a
    random jitter (roll) then ``-objective``; 256 steps; the images clipped to [0, 1]."""
    import torch

    t = int(spec["targets"])
    steps = int(spec["steps"])
    shape = models.input_shape(spec["model"])
    layer = spec.get("layer")
    body = net if layer is None else net[: where[layer] + 1]
    gen = torch.Generator(device="cpu").manual_seed(0)
    units = torch.arange(t, device=dev)

    def run():
        img = torch.rand((t, shape[2], shape[0], shape[1]), generator=gen).to(dev)
        img.requires_grad_(True)
        opt = torch.optim.Adam([img], lr=0.05)
        for _ in range(steps):
            dy, dx = (int(v) for v in torch.randint(-4, 5, (2,), generator=gen))
            out = body(torch.roll(img, shifts=(dy, dx), dims=(2, 3)))
            if layer is None:
                obj = out[torch.arange(t, device=dev), units]
            else:
                obj = out.mean(dim=(2, 3))[torch.arange(t, device=dev), units]
            opt.zero_grad(set_to_none=True)
            (-obj.sum()).backward()
            opt.step()
        return img.detach().clamp(0, 1)

    return _case(run, t * steps, check, unit="image-steps/s")
