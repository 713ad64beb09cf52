"""``jaxsal evaluate`` refuses maps that do not belong to its inputs and targets
(``jaxsal._src.maps_job.check_maps_job``) where explain's progress file says what they were
made for: the maps of one input of a job over several (``maps.img.npy``), the predicted
classes of another head, and jobs of a jaxsal before the targets were recorded (warned,
and recorded when explain runs again). ``tests/test_cli_options.py`` checks the one-input
jobs' inputs and targets."""

import json
import re

import jax.numpy as jnp
import numpy as np
import pytest

import jaxsal
from batch_helpers import rows_of
from jaxsal import cli
from jaxsal._src import job_signature
from jaxsal._src.maps_job import check_maps_job
from model_import import load_keras

WA = np.array([[1.0, -2.0], [0.5, 3.0], [-1.5, 0.25]], np.float32)  # (3 features, 2 classes)
#: What an older jaxsal's progress file lacked: the record of the targets.
TARGET_FIELDS = ("targets", "target_form", "target_ids", "predictor", "predicted_head")


@pytest.fixture(scope="module")
def mnist_path(fixtures_dir):
    return str(fixtures_dir / "mnist_cnn_tfkeras2.h5")


def _evaluate(capsys, model, inputs, maps, out, *extra):
    capsys.readouterr()
    rc = cli.main(["evaluate", model, str(inputs), str(maps), "--metric", "deletion",
                   "--steps", "1", "--out", str(out), *extra])
    return rc, capsys.readouterr().err


def test_the_maps_of_a_job_over_several_inputs_are_checked_against_their_input(tmp_path):
    """A job over two inputs writes maps.a.npy and maps.b.npy (or one maps.npy) and one
    progress file listing them; evaluating maps.a.npy on other values than input a's (b's
    file, a reordered) or at other targets was never checked (the check looked only for a
    job over one input array)."""
    rng = np.random.default_rng(0)
    xs = {"a": rng.normal(size=(5, 3)).astype(np.float32),
          "b": rng.normal(size=(5, 3)).astype(np.float32)}  # (b as wide as a: not its shape)
    model = jaxsal.FunctionModel(lambda p, x: x["a"] @ p["wa"] + x["b"] @ p["wb"],
                                 {"wa": jnp.asarray(WA), "wb": jnp.asarray(WA)})

    def per_input(model, x, targets=None):  # (a stand-in method: no compilation)
        return {"a": 2 * np.asarray(x["a"]), "b": 3 * np.asarray(x["b"])}

    def one_map(model, x, targets=None):
        return np.asarray(x["a"]) + np.asarray(x["b"])

    jaxsal.explain_to_file(per_input, model, xs, str(tmp_path / "m.npy"), targets=[1, 0],
                           batch_size=2)
    jaxsal.explain_to_file(one_map, model, xs, str(tmp_path / "o.npy"), targets=[1, 0],
                           batch_size=2)
    a_maps, one = str(tmp_path / "m.a.npy"), str(tmp_path / "o.npy")

    def check(maps, x, targets=(1, 0)):
        return check_maps_job(maps, x, "x.npy", list(targets), model, "model.h5")

    assert check(a_maps, xs["a"]) is None
    assert check(str(tmp_path / "m.b.npy"), xs["b"]) is None
    assert check(one, xs["a"]) is None and check(one, xs["b"]) is None  # either input's
    with pytest.raises(ValueError, match=r"of input 'a', and x.npy is not that input: the "
                                         r"values of inputs 0:2 differ"):
        check(a_maps, xs["b"])
    with pytest.raises(ValueError, match="inputs 2:4 differ"):
        check(a_maps, np.concatenate([xs["a"][:2], xs["a"][2:][::-1]]))
    with pytest.raises(ValueError, match=r"job over 2 inputs \('a' \(3,\) float32, 'b' \(3,\) "
                                         r"float32; says its progress file .*, one map of "
                                         r"them all, and x.npy .* is not one of them"):
        check(one, xs["a"][::-1])
    with pytest.raises(ValueError, match=r"is not input 'a'"):  # (another dtype)
        check(a_maps, xs["a"].astype(np.float64))
    with pytest.raises(ValueError, match=r"holds the maps of 5 inputs .*, got 4 inputs"):
        check(a_maps, xs["a"][:4])
    with pytest.raises(ValueError, match=r"made for --targets 1,0 .*, got --targets 0,1"):
        check(a_maps, xs["a"], (0, 1))


