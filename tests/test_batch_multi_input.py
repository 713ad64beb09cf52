"""Batch jobs over models of several inputs: explain_to_file takes a list, tuple or dict of
(memory-mapped) input arrays, writes a map per input to a file of its own (``maps.img.npy``)
or one map to ``maps.npy``, keeps one progress file and one lock, never records a chunk that
not every file holds, and refuses what it refused for one input, for every file; the
``jaxsal explain`` command takes one INPUTS file per input."""

import json
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsal
import jaxsal._src.batch as batch
from jaxsal._src.job_files import job_files, unfinished
from jaxsal._src.job_inputs import several_input_options
from jaxsal._src.job_lock import job_lock
from jaxsal import cli
from batch_helpers import rows_of, stop_after, stop_after_two

WA = np.array([[1.0, -2.0], [0.5, 3.0], [-1.5, 0.25]], np.float32)  # (3 features, 2 classes)
WB = np.array([[2.0, 1.0], [-0.5, 4.0]], np.float32)


@pytest.fixture(scope="module")
def linear():
    """A plain function of two inputs, ``a`` (N, 3) and ``b`` (N, 2), given as a dict."""
    return jaxsal.FunctionModel(lambda p, x: x["a"] @ p["wa"] + x["b"] @ p["wb"],
                                {"wa": jnp.asarray(WA), "wb": jnp.asarray(WB)})


@pytest.fixture
def xs():
    rng = np.random.default_rng(0)
    return {"a": rng.normal(size=(5, 3)).astype(np.float32),
            "b": rng.normal(size=(5, 2)).astype(np.float32)}


class Doubling:
    """A method stand-in (no compilation): a map per input, ``2 x`` (``3 x`` for the second
    input), in the inputs' container, with a call log."""

    def __init__(self):
        self.calls = []

    def __call__(self, model, x, targets=None):
        self.calls.append(len(x["a"]))
        return {"a": 2 * np.asarray(x["a"]), "b": 3 * np.asarray(x["b"])}


def _expected(xs):
    return {"a": 2 * xs["a"], "b": 3 * xs["b"]}


def _assert_maps(out, want):
    assert set(out) == set(want)
    for k in want:
        np.testing.assert_allclose(out[k], want[k], rtol=1e-6)


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    """A Keras 3 model of an image ``img`` (8, 8, 3) and features ``meta`` (5,), its file,
    and 5 inputs saved as ``img.npy`` and ``meta.npy``."""
    import keras

    from model_import import load_keras

    keras.utils.set_random_seed(1)
    img = keras.Input((8, 8, 3), name="img")
    meta = keras.Input((5,), name="meta")
    h = keras.layers.GlobalAveragePooling2D()(
        keras.layers.Conv2D(4, 3, activation="relu", name="conv")(img))
    z = keras.layers.Concatenate()([h, keras.layers.Dense(4, activation="tanh")(meta)])
    folder = tmp_path_factory.mktemp("two")
    keras.Model([img, meta], keras.layers.Dense(3, name="out")(z)).save(folder / "two.keras")
    rng = np.random.default_rng(2)
    x = [rng.normal(size=(5, 8, 8, 3)).astype(np.float32),
         rng.normal(size=(5, 5)).astype(np.float32)]
    np.save(folder / "img.npy", x[0])
    np.save(folder / "meta.npy", x[1])
    return load_keras(folder / "two.keras").with_head("logits"), x, folder


# ---------------------------------------------------------------------- explain_to_file
def test_a_map_per_input_goes_to_a_file_per_input(tmp_path, two):
    """Memory-mapped inputs in a list: each input's maps in maps.NAME.npy (the model's
    input names), returned as a list of memory maps equal to one call; a dict in another
    order is the same job (it resumes: nothing is computed again) and gives a dict; a
    method of one map (Grad-CAM) writes maps.npy alone."""
    m, x, folder = two
    xm = [np.load(folder / f"{name}.npy", mmap_mode="r") for name in ("img", "meta")]
    path = tmp_path / "maps.npy"
    chunks = []
    out = jaxsal.explain_to_file(jaxsal.saliency, m, xm, path, targets=[0, 2], batch_size=2,
                                 on_chunk=lambda done, total: chunks.append(done))
    assert chunks == [1, 2, 3]  # 5 inputs in chunks of 2, the last padded
    want = jaxsal.saliency(m, x, [0, 2])
    assert isinstance(out, list) and all(isinstance(o, np.memmap) for o in out)
    for o, w in zip(out, want):
        np.testing.assert_allclose(o, w, rtol=1e-5, atol=1e-7)
    assert sorted(os.listdir(tmp_path)) == ["maps.img.npy", "maps.meta.npy",
                                            "maps.npy.progress.json"]
    np.testing.assert_array_equal(np.load(tmp_path / "maps.meta.npy"), out[1])
    prog = json.loads((tmp_path / "maps.npy.progress.json").read_text())
    assert prog["outputs"] == ["maps.img.npy", "maps.meta.npy"]
    assert prog["input_shapes"] == {"img": [8, 8, 3], "meta": [5]}
    chunks.clear()
    again = jaxsal.explain_to_file(jaxsal.saliency, m, {"meta": xm[1], "img": xm[0]}, path,
                                   targets=[0, 2], batch_size=2,
                                   on_chunk=lambda done, total: chunks.append(done))
    assert chunks == [] and set(again) == {"img", "meta"}
    np.testing.assert_array_equal(again["img"], out[0])
    cam = jaxsal.explain_to_file(jaxsal.gradcam, m, tuple(xm), tmp_path / "cam.npy",
                                 targets=1, batch_size=2)
    assert isinstance(cam, np.memmap) and cam.shape == (5, 8, 8)
    np.testing.assert_allclose(cam, jaxsal.gradcam(m, x, 1), rtol=1e-5, atol=1e-7)
    assert not any(f.startswith("cam.") and f.count(".") > 1 and "progress" not in f
                   for f in os.listdir(tmp_path))


