"""Keras 3 files written by Keras 3.0 to 3.14 (tests/fixtures/keras3_versions, written once by
make_keras3_version_fixtures.py, each Keras on its JAX backend) load without Keras and
reproduce what that Keras computed: outputs, the logits head and named layers, from the
``.keras``, legacy ``.h5`` and ``.weights.h5`` (+ ``to_json()``) files of each version.

The files are stored gzip-compressed (HDF5 files are mostly padding); they are unpacked as
Keras wrote them before loading. A form that a Keras could not write is listed in
``versions.json`` and checked to be absent; the documented exceptions (Keras 3.0's legacy
``.h5`` of nested models, ``.weights.h5`` of Keras < 3.4 with masked merges) are tested as
documented.
"""

import gzip
import json
import pathlib
import re

import jax
import numpy as np
import pytest
from jax.extend.core import jaxpr_as_fun

from import_helpers import rel_err
from model_import import load_keras

KV = pathlib.Path(__file__).parent / "fixtures" / "keras3_versions"
VERSIONS = json.loads((KV / "versions.json").read_text())
TOL = 1e-4
# the mixed model's Keras outputs come from float16/bfloat16 computations (relative rounding
# 2^-11 and 2^-8 per operation); the importer computes in float32 (README: weights and
# computations in float32), so those are compared within 1e-2 and the outputs of the same
# weights in a float32 copy of the model (``y_float32``) within TOL
MIXED_TOL = 1e-2
MODELS = ("zoo", "seq", "nested", "sequential", "mixed")
FORMS = {"zoo": (".keras", ".h5", ".weights.h5"), "seq": (".keras", ".h5", ".weights.h5"),
         "nested": (".keras", ".h5"), "sequential": (".keras", ".h5"),
         "mixed": (".keras", ".h5")}


def _version(tag) -> tuple[int, int]:
    major, minor = VERSIONS[tag]["keras"].split(".")[:2]
    return int(major), int(minor)


def _weights_mask_exception(model, tag, ext) -> bool:
    """README: a ``.weights.h5`` records no Keras version and is read with the mask rules
    of Keras >= 3.4; the sequence model's merges of masked tensors had no mask before 3.4."""
    return model == "seq" and ext == ".weights.h5" and _version(tag) < (3, 4)


def _written():
    """``(model, tag, ext)`` of every stored Keras file."""
    out = []
    for gz in sorted(KV.glob("*.gz")):
        name = gz.name[: -len(".gz")]
        if name.endswith(".json"):
            continue
        base, ext = name.split(".", 1)
        model, tag = base.rsplit("_", 1)
        out.append((model, tag, "." + ext))
    return out


FILES = [f for f in _written() if f[0] in MODELS and not _weights_mask_exception(*f)]


@pytest.fixture(scope="module")
def unpacked(tmp_path_factory):
    return tmp_path_factory.mktemp("keras3_versions")


def _path(directory, model, tag, ext) -> pathlib.Path:
    path = directory / f"{model}_{tag}{ext}"
    if not path.exists():
        path.write_bytes(gzip.decompress((KV / f"{path.name}.gz").read_bytes()))
    return path


def _config(model, tag) -> dict:
    return json.loads(gzip.decompress((KV / f"{model}_{tag}.json.gz").read_bytes()))


def _load(directory, model, tag, ext, config=None):
    path = _path(directory, model, tag, ext)
    if ext == ".weights.h5":
        return load_keras(path, config=config or _config(model, tag))
    return load_keras(path)


_PROGRAMS: dict = {}


def _run(m, x, acts):
    """``(saved-head output, captured layers), logits-head output`` of ``m`` on ``x``, in one
    compiled program. Forms and versions whose computation is the same (equal jaxprs and
    constants) share one XLA compilation, which dominates the time on CPU."""
    lm = m.with_head("logits")

    def f(p, x):
        return m.apply(p, x, capture=acts), lm.apply(p, x)

    closed, shapes = jax.make_jaxpr(f, return_shape=True)(m.params, x)
    key = (str(closed.jaxpr), tuple((np.shape(c), str(np.asarray(c).dtype),
                                     np.asarray(c).tobytes()) for c in closed.consts))
    prog = _PROGRAMS.get(key)
    if prog is None:
        prog = _PROGRAMS[key] = jax.jit(
            jaxpr_as_fun(closed), compiler_options={"xla_backend_optimization_level": 0})
    flat = prog(*jax.tree_util.tree_leaves((m.params, x)))
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(shapes), flat)


def _errors(m, ref, acts):
    (y, got), logits = _run(m, ref["x"], acts)
    errs = {"y": rel_err(y, ref["y"])}
    if "logits" in ref.files:
        errs["logits"] = rel_err(logits, ref["logits"])
    for n in acts:
        errs[n] = rel_err(got[n], ref[f"act__{n}"])
    return errs, y


@pytest.mark.parametrize("model,tag,ext", FILES, ids=[f"{m}_{t}{e}" for m, t, e in FILES])
def test_keras3_version_file_matches_that_keras(unpacked, model, tag, ext):
    ref = np.load(KV / f"{model}_{tag}.expected.npz")
    m = _load(unpacked, model, tag, ext)
    # a .weights.h5 records no version (nor does Keras 3's to_json())
    assert m.keras_version == ("3" if ext == ".weights.h5" else VERSIONS[tag]["keras"])
    acts = [k[len("act__"):] for k in ref.files if k.startswith("act__")]
    errs, y = _errors(m, ref, acts)
    tol = MIXED_TOL if model == "mixed" else TOL
    assert max(errs.values()) <= tol, {k: f"{v:.2g}" for k, v in errs.items() if v > tol}
    if "y_float32" in ref.files:
        assert rel_err(y, ref["y_float32"]) <= TOL
    assert np.std(ref["logits"]) > 0.05  # not a constant output