def _no_curves(model, x, targets=None, *, maps, metric, check_finite=True, steps=1):
    """A stand-in for ``cli._curve_scores`` (flat curves ``(N, steps + 1)``): nothing
    compiled, for tests of what ``jaxsal evaluate`` does around its curves."""
    return np.zeros((len(x), steps + 1), np.float32)


_no_curves.per_input_options = cli._curve_scores.per_input_options


def test_predicted_classes_are_compared_at_the_evaluation_head(tmp_path, mnist_path,
                                                               mnist_digits, fixtures_dir,
                                                               capsys, monkeypatch):
    """Maps of each input's predicted class at one head, evaluated at another head of the
    same model: the check took logits, saved, softmax and sigmoid for heads of one top class,
    but a sigmoid saturates at 1.0 (float32, logits above about 17) and ties classes the
    logits order (argmax: the first), so the curves followed another class silently; and
    sigmoid_complement on a one-unit model predicts what its other heads do, but was
    refused. The classes each head predicts are now compared on the inputs."""
    x = mnist_digits[:4] * 10  # large logits: several saturate the sigmoid
    np.save(tmp_path / "x.npy", x)
    z = np.asarray(load_keras(mnist_path, head="logits")(x), np.float64)
    sigmoid = (1 / (1 + np.exp(-z))).astype(np.float32)  # (correctly rounded to float32)
    differ = np.flatnonzero(z.argmax(1) != sigmoid.argmax(1))
    assert differ.tolist() == [3]  # (its top logit, 152, ties with 28.5 at 1.0)
    maps = tmp_path / "p.npy"
    assert cli.main(["explain", mnist_path, str(tmp_path / "x.npy"), "--out", str(maps)]) == 0
    out = tmp_path / "d.npy"
    rc, err = _evaluate(capsys, mnist_path, tmp_path / "x.npy", maps, out, "--head", "sigmoid")
    assert rc == 2 and (f"{maps} holds maps of each input's predicted class at --head logits"
                        in err), err
    assert "predicts another class for 1 of the 4 inputs (input 3: class 3 at --head logits" \
        in err and "Evaluate at --head logits" in err
    # the saved softmax: the logits' top class here (checked, and evaluated with flat curves
    # of a stand-in): the weights are hashed once, for the check and the job (were twice)
    hashed = []
    digest = job_signature._params_digest
    monkeypatch.setattr(job_signature, "_params_digest",
                        lambda params: hashed.append(1) or digest(params))
    monkeypatch.setattr(cli, "_curve_scores", _no_curves)
    assert _evaluate(capsys, mnist_path, tmp_path / "x.npy", maps, out) == (0, "")
    assert len(hashed) == 1
    monkeypatch.undo()
    # another model (other weights) predicts other classes: refused at any head
    rc, err = _evaluate(capsys, str(fixtures_dir / "mnist_cnn_keras3.h5"),
                        tmp_path / "x.npy", maps, out, "--head", "logits")
    assert rc == 2 and "at this --output is not that model" in err, err

    # one unit: class 1 where its logit is positive, at every head (sigmoid_complement's
    # unit holds 1 - p, and its class test reads it so)
    binary = str(fixtures_dir / "binary_cnn_keras3.keras")
    xb = np.random.RandomState(0).rand(2, 32, 32, 3).astype(np.float32)
    np.save(tmp_path / "xb.npy", xb)
    comp = tmp_path / "c.npy"
    assert cli.main(["explain", binary, str(tmp_path / "xb.npy"), "--head",
                     "sigmoid_complement", "--out", str(comp)]) == 0
    assert check_maps_job(str(comp), xb, "xb.npy", None, load_keras(binary), "b.keras") is None