def test_an_option_per_input_is_sliced_with_its_input(tmp_path, two):
    """An integrated-gradients baseline given per input (a dict: a number for the image,
    one row per input for the features) is sliced with that input: the file equals one
    call, as SmoothGrad's over chunks does; a baseline with rows neither 1 nor N is refused
    before any chunk."""
    m, x, _ = two
    xd = {"img": x[0], "meta": x[1]}
    base = {"img": 0.25, "meta": x[1][::-1].copy()}
    out = jaxsal.explain_to_file(jaxsal.integrated_gradients, m, xd, tmp_path / "ig.npy",
                                 targets=1, batch_size=2, steps=4, baseline=base)
    want = jaxsal.integrated_gradients(m, xd, 1, steps=4, baseline=base)
    for k in ("img", "meta"):
        np.testing.assert_allclose(out[k], want[k], rtol=1e-5, atol=1e-6)
    # SmoothGrad's noise follows each input's global index: chunks equal one call
    sg = jaxsal.explain_to_file(jaxsal.smoothgrad, m, x, tmp_path / "sg.npy", targets=1,
                                batch_size=2, key=jax.random.key(0), n=2)
    for o, w in zip(sg, jaxsal.smoothgrad(m, x, 1, key=jax.random.key(0), n=2)):
        np.testing.assert_allclose(o, w, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match=r"option baseline\['meta'\] \(for input 'meta'\) has "
                                         r"shape \(3, 5\).*one row per input \(5\)"):
        jaxsal.explain_to_file(jaxsal.integrated_gradients, m, xd, tmp_path / "bad.npy",
                               targets=1, batch_size=2, baseline={"img": 0.0, "meta": x[1][:3]})
    assert not (tmp_path / "bad.npy.progress.json").exists()


def _in_order(maps):
    """The maps of the ``two`` model's inputs, img then meta, from a list, tuple or dict."""
    return [maps["img"], maps["meta"]] if isinstance(maps, dict) else list(maps)


def test_an_option_per_input_by_name_or_by_position(tmp_path, two):
    """An option of one value per input (integrated gradients' baseline) is taken as a dict
    keyed by the model's input names or as a list in their order, whatever container the
    inputs come in (a list, a tuple, a dict): the maps of one call, and the same job either
    way (the other form resumes it, computing nothing)."""
    m, x, _ = two
    mean = x[1].mean(0)
    want = jaxsal.integrated_gradients(m, x, 1, steps=4, baseline=[0.25, mean])
    for inputs in (x, tuple(x), {"meta": x[1], "img": x[0]}):
        path = tmp_path / f"ig_{type(inputs).__name__}.npy"
        out = jaxsal.explain_to_file(jaxsal.integrated_gradients, m, inputs, path, targets=1,
                                     batch_size=2, steps=4, baseline={"meta": mean, "img": 0.25})
        assert type(out) is type(inputs)
        for o, w in zip(_in_order(out), want):
            np.testing.assert_allclose(o, w, rtol=1e-5, atol=1e-6)
        chunks = []
        jaxsal.explain_to_file(jaxsal.integrated_gradients, m, inputs, path, targets=1,
                               batch_size=2, steps=4, baseline=[0.25, mean],
                               on_chunk=lambda done, total: chunks.append(done))
        assert chunks == [], type(inputs)


def test_every_option_of_one_value_per_input_is_taken_by_name(tmp_path, two):
    """Occlusion's patch and fill and SmoothGrad's integrated-gradients baseline (inside
    method_options) by input name, for inputs in a list: the maps of one call."""
    m, x, _ = two
    mean = x[1].mean(0)
    out = jaxsal.explain_to_file(jaxsal.occlusion, m, x, tmp_path / "occ.npy", targets=1,
                                 batch_size=2, patch={"meta": 1, "img": 4},
                                 fill={"img": 0.5, "meta": mean})
    for o, w in zip(out, jaxsal.occlusion(m, x, 1, patch=[4, 1], fill=[0.5, mean])):
        np.testing.assert_allclose(o, w, rtol=1e-5, atol=1e-6)
    key = jax.random.key(0)
    out = jaxsal.explain_to_file(
        jaxsal.smoothgrad, m, x, tmp_path / "sg.npy", targets=1, batch_size=2, key=key, n=2,
        method="integrated_gradients",
        method_options={"steps": 2, "baseline": {"meta": mean, "img": 0.25}})
    want = jaxsal.smoothgrad(m, x, 1, key=key, n=2, method="integrated_gradients",
                             method_options={"steps": 2, "baseline": [0.25, mean]})
    for o, w in zip(out, want):
        np.testing.assert_allclose(o, w, rtol=1e-5, atol=1e-6)


def test_an_option_per_input_of_other_names_or_count_is_refused(tmp_path, two):
    """Names other than the model's inputs (a misspelt one, one missing) or a list of
    another count: a clear error naming the option, what it expected and what it got,
    before the method is called and before any file is written."""
    m, x, _ = two
    calls = []

    def ig(model, x, targets=None, **options):
        calls.append(options)
        return jaxsal.integrated_gradients(model, x, targets, **options)

    ig.several_input_options = ("baseline",)  # (as jaxsal's methods declare theirs)
    named = ("option baseline: expected one value per input, as a dict keyed by the model's "
             "input names (img, meta) or a list in that order; got ")
    cases = [
        ({"img": 0.0, "mta": 0.0}, named + "'mta', not an input of the model; no value for "
                                           "'meta'. Give every input its value under its "
                                           "name (or one number for all of them)"),
        ({"img": 0.0}, named + "no value for 'meta'."),
        ({"img": 0.0, "meta": 0.0, "vec": 0.0, "x": 0.0}, named + "'vec', 'x', not inputs "
                                                                  "of the model."),
        ([0.0, 0.0, 0.0], "option baseline: expected one value per input, a list of 2 in the "
                          "order of the model's inputs (img, meta) or a dict keyed by those "
                          "names; got a list of 3"),
    ]
    for inputs in (x, {"img": x[0], "meta": x[1]}):
        for bad, message in cases:
            with pytest.raises(ValueError, match=re.escape(message)):
                jaxsal.explain_to_file(ig, m, inputs, tmp_path / "maps.npy", targets=1,
                                       batch_size=2, baseline=bad)
    with pytest.raises(ValueError, match=re.escape(
            "option method_options['baseline']: expected one value per input, as a dict "
            "keyed by the model's input names (img, meta) or a list in that order; got "
            "'mta', not an input of the model")):
        jaxsal.explain_to_file(jaxsal.smoothgrad, m, x, tmp_path / "maps.npy", targets=1,
                               key=0, method="integrated_gradients",
                               method_options={"baseline": {"img": 0.0, "mta": 0.0}})
    assert calls == [] and os.listdir(tmp_path) == []


