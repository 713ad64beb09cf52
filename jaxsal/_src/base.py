"""Model adapters, the per-model cache of compiled programs, and shape/memory bookkeeping.

The engine talks to a model through one small protocol, the one :class:`model_import.KerasModel`
already has::

    y = model.apply(params, x)                                   # (N, ...) outputs
    y, acts = model.apply(params, x, capture=[layer], perturb={layer: delta})
    model.params; model.with_head("logits"); model.with_backprop("guided")

:class:`FunctionModel` gives a plain JAX function ``f(params, x)`` that protocol. Every
attribution method compiles one program per (model structure, static options) and keeps it in
a small cache, so a second call with the same shapes runs without tracing or compiling.
"""

from __future__ import annotations

import collections
import dataclasses
import dis
import functools
import inspect
import math
import os
import threading
import types
from typing import Any, Callable, Hashable, Iterable, Iterator, Mapping, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from jaxsal._src.fill_loop import fill_axis1, zeros_of
from jaxsal._src.precision import low_precision, low_precision_backward
from jaxsal._src import ints, reals
from model_import._errors import forward_mode_error
# one definition of the heads, and of the inputs a model takes (jaxsal.Inputs)
from model_import._model import HEADS, Inputs, KerasModel, apply_head, native

Array = jax.Array
ArrayLike = jax.typing.ArrayLike


#: Bound, in bytes, on the memory that the batched backward passes (or masked forward passes)
#: of one chunk may use on an accelerator whose memory JAX does not report, and the least
#: default on any accelerator; see :func:`default_budget`. Change it per call with
#: ``memory_budget=``.
DEFAULT_MEMORY_BUDGET = 2 * 2**30
#: On an accelerator, the default budget is this fraction of the device's memory limit
#: (``memory_stats()["bytes_limit"]``: 75% of the card under JAX's default preallocation),
#: so that one call fills a large GPU instead of running in many small sequential steps (a
#: fixed 2 GiB made VGG16 at 224x224 run 2 images per step) and leaves the rest to the user's
#: other arrays.
ACCELERATOR_BUDGET_FRACTION = 0.25
#: The same on CPU, smaller: there, touching freshly allocated memory dominates, and
#: sequential small chunks measured faster than one wide ``vmap`` (MNIST, 64 images, 10
#: classes: chunks of 1-2 targets ~1.5x faster than all 10 at once).
DEFAULT_CPU_MEMORY_BUDGET = 256 * 2**20


#: On CPU, the bound that splits a batch of *inputs* into sub-batches is larger: splitting
#: only avoids running out of host memory, and each split costs a sequential ``lax.map`` step
#: (VGG16 at 64x64, 16 images: 0.81 s split under 256 MiB vs 0.59 s in one pass).
DEFAULT_CPU_BATCH_BUDGET = 4 * 2**30