def test_a_job_of_a_jaxsal_before_the_target_record_is_warned_and_recorded_again(
        tmp_path, mnist_path, mnist_digits, capsys):
    """A progress file without the targets (written by a jaxsal before they were recorded):
    evaluate cannot check them, which it said nowhere; it now warns, saying how to have them
    checked: running the explain command again records them (it did not: a finished job
    found nothing to write), computing nothing of the same job."""
    np.save(tmp_path / "x.npy", mnist_digits[:2])
    maps, progress = tmp_path / "m.npy", tmp_path / "m.npy.progress.json"
    explain = ["explain", mnist_path, str(tmp_path / "x.npy"), "--targets", "5,3", "--out",
               str(maps)]
    assert cli.main(explain) == 0
    record = json.loads(progress.read_text())
    progress.write_text(json.dumps({k: v for k, v in record.items()
                                    if k not in TARGET_FIELDS}))
    out = tmp_path / "d.npy"
    rc, err = _evaluate(capsys, mnist_path, tmp_path / "x.npy", maps, out, "--targets", "3,5")
    assert rc == 0 and err.startswith(f"jaxsal: warning: the targets of {maps} are not "
                                      f"checked: its progress file {progress} was written by "
                                      "an earlier jaxsal"), err
    assert "run that `jaxsal explain` command again with this jaxsal" in err
    before = np.load(maps)
    assert cli.main(explain) == 0
    assert "chunk" not in capsys.readouterr().out  # (nothing computed)
    np.testing.assert_array_equal(np.load(maps), before)
    assert json.loads(progress.read_text()) == record
    rc, err = _evaluate(capsys, mnist_path, tmp_path / "x.npy", maps, out, "--targets", "3,5")
    assert rc == 2 and "holds maps made for --targets 5,3" in err, err


class _Cam:
    """A callable object whose class says its maps are Eigen-CAM's."""

    class_free = True

    def __call__(self, model, x, targets=None):
        return jaxsal.eigencam(model, x, targets)


def test_wrappers_of_eigencam_are_class_free_as_they_say(tmp_path, mnist, mnist_digits):
    """A job of Eigen-CAM records its maps as made for any class (evaluate scores them at any
    --targets); one of a wrapper, where the wrapper says so: its own ``class_free``, or
    Eigen-CAM's through ``functools.partial`` or ``__wrapped__`` (``functools.wraps``
    copies the attribute; ``functools.update_wrapper(updated=())`` only links it, and was
    taken for a class's maps). A wrapper that says nothing is taken for one of a class's
    maps (it may add a class's own term), and so is one that says ``class_free = False``."""
    import functools

    def plain(model, x, targets=None):
        return jaxsal.eigencam(model, x, targets)

    def declared(model, x, targets=None):
        return jaxsal.eigencam(model, x, targets)

    declared.class_free = True

    # (wrappers that take eigencam's signature, as inspect.signature reads them: **kw)
    @functools.wraps(jaxsal.eigencam)
    def scaled_by_class(model, x, targets=None, **kw):  # (maps that differ by class)
        weights = (1 + np.asarray(targets))[:, :, None, None]
        return jaxsal.eigencam(model, x, targets, **kw) * weights

    scaled_by_class.class_free = False

    def linked(model, x, targets=None, **kw):
        return jaxsal.eigencam(model, x, targets, **kw)

    functools.update_wrapper(linked, jaxsal.eigencam, updated=())
    assert "class_free" not in vars(linked)
    x = mnist_digits[:2]

    def form(method, name):
        path = tmp_path / f"{name}.npy"
        jaxsal.explain_to_file(method, mnist, x, str(path), targets=np.array([[3], [5]]))
        return json.loads((tmp_path / f"{name}.npy.progress.json").read_text())["target_form"]

    assert form(jaxsal.eigencam, "eigencam") == "any"
    assert form(functools.partial(jaxsal.eigencam, upsample=True), "partial") == "any"
    assert form(declared, "declared") == "any"
    assert form(linked, "linked") == "any"
    assert form(_Cam(), "object") == "any"
    assert form(plain, "plain") == "per-input ids"
    assert form(scaled_by_class, "scaled") == "per-input ids"
    # at other targets: the maps of any class, or refused as a class's
    assert check_maps_job(str(tmp_path / "linked.npy"), x, "x.npy", 7, mnist, "m.h5") is None
    with pytest.raises(ValueError, match="made for per-input class ids"):
        check_maps_job(str(tmp_path / "scaled.npy"), x, "x.npy", 7, mnist, "m.h5")