def test_the_options_of_one_value_per_input_are_declared():
    """Every method of the command line that explains several inputs declares the options
    it takes one per input (explain_to_file arranges those by name or position): each of
    its baseline(s), patch, stride and fill, and integrated gradients' baseline inside
    SmoothGrad's method_options; each declared one is an option of the method."""
    import inspect

    for name in cli.METHODS:
        fn = getattr(jaxsal, name)
        if getattr(fn, "one_input", None):
            continue
        params = inspect.signature(fn).parameters
        declared = set(several_input_options(fn))
        want = {"baseline", "baselines", "patch", "stride", "fill"} & set(params)
        if "method_options" in params:
            want.add("method_options.baseline")
        assert declared == want, name
        assert all(d.partition(".")[0] in params for d in declared), name


def test_a_chunk_stopped_between_its_files_is_computed_again(tmp_path, linear, xs,
                                                            monkeypatch):
    """Killed after chunk 1's maps of input a were written but before those of b: chunk 1
    is not recorded (its file of a holds rows of another state than b's), and the next run
    computes chunks 1 and 2 only."""
    path = tmp_path / "maps.npy"
    real, writes = batch._write, []

    def killed_at_the_fourth_write(out, lo, hi, maps):
        writes.append(lo)
        if len(writes) == 4:  # chunk 0: a, b; chunk 1: a, then killed
            raise KeyboardInterrupt
        real(out, lo, hi, maps)

    monkeypatch.setattr(batch, "_write", killed_at_the_fourth_write)
    with pytest.raises(KeyboardInterrupt):
        jaxsal.explain_to_file(Doubling(), linear, xs, path, batch_size=2)
    prog = json.loads((tmp_path / "maps.npy.progress.json").read_text())
    assert prog["done"] == [0] and unfinished(tmp_path / "maps.b.npy")[:2] == (1, 3)
    monkeypatch.setattr(batch, "_write", real)
    m = Doubling()
    out = jaxsal.explain_to_file(m, linear, xs, path, batch_size=2)
    assert m.calls == [2, 2]
    _assert_maps(out, _expected(xs))
    assert unfinished(tmp_path / "maps.a.npy") is None


def test_a_truncated_file_of_one_input_is_refused(tmp_path, linear, xs):
    """The file of one input's maps cut short (an interrupted copy) was lengthened with zeros
    when the job reopened it, and the chunks its progress file lists kept as finished."""
    path = tmp_path / "maps.npy"
    with pytest.raises(KeyboardInterrupt):
        jaxsal.explain_to_file(Doubling(), linear, xs, path, batch_size=2,
                               on_chunk=stop_after_two)
    os.truncate(tmp_path / "maps.b.npy", 200)  # (its header's 192 bytes, then input 0's map)
    m = Doubling()
    with pytest.raises(ValueError, match=r"cannot reopen .*maps\.b\.npy to resume this job "
                                         r"\(.*maps\.b\.npy is shorter than its header says"):
        jaxsal.explain_to_file(m, linear, xs, path, batch_size=2)
    assert m.calls == [] and os.path.getsize(tmp_path / "maps.b.npy") == 200


def test_a_missing_file_of_one_input_says_no_run_resumes_it(tmp_path, linear, xs):
    """One of the files of an unfinished job over several inputs deleted: the job cannot
    resume (it needs every file), yet the refusal to replace the other said "that job's own
    command resumes it", and that command was refused the same way every time. It says the
    file is missing; overwrite=True starts the job over."""
    path = tmp_path / "maps.npy"
    with pytest.raises(KeyboardInterrupt):
        jaxsal.explain_to_file(Doubling(), linear, xs, path, batch_size=2,
                               on_chunk=stop_after_two)
    os.remove(tmp_path / "maps.b.npy")
    m = Doubling()
    with pytest.raises(FileExistsError, match=r"maps\.a\.npy \(where .*\) holds 2 of 3 finished "
                       r"chunks .*, but .*maps\.b\.npy, another file of that job, is missing, so "
                       r"no run can resume it .*pass overwrite=True \(jaxsal: --overwrite\)"):
        jaxsal.explain_to_file(m, linear, xs, path, batch_size=2)
    assert m.calls == []
    out = jaxsal.explain_to_file(m, linear, xs, path, batch_size=2, overwrite=True)
    assert m.calls == [2, 2, 2]
    _assert_maps(out, _expected(xs))


def test_keep_going_over_several_inputs(tmp_path, linear, xs):
    """keep_going with several inputs: a NaN in either input leaves its chunk out of every
    file, and the inputs at fault are named by their index in the job."""
    xs["b"][3, 1] = np.nan
    with pytest.raises(jaxsal.IncompleteJob, match=r"1 of 3 chunks were left out: chunk 1 "
                       r"\(inputs 2:4\): input 3 contains NaN or inf") as e:
        jaxsal.explain_to_file(jaxsal.saliency, linear, xs, tmp_path / "m.npy", targets=1,
                               batch_size=2, keep_going=True)
    assert e.value.rows == [3] and e.value.chunks == [(2, 4)]
    for name, w in (("a", WA), ("b", WB)):
        maps = rows_of(tmp_path / f"m.{name}.npy")
        np.testing.assert_allclose(maps[[0, 1, 4]], np.broadcast_to(abs(w[:, 1]), (3, len(w))))
        assert not maps[2:4].any()  # left out: zeros, unfinished


def test_resume_checks_every_input(tmp_path, linear, xs):
    """The job's signature covers each input (a changed shape or dtype of one starts over),
    and each finished chunk's hash covers the rows of every input: a changed row of the
    second input computes its chunk again; another batch size keeps the finished inputs."""
    path = tmp_path / "maps.npy"
    with pytest.raises(KeyboardInterrupt):
        jaxsal.explain_to_file(Doubling(), linear, xs, path, batch_size=2,
                               on_chunk=stop_after_two)
    changed = {"a": xs["a"], "b": xs["b"].copy()}
    changed["b"][3, 1] += 1.0  # chunk 1 (inputs 2:4)
    m = Doubling()
    out = jaxsal.explain_to_file(m, linear, changed, path, batch_size=2)
    assert m.calls == [2, 2]  # chunks 1 and 2
    _assert_maps(out, _expected(changed))
    m = Doubling()
    jaxsal.explain_to_file(m, linear, changed, path, batch_size=3)  # finished at any size
    assert m.calls == []
    wider = {"a": xs["a"], "b": xs["b"].astype(np.float64)}
    m = Doubling()
    with pytest.raises(FileExistsError, match=r"maps\.a\.npy \(where path .*maps\.npy puts "
                       r"the maps of input 'a'\) is the output of a finished job"):
        jaxsal.explain_to_file(m, linear, wider, path, batch_size=3)  # another job
    jaxsal.explain_to_file(m, linear, wider, path, batch_size=3, overwrite=True)
    assert m.calls == [3, 3]  # started over