#: XLA options for every program jaxsal compiles, on the CPU backend only: YNNPACK for
#: matmuls, XLA's own (Eigen) kernels for convolutions. YNNPACK is fast on a forward pass it
#: takes whole as one fused graph; inside a program that also runs a backward pass each
#: convolution becomes a YNNPACK fusion of its own, several times slower than Eigen's kernel
#: (MNIST top-1 saliency 60 -> 33 ms, 10-class Grad-CAM 85 -> 37 ms:
#: ``benchmarks/results/ynn_experiment``). Forward passes alone depend on the model (VGG16 at
#: 112x112 530-557 -> 330-351 ms; the MNIST model slower, 9.6 -> 16.7 ms: the forward probes in
#: ``benchmarks/results/cpu.json`` as committed in 4cff494); the larger models decide.
#: YNNPACK's matmuls are kept for the small convolutions computed as matmuls
#: (``model_import._layers.conv.conv_patches``).
#: See ``benchmarks/README.md``. Ignored when this jaxlib does not know the option (see
#: :func:`compiler_options`).
CPU_COMPILER_OPTIONS = types.MappingProxyType(
    {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"})


@functools.lru_cache(maxsize=None)
def _cpu_options_supported() -> bool:
    try:
        jax.jit(lambda a: a + 1, compiler_options=dict(CPU_COMPILER_OPTIONS)).lower(
            jnp.zeros((), jnp.float32)).compile()
        return True
    except Exception:  # an older or newer jaxlib without this DebugOptions field
        return False


def _top_level(args: tuple) -> bool:
    """Whether a call with ``args`` runs outside every JAX trace: no traced argument, and no
    ``jit``/``eval_shape``/``vmap``... active around it (a user's ``jax.jit(lambda: method(m,
    x))`` captures ``x`` as a constant: no argument is traced, the trace is still there).
    ``jax._src.core.trace_state_clean`` says the latter (jax 0.4.38 to 0.10.2 at least); a JAX
    without it is judged by the arguments alone, and :meth:`Program.__call__` retries what
    that misses."""
    if any(isinstance(a, jax.core.Tracer) for a in jax.tree_util.tree_leaves(args)):
        return False
    try:
        from jax._src import core as jax_core
        return bool(jax_core.trace_state_clean())
    except Exception:  # (a JAX whose private core moved: the arguments decide)
        return True


class Program:
    """A jitted function compiled with :func:`compiler_options`; called inside someone
    else's trace (a user's ``jit``/``vmap``/``grad``/``eval_shape`` around a jaxsal method,
    with or without a traced argument), it runs as a plain nested ``jax.jit`` instead (XLA
    options belong to the outermost program)."""

    def __init__(self, fn: Callable, options: Mapping | None):
        self.plain = jax.jit(fn)
        self.tuned = jax.jit(fn, compiler_options=dict(options)) if options else self.plain

    def __call__(self, *args):
        if _top_level(args):
            try:
                return self.tuned(*args)
            except ValueError as e:  # a trace _top_level could not see: JAX refuses the options
                if self.tuned is self.plain or "compiler_options" not in str(e):
                    raise
        try:
            return self.plain(*args)
        except TypeError as e:  # jax.jvp around the method met a custom VJP in it
            clear = forward_mode_error(e, "this method's program")
            if clear is None:
                raise
            raise clear from e

    def lower(self, *args):
        return self.tuned.lower(*args)

    def _cache_size(self) -> int:
        return self.tuned._cache_size() + (
            self.plain._cache_size() if self.plain is not self.tuned else 0)


def compiler_options() -> dict | None:
    """The XLA options jaxsal compiles its programs with: :data:`CPU_COMPILER_OPTIONS` on the
    CPU backend, else ``None`` (XLA's defaults)."""
    if jax.default_backend() != "cpu" or not _cpu_options_supported():
        return None
    return dict(CPU_COMPILER_OPTIONS)


#: On CPU, the input-gradient methods widen a chunk of targets until its batched backward
#: passes cover this many rows (inputs x targets), within :data:`DEFAULT_MEMORY_BUDGET`: a
#: backward pass over a handful of rows runs far below the cores' speed. VGG16 at 112x112, 2
#: images, 10 classes: chunks of 1 target 2.48 s, of 10 targets 1.11 s; on the MNIST model
#: with 64 images the 256 MiB budget's chunks of 2 stay (148 ms; chunks of 10: 178 ms).
CPU_MIN_ROWS = 32

#: The padding (items computed and thrown away, as a fraction of the items asked for) a
#: balanced chunking may leave before :func:`least_padding` looks for a smaller chunk size.
MAX_PADDING = 0.05


@functools.lru_cache(maxsize=None)
def _accelerator_budget(backend: str) -> int:
    """:data:`ACCELERATOR_BUDGET_FRACTION` of the first ``backend`` device's memory limit, at
    least :data:`DEFAULT_MEMORY_BUDGET`. Read once per process: the limit is fixed when the
    backend starts, and a budget that followed the memory free at each call would change
    chunk sizes, hence recompile, between calls."""
    try:
        stats = jax.devices(backend)[0].memory_stats() or {}
        limit = int(stats.get("bytes_limit", 0))
    except Exception:  # a backend that reports no memory statistics
        limit = 0
    return max(DEFAULT_MEMORY_BUDGET, int(limit * ACCELERATOR_BUDGET_FRACTION))


def default_budget() -> int:
    """Default ``memory_budget`` of one chunk of targets: :data:`DEFAULT_CPU_MEMORY_BUDGET` on
    CPU, a quarter of the device's memory on an accelerator (:data:`ACCELERATOR_BUDGET_FRACTION`,
    at least :data:`DEFAULT_MEMORY_BUDGET`)."""
    backend = jax.default_backend()
    return DEFAULT_CPU_MEMORY_BUDGET if backend == "cpu" else _accelerator_budget(backend)


def default_batch_budget() -> int:
    """Default bound on the forward intermediates of one sub-batch of inputs."""
    backend = jax.default_backend()
    return DEFAULT_CPU_BATCH_BUDGET if backend == "cpu" else _accelerator_budget(backend)


def default_wide_budget() -> int:
    """The budget for chunks whose per-target work is small (CAM pullbacks through the layers
    after the explained one): at least :data:`DEFAULT_MEMORY_BUDGET`, on CPU too."""
    return max(DEFAULT_MEMORY_BUDGET, default_budget())


class FunctionModel:
    """A plain JAX function ``fn(params, x)`` presented as a model to every jaxsal method.

    Args:
      fn: ``fn(params, x) -> outputs``; ``x`` is ``(N, H, W, C)`` and outputs ``(N, K)`` are
        taken to be logits (see ``head``). May be omitted when ``features`` and ``head_fn``
        are given (then ``fn = head_fn(params, features(params, x))``).
      params: the pytree passed as ``fn``'s first argument (kept as an argument of the
        compiled programs, never baked in as constants).
      features: ``features(params, x) -> A`` with ``A`` of shape ``(N, h, w, K)``: the part of
        the network before the layer that CAMs explain.
      head_fn: ``head_fn(params, A) -> outputs``: the rest of the network. Given with ``fn``,
        ``head_fn(params, features(params, x))`` must compute what ``fn`` does: the methods
        that read the layer (CAMs, ``layer=``, :func:`jaxsal.neuron`) run the two halves, the
        others ``fn``.
      layer: the name under which ``A`` is addressed (``layer=`` of the CAM methods).
      head: what is applied to ``fn``'s outputs: ``"logits"`` (nothing, the default),
        ``"softmax"``, ``"sigmoid"`` or ``"sigmoid_complement"`` (``1 - sigmoid``).
      input_shape: ``(H, W, C)`` if known, for input validation.
      relu_kwarg: if ``fn``/``features``/``head_fn`` accept a keyword argument through which
        their ReLU can be chosen (e.g. ``"relu"``), its name; this enables
        :meth:`with_backprop` (guided backprop, deconvnet).
      relu_mode: the backward rule the model is made with: ``"standard"`` (the function's
        own ReLU), ``"guided"`` or ``"deconvnet"`` (as ``with_backprop(relu_mode)``);
        needs ``relu_kwarg``.
      relu: a ReLU of your own passed through ``relu_kwarg`` (``relu_mode`` then names it);
        ``None``: the one ``relu_mode`` names.
      data_format: ``"channels_last"`` (default) or ``"channels_first"``: the layout of ``x``
        and of ``A`` (``(N, C, H, W)`` and ``(N, K, h, w)``).

    Example::

        def f(p, x, relu=jax.nn.relu):
            return relu(x.reshape(len(x), -1) @ p["w1"]) @ p["w2"]
        m = jaxsal.FunctionModel(f, params, relu_kwarg="relu")
        maps = jaxsal.guided_backprop(m, x, targets=[0, 1])
    """

    def __init__(self, fn: Callable | None = None, params: Any = None, *,
                 features: Callable | None = None, head_fn: Callable | None = None,
                 layer: str = "features", head: str = "logits",
                 input_shape: Sequence[int] | None = None, relu_kwarg: str | None = None,
                 relu: Callable | None = None, relu_mode: str = "standard",
                 data_format: str = "channels_last"):
        if data_format not in ("channels_last", "channels_first"):
            raise ValueError(f"FunctionModel: expected data_format 'channels_last' or "
                             f"'channels_first', got {data_format!r}")
        if (features is None) != (head_fn is None):
            raise ValueError("FunctionModel: expected both features= and head_fn= (the two halves "
                             "of the network around the CAM layer) or neither; got only "
                             f"{'features' if features is not None else 'head_fn'}")
        if fn is None and features is None:
            raise ValueError("FunctionModel: expected fn(params, x), or features= and head_fn=")
        for name, f in (("fn", fn), ("features", features), ("head_fn", head_fn)):
            if f is not None and not callable(f):
                raise TypeError(f"FunctionModel: expected {name} as a function (params, x) -> "
                                f"outputs, got {type(f).__name__}")
        dims = None if input_shape is None else int_sizes(input_shape, allow_none=True)
        if input_shape is not None and (dims is None
                                        or any(d is not None and d < 1 for d in dims)):
            raise ValueError(f"FunctionModel: expected input_shape as one example's shape "
                             f"without the batch axis, e.g. (28, 28, 1) (None for a free "
                             f"size), got {input_shape!r}")
        if not isinstance(head, str) or head not in HEADS:
            raise ValueError(f"unknown head {head!r}; expected one of {HEADS}")
        if not isinstance(layer, str):
            raise TypeError(f"FunctionModel: expected layer= as the name (str) under which the "
                            f"features output is addressed, e.g. 'features', got "
                            f"{type(layer).__name__}")
        if relu_kwarg is not None and (not isinstance(relu_kwarg, str)
                                       or not relu_kwarg.isidentifier()):
            raise TypeError(f"FunctionModel: expected relu_kwarg as the name of fn's keyword "
                            f"argument that takes the ReLU (e.g. 'relu'), got {relu_kwarg!r}")
        relu, relu_mode = _function_relu(relu, relu_mode, relu_kwarg)
        self.fn = fn
        self.params = native(params)
        self.features = features
        self.head_fn = head_fn
        self.layer_name = layer
        self.head = head
        #: the head the model was made with, kept by its variants: ``with_head("saved")``
        #: returns to it
        self.saved_head = head
        self.input_shape = dims
        self.relu_kwarg = relu_kwarg
        self.relu = relu
        self.relu_mode = relu_mode
        self.data_format = data_format

    def _replace(self, **kw) -> "FunctionModel":
        args = dict(fn=self.fn, params=self.params, features=self.features,
                    head_fn=self.head_fn, layer=self.layer_name, head=self.head,
                    input_shape=self.input_shape, relu_kwarg=self.relu_kwarg, relu=self.relu,
                    relu_mode=self.relu_mode, data_format=self.data_format)
        args.update(kw)
        new = FunctionModel(**args)
        new.saved_head = self.saved_head  # a variant keeps the head the model was made with
        return new

    def with_head(self, head: str) -> "FunctionModel":
        """The same function with ``head`` applied to its (logit) outputs; ``"saved"`` keeps
        the head the model was made with (as a :class:`model_import.KerasModel` keeps its
        file's): ``m.with_head("softmax").with_head("saved")`` computes what ``m`` does."""
        if head == "saved" and self.head == self.saved_head:
            return self
        return self._replace(head=self.saved_head if head == "saved" else head)

    def with_params(self, params: Any) -> "FunctionModel":
        """The same function with other ``params`` (of the same structure)."""
        return self._replace(params=params)

    def with_backprop(self, mode: str) -> "FunctionModel":
        """The backward rule ``mode`` for the function's ReLU: ``"standard"``, ``"guided"`` or
        ``"deconvnet"``; the last two need ``relu_kwarg`` (see the class doc)."""
        from jaxsal._src.guided import relu_for_mode

        relu = relu_for_mode(mode)
        if mode == "standard":
            return self._replace(relu=None, relu_mode=mode)
        if self.relu_kwarg is None:
            raise ValueError(
                f"backprop={mode!r} needs to swap the function's ReLU, but this FunctionModel "
                "has no relu_kwarg. Expected fn(params, x, relu=...) and "
                "FunctionModel(fn, params, relu_kwarg='relu'); or write fn with "
                "jaxsal.guided_relu / jaxsal.deconvnet_relu yourself.")
        return self._replace(relu=relu, relu_mode=mode)

    @property
    def layer_names(self) -> list[str]:
        """``[layer]`` (the name of ``features``' output) when ``features`` is given, else
        ``[]``."""
        return [self.layer_name] if self.features is not None else []

    def layer_data_format(self, name: str) -> str:
        """The layout of the ``features`` output (that of ``x``), whatever ``name``."""
        return self.data_format

    @property
    def cache_key(self) -> Hashable:
        return (FunctionModel, *map(callable_key, (self.fn, self.features, self.head_fn)),
                self.layer_name, self.head, self.saved_head, self.relu_kwarg,
                callable_key(self.relu), self.data_format)

    def _kw(self) -> dict:
        if self.relu_kwarg is not None and self.relu is not None:
            return {self.relu_kwarg: self.relu}
        return {}

    def apply(self, params: Any, x: Inputs, *, capture: Iterable[str] = (),
              perturb: Mapping[str, Array] | None = None):
        """``outputs`` or ``(outputs, {layer: A})``, like :meth:`KerasModel.apply` (``x``:
        what ``fn`` takes, a list or dict of arrays for a function of several inputs)."""
        capture = (capture,) if isinstance(capture, str) else tuple(capture)
        perturb = dict(perturb or {})
        for name in tuple(capture) + tuple(perturb):
            if name not in self.layer_names:
                raise ValueError(f"unknown layer {name!r}; valid layer names: "
                                 f"{self.layer_names or '(none: pass features= and head_fn=)'}")
        kw = self._kw()
        if self.features is not None and (capture or perturb or self.fn is None):
            a = self.features(params, x, **kw)
            if self.layer_name in perturb:
                delta = perturb[self.layer_name]
                try:
                    ok = jnp.broadcast_shapes(jnp.shape(a), jnp.shape(delta)) == jnp.shape(a)
                except ValueError:
                    ok = False
                if not ok:  # it would change the outputs' shape (more rows than inputs)
                    raise ValueError(f"perturb[{self.layer_name!r}]: expected a delta of the "
                                     f"features' shape {tuple(jnp.shape(a))} (or one that "
                                     f"broadcasts to it), got {tuple(jnp.shape(delta))}")
                a = a + delta
            y = self.head_fn(params, a, **kw)
            captured = {name: a for name in capture}
        else:
            y = self.fn(params, x, **kw)
            captured = {}
        y = apply_head(self.head, y)
        return (y, captured) if capture else y

    def __call__(self, x: Inputs):
        """``apply(self.params, x)``."""
        return self.apply(self.params, x)

    def __repr__(self) -> str:
        return (f"FunctionModel(fn={getattr(self.fn, '__name__', self.fn)!r}, "
                f"layer={self.layer_name if self.features is not None else None!r}, "
                f"head={self.head!r}, relu={self.relu_mode!r})")


def _function_relu(relu: Callable | None, relu_mode: str, relu_kwarg: str | None
                   ) -> tuple[Callable | None, str]:
    """:class:`FunctionModel`'s ``relu`` and ``relu_mode`` checked: a named mode without a
    ``relu`` gets the mode's ReLU (``relu_mode="guided"`` alone left the function's own
    ReLU, and guided backprop then gave plain gradients), and either needs ``relu_kwarg``,
    the only way a ReLU reaches the function."""
    from jaxsal._src.guided import RELU_MODES, relu_for_mode

    if not isinstance(relu_mode, str) or (relu_mode not in RELU_MODES and relu is None):
        raise ValueError(f"FunctionModel: unknown relu_mode {relu_mode!r}; expected one of "
                         f"{RELU_MODES} (or a name of your own together with relu=)")
    if relu is not None and not callable(relu):
        raise TypeError(f"FunctionModel: expected relu as a function x -> relu(x), got "
                        f"{type(relu).__name__}")
    if (relu is not None or relu_mode != "standard") and relu_kwarg is None:
        raise ValueError(
            f"FunctionModel: relu_mode={relu_mode!r}{' with relu=' if relu is not None else ''} "
            "swaps the function's ReLU, which needs relu_kwarg; got relu_kwarg=None. Expected "
            "fn(params, x, relu=...) and FunctionModel(fn, params, relu_kwarg='relu', ...)")
    if relu is None and relu_mode != "standard":
        relu = relu_for_mode(relu_mode)
    return relu, relu_mode


#: What every method takes as ``model``: a :class:`model_import.KerasModel` (from
#: ``load_keras``), a :class:`FunctionModel`, or a pair ``(fn, params)`` (made a
#: ``FunctionModel``). Other objects with ``.apply(params, x)`` and ``.params`` are taken as
#: they are.
ModelLike = Union[KerasModel, FunctionModel, tuple[Callable[..., Any], Any]]

#: ``Inputs`` (imported above from ``model_import``, whose models take it too): what the
#: methods take as ``x`` (and as a baseline of it): one array ``(N, ...)``, or for a model of
#: several inputs one array per input, in a list or tuple in the model's input order or in a
#: dict keyed by its input names.

#: What a method giving a map per input returns: one array for one input array (or at a
#: layer), else one per input in the container ``x`` came in (a list, a tuple or a dict).
Maps = Union[Array, Sequence[Array], dict[str, Array]]


# ---------------------------------------------------------------------- adapting models
def is_function_pair(model: Any) -> bool:
    """Whether ``model`` is the ``(fn, params)`` form every method takes for a model."""
    return isinstance(model, tuple) and len(model) == 2 and callable(model[0])


#: The model objects of other libraries (found by the modules their classes come from, so
#: nothing is imported) and how to pass each.
_FRAMEWORKS = (
    (("flax.nnx", "flax.experimental.nnx"),
     "a flax.nnx module: split it, graphdef, state = nnx.split(module), and pass "
     "jaxsal.FunctionModel(lambda s, x: nnx.merge(graphdef, s)(x), state)"),
    (("flax.linen",),
     "a flax.linen module without its variables: pass jaxsal.FunctionModel(module.apply, "
     "variables)"),
    # (Keras 3 and 2.6-2.15 in keras.*, tf_keras, TensorFlow 2.0-2.5's own copy; no other
    # TensorFlow object, a tf.function say, is a Keras model)
    (("keras", "tf_keras", "tensorflow.python.keras"),
     "a Keras model object: save it (model.save('model.keras')) and load the file, "
     "model_import.load_keras('model.keras')"),
)


def _framework_of(model: Any) -> str | None:
    """What :data:`_FRAMEWORKS` says of ``model``'s class (or a base class), else None."""
    modules = [getattr(c, "__module__", None) or "" for c in type(model).__mro__]
    for prefixes, what in _FRAMEWORKS:
        if any(m == p or m.startswith(p + ".") for m in modules for p in prefixes):
            return what
    return None


def _refuse_explicit_params(model: Any) -> None:
    """:func:`refuse_explicit_tree` of ``model.params``, once per params object of a model
    of jaxsal's or the importer's own (its ``__dict__`` remembers the params found clean,
    by identity: a call from a kept plan does not walk a deep tree of parameters again, some
    0.3 us a leaf; params reassigned are checked again); a model of another class, every
    call (its object is not written to)."""
    own = type(model).__module__.split(".")[0] in ("jaxsal", "model_import")
    memo = getattr(model, "__dict__", None) if own else None
    params = model.params
    if memo is not None and memo.get("_explicit_checked") is params:
        return
    refuse_explicit_tree(params, "params")
    if memo is not None:
        memo["_explicit_checked"] = params


def as_model(model: Any) -> Any:
    """``model`` if it speaks the protocol; ``(fn, params)`` becomes a :class:`FunctionModel`."""
    if is_function_pair(model):
        refuse_explicit_tree(model[1], "params")  # (sharded over Explicit axes: refused)
        return FunctionModel(model[0], model[1])
    if hasattr(model, "apply") and hasattr(model, "params"):
        _refuse_explicit_params(model)
        return model
    expected = "expected a model with .apply(params, x) and .params"
    framework = _framework_of(model)
    if framework is not None:
        raise TypeError(f"{expected}, got {framework}")
    if isinstance(model, (str, bytes, os.PathLike)):
        raise TypeError(f"{expected}, got a path to a model file ({os.fsdecode(model)!r}): "
                        "load it first, model = model_import.load_keras(path), and pass "
                        "model.with_head(\"logits\") for class scores (the output layer's "
                        "softmax swapped for linear)")
    if callable(model):
        raise TypeError(f"{expected} (e.g. from model_import.load_keras), got a bare "
                        "function. Wrap it: jaxsal.FunctionModel(fn, params) or pass "
                        "(fn, params).")
    raise TypeError(f"{expected}, got {type(model).__name__}")


def with_options(model: Any, head: str | None = None, backprop: str | None = None) -> Any:
    """Apply a ``head=`` override and a backward rule (``None``: keep the model's), without
    mutating ``model``."""
    model = as_model(model)
    if head is not None:
        if head not in HEADS:
            raise ValueError(f"unknown head {head!r}; expected one of {HEADS}")
        if not hasattr(model, "with_head"):
            raise TypeError(f"head={head!r} needs a model with .with_head(); got "
                            f"{type(model).__name__}")
        model = model.with_head(head)
    if backprop is not None and backprop != getattr(model, "relu_mode", "standard"):
        if not hasattr(model, "with_backprop"):
            raise TypeError(f"backprop={backprop!r} needs a model with .with_backprop(); got "
                            f"{type(model).__name__}")
        model = model.with_backprop(backprop)
    return model


def model_key(model: Any) -> Hashable:
    """A hashable key identifying the function a model computes (not its weights)."""
    key = getattr(model, "cache_key", None)
    if key is not None:
        return key
    graph = getattr(model, "graph", None)
    if graph is not None and hasattr(model, "runtime"):  # model_import.KerasModel
        # two loads of one file: equal fingerprints (the graph object where there is none)
        return (type(model), getattr(graph, "fingerprint", None) or graph, model.head,
                _runtime_key(model.runtime),
                getattr(model, "_keras_major", None), getattr(model, "output_index", None),
                getattr(model, "channels_last_view", False))
    return (type(model), _Held(model))


def _runtime_key(runtime: Any) -> Hashable:
    """An importer's ``Runtime`` (its ReLU and rules) as a key part, field by field, each
    function by :func:`callable_key`: the frozen dataclass compares a function by identity,
    and a ``with_relu(f)`` whose ``f`` reads a variable reassigned since would reuse the
    program that baked the old value in."""
    if not dataclasses.is_dataclass(runtime):
        return runtime
    return (type(runtime),) + tuple(
        (f.name, callable_key(v) if callable(v) else v)
        for f in dataclasses.fields(runtime) for v in (getattr(runtime, f.name),))


def callable_key(fn: Any, _depth: int = 0) -> Hashable:
    """A function as part of a compiled program's key: the function and the values of the
    variables it reads now, those of its closure and the module-level (notebook) ones it
    names (by value where hashable, else the object itself, by identity; modules and
    classes left out; ``functools.partial`` arguments likewise), so that a function reading
    a variable that was reassigned since it was traced is traced again, instead of reusing
    a program that baked the old value in (``jax.jit`` itself would reuse it). A bound
    method is its function with the object it is bound to and the values of the attributes
    its code (and the methods and properties it names) reads; a callable object likewise,
    with its ``__call__``. A plain function is keyed by its
    code (and module, defaults, closure and reads), not by the function object: a fresh
    ``lambda`` made by the same line with the same values (a ``FunctionModel`` built in a
    loop or a helper) reuses the program instead of compiling it again. An array or
    list changed in place is not seen: pass such values as arguments (inputs, params)."""
    if _depth >= 4:
        return fn
    if isinstance(fn, functools.partial):
        names = _names_of(fn.func)
        return (functools.partial, callable_key(fn.func, _depth + 1),
                tuple(_closure_part(a, _depth, names) for a in fn.args),
                tuple(sorted((k, _closure_part(v, _depth, names))
                             for k, v in (fn.keywords or {}).items())))
    if isinstance(fn, types.MethodType) and isinstance(fn.__func__, types.FunctionType):
        # a bound method (``net.apply``): its function's reads, and the object it is bound to
        # with the attributes it reads
        return (types.MethodType, callable_key(fn.__func__, _depth + 1),
                _closure_part(fn.__self__, _depth, _names_of(fn.__func__)))
    if not isinstance(fn, types.FunctionType):
        if not _is_stateful(fn):
            return fn
        # a callable object (a score class's instance): the variables its ``__call__`` reads
        # and its attributes that it reads
        call = getattr(type(fn), "__call__", None)
        return (type(fn), _object_part(fn, _depth, _names_of(call)),
                callable_key(call, _depth + 1) if isinstance(call, types.FunctionType) else call)
    names = _names_of(fn)
    cells = tuple(_closure_part(_cell_value(c), _depth, names) for c in fn.__closure__ or ())
    read = tuple((n, _closure_part(v, _depth, names)) for n, v in global_reads(fn)
                 if not isinstance(v, (types.ModuleType, type)))
    defaults = tuple(_closure_part(d, _depth, names) for d in fn.__defaults__ or ())
    kwdefaults = tuple(sorted((k, _closure_part(v, _depth, names))
                              for k, v in (fn.__kwdefaults__ or {}).items()))
    return (types.FunctionType, fn.__code__, _Held(fn.__globals__), defaults, kwdefaults,
            cells, read)


def global_reads(fn: types.FunctionType) -> list[tuple[str, Any]]:
    """``(name, value)`` of the module-level variables ``fn`` names (a notebook's ``k``),
    in the order its code names them, those named by the functions defined inside it
    (a ``lambda``, a nested ``def``, a comprehension) included: their globals are read
    from ``fn``'s module when ``fn`` runs."""
    names = fn.__globals__
    return [(n, names[n]) for n in dict.fromkeys(_global_names(fn.__code__)) if n in names]


def _global_names(code: types.CodeType) -> Iterator[str]:
    """The module-level names ``code`` and the code objects nested in it load
    (``LOAD_GLOBAL``, and ``LOAD_NAME`` / ``LOAD_FROM_DICT_OR_GLOBALS`` of class bodies):
    not every name of ``co_names``, which holds the attributes it reads too (``jnp.tanh``
    is a read of ``jnp``, not of a module variable ``tanh``)."""
    for ins in dis.get_instructions(code):
        if ins.opname in _GLOBAL_LOADS:
            yield ins.argval
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            yield from _global_names(c)


_GLOBAL_LOADS = frozenset({"LOAD_GLOBAL", "LOAD_NAME", "LOAD_FROM_DICT_OR_GLOBALS"})


def _code_names(code: types.CodeType) -> Iterator[str]:
    """The names ``code`` and the code objects nested in it (inner functions) read."""
    yield from code.co_names
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            yield from _code_names(c)


_EMPTY_CELL = object()


def _cell_value(cell: Any) -> Any:
    try:
        return cell.cell_contents
    except ValueError:  # a variable not assigned yet
        return _EMPTY_CELL


def typed(v: Any) -> Any:
    """``v`` as a key part, with the type of every number kept beside it (``2 == 2.0 ==
    True`` in Python, but they may trace to different programs, and a plan taken for
    ``chunk_size=1`` must not serve ``chunk_size=True``, which is refused) and floats by
    their bits (``-0.0 == 0.0``); tuples item by item."""
    if isinstance(v, tuple):
        return tuple(typed(e) for e in v)
    if isinstance(v, float):
        return (type(v), float(v).hex())
    return (type(v), v)


def _closure_part(v: Any, depth: int, names: frozenset[str] | None = None) -> Hashable:
    """A value a function reads as a key part; ``names``: the names the function's code uses
    (the attributes of an object it can read), ``None``: any."""
    if isinstance(v, (types.FunctionType, types.MethodType, functools.partial)):
        return callable_key(v, depth + 1)
    if _is_stateful(v):
        return _object_part(v, depth, names)
    try:
        hash(v)
    except TypeError:  # arrays, lists, dicts: the object itself
        return _Held(v)
    return (type(v), v)  # by value and type: 1, 1.0 and True are equal, not the same


def _is_stateful(v: Any) -> bool:
    """An instance of a class of the user's whose equality is its identity (no value hash of
    its own) and whose attributes a function may read: ``self`` of ``net.apply``, a score
    object. Not JAX's objects (arrays, jitted functions) nor jaxsal's and the importer's
    models, which are keyed as themselves (``with_params``/``with_head`` make new ones)."""
    t = type(v)
    return (isinstance(getattr(v, "__dict__", None), dict)
            and t.__hash__ in (object.__hash__, None)
            and not isinstance(v, (types.ModuleType, type))
            and t.__module__.partition(".")[0] not in _OWN_STATE)


#: Packages whose objects :func:`_is_stateful` leaves to their identity.
_OWN_STATE = frozenset({"jax", "jaxlib", "jaxsal", "model_import"})


def _object_part(v: Any, depth: int, names: frozenset[str] | None) -> Hashable:
    """An object with attributes as a key part: the object (by identity) and the values now of
    the attributes the reading code can reach (``names``, and what the class's methods and
    properties so named use, :func:`_reachable`; every attribute for ``names=None``), as
    :func:`callable_key` takes a closure's, so that reassigning one (``net.scale = 3.0``)
    makes another key while an attribute no code reads (a call counter) does not; down to a
    few levels of objects in objects."""
    if depth >= 4:
        return _Held(v)
    attrs = vars(v)
    read = attrs.keys() if names is None else _reachable(type(v), names)
    inner = None if names is None else frozenset(read)
    return (_Held(v), tuple((k, _closure_part(attrs[k], depth + 1, inner))
                            for k in sorted(attrs.keys() & read)))


def reachable_names(cls: type, fn: types.FunctionType) -> frozenset[str]:
    """The names a method ``fn`` of ``cls`` can read on an instance: those its code uses and
    those the methods and properties they name use (:func:`_reachable`)."""
    return _reachable(cls, _code_name_set(fn.__code__))


def _names_of(fn: Any) -> frozenset[str] | None:
    """The names a plain function's code (and the functions defined in it) uses; ``None``
    for anything else (any name)."""
    return _code_name_set(fn.__code__) if isinstance(fn, types.FunctionType) else None


@functools.lru_cache(maxsize=1024)
def _code_name_set(code: types.CodeType) -> frozenset[str]:
    return frozenset(_code_names(code))


@functools.lru_cache(maxsize=1024)
def _reachable(cls: type, names: frozenset[str]) -> frozenset[str]:
    """``names`` and the names used by the methods and properties of ``cls`` they name, and
    so on: the attributes that code using ``names`` on an instance can read
    (``self.helper()`` reading ``self.scale``). Less the names of ``cached_property``
    values, which appear in an instance's attributes once read (what they are computed from
    counts instead)."""
    seen, todo, cached = set(names), list(names), set()
    while todo:
        attr = inspect.getattr_static(cls, todo.pop(), None)
        if isinstance(attr, (staticmethod, classmethod)):
            attr = attr.__func__
        fns = ((attr.fget, attr.fset) if isinstance(attr, property) else
               (attr.func,) if isinstance(attr, functools.cached_property) else (attr,))
        if isinstance(attr, functools.cached_property):
            cached.add(attr.attrname)
        for f in fns:
            if isinstance(f, types.FunctionType):
                new = _code_name_set(f.__code__) - seen
                seen |= new
                todo.extend(new)
    return frozenset(seen - cached)


def _function_keys(key: Any) -> Any:
    """``key`` with the plain functions in it (inside tuples) as :func:`callable_key`."""
    if isinstance(key, tuple):
        return tuple(_function_keys(k) for k in key)
    if isinstance(key, (types.FunctionType, types.MethodType, functools.partial)):
        return callable_key(key)
    return key


class _Held:
    """A cache-key part naming one object: hashed by ``id``, equal only to itself, and
    holding it, so that a cache entry cannot be matched by a new object that reuses the
    address of a collected one (the entry keeps its object alive until evicted)."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any):
        self.obj = obj

    def __hash__(self) -> int:
        return id(self.obj)

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, _Held) and other.obj is self.obj


def function_key(model: Any) -> Hashable:
    """:func:`model_key` and the shapes and dtypes of the model's params: what a model's
    output and layer shapes depend on (one plain function may take params of several
    widths or class counts)."""
    return (model_key(model), shape_key(getattr(model, "params", None)))


def several_outputs(model: Any, shapes: Sequence[tuple]) -> tuple[str, str]:
    """For errors about a model with several outputs: ``("'cls' (N, 3), 'reg' (N, 1)",
    first name)``, the outputs by :attr:`output_names` (positions for a plain function)."""
    names = getattr(model, "output_names", None) or [str(i) for i in range(len(shapes))]
    return ", ".join(f"{n!r} {tuple(s)}" for n, s in zip(names, shapes)), names[0]


def pick_output_hint(model: Any, first: str) -> str:
    """How to pick one output of a multi-output ``model``, for error messages: a
    :class:`model_import.KerasModel` has ``with_output``; a plain function must return one
    output itself."""
    if hasattr(model, "with_output"):
        return f"Pick one with model.with_output(name) (e.g. model.with_output({first!r}))"
    return ("Pick one by making the model return it: e.g. jaxsal.FunctionModel(lambda p, x: "
            f"f(p, x)[{first}], params) (or head_fn=lambda p, a: rest(p, a)[{first}] for a "
            "split model)")


def output_kind(model: Any) -> tuple[str, bool]:
    """(``"prob"`` or ``"logit"``, complement?): what the model's output units hold."""
    head = getattr(model, "head", "saved")
    if head == "sigmoid_complement":
        return "prob", True
    if head in ("softmax", "sigmoid"):
        return "prob", False
    if head == "logits":
        return "logit", False
    graph = getattr(model, "graph", None)
    if graph is not None:  # a KerasModel with its saved head: read the output activation
        index = getattr(model, "output_index", None)
        outs = graph.outputs if index is None else graph.outputs[index:index + 1]
        if any(graph.holds_probabilities_at(r) for r in outs):  # an ensemble's mean too
            return "prob", False
    return "logit", False


# ---------------------------------------------------------------------- caches
class _LRU:
    def __init__(self, size: int):
        self.size = size
        self.data: collections.OrderedDict = collections.OrderedDict()
        self.lock = threading.Lock()

    def _lookup(self, key) -> tuple[bool, Any]:
        """``(True, value)`` for a kept ``key`` (now the most recently used), else
        ``(False, None)``."""
        with self.lock:
            if key in self.data:
                self.data.move_to_end(key)
                return True, self.data[key]
        return False, None

    def find(self, key):
        """The value kept for ``key`` (now the most recently used), or ``None``."""
        return self._lookup(key)[1]

    def get(self, key, make):
        found, value = self._lookup(key)
        if found:
            return value
        value = make()
        with self.lock:
            self.data[key] = value
            while len(self.data) > self.size:
                self.data.popitem(last=False)
        return value

    def clear(self):
        with self.lock:
            self.data.clear()


_PROGRAMS = _LRU(256)
_SHAPES = _LRU(1024)
#: Forward jaxprs (:func:`forward_jaxpr`): a few, for the checks and sizes of the call in
#: progress; they hold the constants a traced function made, which the shapes do not.
_JAXPRS = _LRU(8)


PRECISIONS = (None, "default", "high", "highest", "bfloat16")


def compiled(key: Hashable, build: Callable[[], Callable], precision: str | None = None, *,
             forward_only: bool = False):
    """The jitted program for ``key`` (compiled with :func:`compiler_options`), built once by
    ``build()`` and then reused.

    ``precision``: ``None`` (JAX's default), ``"default"``, ``"high"``, ``"highest"``
    (matmul/convolution precision) or ``"bfloat16"``: the matmuls and convolutions of the
    backward passes (``targets.target_pullback``) take bfloat16 operands and accumulate in
    float32 (:func:`jaxsal._src.precision.low_precision`), the forward passes stay float32;
    with ``forward_only`` (a program without a backward pass: Score-CAM, Eigen-CAM,
    occlusion) all its matmuls and convolutions do. Inputs, params, every other operation and
    the returned maps stay float32. See :mod:`jaxsal._src.precision` for why.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {PRECISIONS}")

    def make():
        fn = build()
        if precision == "bfloat16" and forward_only:
            fn = low_precision(fn, jnp.bfloat16)
        elif precision is not None:
            inner = fn
            if precision == "bfloat16":
                context = functools.partial(low_precision_backward, jnp.bfloat16)
            else:
                context = functools.partial(jax.default_matmul_precision, precision)

            def fn(*args):
                with context():  # entered while jit traces the program: a trace-time choice
                    return inner(*args)
        return Program(fn, compiler_options())

    return _PROGRAMS.get((_function_keys(key), precision, bool(forward_only)), make)


def clear_caches() -> None:
    """Forget every compiled attribution program and cached shape (frees their memory)."""
    from jaxsal._src import maximize, parameterization, plans  # they build on this module

    _PROGRAMS.clear()
    _SHAPES.clear()
    _JAXPRS.clear()
    plans.PLANS.clear()
    maximize._build.cache_clear()
    maximize._check_round_sizes.cache_clear()  # the models it holds
    parameterization._checked.cache_clear()  # the parameterizations it holds


def _sds(x: Any) -> Any:
    """The abstract value of ``x``: one array, or a structure of input arrays."""
    return jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), x)


def zeros_varying_as(ref: Array, shape: tuple, dtype: Any) -> Array:
    """Zeros of ``shape`` and ``dtype`` that vary over the mesh axes ``ref`` varies over under
    ``jax.shard_map`` (elsewhere plain zeros). A perturbation built as ``jnp.zeros`` does
    not: JAX casts it where it meets the layer's output, and the transpose of that cast sums
    its gradient over the devices, every device's ``dS/dA`` then holding the sum of every
    shard's (Grad-CAM maps 4 times too large on 4 devices)."""
    return jnp.zeros(shape, dtype) + jnp.zeros_like(ref, dtype=dtype, shape=())


def tile_batch(a: Any, b: int) -> Any:
    """``b`` copies of ``a`` (an array or a structure of arrays) stacked on the batch axis;
    ``None`` stays ``None``."""
    if a is None:
        return None
    return jax.tree_util.tree_map(lambda v: jnp.tile(v, (b,) + (1,) * (v.ndim - 1)), a)


def repeat_rows(a: Any, b: int) -> Any:
    """Each row of ``a`` (an array or a structure of arrays) ``b`` times in a row, ``(N b,
    ...)``: the rows of :func:`stack_rows`'s batch; ``None`` stays ``None``."""
    if a is None:
        return None
    return jax.tree_util.tree_map(lambda v: jnp.repeat(v, b, axis=0), a)


def stack_rows(a: Array) -> Array:
    """``(S, N, ...)`` copies of a batch (samples, path points, masks) as one batch ``(N S,
    ...)``, input-major: row ``i S + k`` is copy ``k`` of input ``i``. Input-major, a batch
    sharded over its inputs (several devices) stays sharded: each device's rows are copies
    of its own inputs. Sample-major (``reshape(S N, ...)``), every device needs every input,
    and XLA gathers the batch and runs every pass on every device."""
    return jnp.swapaxes(a, 0, 1).reshape((-1,) + a.shape[2:])


def unstack_rows(a: Array, s: int) -> Array:
    """The inverse of :func:`stack_rows`: ``(N s, ...)`` -> ``(s, N, ...)``."""
    return jnp.swapaxes(a.reshape((-1, s) + a.shape[1:]), 0, 1)


def shape_key(x: Any) -> Hashable:
    """A hashable key of the shapes and dtypes of ``x`` (an array or a structure of them;
    Python numbers among them, as plain functions' params may be, by their type)."""
    leaves, tree = jax.tree_util.tree_flatten(x)
    return (tree, tuple(_signature(a) for a in leaves))


def _signature(a: Any) -> tuple:
    """``(shape, dtype)`` of an array (the dtype object: its ``str`` is slow, and a model's
    params hold hundreds of arrays), ``(shape, type name)`` of anything else."""
    dtype = getattr(a, "dtype", None)
    if dtype is None:
        return tuple(np.shape(a)), type(a).__name__
    return tuple(a.shape), dtype


def describe_shapes(x: Any) -> str:
    """``(2, 28, 28, 1) (float32)``, or every input's for a structure of inputs."""
    if isinstance(x, (jax.Array, np.ndarray, jax.ShapeDtypeStruct)):
        return f"{tuple(x.shape)} ({x.dtype})"
    leaves = jax.tree_util.tree_leaves_with_path(x)
    return ", ".join(f"{jax.tree_util.keystr(k)}: {tuple(a.shape)} ({a.dtype})"
                     for k, a in leaves)


def model_shapes(model: Any, x: Array, layers: Sequence[str] = ()) -> tuple[Any, dict]:
    """Abstract outputs and captured layer outputs of ``model`` on ``x`` (traced once, cached).

    Raises a ``ValueError`` naming the input shape when the model cannot run on ``x``.
    """
    layers = tuple(layers)
    key = (function_key(model), shape_key(x), layers)

    def make():
        def run(p, xx):
            if layers:
                return model.apply(p, xx, capture=list(layers))
            return model.apply(p, xx), {}

        try:
            if not layers:  # the trace the per-example check and forward_bytes read too
                return forward_jaxpr(model, x)[1], {}
            return jax.eval_shape(run, model.params, _sds(x))
        except Exception as e:  # noqa: BLE001  (the user's function: any error, re-raised)
            listed = _list_hint(model, x)
            if (not isinstance(e, (ValueError, TypeError)) and not listed
                    or "unknown layer" in str(e) or "ambiguous" in str(e)):
                raise
            kwarg = getattr(model, "relu_kwarg", None)
            hint = (f". The ReLU of the {model.relu_mode!r} rule reaches your function as its "
                    f"{kwarg}= argument (relu_kwarg), a function: a jax.jit-ed function needs "
                    f"it static, jax.jit(fn, static_argnames={kwarg!r}), or pass the function "
                    "unjitted (jaxsal compiles the whole method)"
                    if kwarg and "static_arg" in str(e) and getattr(model, "relu", None)
                    is not None else "")
            if not hint:
                hint = listed or _batch_axis_hint(model, x)
            raise ValueError(f"the model cannot be applied to an input of shape "
                             f"{describe_shapes(x)}: {str(e).rstrip('.') if hint else e}"
                             f"{hint}") from e

    return _SHAPES.get(key, make)


def _list_hint(model: Any, x: Any) -> str:
    """For a :class:`FunctionModel` given a list or tuple ``x`` (which it cannot know to be
    one input's examples rather than its several inputs): how ``x`` reached the function and
    the fix for examples of one input (``np.stack(x)``), else ``""``."""
    if not isinstance(model, FunctionModel) or not isinstance(x, (list, tuple)):
        return ""
    return (f". A {type(x).__name__} x reaches a FunctionModel's function as it is, as a "
            f"model's several inputs ({len(x)} here, each batch first); if its arrays are "
            f"examples of one input, pass them as one array: np.stack(x)")


def _batch_axis_hint(model: Any, x: Any) -> str:
    """For a :class:`FunctionModel` made without ``input_shape`` (nothing checked ``x``'s
    shape before its function ran on it) and one input array: how ``x`` was read, batch axis
    first, and the two fixes (``x[None]`` for one example; ``input_shape=`` to have the shape
    checked), else ``""``."""
    if (not isinstance(model, FunctionModel) or model.input_shape is not None
            or not isinstance(x, (jax.Array, np.ndarray, jax.ShapeDtypeStruct))
            or len(x.shape) < 1):
        return ""
    return (f". jaxsal reads x's first axis as the batch: {x.shape[0]} examples of shape "
            f"{tuple(x.shape[1:])}. For one example add its batch axis, x[None]; "
            f"FunctionModel(..., input_shape=<one example's shape>) has x's shape checked "
            f"before your function runs")


def forward_jaxpr(model: Any, x: Any) -> tuple[Any, Any]:
    """``(closed jaxpr, abstract outputs)`` of one forward pass ``model.apply(params, x)`` on
    ``x``'s shapes (traced once, kept for the calls in progress): the outputs' shapes
    (:func:`model_shapes`), the bytes of its intermediates (:func:`forward_bytes`) and
    which of its values hold which examples (:mod:`jaxsal._src.per_example`) are read from
    one trace."""
    key = (function_key(model), shape_key(x))
    return _JAXPRS.get(key, lambda: jax.make_jaxpr(
        lambda p, xx: model.apply(p, xx), return_shape=True)(model.params, _sds(x)))


def forward_bytes(model: Any, x: Array) -> int:
    """The bytes one forward pass on ``x`` is charged for when chunks are sized (traced once,
    cached).

    On CPU: the sum of every intermediate value of the forward jaxpr, the measure the CPU
    budgets were tuned against (there chunk sizes are a speed choice: caches and page
    faults, see :data:`DEFAULT_CPU_MEMORY_BUDGET`). On an accelerator, where the budget is a
    memory bound and bigger steps run faster: :func:`residual_bytes`, what a VJP keeps for
    its backward pass, closer to what XLA allocates (VGG16 at 224x224, per image: jaxpr sum
    392 MiB, VJP residuals 105 MiB, XLA:CPU's buffers for a forward and one backward pass
    65 MiB), those of the standard backward rule for guided backprop and the deconvnet
    (:func:`sizing_model`).
    """
    key = ("bytes", function_key(model), shape_key(x), jax.default_backend())

    def make():
        if jax.default_backend() != "cpu":
            try:
                return residual_bytes(sizing_model(model), x)
            except Exception:  # e.g. a function that only runs at the given batch size
                pass
        return max(_jaxpr_bytes(forward_jaxpr(model, x)[0].jaxpr), 1)

    return _SHAPES.get(key, make)


def sub_batch_shapes(x: Any, nb: int) -> Any:
    """The abstract values of ``nb`` inputs of ``x`` (an array or a structure of arrays)."""
    return jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct((nb, *a.shape[1:]), a.dtype),
                                  x)


def layer_pullback_bytes(model: Any, x: Any, layer: str, a_shape: tuple) -> int:
    """What one target's pullback from the outputs to ``layer`` (a gradient CAM's backward
    pass) is charged for, for the batch of ``x``: the residuals of the VJP with respect to
    the layer's output (only the layers after it; those before are constants to it), plus two
    arrays of the layer's output size (the gradient and one product of it with the
    activations). Shapes only, traced once and cached; the whole forward pass's charge
    (:func:`forward_bytes`) where the model cannot be traced so.

    VGG16 at 224x224, 64 images, at ``block5_conv3``: 2 x 26 MB plus the head's residuals,
    where the forward pass's VJP residuals (what chunks of input gradients are charged) are
    6.8 GB: on the H200 that charge split the 10 Grad-CAM targets into 4 chunks run one after
    another, for a pullback through three dense layers each."""
    key = ("layer-bytes", function_key(model), shape_key(x), layer, tuple(a_shape))

    def make():
        n = int(jax.tree_util.tree_leaves(x)[0].shape[0])
        floats = [a.dtype for a in jax.tree_util.tree_leaves(x)
                  if jnp.issubdtype(a.dtype, jnp.floating)]
        dtype = floats[0] if floats else jnp.float32

        sized = sizing_model(model)

        def vjp(b: int):
            def pull(p, xx, d):
                return jax.vjp(lambda dd: sized.apply(p, xx, capture=[layer],
                                                      perturb={layer: dd})[0], d)[1]

            return jax.eval_shape(pull, sized.params, sub_batch_shapes(x, b),
                                  jax.ShapeDtypeStruct((b, *a_shape[1:]), dtype))

        try:
            per_input = max(_residuals_per_input(vjp), 0)
        except Exception:  # a function that only runs at the given batch size, say
            return forward_bytes(model, x)
        a_bytes = int(np.prod(a_shape[1:], dtype=np.int64)) * jnp.dtype(dtype).itemsize
        return max(n * (per_input + 2 * a_bytes), 1)

    return _SHAPES.get(key, make)


def sizing_model(model: Any) -> Any:
    """The model whose VJP sizes chunks of backward passes: ``model`` with the standard
    backward rule. A chunk's memory is mostly its targets' cotangents, the same under every
    rule, but guided backprop's and the deconvnet's rules keep less for their backward
    passes (VGG16 at 224x224: 49 MiB of residuals per image against 101 for the standard
    rule; ``benchmarks/results/oneoff/guided_residuals.txt``), and charged their own, their
    chunks held twice the targets of a saliency call in the same memory. Other models (and
    DeepLIFT's rules, which keep more) are charged as they are."""
    if getattr(model, "relu_mode", None) in ("guided", "deconvnet") and hasattr(
            model, "with_backprop"):
        try:
            return model.with_backprop("standard")
        except ValueError:  # a function whose ReLU cannot be swapped
            pass
    return model


def target_bytes(model: Any, x: Any, nb: int, layer: str | None = None,
                 layer_shape: tuple | None = None) -> int:
    """What one target of a chunk is charged for, over a sub-batch of ``nb`` of the inputs
    ``x``: a whole backward pass (:func:`forward_bytes`), or with ``layer`` (a gradient CAM,
    attribution at a layer; ``layer_shape`` its output's, batch first) at most the pullback
    to that layer (:func:`layer_pullback_bytes`)."""
    n = int(jax.tree_util.tree_leaves(x)[0].shape[0])
    per = forward_bytes(model, x) * nb // n
    if layer is None:
        return per
    return min(per, layer_pullback_bytes(model, sub_batch_shapes(x, nb), layer,
                                         (nb,) + tuple(layer_shape[1:])))


def residual_bytes(model: Any, x: Array) -> int:
    """Bytes of the values a VJP of ``model`` with respect to ``x`` keeps for its backward
    pass, for the batch of ``x``: the residuals of one input (those of a batch of two minus
    those of a batch of one, so that weights kept for the backward pass do not count) times
    the batch size. Shapes only: nothing is computed."""

    def vjp(b: int):
        return jax.eval_shape(lambda p, xx: jax.vjp(lambda v: model.apply(p, v), xx)[1],
                              model.params, sub_batch_shapes(x, b))

    per_input = _residuals_per_input(vjp)
    return max(per_input, 1) * int(jax.tree_util.tree_leaves(x)[0].shape[0])


def _residuals_per_input(vjp: Callable[[int], Any]) -> int:
    """Bytes one input adds to what a VJP keeps for its backward pass: ``vjp(b)`` is the
    abstract pullback (``jax.eval_shape`` of ``jax.vjp(...)[1]``) for a batch of ``b``;
    those of a batch of two minus those of a batch of one, so that weights kept for the
    backward pass do not count."""
    def total(b: int) -> int:
        return sum(int(np.prod(a.shape, dtype=np.int64)) * a.dtype.itemsize
                   for a in jax.tree_util.tree_leaves(vjp(b)) if hasattr(a, "dtype"))

    return total(2) - total(1)


def _jaxpr_bytes(jaxpr) -> int:
    total = 0
    for eqn in jaxpr.eqns:
        for v in eqn.outvars:
            aval = getattr(v, "aval", None)
            if hasattr(aval, "shape") and hasattr(aval, "dtype"):
                total += int(np.prod(aval.shape, dtype=np.int64)) * aval.dtype.itemsize
        for p in eqn.params.values():
            inner = getattr(p, "jaxpr", None)
            if inner is not None and hasattr(inner, "eqns"):
                total += _jaxpr_bytes(inner)
            elif hasattr(p, "eqns"):
                total += _jaxpr_bytes(p)
    return total


def check_count(value: Any, name: str, *, required: bool = False) -> int | None:
    """``value`` as an int >= 1 by the one rule of integer counts
    (:func:`jaxsal._src.ints.check_int`), or a ``ValueError`` naming the option; ``None``
    passes through (the option's default) unless ``required``."""
    return ints.check_int(value, name, allow_none=not required)


def check_n(n: Any, what: str) -> int:
    """A required count ``n`` of ``what`` (samples, masks, orders...) as an int >= 1 by the
    one rule of integer counts; ``None`` refused too."""
    return ints.check_int(n, "n", kind=what, example="4")


def int_sizes(value: Any, *, allow_none: bool = False) -> tuple | None:
    """``value`` (a shape, a size) as a tuple of Python ints when it is a sequence of integers
    by the one rule of counts (Python and NumPy integers, concrete 0-d integer arrays; not
    bools; ``None`` entries too with ``allow_none``), else ``None``:
    the caller raises its own error. A string is not a sequence of sizes."""
    if isinstance(value, (str, bytes)) or not np.iterable(value):
        return None
    dims = tuple(value)
    if not all((allow_none and d is None) or ints.as_int(d) is not None for d in dims):
        return None
    return tuple(None if d is None else ints.as_int(d) for d in dims)


def not_sizes(value: Any, example: str) -> str:
    """Why ``value``, refused by :func:`int_sizes` (a sequence, or an array of one axis), is
    not sizes, where its first entry that is not an integer says: traced under ``jax.jit``,
    or a float; as the end of the caller's error (``"; ..."``, with how to fix it, ``example``
    the ints to pass, e.g. ``"(int(H), int(W))"``), ``""`` otherwise (a bool, a string...:
    the caller's own "expected ..., got ..." says it)."""
    if (isinstance(value, (str, bytes)) or not np.iterable(value)
            or isinstance(value, (np.ndarray, jax.Array)) and value.ndim != 1):
        return ""
    d = next((d for d in value if ints.as_int(d) is None), None)
    if isinstance(d, (np.ndarray, jax.Array)) and d.ndim == 0 and not isinstance(
            d, jax.core.Tracer):
        d = d.item()
    if isinstance(d, jax.core.Tracer):
        return ("; a size traced under jax.jit is not known when the program is built: "
                "pass it as a static argument (static_argnames) or as Python ints")
    if isinstance(d, (float, np.floating)):
        return f"; sizes are counts: pass ints, e.g. {example}"
    return ""


def check_budget(memory_budget: Any) -> int | None:
    """``memory_budget=`` as a positive number of bytes (an int, or a float such as ``2e9``),
    or a ``ValueError``; ``None`` passes through (the backend's default)."""
    if memory_budget is None:
        return None
    return int(reals.check_real(memory_budget, "memory_budget", low=1,
                                kind="a finite number of bytes, or None for the default",
                                example="2 * 2**30 (2 GiB)"))


def check_index_offset(offset: Any, name: str = "index_offset",
                       n: int = 1) -> int | jax.Array:
    """A sampling method's ``index_offset`` (the position of ``x[0]`` in a larger batch) as
    an int >= 0 (a 0-d integer array too), else a ``ValueError`` naming the argument
    ``name``. A scalar integer traced by the caller's ``jax.jit`` (a loop counter, a shard's
    offset) comes back as an int32 tracer: input ``i``'s draws are keyed by
    ``index_offset + i`` on device, so one compiled program serves every offset (its value is
    not known while tracing, so not checked). Those indices are int32: an int offset of
    ``n`` inputs is at most ``2**31 - n`` (a larger one raised JAX's OverflowError, or
    wrapped to negative indices; :func:`input_indices` checks it with the call's ``n``)."""
    if isinstance(offset, jax.core.Tracer):
        if offset.shape != () or not jnp.issubdtype(offset.dtype, jnp.integer):
            raise ValueError(f"expected {name} as an int >= 0 or a scalar integer traced by "
                             f"jax.jit, got a traced {offset.dtype} of shape {offset.shape}; "
                             f"pass one integer (e.g. jnp.int32(i))")
        return offset.astype(jnp.int32)
    i = ints.check_int(offset, name, low=0,
                       kind="a scalar integer traced by jax.jit is taken too")
    if i > 2 ** 31 - n:
        top = "2**31 - 1" if n == 1 else f"2**31 - {n} = {2 ** 31 - n}, for {n} inputs"
        raise ValueError(f"expected {name} as an int in [0, {top}], got {i}: the global index "
                         f"of input i, {name} + i, is an int32 on device (the key of its "
                         f"draws), and 2**31 or more does not fit. Number the inputs from a "
                         f"smaller offset (indices below 2**31)")
    return i


def input_indices(offset: int | jax.Array, n: int) -> jax.Array:
    """``(n,)`` int32: the global indices ``offset + i`` of a call's ``n`` inputs, from an
    ``offset`` :func:`check_index_offset` returned (an int is checked against ``n``)."""
    if not isinstance(offset, jax.Array):
        check_index_offset(offset, n=n)
    return offset + jnp.arange(n, dtype=jnp.int32)


def _seed(seed: int, what: str) -> int:
    """An int seed that JAX keeps whole: ``[0, 2**32)`` in its default 32-bit mode, where
    ``jax.random.key`` keeps the low 32 bits (``2**32`` and ``2**40`` give ``key(0)``'s
    draws, ``-1`` those of ``2**32 - 1``), ``[-2**63, 2**63)`` with ``jax_enable_x64``."""
    lo, hi, span = ((-2**63, 2**63, "[-2**63, 2**63)") if jax.config.jax_enable_x64
                    else (0, 2**32, "[0, 2**32)"))
    if not lo <= seed < hi:
        mod = "2**63" if jax.config.jax_enable_x64 else "2**32"
        raise ValueError(f"{what}: expected an int seed in {span}, got {seed}: JAX keeps only "
                         f"that many bits of a seed, so it would give another seed's draws "
                         f"(key(2**32) is key(0) in JAX's default 32-bit mode). Pass "
                         f"seed % {mod}, or a key you made (jax.random.key(0))")
    return seed


def check_key(key: Any, what: str) -> jax.Array:
    """``key`` as a JAX PRNG key: a key (``jax.random.key(0)``, or a legacy
    ``jax.random.PRNGKey(0)``, made a typed key: the same draws, and the same compiled
    programs as ``jax.random.key``) is used as given, an int seed ``s`` becomes
    ``jax.random.key(s)`` (as :func:`jaxsal.maximize` does; a seed traced by the caller's
    ``jax.jit``/``vmap`` too, without the range check a concrete one gets); anything else is
    refused."""
    if key is None:
        raise ValueError(f"{what} needs an explicit PRNG key: key=jax.random.key(0) (or an int "
                         "seed, key=0); the same key gives the same result")
    if isinstance(key, (bool, np.bool_)):
        raise TypeError(f"{what}: expected key as a PRNG key or an int seed, got a bool")
    if isinstance(key, (int, np.integer)):
        return jax.random.key(_seed(int(key), what))
    if isinstance(key, (jax.Array, np.ndarray)):
        if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) and key.shape == ():
            return key
        if (isinstance(key, jax.core.Tracer) and jnp.issubdtype(key.dtype, jnp.integer)
                and key.shape == ()):  # a seed under the caller's jax.jit or vmap
            return jax.random.key(key)
        if key.dtype == jnp.uint32 and key.ndim == 1:  # raw key data: jax.random.PRNGKey(s)
            want = jax.eval_shape(lambda: jax.random.PRNGKey(0)).shape
            if key.shape != want:
                raise TypeError(f"{what}: raw key data (a uint32 array, as jax.random.PRNGKey "
                                f"makes) has shape {want} with the default PRNG; got shape "
                                f"{key.shape}. Pass jax.random.key(0) or an int seed")
            return jax.random.wrap_key_data(key)
        if jnp.issubdtype(key.dtype, jnp.integer) and key.shape == ():
            return jax.random.key(_seed(int(key), what))
    expected = f"{what}: expected key as one PRNG key (jax.random.key(0)) or an int seed"
    several = "; for several inputs pass one key, not one per input"
    shape, dtype = getattr(key, "shape", None), getattr(key, "dtype", None)
    if shape is not None and dtype is not None:  # an array: what it holds says what is wrong
        got = f"{type(key).__name__} of shape {tuple(shape)} and dtype {dtype}"
        if len(shape) == 0 and jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(f"{expected}, got {got}: a seed is an int (key=0)")
        raise TypeError(f"{expected}, got {got}{several if len(shape) else ''}")
    if isinstance(key, (list, tuple, dict)):  # (several keys, one per input)
        raise TypeError(f"{expected}, got a {type(key).__name__}{several}")
    shown = repr(key) if len(repr(key)) <= 40 else repr(key)[:37] + "..."
    if isinstance(key, (float, str, bytes)):
        raise TypeError(f"{expected}, got {type(key).__name__} {shown}: a seed is an int "
                        "(key=0)")
    raise TypeError(f"{expected}, got {type(key).__name__} {shown}")