@pytest.mark.parametrize("maps, dtype", [(np.full((2, 4, 4), "a"), "<U1"),
                                         (np.zeros((2, 4, 4), bool), "bool"),
                                         (np.zeros((2, 4, 4), "datetime64[s]"),
                                          "datetime64[s]")])
def test_maps_that_are_not_numbers_are_refused_naming_their_dtype(maps, dtype):
    """Maps of strings (a .npy of text) were refused as "expected maps as an array, got
    ndarray" with JAX's words on why it cannot stage it; every dtype that holds no real
    numbers is now named, with the conversion."""
    model = jaxsal.FunctionModel(lambda p, x: x.reshape(len(x), -1) @ p, jnp.ones((16, 2)))
    x = np.ones((2, 4, 4, 1), np.float32)
    with pytest.raises(TypeError, match=re.escape(
            f"deletion: expected maps of real numbers (one relevance per position: floats, or "
            f"ints; convert them, e.g. np.asarray(maps, np.float32)), got dtype {dtype}")):
        jaxsal.deletion(model, x, maps, 0)


def test_inputs_in_the_other_byte_order_are_the_same_inputs(tmp_path):
    """A job hashes each chunk's inputs as read; a copy of the same values in the other byte
    order (a big-endian .npy, which jobs take to the machine's) was refused as inputs of
    another dtype ('>f4' against 'float32')."""
    model = jaxsal.FunctionModel(lambda p, x: x @ p, jnp.asarray(WA))
    x = np.random.default_rng(1).normal(size=(5, 3)).astype(np.float32)

    def doubling(model, x, targets=None):  # (a stand-in method: no compilation)
        return 2 * np.asarray(x, np.float32)

    for name, made in (("big", x.astype(">f4")), ("little", x)):
        maps = str(tmp_path / f"{name}.npy")
        jaxsal.explain_to_file(doubling, model, made, maps, targets=1, batch_size=2)
        for given in (x, x.astype(">f4")):
            assert check_maps_job(maps, given, "x.npy", 1, model, "m.h5") is None
        with pytest.raises(ValueError, match="the values of inputs 2:4 differ"):
            check_maps_job(maps, np.concatenate([x[:2], x[2:] + 1]).astype(made.dtype),
                           "x.npy", 1, model, "m.h5")
        with pytest.raises(ValueError, match="got 5 float64 inputs"):
            check_maps_job(maps, x.astype(np.float64), "x.npy", 1, model, "m.h5")