def test_every_output_file_is_checked_before_any_chunk(tmp_path, linear, xs, monkeypatch):
    """The files of the inputs' maps are never an input's file, nor a folder; a disk too
    small for the second file fails before any chunk is written and leaves no new file."""
    import errno

    np.save(tmp_path / "maps.b.npy", xs["b"])
    mapped = {"a": xs["a"], "b": np.load(tmp_path / "maps.b.npy", mmap_mode="r")}
    m = Doubling()
    with pytest.raises(ValueError, match=r"maps\.b\.npy \(where path .*maps\.npy puts the "
                                         r"maps of input 'b'\) is the file input 'b' is read "
                                         r"from \(memory-mapped\)"):
        jaxsal.explain_to_file(m, linear, mapped, tmp_path / "maps.npy", batch_size=2)
    with pytest.raises(ValueError, match=r"path .*maps\.b\.npy is the file input 'b'"):
        jaxsal.explain_to_file(m, linear, mapped, tmp_path / "maps.b.npy", batch_size=2)
    os.mkdir(tmp_path / "out.a.npy")
    with pytest.raises(IsADirectoryError, match=r"out\.a\.npy \(where .* input 'a'\) is a "
                                                r"folder"):
        jaxsal.explain_to_file(m, linear, xs, tmp_path / "out.npy", batch_size=2)
    assert m.calls == []
    np.testing.assert_array_equal(np.load(tmp_path / "maps.b.npy"), xs["b"])

    if not hasattr(os, "posix_fallocate"):  # (macOS, Windows: files left sparse)
        return
    real, sizes = os.posix_fallocate, []

    def second_full(fd, offset, length):
        sizes.append(length)
        if len(sizes) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, offset, length)

    monkeypatch.setattr(os, "posix_fallocate", second_full)
    with pytest.raises(OSError, match=r"cannot reserve the ([0-9,]+) bytes of .*new\.b\.npy"
                       ) as e:
        jaxsal.explain_to_file(Doubling(), linear, xs, tmp_path / "new.npy", batch_size=2)
    # its maps, 3 * b, and the .npy header (whole blocks of 64 bytes)
    size = int(re.search(r"reserve the ([0-9,]+) bytes", str(e.value))[1].replace(",", ""))
    assert 0 < size - xs["b"].nbytes <= 4096 and (size - xs["b"].nbytes) % 64 == 0
    assert not (tmp_path / "new.a.npy").exists() and not (tmp_path / "new.b.npy").exists()


def test_only_the_files_the_job_writes_are_checked_before_it_replaces(tmp_path, two, linear,
                                                                       xs):
    """An array of one's own at maps.npy was refused (without overwrite=True) to a job whose
    method writes maps.img.npy and maps.meta.npy only, and one at cam.img.npy to Grad-CAM,
    which writes cam.npy only: the first chunk's traced call says which files a jaxsal
    method writes, and only those are checked (and left alone where it writes the others). A
    method of one's own is never traced: every file it may write is checked."""
    m, x, _ = two
    mine = np.full((5, 3), 7.0, np.float32)
    for f in ("maps.npy", "cam.img.npy", "d.npy"):
        np.save(tmp_path / f, mine)
    out = jaxsal.explain_to_file(jaxsal.saliency, m, x, tmp_path / "maps.npy", targets=1,
                                 batch_size=5)
    for o, w in zip(out, jaxsal.saliency(m, x, 1)):
        np.testing.assert_allclose(o, w, rtol=1e-5, atol=1e-7)
    cam = jaxsal.explain_to_file(jaxsal.gradcam, m, x, tmp_path / "cam.npy", targets=1,
                                 batch_size=5)
    np.testing.assert_allclose(cam, jaxsal.gradcam(m, x, 1), rtol=1e-5, atol=1e-7)
    for f in ("maps.npy", "cam.img.npy"):
        np.testing.assert_array_equal(np.load(tmp_path / f), mine)
    # where the job writes it, maps.npy is still refused (its progress file lists the files
    # of the saliency job only)
    with pytest.raises(FileExistsError, match=re.escape(
            f"{tmp_path / 'maps.npy'} exists and no progress file lists it")):
        jaxsal.explain_to_file(jaxsal.gradcam, m, x, tmp_path / "maps.npy", targets=1,
                               batch_size=5)
    d = Doubling()
    with pytest.raises(FileExistsError, match=re.escape(
            f"{tmp_path / 'd.npy'} exists and no progress file lists it")):
        jaxsal.explain_to_file(d, linear, xs, tmp_path / "d.npy", batch_size=5)
    assert d.calls == []
    np.testing.assert_array_equal(np.load(tmp_path / "maps.npy"), mine)


def test_another_job_on_the_same_path_starts_over(tmp_path, linear, xs):
    """A job of other targets finds the first job's progress file: it starts over, writing
    every chunk; the progress file then lists the new job's files only."""
    path = tmp_path / "maps.npy"
    jaxsal.explain_to_file(Doubling(), linear, xs, path, batch_size=2)
    m = Doubling()
    jaxsal.explain_to_file(m, linear, xs, path, targets=1, batch_size=2, overwrite=True)
    assert m.calls == [2, 2, 2]

    def one_map(model, x, targets=None):
        return np.asarray(x["a"]).sum(-1)

    out = jaxsal.explain_to_file(one_map, linear, xs, path, batch_size=2, overwrite=True)
    np.testing.assert_allclose(out, xs["a"].sum(-1), rtol=1e-6)
    assert job_files(path) == [str(path)]
    assert unfinished(tmp_path / "maps.a.npy") is None  # not this job's any more


def _first_input(model, x, targets=None):
    return np.asarray(x)


def _files(folder):
    """``{name: bytes}`` of every file in ``folder``."""
    return {f: (folder / f).read_bytes() for f in sorted(os.listdir(folder))}