def chunk_for(total: int, per_item_bytes: int, chunk_size: int | None,
              memory_budget: int | None, cap: int | None = None,
              rows: int | None = None) -> int:
    """How many items (targets, masked inputs) to batch at once: ``chunk_size`` if given,
    otherwise as many as fit in ``memory_budget`` bytes (at least 1, at most ``total``),
    with the least padding (:func:`least_padding`).

    ``rows``: inputs each item's pass covers. On CPU with the default budget, a chunk is
    widened to cover :data:`CPU_MIN_ROWS` rows (inputs x items) as long as it fits in
    :data:`DEFAULT_MEMORY_BUDGET`."""
    chunk_size = check_count(chunk_size, "chunk_size")
    memory_budget = check_budget(memory_budget)
    total = max(int(total), 1)
    if chunk_size is not None:
        c = chunk_size
    else:
        per_item = max(int(per_item_bytes), 1)
        budget = default_budget() if memory_budget is None else memory_budget
        c = max(1, budget // per_item)
        if rows and memory_budget is None and jax.default_backend() == "cpu":
            wide = max(1, DEFAULT_MEMORY_BUDGET // per_item)
            c = max(c, min(math.ceil(CPU_MIN_ROWS / int(rows)), wide))
        if cap is not None:
            c = min(c, cap)
    return least_padding(total, max(1, min(c, total)))


def least_padding(total: int, c: int) -> int:
    """The chunk size for ``total`` items in chunks of at most ``c``: balanced (``ceil(total /
    n)`` for the fewest chunks ``n``), and where that still pads the last chunk by more than
    :data:`MAX_PADDING` of ``total`` (chunks are equal: the last one's extra items are
    computed and thrown away, :func:`map_chunks`), the size down to half of it that pads
    least, then with the fewest chunks. 10 targets in chunks of at most 3: 5 chunks of 2,
    not 4 of 3 (12 backward passes, 20% more work: the 10-class saliency of the first GPU
    run)."""
    total, c = max(int(total), 1), max(1, min(int(c), max(int(total), 1)))
    best = math.ceil(total / math.ceil(total / c))
    if math.ceil(total / best) * best - total <= MAX_PADDING * total:
        return best
    return min(range(math.ceil(best / 2), best + 1),
               key=lambda k: (math.ceil(total / k) * k, math.ceil(total / k)))


def auto_batch(total: int, per_item_bytes: int, batch: int | None,
               memory_budget: int | None, name: str = "batch size") -> int:
    """Samples / path points per batched pass: ``batch`` if given (validated), else as many
    as fit in a quarter of the memory budget (each needs its forward residuals and a
    backward)."""
    batch = check_count(batch, name)
    memory_budget = check_budget(memory_budget)
    if batch is not None:
        return int(min(batch, total))
    budget = default_budget() if memory_budget is None else memory_budget
    b = max(1, min(int(total), budget // (4 * max(int(per_item_bytes), 1))))
    return least_padding(total, b)


def sampling_plan(model: Any, x: Any, n: int, num_targets: int, total: int,
                  batch: int | None, batch_name: str, chunk_size: int | None,
                  memory_budget: int | None) -> tuple[int, int, int]:
    """``(nb, batch, chunk)`` of a method that evaluates ``total`` points per input (path
    steps, noisy samples) in batched passes: inputs per pass, points per batched pass
    (``batch`` if given, checked as ``batch_name``) and targets per chunk, all within the
    memory budget."""
    fb = forward_bytes(model, x)
    nb = batch_chunk(n, fb // n, memory_budget)
    fb = fb * nb // n
    batch = auto_batch(total, fb, batch, memory_budget, batch_name)
    return nb, batch, chunk_for(num_targets, fb * batch, chunk_size, memory_budget)


def masked_plan(model: Any, x: Any, fill: Any, batch_size: Any,
                memory_budget: int | None) -> tuple[Any, int | None, int, int]:
    """``(fill, batch_size, per_image, nb)`` of a method that runs masked copies of its
    inputs (occlusion, Shapley values, RISE): ``batch_size`` checked, the forward pass's bytes
    per input, inputs per sub-batch (:func:`masked_inputs`), and ``fill`` (one per input
    array, in ``x``'s structure) broadcast to ``x`` when sub-batches split it with the
    inputs."""
    batch_size = check_count(batch_size, "batch_size")
    n = int(jax.tree_util.tree_leaves(x)[0].shape[0])
    per_image = forward_bytes(model, x) // n
    nb = masked_inputs(n, batch_chunk(n, per_image, memory_budget), batch_size)
    if nb < n:
        fill = jax.tree_util.tree_map(lambda f, a: jnp.broadcast_to(f, a.shape), fill, x)
    return fill, batch_size, per_image, nb


def masked_inputs(n: int, nb: int, batch_size: int | None) -> int:
    """Inputs per sub-batch of a method that runs masked copies of its ``n`` inputs: ``nb``
    (what the memory budget holds) bounded by ``batch_size``, the masked inputs one forward
    pass may hold (a pass holds at least one copy of each of its inputs: 8 inputs and
    ``batch_size=2`` are 4 sub-batches of 2, each pass 2 rows), with the least padding."""
    if batch_size is None or batch_size >= nb:
        return nb
    return least_padding(n, batch_size)


def masked_chunk(total: int, per_image: int, nb: int, batch_size: int | None,
                 memory_budget: int | None) -> int:
    """How many of ``total`` modified copies (masked, occluded, ablated) of each of ``nb``
    inputs one forward pass evaluates, ``c`` (a pass holds ``c * nb`` rows): ``batch_size //
    nb`` if ``batch_size`` (the masked inputs of a pass, every input's copies together) is
    given, else as many as fit in the memory budget, at most 1024 copies per pass. At least
    one: ``batch_size`` bounds the rows only where ``nb <= batch_size``, which
    :func:`masked_inputs` makes so for a batch that may be split."""
    return chunk_for(total, per_image * nb, None if batch_size is None
                     else max(1, batch_size // nb), memory_budget, cap=max(1, 1024 // nb))


def map_chunks(fn: Callable[[Array], Any], total: int, chunk: int) -> Any:
    """``fn(idx)`` over ``arange(total)`` in chunks of ``chunk``, concatenated on axis 1.

    ``fn`` takes a ``(c,)`` int32 index vector and returns arrays ``(N, c, ...)``. One chunk is
    a direct call; several run sequentially in a ``fori_loop`` (bounded memory), each
    writing its items in place into the ``(N, total, ...)`` result: the last chunk ends at
    ``total``, overlapping the one before where ``chunk`` does not divide it (the items of
    the overlap are computed twice, as padding would be), so that no stacked
    ``(chunks, N, c, ...)`` copy is made and moved (1000 classes of 8 VGG16-sized maps:
    1.6 GB of result, peaking at twice that when chunks were stacked and transposed).
    """
    if chunk >= total:
        return fn(jnp.arange(total, dtype=jnp.int32))

    def piece(i):
        start = jnp.minimum(i * chunk, total - chunk)
        return start, fn(start + jnp.arange(chunk, dtype=jnp.int32))

    return fill_axis1(piece, math.ceil(total / chunk), total)


def sum_groups(fn: Callable[[Array, Array], Any], total: int, batch: int) -> Any:
    """``sum`` over ``k in range(total)`` in groups of ``batch`` indices.

    ``fn(ks, valid)`` gets a group's ``(batch,)`` indices (padded ones repeat the last index
    and have ``valid`` False) and returns that group's contribution, already summed; the
    groups run in a ``fori_loop`` (one group alive at a time: bounded memory). Methods put a
    group into the batch axis of one forward pass rather than ``vmap``-ing the model, which
    XLA:CPU runs several times faster.
    """
    batch = max(1, min(int(batch), int(total)))
    groups = math.ceil(total / batch)

    def body(i, acc):
        ks = i * batch + jnp.arange(batch, dtype=jnp.int32)
        out = fn(jnp.minimum(ks, total - 1), ks < total)
        return out if acc is None else jax.tree_util.tree_map(jnp.add, acc, out)

    if groups == 1:
        return body(jnp.zeros((), jnp.int32), None)
    shapes = jax.eval_shape(lambda: fn(jnp.zeros((batch,), jnp.int32), jnp.ones((batch,), bool)))
    init = jax.tree_util.tree_map(zeros_of, shapes)
    return jax.lax.fori_loop(0, groups, body, init)


def batch_chunk(n: int, per_example_bytes: int, memory_budget: int | None,
                batch_size: int | None = None, factor: int = 2) -> int:
    """How many inputs one pass holds: all ``n`` unless ``factor`` times their forward
    intermediates exceed the memory budget (or ``batch_size`` is given), with the least
    padding (:func:`least_padding`)."""
    batch_size = check_count(batch_size, "batch_size")
    memory_budget = check_budget(memory_budget)
    if batch_size is not None:
        nb = batch_size
    else:
        budget = default_batch_budget() if memory_budget is None else memory_budget
        nb = max(1, budget // max(1, int(per_example_bytes) * factor))
    nb = max(1, min(int(n), nb))
    return least_padding(n, nb)


def explicit_axes(x: Any) -> tuple[str, ...]:
    """The names of the ``Explicit`` mesh axes (sharding in types, the default of
    ``jax.make_mesh`` in recent JAX releases) that ``x``'s abstract sharding splits it over, in the
    order of its axes; ``()`` for an array on one device, replicated, on ``Auto`` or
    ``Manual`` axes, a NumPy array, or a JAX release without ``jax.typeof``/``AxisType``."""
    typeof = getattr(jax, "typeof", None)
    explicit = getattr(getattr(jax.sharding, "AxisType", None), "Explicit", None)
    if typeof is None or explicit is None or not isinstance(x, jax.Array):
        return ()
    if not isinstance(x, jax.core.Tracer) and not isinstance(
            getattr(x, "sharding", None), jax.sharding.NamedSharding):
        return ()  # (an array on one device: no mesh; jax.typeof costs some 15 us)
    try:
        sharding = typeof(x).sharding
        kinds = dict(zip(sharding.mesh.axis_names, sharding.mesh.axis_types))
        spec = tuple(sharding.spec)
    except (AttributeError, TypeError):
        return ()
    names = [n for entry in spec if entry is not None
             for n in (entry if isinstance(entry, tuple) else (entry,))]
    return tuple(n for n in names if isinstance(n, str) and kinds.get(n) == explicit)


def refuse_explicit(x: Any, what: str = "x") -> None:
    """Refuse an input array sharded over ``Explicit`` mesh axes (:func:`explicit_axes`):
    jaxsal's programs are written for JAX's ``Auto`` axes (XLA propagates the sharding), and
    on ``Explicit`` ones JAX's sharding-in-types raised deep inside them (a class chunk's
    ``dynamic_update_slice``, a pass of fewer inputs than devices, an imported
    ``MaxPooling2D``'s reshape). Eager or under the caller's ``jax.jit`` alike."""
    axes = explicit_axes(x)
    if not axes:
        return
    spec = jax.typeof(x).sharding.spec
    n = len(axes)
    raise ValueError(
        f"{what} is sharded over Explicit mesh axes {axes} (sharding {spec}, "
        f"type {jax.typeof(x)}), which jaxsal does not support: its programs rely on "
        f"XLA propagating the sharding (Auto axes). Build the mesh with Auto axes, "
        f"jax.make_mesh(shape, names, axis_types=(jax.sharding.AxisType.Auto,) * {n}) or "
        f"jax.sharding.Mesh(devices, names), or move {what} to such a mesh "
        f"(jax.device_put(value, NamedSharding(auto_mesh, spec))), or explain each "
        f"device's rows under jax.shard_map (README: 'Several devices')")


def refuse_explicit_tree(tree: Any, what: str) -> None:
    """:func:`refuse_explicit` for every array leaf of ``tree`` (any argument of a method or
    evaluation besides ``x``: a ``fill``, a ``baseline``, the ``maps`` of an evaluation,
    ``seed_images``, a ``feature_mask``, targets given as an array, a model's ``params``; a
    list, tuple or dict of them per input), naming the argument ``what`` (and the leaf's
    place in ``tree``, ``baselines[1]``, ``params['dense']['kernel']``, where it is not
    the array itself). One check for them all, made where the argument is validated, before
    anything is traced or compiled; eager or under the caller's ``jax.jit`` alike (a tracer's
    type carries its sharding). NumPy values, Python numbers, arrays on one device,
    replicated or on ``Auto``/``Manual`` axes pass; so does an argument that JAX could
    have taken on ``Explicit`` axes, for one rule for every argument (README: 'Several
    devices')."""
    if tree is None or not hasattr(jax, "typeof"):
        return
    if isinstance(tree, jax.Array):
        refuse_explicit(tree, what)
        return
    if isinstance(tree, (np.ndarray, np.generic, int, float, complex, str, bytes)):
        return
    try:
        leaves = jax.tree_util.tree_leaves(tree)
    except Exception:  # noqa: BLE001  (not a tree JAX can read: the argument's check says so)
        return
    # (a model's params on one device, the common case, pass at about 1 us a leaf: only a
    # tracer or an array with a mesh is looked at further, its path found where refused)
    named, tracer = jax.sharding.NamedSharding, jax.core.Tracer
    if not any(isinstance(leaf, tracer) or isinstance(getattr(leaf, "sharding", None), named)
               for leaf in leaves):
        return
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if isinstance(leaf, jax.Array):
            refuse_explicit(leaf, what + jax.tree_util.keystr(path))


def mesh_devices(x: Any) -> int:
    """How many devices the mesh of ``x``'s abstract sharding spans over the axes JAX
    partitions itself (JAX's ``Auto`` axes, and ``Explicit`` ones where they reach it: an
    input sharded over them is refused, :func:`refuse_explicit`; not ``jax.shard_map``'s
    ``Manual`` ones, inside which ``x`` is one device's rows): the devices a sharded batch
    may be split over in the program being traced. 1 without a mesh (one device, or a JAX
    release whose abstract values carry no sharding)."""
    typeof = getattr(jax, "typeof", None)
    leaves = jax.tree_util.tree_leaves(x)
    if typeof is None or not leaves:
        return 1
    try:
        mesh = typeof(leaves[0]).sharding.mesh
        sizes, types = mesh.axis_sizes, mesh.axis_types
    except (AttributeError, TypeError):
        return 1
    manual = getattr(getattr(jax.sharding, "AxisType", None), "Manual", None)
    return math.prod(size for size, kind in zip(sizes, types) if kind != manual)


def device_multiple(nb: int, n: int, d: int) -> int:
    """Inputs per pass for ``n`` inputs in passes of at most ``nb`` on a mesh of ``d``
    devices: ``nb`` where ``d`` divides it (or ``nb < d``), else a multiple of ``d`` below
    it, the one that pads least, then with the fewest passes (``nb`` is a memory bound: never
    more). A pass of a multiple of ``d`` inputs strided through a batch sharded over the
    ``d`` devices is split over them; of another size (least_padding's choice, 6 of 12
    inputs), XLA moved rows between the devices and each did more than its share."""
    if d <= 1 or nb < d or nb % d == 0:
        return nb
    return min(range(d, nb + 1, d), key=lambda k: (math.ceil(n / k) * k, math.ceil(n / k)))


def split_batch(run: Callable, nb: int, per_example: tuple[int, ...] = (1, 2),
                maybe: tuple[int, ...] = (), *, strided: bool = True):
    """``run(params, x, ids, *rest)`` over sub-batches of ``nb`` inputs (a loop, padded by
    repeating the last input), outputs put back in the inputs' order.

    ``strided`` (default): with ``P`` passes, pass ``k`` takes rows ``k, k + P, k + 2P, ...``
    (the batch, padded to ``nb P`` rows, reshaped ``(nb, P, ...)``; each pass's maps are
    written to column ``k`` of ``(nb, P, ...)`` maps, then the rows ``(nb P, ...)`` cut back
    to ``(N, ...)``), so a batch sharded over its inputs in contiguous
    blocks (several devices) stays sharded along each pass's ``nb`` rows where ``nb`` is a
    multiple of the device count: every device runs every pass on its own rows. On a mesh
    (:func:`mesh_devices`), passes hold such a multiple (:func:`device_multiple`, never more
    than ``nb``); on one device they are ``nb`` rows. Passes of contiguous rows
    (``strided=False``: pass ``k`` takes rows ``k nb ... k nb + nb - 1``) each need a few
    devices' rows, and XLA moved rows between the devices (8 inputs on 4 devices in 2 passes
    of 4: each device did half the one-device program's work, not a quarter). On one device
    the passes' number and size are the same either way, and so is each input's map where
    it does not depend on the other inputs of its pass (the only method whose map does,
    ``scorecam``'s ``top_k_mode="union"``, keeps contiguous passes).

    Arguments at ``per_example`` positions
    (``x``, ``ids``; an array or a structure of arrays, as ``x`` of a multi-input model) are
    split; at ``maybe`` positions, each array shaped like its input in ``x`` (an
    ``(N, H, W, C)`` baseline or fill) is split and the others (a scalar, one example's
    shape) are shared, array by array; everything else is shared.

    The number of inputs ``N`` is read from ``x`` when the program is traced, not fixed when
    it is built: compiled programs are cached by their options (``nb`` among them), and one
    program serves every batch size (a batch of 7 after one of 8, both in passes of 4)."""

    def rows(v, n: int) -> bool:
        return getattr(v, "ndim", 0) >= 1 and v.shape[0] == n

    def which(a, x, n: int, strict: bool) -> list[bool] | None:
        """Per leaf of ``a``: split it? (``None``: nothing to split.)"""
        leaves = jax.tree_util.tree_leaves(a)
        if strict:
            return [True] * len(leaves) if leaves and all(rows(v, n) for v in leaves) else None
        xs = jax.tree_util.tree_leaves(x)
        if jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(x):
            flags = [rows(v, n) and v.ndim == r.ndim for v, r in zip(leaves, xs)]
        else:  # one array for every input
            flags = [rows(v, n) and len(xs) == 1 and v.ndim == xs[0].ndim for v in leaves]
        return flags if any(flags) else None

    def wrapped(*args):
        x = args[1]
        n = int(jax.tree_util.tree_leaves(x)[0].shape[0])
        if nb >= n:
            return run(*args)
        # on a mesh of d devices, passes of a multiple of d inputs (fewer, never more)
        size = device_multiple(nb, n, mesh_devices(x)) if strided else nb
        n_chunks = math.ceil(n / size)
        pad = n_chunks * size - n

        def cut(a):
            if pad:
                a = jnp.concatenate([a, jnp.repeat(a[-1:], pad, axis=0)], axis=0)
            if strided:  # (size, P, ...): pass k is column k, rows k, k + P, ...
                return a.reshape((size, n_chunks) + a.shape[1:])
            return a.reshape((n_chunks, size) + a.shape[1:])

        plan = {}  # argument position -> (its treedef, per-leaf split flags)
        for i in sorted(set(per_example) | set(maybe)):
            if i < len(args) and args[i] is not None:
                flags = which(args[i], x, n, i in per_example)
                if flags is not None:
                    plan[i] = (jax.tree_util.tree_structure(args[i]), flags)
        split = {i: [cut(v) for v, f in zip(jax.tree_util.tree_leaves(args[i]), flags) if f]
                 for i, (_, flags) in plan.items()}

        def body(parts):
            a2 = list(args)
            for i, (tree, flags) in plan.items():
                it = iter(parts[i])
                a2[i] = tree.unflatten([next(it) if f else v for v, f in
                                        zip(jax.tree_util.tree_leaves(args[i]), flags)])
            return run(*a2)

        if not strided:
            out = jax.lax.map(body, split)
            return jax.tree_util.tree_map(
                lambda o: o.reshape((n_chunks * size,) + o.shape[2:])[:n], out)

        # pass k reads column k of the (size, P, ...) inputs and writes column k of the
        # (size, P, ...) maps in place: the rows' axis stays leading (split over the devices
        # as the batch is), and no transposed copy of the inputs or the maps is made
        def column(parts, k):
            return {i: [jax.lax.dynamic_index_in_dim(v, k, axis=1, keepdims=False)
                        for v in vs] for i, vs in parts.items()}

        def piece(k, parts):  # pass k's maps (size, ...) as column k, (size, 1, ...)
            out = body(column(parts, k))
            return k, jax.tree_util.tree_map(lambda o: jax.lax.expand_dims(o, (1,)), out)

        out = fill_axis1(piece, n_chunks, n_chunks, split)
        return jax.tree_util.tree_map(
            lambda o: o.reshape((n_chunks * size,) + o.shape[2:])[:n], out)

    return wrapped