def test_the_maps_check_reads_the_progress_file_once(tmp_path, monkeypatch):
    """check_maps_job read the job's progress file twice, once to find the job
    (job_files._owners) and again for its record: now once (the same record both times,
    however the file changes in between)."""
    from jaxsal._src import job_files

    maps = tmp_path / "maps.npy"
    np.save(maps, np.zeros((2, 4, 4), np.float32))
    progress = tmp_path / "maps.npy.progress.json"
    progress.write_text(json.dumps({"done": [0], "chunks": 1, "n": 2, "input_shape": [4, 4, 1],
                                    "input_dtype": "float32"}))
    opened = []

    def counting_open(path, *args, **kwargs):
        opened.append(str(path))
        return open(path, *args, **kwargs)

    monkeypatch.setattr(job_files, "open", counting_open, raising=False)
    with pytest.raises(ValueError, match=r"holds the maps of 2 float32 inputs of shape "
                                         r"\(4, 4, 1\).*got 2 float32 inputs of shape \(5, 4, 1\)"):
        check_maps_job(str(maps), np.zeros((2, 5, 4, 1), np.float32), "x.npy", None, None,
                       "model.keras")
    assert opened == [str(progress)]


def test_an_evaluate_job_keeps_the_curves_of_inputs_whose_scores_are_finite(tmp_path):
    """deletion now raises NonFiniteMaps (naming the inputs) for a NaN clean score, where it
    returned NaN curves; `jaxsal evaluate`'s job (explain_to_file over cli._curve_scores)
    must go on as it did for NaN curves: with keep_going, the chunk of that input is left out
    (named by its index in the job) and the finished chunk's curves are written, equal to
    one call's."""
    w = jnp.asarray(WA)

    def f(p, v):  # NaN where the first feature is above 5
        return jnp.where(v[:, :1] > 5, jnp.nan, v @ p)

    m = jaxsal.FunctionModel(f, w)
    x = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    x[3, 0] = 6.0
    maps = np.random.default_rng(1).normal(size=(4, 3)).astype(np.float32)
    path = tmp_path / "curves.npy"
    with pytest.raises(jaxsal.IncompleteJob, match=r"1 of 2 chunks were left out: chunk 1 "
                                                   r"\(inputs 2:4\): the maps of input 3 ") as e:
        jaxsal.explain_to_file(cli._curve_scores, m, x, path, targets=1, batch_size=2,
                               keep_going=True, maps=maps, metric="deletion", steps=3)
    assert e.value.rows == [3]
    np.testing.assert_allclose(rows_of(path)[:2],
                               jaxsal.deletion(m, x[:2], maps[:2], 1, steps=3).scores,
                               rtol=1e-6)


def test_non_finite_given_maps_are_the_maps_to_fix_not_the_inputs(tmp_path):
    """A NaN in the MAPS file `evaluate` reads (not in its inputs, not from the model): the
    job, with keep_going or without, said to fix the inputs (np.nan_to_num) or the model.
    It now says to fix those rows of the maps; the chunk is left out and the other chunk's
    curves are one call's."""
    m = jaxsal.FunctionModel(lambda p, v: v @ p, jnp.asarray(WA))
    x = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    maps = np.random.default_rng(1).normal(size=(4, 3)).astype(np.float32)
    maps[3, 1] = np.nan
    path = tmp_path / "curves.npy"
    job = dict(targets=1, batch_size=2, maps=maps, metric="deletion", steps=3)
    with pytest.raises(jaxsal.IncompleteJob) as e:
        jaxsal.explain_to_file(cli._curve_scores, m, x, path, keep_going=True, **job)
    said = str(e.value)
    assert "chunk 1 (inputs 2:4): input 3's maps contain NaN or inf" in said, said
    assert "Fix those rows of the maps (np.nan_to_num, or make them again) and run the " \
           "same job again" in said and "Fix those inputs" not in said, said
    assert e.value.rows == [3]
    np.testing.assert_allclose(rows_of(path)[:2],
                               jaxsal.deletion(m, x[:2], maps[:2], 1, steps=3).scores,
                               rtol=1e-6)
    with pytest.raises(ValueError) as e:  # without keep_going: the job stops there
        jaxsal.explain_to_file(cli._curve_scores, m, x, path, **job)
    said = str(e.value)
    assert "input 3's maps contain NaN or infinite values" in said and "fix those rows of " \
        "the maps (np.nan_to_num, or make them again) or leave those inputs out" in said, said
    assert "attribution maps of such inputs" not in said, said