def test_a_file_of_another_job_is_never_overwritten(tmp_path, linear, xs):
    """maps.a.npy written by a job of its own (its path, its progress file): the job over
    several inputs whose maps of input a go there refuses, naming the file, the other job's
    progress file and what to do, before its method is called (the files of its inputs'
    maps follow from its path and the model's input names) and before it writes any file
    (maps.b.npy and its progress file included); so does a method of one map, whose job
    may write there too (as it holds that file's lock). The other way round, a job whose
    path is the file of an input's maps of another job, stopped (to be resumed) or
    finished, refuses before any chunk. Deleted as the errors say, the files are free."""
    single, path = tmp_path / "maps.a.npy", tmp_path / "maps.npy"
    ones = np.ones((5, 3), np.float32)
    jaxsal.explain_to_file(_first_input, linear, ones, single, batch_size=5)
    before = _files(tmp_path)
    m = Doubling()
    with pytest.raises(FileExistsError) as e:
        jaxsal.explain_to_file(m, linear, xs, path, batch_size=2)
    assert str(e.value) == (
        f"{single} (where path {path} puts the maps of input 'a') is the output of another "
        f"job (finished, says its progress file {single}.progress.json); this job would "
        "overwrite its maps. Write to another path (--out), or, if that job's maps are no "
        f"longer needed, delete {single} and {single}.progress.json first")
    assert m.calls == []  # refused before its first chunk
    assert _files(tmp_path) == before
    calls = []

    def one_map(model, x, targets=None):
        calls.append(len(x["a"]))
        return np.asarray(x["a"]).sum(-1)

    with pytest.raises(FileExistsError, match=re.escape(
            f"{single} (where path {path} puts the maps of input 'a') is the output of "
            "another job")):
        jaxsal.explain_to_file(one_map, linear, xs, path, batch_size=2)
    assert calls == [] and _files(tmp_path) == before

    os.remove(single)
    os.remove(f"{single}.progress.json")
    with pytest.raises(KeyboardInterrupt):
        jaxsal.explain_to_file(Doubling(), linear, xs, path, batch_size=2,
                               on_chunk=stop_after(1))
    before = _files(tmp_path)
    calls = []

    def first_input(model, x, targets=None):
        calls.append(len(x))
        return np.asarray(x)

    for stopped in (True, False):
        with pytest.raises(FileExistsError) as e:
            jaxsal.explain_to_file(first_input, linear, ones, single, batch_size=5)
        state = "1 of 3 chunks done" if stopped else "finished"
        assert str(e.value) == (
            f"{single} is the output of another job ({state}, says its progress file "
            f"{path}.progress.json); this job would overwrite its maps. Write to another path "
            "(--out), or, if that job's maps are no longer needed, delete "
            f"{path}.progress.json (and the files it lists) first")
        assert calls == [] and _files(tmp_path) == before
        if stopped:
            m = Doubling()
            out = jaxsal.explain_to_file(m, linear, xs, path, batch_size=2)
            assert m.calls == [2, 2]  # its own files: resumed
            _assert_maps(out, _expected(xs))
            before = _files(tmp_path)

    for f in ("maps.npy.progress.json", "maps.a.npy", "maps.b.npy"):
        os.remove(tmp_path / f)
    out = jaxsal.explain_to_file(first_input, linear, ones, single, batch_size=5)
    np.testing.assert_array_equal(out, ones)


def test_jobs_of_several_inputs_whose_files_collide(tmp_path, xs):
    """A job writing maps.npy for inputs "img.x" and "y" (maps.img.x.npy, maps.y.npy) and
    one writing maps.img.npy for inputs "x" and "z" (maps.img.x.npy, maps.img.z.npy) share
    a file: the second refuses before its first chunk, naming the first's progress file;
    the first's files stay as it wrote them, and it still resumes as finished."""
    model = jaxsal.FunctionModel(lambda p, x: sum(v.sum(-1, keepdims=True) for v in x.values()),
                                 {})
    calls = []

    def doubled(model, x, targets=None):
        calls.append(sorted(x))
        return {k: 2 * np.asarray(v) for k, v in x.items()}

    first = {"img.x": xs["a"], "y": xs["b"]}
    jaxsal.explain_to_file(doubled, model, first, tmp_path / "maps.npy", batch_size=2)
    before = _files(tmp_path)
    calls.clear()
    assert sorted(before) == ["maps.img.x.npy", "maps.npy.progress.json", "maps.y.npy"]
    with pytest.raises(FileExistsError, match=re.escape(
            f"{tmp_path}/maps.img.x.npy (where path {tmp_path}/maps.img.npy puts the maps of "
            f"input 'x') is the output of another job (finished, says its progress file "
            f"{tmp_path}/maps.npy.progress.json)")):
        jaxsal.explain_to_file(doubled, model, {"x": xs["b"][:, :1], "z": xs["a"]},
                               tmp_path / "maps.img.npy", batch_size=2)
    assert calls == [] and _files(tmp_path) == before
    chunks = []
    out = jaxsal.explain_to_file(doubled, model, first, tmp_path / "maps.npy", batch_size=2,
                                 on_chunk=lambda done, total: chunks.append(done))
    assert chunks == []
    np.testing.assert_array_equal(out["img.x"], 2 * xs["a"])


def test_structures_are_refused_before_any_work(tmp_path, two, linear, xs, mnist):
    """A method of one input array (for each of them, as its direct call refuses), one
    array for a model of two, a list of another count, inputs of other counts N, an
    example without its batch axis, a list for a model of one input (of arrays or of its
    examples), and maps that are neither one array nor one per input: clear errors,
    nothing written."""
    m, x, _ = two
    path = tmp_path / "maps.npy"
    one_input = [name for name in cli.METHODS if getattr(getattr(jaxsal, name), "one_input",
                                                         None)]
    assert set(one_input) >= {"scorecam", "guided_gradcam", "shapley_values", "kernel_shap",
                              "lime", "rise"}
    for name in one_input:
        method = getattr(jaxsal, name)
        with pytest.raises(TypeError, match="one input array"):
            method(m, x, 0, **({"key": 0} if name in cli.RANDOM_METHODS else {}))
        with pytest.raises(TypeError, match=rf"{name} explains one input array \(.*\), so it "
                                            r"cannot explain this job's 2 inputs \(img \(N, 8, "
                                            r"8, 3\), meta \(N, 5\)\)"):
            jaxsal.explain_to_file(method, m, x, path)
    with pytest.raises(TypeError, match=r"this model has 2 inputs \(img \(N, 8, 8, 3\), meta "
                                        r"\(N, 5\)\); expected inputs as a list of 2"):
        jaxsal.explain_to_file(jaxsal.saliency, m, x[0], path)
    with pytest.raises(ValueError, match=r"expected a list of 2 arrays in that order"):
        jaxsal.explain_to_file(jaxsal.saliency, m, x[:1], path)
    with pytest.raises(ValueError, match=r"keyed by the model's input names: img"):
        jaxsal.explain_to_file(jaxsal.saliency, m, {"img": x[0], "other": x[1]}, path)
    with pytest.raises(ValueError, match=r"same count N along axis 0, got 'img': 5, "
                                         r"'meta': 4"):
        jaxsal.explain_to_file(jaxsal.saliency, m, [x[0], x[1][:4]], path)
    with pytest.raises(ValueError, match=r"input 'meta' as a batch .* \(one example"):
        jaxsal.explain_to_file(jaxsal.saliency, m, [x[0], x[1][0]], path)
    with pytest.raises(TypeError, match=r"this model takes one input array \(N, \.\.\.\), got a "
                                        r"list of 2 arrays; pass the array itself"):
        jaxsal.explain_to_file(jaxsal.saliency, mnist, [x[0], x[0]], path)
    examples = jaxsal.FunctionModel(lambda p, v: v @ p, WA, input_shape=(3,))
    with pytest.raises(ValueError, match=r"input '0' as a batch .* got shape \(3,\) .*pass "
                                         r"np\.stack\(inputs\)"):
        jaxsal.explain_to_file(jaxsal.saliency, examples, list(xs["a"]), path)
    assert os.listdir(tmp_path) == []

    def three_maps(model, x, targets=None):
        return [x["a"], x["b"], x["a"]]

    with pytest.raises(ValueError, match=r"expected the method to return one map per input "
                                         r"\(a, b\).*got a list of 3"):
        jaxsal.explain_to_file(three_maps, linear, xs, path, batch_size=2)


