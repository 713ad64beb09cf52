"""The converter registry: Keras class name -> function building a :class:`LayerImpl`.

A converter receives the layer's Keras ``config`` dict and a :class:`ConvertContext` and
returns a :class:`LayerImpl`: a pure ``call(params, *inputs, rt=..., **kwargs)`` plus a
function turning the layer's Keras weight list (in ``layer.weights`` order) into the
layer's params dict. Users extend the registry with :func:`register_layer`.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np

from model_import._layers.relu import relu as _relu
from model_import._version import keras_major

Array = jax.Array

#: the classes of whole models (their configs hold layers): the importer reads them as graphs
#: (``_graph``), never through a converter (``sequence.convert_inner`` refuses one wrapped)
MODEL_CLASSES = ("Sequential", "Functional", "Model")


def functional_subclass(model_cfg: Any) -> bool:
    """Whether ``model_cfg`` (a ``{"class_name", "config"}`` entry) is a subclass of
    ``keras.Model`` built the Functional way, ``MyModel(inputs, outputs)`` (keras.io's custom
    ``train_step`` models): Keras saves it under its own class name with a Functional
    model's config (its ``layers``, ``input_layers`` and ``output_layers``), and reloads it
    as that graph. A subclass that builds its layers in ``__init__`` saves no such config."""
    if not isinstance(model_cfg, Mapping) or model_cfg.get("class_name") in MODEL_CLASSES:
        return False
    cfg = model_cfg.get("config")
    return (isinstance(cfg, Mapping) and isinstance(cfg.get("layers"), list)
            and "input_layers" in cfg and "output_layers" in cfg)


_THIS_CLASS = object()  # ConvertContext.error's default: the layer's own class needs one


def _no_weights(weights: Sequence[np.ndarray]) -> dict:
    return {}


@dataclasses.dataclass(frozen=True)
class Runtime:
    """Choices made when the forward function is built (never stored in params).

    Attributes:
      relu: the function used for every ReLU nonlinearity (``relu``/``relu6`` activations,
        ``ReLU`` layers). Guided backprop and deconvnet swap in a ``custom_vjp`` ReLU here.
      elementwise: ``None``, or ``rule(f, x, *consts)`` applied in place of
        ``f(x, *consts)`` for every elementwise activation: the activation strings (not
        the ones over an axis: ``softmax``, ``log_softmax``, ``glu``, ``sparsemax``), the
        activation layers (``ReLU``, ``LeakyReLU``, ``ELU``, ``ThresholdedReLU``, and
        ``PReLU`` with its slopes as ``consts``), the activation operations of Keras 3
        (``keras.ops.relu``...) and tf.keras (``tf.nn.relu``...), the math operations of
        one tensor that are not piecewise constant (``keras.ops.exp``, ``sqrt``, ``abs``...,
        ``tf.math.exp``...), operations of one tensor with a constant (``x ** 2.0``), and
        the ``sigmoid`` and
        ``sigmoid_complement`` heads of ``KerasModel``. ``f`` is the plain
        function (built on ``relu`` above); ``consts`` are not differentiated. DeepLIFT's
        rescale rule (``jaxsal.deeplift``) is such a rule, a ``custom_vjp`` around ``f``.
        It must compare equal by value (a frozen dataclass): compiled programs are cached
        by runtime.
      layer_rule: ``None``, or ``rule(f, params, *args, name=path)`` applied in place of
        ``f(params, *args)`` for the call of every layer with ``LayerImpl.relevance`` (a
        merge only where it merges tensors; ``f`` is the layer's call on its parameters and
        its tensor arguments, positional ones (a merge's list as one) then keyword ones, its
        constants closed over, before its fused activation; ``path`` the layer's path,
        ``"outer/inner"`` in a nested model), and ``rule(f, params, *args, name=None,
        product=...)`` for the steps inside a layer (:meth:`rule`): how ``jaxsal.lrp`` and
        ``jaxsal.deeplift`` install their rules.
        Compared by value, like ``elementwise``.
      hold: ``None``, or a function applied to the values a layer derives from its inputs
        to scale or mix them (:meth:`held`): attention probabilities (``MultiHeadAttention``,
        ``GroupQueryAttention``, ``Attention``, ``AdditiveAttention``) and normalization
        scales (``LayerNormalization``, ``RMSNormalization``, ``GroupNormalization``,
        ``UnitNormalization``, a ``Dot`` with ``normalize=True``), the gates of recurrent
        cells (LSTM, GRU, ConvLSTM) and the ``use_gate`` gate of ``MultiHeadAttention`` /
        ``GroupQueryAttention``.
        ``jaxsal.lrp`` installs ``jax.lax.stop_gradient``, which makes those layers linear
        in their inputs for the backward pass (Ali et al. 2022's conservative propagation;
        Arras et al. 2017's signal-take-all for the gates). Compared by value, like
        ``elementwise``.
      max_pool: ``None``, or ``rule(p, x)`` applied in place of ``p(x)`` for every max
        pooling (``MaxPooling1D/2D/3D``, ``GlobalMaxPooling1D/2D/3D``,
        ``AdaptiveMaxPooling1D/2D/3D``); ``p`` is the plain
        pooling of one array. Compared by value, like ``elementwise``.
      pairwise: ``None``, or ``rule(f, a, b)`` applied in place of ``f(a, b)`` for every
        elementwise function of two tensors that is neither a sum nor a product (those are
        merges, see ``layer_rule``): the ``Maximum`` and ``Minimum`` layers (pairwise, in
        order, for more inputs), and the Keras 3 operations ``divide``, ``true_divide``,
        ``power``, ``maximum``, ``minimum``, ``fmax``, ``fmin``, ``arctan2``, ``hypot``,
        ``logaddexp``, ``logaddexp2`` and tf.keras's ``tf.math.truediv``/``divide``,
        ``pow``, ``maximum``, ``minimum``, ``squared_difference`` (and ``/``) where both
        operands are tensors (with a constant they are activations, ``elementwise``), and
        the gate of ``MultiHeadAttention`` / ``GroupedQueryAttention`` (``use_gate``:
        ``a * s``, ``s = sigmoid(g)`` through ``elementwise`` and ``hold``) and a
        normalization's values times their (held) inverse scale (``LayerNormalization``,
        ``RMSNormalization``, ``GroupNormalization``, ``UnitNormalization``, a normalized
        ``Dot``'s two inputs; ``f`` is then :func:`scale_values`, marked
        ``ordered_at_zero``).
        ``a`` and ``b`` broadcast against each other. ``jaxsal.deeplift`` installs the
        two-player Shapley rule here. Compared by value, like ``elementwise``.
      softmax: ``None``, or ``rule(z, axis)`` applied in place of ``jax.nn.softmax(z,
        axis=axis)`` for the softmax over an axis of the ``Softmax`` layer (masked too), the
        ``softmax`` activation, the Keras 3 and tf.keras ``softmax`` operations and the
        attention layers' own softmax. ``jaxsal.deeplift`` installs its softmax rule here.
        Compared by value, like ``elementwise``.
      inner_product: ``None``, or ``rule(f, *tensors)`` applied in place of ``f(*tensors)``
        for the products of tensors inside attention layers (``MultiHeadAttention``,
        ``GroupedQueryAttention``, ``Attention``, ``AdditiveAttention``, Keras 3's
        ``dot_product_attention``: their scores and their weighted sums of values) and the
        product of a ``Dot`` layer with ``normalize=True`` (of its normalized inputs).
        ``jaxsal.deeplift`` installs its product rule here; ``jaxsal.lrp`` does not (it
        holds the attention weights instead, ``hold``). Compared by value, like
        ``elementwise``.
    """

    relu: Callable[[Array], Array] = _relu
    elementwise: Callable[[Callable[[Array], Array], Array], Array] | None = None
    max_pool: Callable[[Callable[[Array], Array], Array], Array] | None = None
    layer_rule: Callable[..., Array] | None = None
    hold: Callable[[Array], Array] | None = None
    pairwise: Callable[..., Array] | None = None
    softmax: Callable[..., Array] | None = None
    inner_product: Callable[..., Array] | None = None

    def held(self, v: Array) -> Array:
        """``v``, a value a layer computes from its inputs to weigh them (attention
        probabilities, a normalization's scale), through the ``hold`` rule."""
        return v if self.hold is None else self.hold(v)

    def act(self, f: Callable[..., Array], x: Array, *consts: Array) -> Array:
        """``f(x, *consts)`` for an elementwise activation ``f`` (``consts``: arrays it
        depends on, a PReLU's slopes), through the ``elementwise`` rule."""
        return f(x, *consts) if self.elementwise is None else self.elementwise(f, x, *consts)

    def rule(self, f: Callable[..., Array], params: Any, *args: Array,
             product: bool = False) -> Array:
        """``f(params, *args)`` for an affine step inside a layer (an RNN cell's projections
        and state updates, their gates held by :meth:`held`), through ``layer_rule`` with
        ``name=None``: ``jaxsal.lrp`` gives such steps the epsilon rule. ``f`` must be a
        polynomial of degree at most 2 in ``args`` (affine once the gates among them are
        held: a gate times a value): ``jaxsal.deeplift``'s product rule takes its gradient
        at the midpoint of the input's and the reference's arguments, exact only then.
        ``product=True``: ``f`` is instead the product of its tensors (a ``Bidirectional``
        layer merging its directions by ``mul``), which ``jaxsal.lrp`` gives the uniform
        rule and ``jaxsal.deeplift`` the product rule for as many factors."""
        if self.layer_rule is None:
            return f(params, *args)
        return self.layer_rule(f, params, *args, name=None, product=product)

    def pair(self, f: Callable[[Array, Array], Array], a: Array, b: Array) -> Array:
        """``f(a, b)`` for an elementwise function ``f`` of two tensors (``Maximum``,
        ``a / b``...), through the ``pairwise`` rule."""
        return f(a, b) if self.pairwise is None else self.pairwise(f, a, b)

    def softmax_of(self, z: Array, axis: Any) -> Array:
        """``jax.nn.softmax(z, axis=axis)`` (``axis`` an int or a tuple), through the
        ``softmax`` rule."""
        return jax.nn.softmax(z, axis=axis) if self.softmax is None else self.softmax(z, axis)

    def product_of(self, f: Callable[..., Array], *tensors: Array) -> Array:
        """``f(*tensors)`` for a product of tensors inside an attention layer (an ``einsum``
        of queries and keys, or of weights and values) or a normalized ``Dot``, through the
        ``inner_product`` rule."""
        if self.inner_product is None:
            return f(*tensors)
        return self.inner_product(f, *tensors)

    def pool(self, p: Callable[[Array], Array], x: Array) -> Array:
        """``p(x)`` for a max pooling ``p``, through the ``max_pool`` rule."""
        return p(x) if self.max_pool is None else self.max_pool(p, x)


def scale_values(v: Array, s: Array) -> Array:
    """``v * s``: a normalization's values ``v`` times their (held) inverse scale ``s``, the
    function the normalization layers (and a normalized ``Dot``, tf.keras's
    ``l2_normalize``) give :meth:`Runtime.pair`. Its attribute ``ordered_at_zero`` tells a
    ``pairwise`` rule that where ``v``'s reference is exactly 0 the product's reference is 0
    whatever the scale, and the scale there (``1 / epsilon``: 1e12 for ``UnitNormalization``)
    is the floor's, not the data's: ``jaxsal.deeplift`` then gives the whole difference to
    ``v`` at the input's scale (the ordered split), not half of a product with that floor."""
    return v * s


scale_values.ordered_at_zero = True


def accepts_bias(call: Callable[..., Any], use_bias: bool) -> Callable[..., Any]:
    """``call`` of a kernel layer built without a bias (``use_bias=False``), made to add a
    ``"bias"`` that a params transform puts in its params (``jaxsal.lrp``'s folding of a
    following ``BatchNormalization``); the layer's own params have none, so nothing changes
    for them. The bias is added on the last axis (call it before moving channels)."""
    if use_bias:
        return call

    def with_bias(params, x, *, rt):
        if not isinstance(params, Mapping) or "bias" not in params:
            return call(params, x, rt=rt)
        rest = {k: v for k, v in params.items() if k != "bias"}
        return call(rest, x, rt=rt) + params["bias"]

    return with_bias


@dataclasses.dataclass(frozen=True)
class LayerImpl:
    """A ported layer.

    Attributes:
      call: ``call(params, *args, rt, **kwargs) -> Array`` computing the layer *before*
        its fused activation. ``args``/``kwargs`` mirror the Keras call (a merge layer gets
        one list argument).
      activation: the fused activation (a Keras activation name, or a callable
        ``f(x, rt) -> Array``), applied after ``call``; ``None`` means linear. Keeping it
        apart lets a model swap the output layer's activation for linear (``logits`` head).
      convert_weights: Keras weight list (``layer.weights`` order) -> params dict.
      n_weights: how many weight arrays the layer expects (``None``: any number).
      n_non_trainable: how many of them (the last ones) Keras keeps non-trainable while the
        layer is trainable: ``BatchNormalization``'s moving statistics (2),
        ``Normalization``'s mean, variance and count (3). A legacy ``.h5`` lists the weights
        of a nested model as the trainable ones of all its layers, then the non-trainable
        ones, and Keras loads them by position: where the file's names for a nested model's
        layers are not the architecture's, the importer follows that order with these counts
        (a frozen layer's weights all count as non-trainable).
      subgraph: for a nested model used as a layer, its :class:`~model_import._graph.Graph`.
      data_format: ``channels_last`` or ``channels_first`` for layers that have one.
      mask_call: ``call`` takes a ``mask=`` keyword: the Keras mask of its first argument
        (``None``, a boolean array, or a list of them for a list argument), as Keras passes
        it to layers whose ``call`` has a ``mask`` parameter (RNNs, attention).
      compute_mask: the layer's output mask, as Keras's ``compute_mask``: ``"propagate"``
        (the first argument's mask), ``"drop"`` (none), or ``f(mask, *args, **kwargs)``
        called with the input mask and the call's arguments. ``None`` (a custom converter
        that says nothing) means unknown: a mask reaching such a layer makes the importer
        refuse mask-using layers downstream rather than guess.
      weight_groups: where a layer made of sublayers keeps its arrays in a Keras 3 weights
        file (``.keras``): paths below the layer's own group, in ``layer.weights`` order
        (``("cell",)`` for an RNN; ``("forward_layer/cell", "backward_layer/cell")`` for a
        bidirectional one). ``None``: the layer's own ``vars``. A converter of the user's
        that gives them reads a legacy ``.h5`` in the same order: its arrays regrouped by
        sublayer, the layer's own first (tf.keras's ``layer.weights`` lists every
        sublayer's non-trainable arrays after all trainable ones).
      clears_input_masks: the Keras layer removes the masks of its input tensors when called
        (Keras 3's MultiHeadAttention), so later consumers of those tensors see none.
      head_op: ``"softmax"`` or ``"sigmoid"`` where the whole layer is that function of its
        first argument (an op node: ``keras.ops.softmax(x)``, ``tf.nn.sigmoid(x)``): the
        ``logits`` head passes that argument on instead, as it drops a fused activation.
      param_shapes: ``{param: shape}`` that the converted weights must have (``None``
        entries match any size), from the config (a Dense's ``units``, a convolution's
        ``kernel_size`` and ``filters``): weights of another architecture are refused at
        load time, as Keras refuses them, instead of running a different layer.
      affine: ``call`` is affine in its one input with a constant term that can be nonzero:
        ``call(params, x) = L(x) + b`` with ``L`` linear (a convolution or Dense with a
        bias, BatchNormalization at inference). ``b`` is then ``call(params, 0)``: what
        FullGrad's bias-gradients multiply (:meth:`KerasModel.biases`).
      relevance: a layer that layer-wise relevance propagation gives its rule
        (``Runtime.layer_rule``; Captum's rule layers): every convolution, ``Dense``,
        ``EinsumDense``, ``BatchNormalization``, every pooling (average, max, global,
        adaptive) and the ``Add`` and ``Average`` merges; the attention and normalization
        layers that go through :meth:`Runtime.held`; and the elementwise preprocessing
        layers ``Rescaling`` and ``Normalization``, which pass relevance on unchanged
        unless a rule is asked for them; ``LayerScale``, ``TimeDistributed`` around a rule
        layer, and the merges of ``merge`` below.
      merge: ``"sum"`` or ``"product"`` for a layer or operation that adds (subtracts,
        averages) or multiplies tensors (``Add``, ``Multiply``, ``Dot``, ``x * y``,
        ``tf.matmul``): with ``relevance``, a rule layer only where at least two of a call's
        arguments are tensors (``x + 3.0``, ``x * 0.5`` are elementwise maps of ``x``,
        computed through :meth:`Runtime.act`); LRP gives products the uniform rule.
    """

    call: Callable[..., Any]
    activation: str | Callable | None = None
    convert_weights: Callable[[Sequence[np.ndarray]], dict] = _no_weights
    n_weights: int | None = 0
    n_non_trainable: int = 0
    subgraph: Any = None
    data_format: str | None = None
    mask_call: bool = False
    compute_mask: str | Callable | None = None
    weight_groups: tuple[str, ...] | None = None
    clears_input_masks: bool = False
    head_op: str | None = None
    param_shapes: Mapping[str, tuple] | None = None
    affine: bool = False
    relevance: bool = False
    merge: str | None = None


@dataclasses.dataclass(frozen=True)
class CellImpl:
    """A ported recurrent cell of the user's own (a Keras ``Layer`` with ``state_size`` whose
    ``call(inputs, states)`` returns ``(output, new_states)``), for ``keras.layers.RNN(cell)``
    and ``StackedRNNCells``. Its converter is registered as a layer's is
    (``register_layer("MyCell")`` or ``custom_layers={"MyCell": converter}``) and returns a
    ``CellImpl`` instead of a :class:`LayerImpl`; the ``RNN`` layer around it runs the
    step in the importer's recurrence (one ``lax.scan``, with Keras's masks, ``go_backwards``,
    ``unroll``, ``return_sequences``/``return_state``, ``initial_state`` and
    ``Bidirectional``), as it runs the built-in cells.

    Attributes:
      step: ``step(params, x_t, states, *, rt) -> (y_t, new_states)``: one step of the cell,
        pure. ``x_t`` is the step's input ``(N, features)``, ``states`` a tuple of arrays
        ``(N, *size)`` in ``state_size`` order, ``y_t`` the step's output ``(N, ...)`` and
        ``new_states`` the new states (a tuple or list like ``states``; one array for one
        state). Compute affine steps through ``rt.rule(f, params, *tensors)`` (``f`` a
        polynomial of degree at most 2 in the tensors), elementwise nonlinearities through
        ``rt.act(f, x)`` (ReLUs through ``rt.relu``), and gates through ``rt.held``, so that
        guided backprop, DeepLIFT and LRP reach inside the cell as they reach the built-in
        cells; computed plainly, the values are the same and those methods see one opaque
        function.
      state_size: as Keras's ``cell.state_size``: an int (one state of that many units), or
        a sequence of ints and shapes (tuples), one per state. The initial states are zeros
        of these sizes unless the model gives ``initial_state``.
      convert_weights: the cell's Keras weight list (``cell.weights`` order) -> params dict.
      n_weights: how many weight arrays the cell has (an int: an ``RNN`` of
        ``StackedRNNCells`` splits its arrays among the cells by these counts).
      param_shapes: ``{param: shape}`` the converted weights must have (``None`` entries
        match any size), as :attr:`LayerImpl.param_shapes`.
    """

    step: Callable[..., Any]
    state_size: int | Sequence[int | Sequence[int]]
    convert_weights: Callable[[Sequence[np.ndarray]], dict] = _no_weights
    n_weights: int = 0
    param_shapes: Mapping[str, tuple] | None = None


class BackendWarning(UserWarning):
    """A layer of a Keras 3 file whose result depends on the Keras backend: one the file
    does not record and the caller did not give (see ``load_keras(keras_backend=)``), or
    one whose result the importer reproduces only in part (``argpartition`` on NumPy: the
    same partitions, another order inside them)."""


@dataclasses.dataclass(frozen=True)
class ConvertContext:
    """What a converter may need besides the layer's config.

    Attributes:
      layer_name, class_name: the layer's name and Keras class; :meth:`error` makes the
        ``UnsupportedLayerError`` that names them and the file.
      keras_version: the Keras version that wrote the file (``"2.13"``, ``"3"``...), where
        layer semantics differ (:attr:`keras_major`).
      path: the file's name, for messages.
      build_subgraph: not set by the loader (always ``None``).
      custom_layers: this load's ``custom_layers=`` converters (a converter of a layer that
        holds others, a wrapper or ``Pipeline``, looks them up here before the registry).
      keras_backend: the Keras 3 backend the model ran on where given or recorded, else
        ``None`` (computed as on JAX/NumPy; :attr:`backend`).
    """

    layer_name: str
    class_name: str
    keras_version: str = "3"
    path: str | None = None
    build_subgraph: Callable[[str, dict], Any] | None = None
    #: the ``custom_layers=`` converters of this load: a converter that converts layers it
    #: holds (wrappers, ``Pipeline``) finds them here first, then in the registry
    custom_layers: Mapping[str, Converter] | None = None
    #: the Keras 3 backend the model ran on (``"jax"``, ``"numpy"``, ``"tensorflow"``,
    #: ``"torch"``) where the caller said or the file records it (Keras 3 ``.h5``); ``None``
    #: when unknown (a ``.keras`` archive): computed as Keras's JAX/NumPy backends do
    keras_backend: str | None = None
    #: where the loader gives one, a list to which a converter that converts layers or cells
    #: it holds appends the classes it converted with the user's converters (a wrapper's
    #: layer, an ``RNN``'s cell), and to which ``get_activation`` appends the activation
    #: functions it resolves to ones registered with ``register_activation``: the layer
    #: then computes the user's code, not the file's alone, and jaxsal shares no compiled
    #: program between two loads of its file
    user_converted: list | None = None

    def note_user_converter(self, class_name: str, conv: Any) -> None:
        """Records that ``class_name``, held by this layer, was converted by ``conv``, where
        that is a converter of the user's (see :attr:`user_converted`)."""
        if self.user_converted is not None and conv not in _BUILTIN:
            self.user_converted.append(class_name)

    @property
    def keras_major(self) -> int:
        return keras_major(self.keras_version)

    @property
    def backend(self) -> str | None:
        """Whose computation a layer follows where Keras's backends differ: ``"tensorflow"``
        for Keras 2 files, else :attr:`keras_backend` (``None``: as on JAX/NumPy)."""
        return "tensorflow" if self.keras_major < 3 else self.keras_backend

    def backend_dependent(self, detail: str) -> None:
        """Warns that this layer computes differently on Keras 3's backends (``detail`` says
        how) when the backend is unknown; it is then computed as on JAX/NumPy."""
        if self.keras_major >= 3 and self.keras_backend is None:
            warnings.warn(
                f"layer {self.layer_name!r} ({self.class_name}): {detail}. The file does not "
                "record the backend Keras ran it on (.keras archives and weights files do "
                "not), so it is computed as on Keras's JAX and NumPy backends; pass "
                "load_keras(..., keras_backend='tensorflow' or 'torch') to follow those",
                BackendWarning, stacklevel=2)

    def error(self, detail: str, *, needs: str | None | object = _THIS_CLASS,
              own: bool = False) -> Exception:
        """The ``UnsupportedLayerError`` of this layer; ``needs`` names the class to register
        a converter for: this layer's by default, another where that is not this layer's (a
        layer it holds, its activation), ``None`` where a converter cannot help (the message
        then gives no such advice); ``own``: ``needs`` is a class of the model's own code."""
        from model_import._errors import UnsupportedLayerError

        return UnsupportedLayerError(
            self.layer_name, self.class_name, path=self.path, detail=detail,
            needs=self.class_name if needs is _THIS_CLASS else needs, own=own)


def returned_layer_impl(impl: Any, conv: Callable, ctx: ConvertContext) -> LayerImpl:
    """``impl``, what the converter ``conv`` returned for ``ctx``'s layer, if it is a
    :class:`LayerImpl`; otherwise the ``UnsupportedLayerError`` that blames the converter
    (not the file, which a later ``AttributeError`` on it would)."""
    if isinstance(impl, LayerImpl):
        return impl
    what = "None" if impl is None else (
        "a function" if callable(impl) else f"a {type(impl).__name__}")
    name = getattr(conv, "__qualname__", None) or repr(conv)
    raise ctx.error(
        f"the converter for {ctx.class_name!r} ({name}) returned {what}, not a "
        "model_import.LayerImpl; a layer's converter must return LayerImpl(call=...)"
        + (" (wrap that function: return LayerImpl(call=call, ...))" if callable(impl)
           else "") + ", see model_import.register_layer's docstring", needs=None)


Converter = Callable[[Mapping[str, Any], ConvertContext], LayerImpl]

_REGISTRY: dict[str, Converter] = {}


def register_layer(*class_names: str, override: bool = False) -> Callable[[Converter], Converter]:
    """Register a converter for one or more Keras layer class names.

    A converter is ``converter(config, ctx) -> LayerImpl``::

        from model_import import register_layer, LayerImpl

        @register_layer("MyScale")
        def _my_scale(config, ctx):
            factor = config["factor"]
            return LayerImpl(call=lambda params, x, *, rt: x * factor)

    Layers with weights also give ``convert_weights`` (the Keras weight list, in
    ``layer.weights`` order, to a params dict) and ``n_weights``; ``call`` then reads
    ``params``. A recurrent cell of the user's own (held by ``keras.layers.RNN`` or
    ``StackedRNNCells``) is registered the same way, its converter returning a
    :class:`CellImpl`. Registering a name twice raises unless ``override=True``; so do a call
    without class names (``@register_layer`` without its parentheses) and a converter that
    is not callable (``TypeError``).
    """
    if len(class_names) == 1 and callable(class_names[0]):
        raise TypeError(f"register_layer takes the Keras class names, got the function "
                        f"{getattr(class_names[0], '__name__', class_names[0])!r}: decorate "
                        f"it with @register_layer('ClassName'), not @register_layer")
    if not class_names:
        raise TypeError("register_layer: expected at least one Keras class name, e.g. "
                        "@register_layer('ChannelScale')")
    bad = [n for n in class_names if not isinstance(n, str) or not n]
    if bad:
        raise TypeError(f"register_layer: expected Keras class names as non-empty strings "
                        f"(e.g. 'ChannelScale'), got {bad}")

    def deco(fn: Converter) -> Converter:
        if not callable(fn):
            raise TypeError(f"register_layer: expected a converter function (config, ctx) -> "
                            f"LayerImpl, got {type(fn).__name__}")
        taken = [n for n in class_names if n in _REGISTRY]
        if taken and not override:
            raise ValueError(f"a converter for Keras class {taken[0]!r} is already registered; "
                             "pass override=True to replace it")
        for name in class_names:
            _REGISTRY[name] = fn
        return fn

    return deco


def builtin_converters() -> frozenset:
    """The converter functions registered by ``model_import`` itself (not by users)."""
    return _BUILTIN


_BUILTIN: frozenset = frozenset()


def _freeze_builtins() -> None:
    global _BUILTIN
    _BUILTIN = frozenset(_REGISTRY.values())


def lookup(class_name: str, custom: Mapping[str, Converter] | None = None) -> Converter | None:
    if custom and class_name in custom:
        return custom[class_name]
    return _REGISTRY.get(class_name)


#: The packages of Keras's own classes, as the ``module`` of a config entry names them.
_KERAS_PACKAGES = ("keras", "tf_keras", "keras_hub", "keras_cv", "keras_nlp", "tensorflow")


def own_class(layer_cfg: Mapping[str, Any]) -> bool:
    """Whether a layer entry is a class of the model's own code (a custom layer, registered
    with ``keras.saving.register_keras_serializable`` or not), even where it is named like a
    Keras layer (``Attention``, ``LayerScale``). A Keras 3 or tf.keras 2.13+ config says so
    by the entry's ``module`` (``None`` or the user's module, where Keras's classes name a
    Keras package), Keras 3's legacy ``.h5`` by a ``"package>Class"`` name. Keras resolves
    such an entry only through its registered custom objects, never to its own class of
    that name. Entries without a ``module`` (legacy ``.h5``, Keras 2 JSON) do not tell."""
    if ">" in str(layer_cfg.get("class_name")):
        return True
    if "module" not in layer_cfg:
        return False
    return str(layer_cfg.get("module") or "").split(".")[0] not in _KERAS_PACKAGES


def converter_for(cls: str, registered: str | None, own: bool,
                  custom: Mapping[str, Converter] | None = None
                  ) -> tuple[str, Converter | None]:
    """``(name, converter)`` for a layer entry of class ``cls`` (Keras 3's registered name
    ``registered``, ``"package>Class"``, or ``None``): the load's ``custom`` (its
    ``custom_layers=``) first, then the global registry, each under the registered name
    first, then the class name. A converter given for the load always beats one registered
    globally (``custom_layers={"pkg>Scale": ...}`` over ``register_layer("Scale")``), and
    ``custom`` may name a built-in one too (``{"pkg>MyLSTM": LSTM's}`` for a subclass of
    Keras's ``LSTM``). For a class of the model's own code (``own``, :func:`own_class`) the
    registry gives no built-in converter, which is Keras's class of that name.
    ``converter`` is ``None`` where none applies."""
    names = (registered, cls) if registered and registered != cls else (cls,)
    for name in names:
        if custom and name in custom:  # the caller's own choice for this load
            return name, custom[name]
    for name in names:
        conv = _REGISTRY.get(name)
        if conv is not None and not (own and conv in _BUILTIN):
            return name, conv
    return cls, None


def registered_classes() -> list[str]:
    """Sorted Keras class names that have a converter."""
    return sorted(_REGISTRY)