def test_keras3_versions_cover_every_form():
    # each version has every model in every form, except the files that Keras could not
    # write (recorded in versions.json with Keras's error); at least 5 versions, 3.0 to 3.13+
    written = set(_written())
    assert len(VERSIONS) >= 5
    assert min(map(_version, VERSIONS)) == (3, 0) and max(map(_version, VERSIONS)) >= (3, 13)
    for tag, entry in VERSIONS.items():
        assert entry["keras"].startswith("3.")
        assert {run["backend"] for run in entry["models"].values()} == {"jax"}
        for model in MODELS:
            assert (KV / f"{model}_{tag}.expected.npz").exists()
            for ext in FORMS[model]:
                fname = f"{model}_{tag}{ext}"
                note = entry["notes"].get(fname, "")
                assert ((model, tag, ext) in written) != note.startswith("not written"), fname
        missing_nested = {f"{n}_{tag}.h5" for n in ("nested", "sequential")} & {
            f for f, n in entry["notes"].items() if n.startswith("not written")}
        assert (("nested_one", tag, ".h5") in written) == bool(missing_nested), tag


def test_keras3_versions_fixture_budget():
    # 1.03 MB for 7 versions (0.36 MB of it expected outputs); unpacked, the largest Keras
    # file is 110 kB (seq_k313.keras)
    sizes = {p.name: p.stat().st_size for p in KV.iterdir()}
    assert sum(sizes.values()) < 2e6
    assert max(sizes.values()) < 120e3
    assert max(len(gzip.decompress(p.read_bytes())) for p in KV.glob("*.gz")) < 120e3


# ---------------------------------------------------------------- documented exceptions
NESTED_ONE = [t for m, t, e in _written() if m == "nested_one"]


@pytest.mark.parametrize("tag", NESTED_ONE)
def test_keras3_0_legacy_h5_of_nested_model_loads_by_position(unpacked, tag):
    # README: Keras 3.0/3.1's legacy .h5 stores a nested model's weights flat under its name
    # (bare names: it cannot write one with two weighted layers, see versions.json); Keras
    # loads them by position, whatever the names, and so does the importer
    import h5py

    assert _version(tag) < (3, 3)
    path = _path(unpacked, "nested_one", tag, ".h5")
    with h5py.File(path, "r") as f:
        names = [n.decode() if isinstance(n, bytes) else n
                 for n in f["model_weights"]["base_seq"].attrs["weight_names"]]
    assert names and all("/" not in n for n in names)
    m, ref = load_keras(path), np.load(KV / f"nested_one_{tag}.expected.npz")
    assert rel_err(m(ref["x"]), ref["y"]) <= TOL
    assert rel_err(m.with_head("logits")(ref["x"]), ref["logits"]) <= TOL


SEQ_WEIGHTS_OLD = [t for m, t, e in _written()
                   if m == "seq" and _weights_mask_exception(m, t, e)]


@pytest.mark.parametrize("tag", SEQ_WEIGHTS_OLD)
def test_weights_only_file_of_keras_before_3_4_uses_3_4_mask_rules(unpacked, tag):
    # README: a .weights.h5 records no version and is read with the mask rules of Keras
    # >= 3.4, where merges of masked tensors have a mask; Keras 3.0-3.3 gave them none. The
    # layers before the merges match that Keras, those after them differ; naming the
    # version in the config (keras_version) reads the file as that Keras computed
    ref = np.load(KV / f"seq_{tag}.expected.npz")
    acts = [k[len("act__"):] for k in ref.files if k.startswith("act__")]
    m = _load(unpacked, "seq", tag, ".weights.h5")
    assert m.keras_version == "3"
    errs, _ = _errors(m, ref, acts)
    assert max(errs[n] for n in ("emb", "lstm", "bi", "td", "add_seq")) <= TOL
    assert errs["gap_add"] > 0.05 and errs["gru_cat"] > 0.05 and errs["y"] > TOL
    cfg = {**_config("seq", tag), "keras_version": VERSIONS[tag]["keras"]}
    m = _load(unpacked, "seq", tag, ".weights.h5", config=cfg)
    assert m.keras_version == VERSIONS[tag]["keras"]
    errs, _ = _errors(m, ref, acts)
    assert max(errs.values()) <= TOL, errs


MIXED = [(t, e) for m, t, e in _written() if m == "mixed"]


@pytest.mark.parametrize("tag,ext", MIXED, ids=[f"mixed_{t}{e}" for t, e in MIXED])
def test_mixed_precision_file_computes_in_float32(unpacked, tag, ext):
    # Keras 3.6-3.10 record the autocasts of mixed_float16/bfloat16 layers' inputs as Cast
    # operations; read as written they rounded the inputs (and the gradients flowing back)
    # to float16/bfloat16. The importer computes those layers in float32 (README), so the
    # program has no reduced-precision value, forward or backward.
    m = _load(unpacked, "mixed", tag, ext)
    x = np.load(KV / f"mixed_{tag}.expected.npz")["x"]
    jaxpr = str(jax.make_jaxpr(jax.grad(lambda x: m.apply(m.params, x)[:, 0].sum()))(x))
    # dtypes as jaxprs print them (f16[2,4]); a bare "f16" may be part of an address
    # (custom_vjp functions print as <function ... at 0x7fe0da2f16c0>)
    assert not re.search(r"\bb?f16\[", jaxpr), re.findall(r".{40}\bb?f16\[.{20}", jaxpr)
    assert re.search(r"\bf32\[", jaxpr)  # the pattern matches the printed dtypes