# ---------------------------------------------------------------------- the command line
def test_the_command_takes_a_file_per_input(tmp_path, two, capsys):
    """`jaxsal explain MODEL IMG.npy META.npy` writes OUT.img.npy and OUT.meta.npy, the maps
    of one Python call; NAME=FILE in another order is the same job (nothing computed
    again); a per-input --option baseline takes @FILE.npy in a JSON list or an object keyed
    by the input names; `summary` lists the inputs in that order."""
    m, x, folder = two
    model, img, meta = (str(folder / f) for f in ("two.keras", "img.npy", "meta.npy"))
    out = tmp_path / "maps.npy"
    argv = ["explain", model, img, meta, "--targets", "0,2", "--batch-size", "2", "--out",
            str(out)]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert f"wrote {tmp_path}/maps.img.npy: (5, 2, 8, 8) float32; {tmp_path}/maps.meta.npy: " \
           "(5, 2, 5) float32" in printed
    for name, want in zip(("img", "meta"), jaxsal.saliency(m, x, [0, 2])):
        np.testing.assert_allclose(np.load(tmp_path / f"maps.{name}.npy"), want, rtol=1e-5,
                                   atol=1e-7)
    assert cli.main(["explain", model, f"meta={meta}", f"img={img}", "--targets", "0,2",
                     "--batch-size", "2", "--out", str(out)]) == 0
    assert "chunk" not in capsys.readouterr().out  # resumed, finished
    np.save(tmp_path / "b.npy", np.full_like(x[0], 0.5))
    assert cli.main(["explain", model, img, meta, "--method", "integrated_gradients",
                     "--option", "steps=4", "--option", f'baseline=["@{tmp_path}/b.npy", 0]',
                     "--targets", "1", "--out", str(tmp_path / "ig.npy")]) == 0
    want = jaxsal.integrated_gradients(m, x, 1, steps=4, baseline=[np.full_like(x[0], 0.5), 0])
    for name, w in zip(("img", "meta"), want):
        np.testing.assert_allclose(np.load(tmp_path / f"ig.{name}.npy"), w, rtol=1e-5,
                                   atol=1e-6)
    # or keyed by the input names, in any order
    assert cli.main(["explain", model, img, meta, "--method", "integrated_gradients",
                     "--option", "steps=4", "--option",
                     f'baseline={{"meta": 0, "img": "@{tmp_path}/b.npy"}}',
                     "--targets", "1", "--out", str(tmp_path / "ig2.npy")]) == 0
    for name in ("img", "meta"):
        np.testing.assert_array_equal(np.load(tmp_path / f"ig2.{name}.npy"),
                                      np.load(tmp_path / f"ig.{name}.npy"))
    assert cli.main(["summary", model]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "Inputs, in the order `jaxsal explain` takes their files: img (N, 8, 8, 3), meta (N, 5)")


def test_the_command_s_options_per_input_by_name(tmp_path, two, capsys):
    """The command passes an --option given per input as a JSON object keyed by the input
    names on to explain_to_file, which arranges it (also SmoothGrad's integrated-gradients
    baseline inside method_options): the maps of one Python call; a name that is not an
    input is refused before any chunk, naming the option, the inputs and the name."""
    m, x, folder = two
    model, img, meta = (str(folder / f) for f in ("two.keras", "img.npy", "meta.npy"))
    mean = x[1].mean(0)
    np.save(tmp_path / "mean.npy", mean)
    argv = ["explain", model, img, meta, "--targets", "1", "--batch-size", "2", "--method",
            "smoothgrad", "--seed", "0", "--option", "n=2", "--option",
            "method=integrated_gradients", "--option",
            f'method_options={{"steps": 2, "baseline": {{"meta": "@{tmp_path}/mean.npy", '
            '"img": 0.25}}']
    assert cli.main([*argv, "--out", str(tmp_path / "sg.npy")]) == 0
    want = jaxsal.smoothgrad(m, x, 1, key=jax.random.key(0), n=2, method="integrated_gradients",
                             method_options={"steps": 2, "baseline": [0.25, mean]})
    for name, w in zip(("img", "meta"), want):
        np.testing.assert_allclose(np.load(tmp_path / f"sg.{name}.npy"), w, rtol=1e-5,
                                   atol=1e-6)
    capsys.readouterr()
    assert cli.main(["explain", model, img, meta, "--method", "integrated_gradients",
                     "--option", 'baseline={"img": 0, "mta": 0}', "--out",
                     str(tmp_path / "ig.npy")]) == 2
    out, err = capsys.readouterr()
    assert err == ("jaxsal: error: option baseline: expected one value per input, as a dict "
                   "keyed by the model's input names (img, meta) or a list in that order; got "
                   "'mta', not an input of the model; no value for 'meta'. Give every input "
                   "its value under its name (or one number for all of them)\n")
    assert "chunk" not in out and not any(f.startswith("ig.") for f in os.listdir(tmp_path))


def test_ctrl_c_names_the_files_of_every_input(tmp_path, two, capsys, monkeypatch):
    """Ctrl-C after the first of three chunks: the line names the files that keep it (not
    --out, which a job of a map per input does not write); a half-finished file of one
    input is refused as another command's input."""
    m, x, folder = two
    out = tmp_path / "maps.npy"
    argv = ["explain", str(folder / "two.keras"), str(folder / "img.npy"),
            str(folder / "meta.npy"), "--batch-size", "2", "--out", str(out)]
    job = cli._job

    def interrupted_job(args):
        model, inputs, progress = job(args)

        def ctrl_c(done, total):
            raise KeyboardInterrupt

        return model, inputs, ctrl_c

    monkeypatch.setattr(cli, "_job", interrupted_job)
    assert cli.main(argv) == 130
    assert capsys.readouterr().err == (
        f"jaxsal explain: interrupted; 1 of 3 chunks are finished and kept in "
        f"{tmp_path}/maps.img.npy, {tmp_path}/maps.meta.npy, and running the same command "
        "again computes the rest\n")
    monkeypatch.setattr(cli, "_job", job)
    assert cli.main(["explain", str(folder / "two.keras"), str(tmp_path / "maps.img.npy"),
                     str(folder / "meta.npy"), "--out", str(tmp_path / "again.npy")]) == 2
    assert "maps.img.npy is the output of an unfinished job (1 of 3 chunks done, says " \
           f"{out}.progress.json)" in capsys.readouterr().err


def test_the_command_refuses_clearly(tmp_path, two, capsys):
    """A count of INPUTS other than the model's inputs (naming them and their shapes), a
    method of one input array (before loading the model), `evaluate` (deletion and
    insertion take one input array), and an --out that is an input: exit status 2."""
    m, x, folder = two
    model, img, meta = (str(folder / f) for f in ("two.keras", "img.npy", "meta.npy"))
    out = str(tmp_path / "maps.npy")
    assert cli.main(["explain", model, img, "--out", out]) == 2
    assert (f"{model} has 2 inputs: img (N, 8, 8, 3), meta (N, 5); got 1 INPUTS file "
            f"({img}). Pass one .npy per input, in that order") in capsys.readouterr().err
    assert cli.main(["explain", "missing.keras", img, meta, "--method", "scorecam",
                     "--out", out]) == 2
    assert "scorecam explains one input array" in capsys.readouterr().err
    # one file for a model of two and a method of one input array: not "pass one .npy per
    # input" (then refused as above), but the method's own refusal
    assert cli.main(["explain", model, img, "--method", "rise", "--seed", "0", "--out",
                     out]) == 2
    assert ("rise explains one input array (its random masks cover one input), so it cannot "
            "explain this job's 2 inputs (img (N, 8, 8, 3), meta (N, 5))"
            in capsys.readouterr().err)
    np.save(tmp_path / "maps.npy", x[0][..., 0])
    assert cli.main(["evaluate", model, img, out, "--metric", "deletion", "--out",
                     str(tmp_path / "d.npy")]) == 2
    assert "`jaxsal evaluate` runs jaxsal.deletion / jaxsal.insertion, which take one input " \
           "array" in capsys.readouterr().err
    assert cli.main(["explain", model, img, meta, "--out", meta]) == 2
    assert f"--out {meta} is the INPUTS {meta} file" in capsys.readouterr().err
    assert cli.main(["explain", model, img, f"meta={meta}", "--out", out]) == 2
    assert "not a mix" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["maps.npy"]


def test_the_command_refuses_the_files_of_another_job(tmp_path, two, capsys):
    """`jaxsal explain` over two inputs while another thread holds the lock of the file of
    input img's maps: exit status 75; once that file is the finished output of another job:
    exit status 2, the file untouched, the error naming it and the other job's progress
    file."""
    import threading

    m, x, folder = two
    img_maps = tmp_path / "maps.img.npy"
    argv = ["explain", str(folder / "two.keras"), str(folder / "img.npy"),
            str(folder / "meta.npy"), "--batch-size", "5", "--out", str(tmp_path / "maps.npy")]
    held, done = threading.Event(), threading.Event()

    def hold():
        with job_lock(img_maps):
            held.set()
            done.wait(60)

    t = threading.Thread(target=hold)
    t.start()
    try:
        assert held.wait(60)
        assert cli.main(argv) == 75
    finally:
        done.set()
        t.join()
    assert f"is writing {img_maps}, where this job (writing {tmp_path}/maps.npy) puts the " \
           f"maps of input 'img' (it holds the lock {img_maps}.lock)" in capsys.readouterr().err
    one = jaxsal.FunctionModel(lambda p, v: v, {})
    jaxsal.explain_to_file(lambda model, v, targets=None: np.asarray(v), one,
                           np.ones((5, 2), np.float32), img_maps)
    before = img_maps.read_bytes()
    assert cli.main(argv) == 2
    assert (f"jaxsal: error: {img_maps} (where path {tmp_path}/maps.npy puts the maps of "
            f"input 'img') is the output of another job (finished, says its progress file "
            f"{img_maps}.progress.json)") in capsys.readouterr().err
    assert img_maps.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["maps.img.npy", "maps.img.npy.progress.json"]


def test_the_readme_s_commands_run_as_written(tmp_path, two, monkeypatch):
    """The README's `jaxsal explain two.keras ...` lines (its batch jobs section) run in the
    fixture's folder and write the files their comments name."""
    import pathlib
    import shlex

    m, x, folder = two
    readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    start = readme.index("```bash", readme.index("A model of several inputs (see"))
    block = readme[start + len("```bash"):readme.index("```", start + 1)]
    lines = [shlex.split(line, comments=True) for line in block.replace("\\\n", " ").splitlines()
             if line.strip()]
    assert len(lines) == 3 and all(words[:3] == ["jaxsal", "explain", "two.keras"]
                                   for words in lines)
    for f in ("two.keras", "img.npy", "meta.npy"):
        os.symlink(folder / f, tmp_path / f)
    np.save(tmp_path / "meta_mean.npy", x[1].mean(0))
    monkeypatch.chdir(tmp_path)
    for words in lines:
        assert cli.main(words[1:]) == 0, shlex.join(words)
    for f, shape in (("maps.img.npy", (5, 3, 8, 8)), ("maps.meta.npy", (5, 3, 5)),
                     ("cam.npy", (5, 8, 8)), ("ig.img.npy", (5, 8, 8)),
                     ("ig.meta.npy", (5, 5))):
        assert np.load(f).shape == shape, f


def test_a_model_mixing_the_batch_is_refused_before_any_chunk(xs, tmp_path):
    """The check that the model keeps the inputs of a batch apart runs over every input's
    chunk shapes: a sum over the batch axis is refused before the method is called."""
    mixing = jaxsal.FunctionModel(
        lambda p, x: x["a"] @ p["wa"] + jnp.sum(x["b"] @ p["wb"], axis=0, keepdims=True),
        {"wa": jnp.asarray(WA), "wb": jnp.asarray(WB)})
    method = Doubling()
    with pytest.raises(ValueError, match="mixes the inputs of the batch: reduce_sum over the "
                                         "batch axis"):
        jaxsal.explain_to_file(method, mixing, xs, tmp_path / "maps.npy", batch_size=2)
    assert method.calls == [] and not (tmp_path / "maps.a.npy").exists()


def test_an_option_per_input_bound_in_a_partial_is_taken_as_a_keyword(tmp_path, two):
    """An option of one value per input bound in a functools.partial of the method (a dict
    keyed by the input names, one row per input for an input) is taken as the same option
    passed to explain_to_file: arranged by name, sliced with its input, checked before any
    chunk, and the same job (the keyword spelling resumes it, computing nothing); a keyword
    of the call overrides the partial's, as functools.partial does."""
    import functools

    m, x, _ = two
    rows = x[1][::-1].copy()
    want = jaxsal.integrated_gradients(m, x, 1, steps=4, baseline=[0.25, rows])
    for inputs in (x, {"meta": x[1], "img": x[0]}):
        path = tmp_path / f"ig_{type(inputs).__name__}.npy"
        bound = functools.partial(jaxsal.integrated_gradients, steps=4,
                                  baseline={"meta": rows, "img": 0.25})
        out = jaxsal.explain_to_file(bound, m, inputs, path, targets=1, batch_size=2)
        for o, w in zip(_in_order(out), want):
            np.testing.assert_allclose(o, w, rtol=1e-5, atol=1e-6)
        chunks = []
        jaxsal.explain_to_file(functools.partial(jaxsal.integrated_gradients, steps=4), m,
                               inputs, path, targets=1, batch_size=2,
                               baseline={"img": 0.25, "meta": rows},
                               on_chunk=lambda done, total: chunks.append(done))
        assert chunks == [], type(inputs)
    zero = jaxsal.explain_to_file(
        functools.partial(jaxsal.integrated_gradients, steps=4, baseline={"meta": rows,
                                                                          "img": 0.25}),
        m, x, tmp_path / "zero.npy", targets=1, batch_size=2, baseline=0.0)
    for o, w in zip(zero, jaxsal.integrated_gradients(m, x, 1, steps=4, baseline=0.0)):
        np.testing.assert_allclose(o, w, rtol=1e-5, atol=1e-6)
    # refused before any chunk, as the keyword spelling is: misspelt names, a count of
    # rows neither 1 nor N
    for bad in ({"img": 0.0, "mta": 0.0}, {"img": 0.0, "meta": x[1][:3]}):
        errors = []
        for method, options in ((functools.partial(jaxsal.integrated_gradients, baseline=bad),
                                 {}), (jaxsal.integrated_gradients, {"baseline": bad})):
            with pytest.raises(ValueError, match=r"^option baseline") as e:
                jaxsal.explain_to_file(method, m, x, tmp_path / "bad.npy", targets=1,
                                       batch_size=2, **options)
            errors.append(str(e.value))
        assert errors[0] == errors[1]
    assert not (tmp_path / "bad.npy.progress.json").exists()


def test_every_option_per_input_of_a_partial_is_arranged(tmp_path, linear, xs):
    """A partial's options of one value per input (also a key of a dict option,
    method_options' baseline) are arranged keyed as the inputs; its other options stay
    bound."""
    import functools

    seen = []

    def method(model, x, targets=None, *, scale=1.0, baseline=0.0, method_options=None):
        seen.append((baseline, method_options))
        return {k: scale * np.asarray(v) for k, v in x.items()}

    method.several_input_options = ("baseline", "method_options.baseline")
    bound = functools.partial(method, scale=2.0, baseline=[1.0, 2.0],
                              method_options={"baseline": {"b": 4.0, "a": 3.0}, "n": 1})
    out = jaxsal.explain_to_file(bound, linear, xs, tmp_path / "maps.npy", batch_size=5)
    assert seen == [({"a": 1.0, "b": 2.0}, {"baseline": {"a": 3.0, "b": 4.0}, "n": 1})]
    _assert_maps(out, {"a": 2 * xs["a"], "b": 2 * xs["b"]})


def test_rows_per_input_of_one_input_bound_in_a_partial_are_sliced(tmp_path, linear, xs):
    """A method of one's own (no several_input_options) with an option given per input, one
    of them (N, ...) rows, bound in a functools.partial: passed whole to every chunk, it was
    broadcast against a chunk's rows. It is taken as the option passed to the job: sliced
    with its input."""
    import functools

    def minus(model, x, targets=None, *, shift):
        return {k: np.asarray(x[k]) - np.asarray(shift[k]) for k in x}

    rows = np.random.default_rng(1).normal(size=xs["a"].shape).astype(np.float32)
    out = jaxsal.explain_to_file(functools.partial(minus, shift={"a": rows, "b": 1.0}),
                                 linear, xs, tmp_path / "maps.npy", batch_size=2)
    _assert_maps(out, {"a": xs["a"] - rows, "b": xs["b"] - 1.0})


def test_an_option_per_input_signs_alike_for_a_list_and_a_dict_of_inputs(tmp_path, two):
    """A list and a dict of the same inputs are the same job; with an option given per input
    (passed to the method keyed as the inputs: a list for a list, a dict for a dict) they
    were signed as two, and the other form's run was refused ("what differs: the
    options"). It resumes, computing nothing, in every form of the option."""
    m, x, _ = two
    seen = []

    def method(model, x, targets=None, *, baseline=0.0):
        seen.append(type(baseline).__name__)
        return x

    method.several_input_options = ("baseline",)
    rows = x[1][::-1].copy()
    by_name = {"meta": x[1], "img": x[0]}
    path = tmp_path / "maps.npy"
    jaxsal.explain_to_file(method, m, x, path, batch_size=5, baseline=[0.5, rows])
    assert seen == ["list"]
    for inputs, baseline in ((by_name, [0.5, rows]), (by_name, {"meta": rows, "img": 0.5}),
                             (x, {"meta": rows, "img": 0.5})):
        chunks = []
        jaxsal.explain_to_file(method, m, inputs, path, batch_size=5, baseline=baseline,
                               on_chunk=lambda done, total: chunks.append(done))
        assert chunks == [] and seen == ["list"], (type(inputs), type(baseline))
