"""``jaxsal explain`` options: binary ``--targets all``, ``--seed`` for SmoothGrad,
occlusion's ``--patch``/``--stride``, the Shapley methods' ``--patch`` and ``feature_mask``,
KernelSHAP's and LIME's ``--seed`` and ``--patch``,
generic ``--option``, and jobs that change ``--head`` or ``--output`` between runs on the same
``--out``."""

import argparse
import inspect
import json
import os
import re

import jax
import numpy as np
import pytest

import jaxsal
from batch_helpers import rows_of, stop_after
from jaxsal import cli
from model_import import load_keras


@pytest.fixture(scope="module")
def digits_file(tmp_path_factory, mnist_digits):
    path = tmp_path_factory.mktemp("cli") / "x.npy"
    np.save(path, mnist_digits[:2])
    return str(path)


@pytest.fixture(scope="module")
def mnist_path(fixtures_dir):
    return str(fixtures_dir / "mnist_cnn_tfkeras2.h5")


def _explain(model, inputs, out, *extra):
    return cli.main(["explain", model, inputs, "--out", str(out), *extra])


def test_targets_all_on_a_one_unit_model_is_both_classes(tmp_path, fixtures_dir):
    path = str(fixtures_dir / "binary_cnn_keras3.keras")
    x = np.random.RandomState(0).rand(2, 32, 32, 3).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    assert _explain(path, str(tmp_path / "x.npy"), tmp_path / "m.npy", "--targets", "all") == 0
    maps = np.load(tmp_path / "m.npy")
    direct = jaxsal.saliency(load_keras(path, head="logits"), x, [0, 1])
    assert maps.shape == (2, 2, 32, 32)
    np.testing.assert_allclose(maps, direct, rtol=1e-5, atol=1e-9)


def test_smoothgrad_needs_and_uses_seed(tmp_path, mnist_path, digits_file, mnist_digits,
                                        capsys):
    assert _explain(mnist_path, digits_file, tmp_path / "a.npy", "--method", "smoothgrad") == 2
    assert "--seed" in capsys.readouterr().err
    assert _explain(mnist_path, digits_file, tmp_path / "s.npy", "--method", "smoothgrad",
                    "--seed", "3", "--option", "n=2", "--targets", "1") == 0
    direct = jaxsal.smoothgrad(load_keras(mnist_path, head="logits"), mnist_digits[:2], 1,
                               key=jax.random.key(3), n=2)
    np.testing.assert_allclose(np.load(tmp_path / "s.npy"), direct, rtol=1e-5, atol=1e-8)


def test_faster_scorecam_union_job_is_refused(tmp_path, mnist_path, digits_file, capsys):
    """Score-CAM's top_k with top_k_mode="union" (the default) depends on the batch: the job,
    whose chunks would each pick their own channels, is refused before any work."""
    out = tmp_path / "sc.npy"
    assert _explain(mnist_path, digits_file, out, "--method", "scorecam", "--option", "top_k=4",
                    "--batch-size", "1") == 2
    err = capsys.readouterr().err
    assert 'top_k_mode="union"' in err and 'Pass top_k_mode="per_sample"' in err, err
    assert not list(tmp_path.iterdir())


def test_gradient_shap_baselines_from_a_file(tmp_path, mnist_path, digits_file, mnist_digits,
                                            capsys):
    refs = np.random.RandomState(1).rand(3, 28, 28, 1).astype(np.float32)
    np.save(tmp_path / "refs.npy", refs)
    assert _explain(mnist_path, digits_file, tmp_path / "g.npy", "--method", "gradient_shap",
                    "--seed", "2", "--option", "n=3", "--option",
                    f"baselines=@{tmp_path / 'refs.npy'}", "--targets", "4") == 0
    direct = jaxsal.gradient_shap(load_keras(mnist_path, head="logits"), mnist_digits[:2], 4,
                                  key=jax.random.key(2), n=3, baselines=refs)
    np.testing.assert_allclose(np.load(tmp_path / "g.npy"), direct, rtol=1e-5, atol=1e-8)
    assert _explain(mnist_path, digits_file, tmp_path / "h.npy", "--method", "gradient_shap",
                    "--seed", "2", "--option", f"baselines=@{tmp_path / 'nope.npy'}") == 2
    assert "could not read the array" in capsys.readouterr().err


def test_occlusion_patch_and_stride(tmp_path, mnist_path, digits_file, mnist_digits):
    assert _explain(mnist_path, digits_file, tmp_path / "o.npy", "--method", "occlusion",
                    "--patch", "7", "--stride", "7,7", "--targets", "2") == 0
    direct = jaxsal.occlusion(load_keras(mnist_path, head="logits"), mnist_digits[:2], 2,
                              patch=7, stride=(7, 7))
    np.testing.assert_allclose(np.load(tmp_path / "o.npy"), direct, rtol=1e-5, atol=1e-6)


def test_a_number_typed_either_way_is_one_job_s_option(tmp_path, mnist_path, digits_file,
                                                      capsys):
    """``--option fill=.5`` is the ``fill=0.5`` of a finished job (its rerun was refused as
    another job: the string '.5' differed); a whole number typed with a point where a count
    is expected is told the command-line fix, not Python's ``n=int(...)``."""
    out = tmp_path / "o.npy"
    args = ("--method", "occlusion", "--patch", "14", "--stride", "14")
    assert _explain(mnist_path, digits_file, out, *args, "--option", "fill=0.5") == 0
    capsys.readouterr()
    assert _explain(mnist_path, digits_file, out, *args, "--option", "fill=.5") == 0, \
        capsys.readouterr().err
    assert _explain(mnist_path, digits_file, tmp_path / "s.npy", "--method", "smoothgrad",
                    "--seed", "0", "--option", "n=4.0") == 2
    err = capsys.readouterr().err
    assert "got 4.0" in err and "(--option n=4)" in err and "int(...)" not in err, err


def test_layer_conductance_needs_and_uses_layer(tmp_path, mnist_path, digits_file,
                                                mnist_digits, capsys):
    assert _explain(mnist_path, digits_file, tmp_path / "c.npy", "--method",
                    "layer_conductance", "--targets", "2") != 0
    assert "needs --layer NAME" in capsys.readouterr().err
    assert _explain(mnist_path, digits_file, tmp_path / "c.npy", "--method",
                    "layer_conductance", "--layer", "conv2d_2", "--option", "steps=4",
                    "--targets", "2") == 0
    direct = jaxsal.layer_conductance(load_keras(mnist_path, head="logits"), mnist_digits[:2],
                                      2, layer="conv2d_2", steps=4)
    np.testing.assert_allclose(np.load(tmp_path / "c.npy"), direct, rtol=1e-5, atol=1e-6)


def test_neuron_conductance_needs_a_neuron(tmp_path, mnist_path, digits_file, mnist_digits,
                                           capsys):
    assert _explain(mnist_path, digits_file, tmp_path / "n.npy", "--method",
                    "neuron_conductance", "--layer", "conv2d_2") != 0
    assert "needs --option neuron=INDEX" in capsys.readouterr().err
    assert _explain(mnist_path, digits_file, tmp_path / "n.npy", "--method",
                    "neuron_conductance", "--layer", "conv2d_2", "--option",
                    "neuron=[5, 6, 3]", "--option", "steps=4", "--targets", "2") == 0
    direct = jaxsal.neuron_conductance(load_keras(mnist_path, head="logits"),
                                       mnist_digits[:2], 2, layer="conv2d_2",
                                       neuron=(5, 6, 3), steps=4)
    np.testing.assert_allclose(np.load(tmp_path / "n.npy"), direct, rtol=1e-5,
                               atol=1e-6 * np.abs(direct).max())


def test_shapley_patch_and_feature_mask(tmp_path, mnist_path, digits_file, mnist_digits,
                                        capsys):
    m = load_keras(mnist_path, head="logits")
    assert _explain(mnist_path, digits_file, tmp_path / "v.npy", "--method", "shapley_values",
                    "--patch", "14", "--targets", "2,3") == 0
    np.testing.assert_allclose(np.load(tmp_path / "v.npy"),
                               jaxsal.shapley_values(m, mnist_digits[:2], [2, 3], patch=14),
                               rtol=1e-5, atol=1e-6)
    mask = (np.arange(28)[:, None] // 10) * 3 + np.arange(28)[None] // 10  # 9 groups
    np.save(tmp_path / "mask.npy", mask)
    assert _explain(mnist_path, digits_file, tmp_path / "s.npy", "--method",
                    "shapley_value_sampling", "--seed", "0", "--option", "n=2", "--option",
                    f"feature_mask=@{tmp_path / 'mask.npy'}", "--batch-size", "1") == 0
    direct = np.asarray(jaxsal.shapley_value_sampling(m, mnist_digits[:2], key=jax.random.key(0),
                                                      n=2, feature_mask=mask))
    np.testing.assert_allclose(np.load(tmp_path / "s.npy"), direct, rtol=1e-5,
                               atol=1e-6 * np.abs(direct).max())  # chunks of 1 input: rounding
    assert _explain(mnist_path, digits_file, tmp_path / "t.npy", "--method", "shapley_values",
                    "--stride", "3") == 2
    assert "--stride is an option of --method occlusion" in capsys.readouterr().err


def test_kernel_shap_and_lime(tmp_path, mnist_path, digits_file, mnist_digits, capsys):
    """The surrogate methods take --seed (required), --patch and their own --option's; every
    chunk of one input draws the coalitions of that input's global index."""
    m = load_keras(mnist_path, head="logits")
    for method, opts, kw in (("kernel_shap", ["--option", "n=8"], dict(n=8)),
                             ("lime", ["--option", "n=8", "--option", "alpha=0.5"],
                              dict(n=8, alpha=0.5))):
        out = tmp_path / f"{method}.npy"
        assert _explain(mnist_path, digits_file, out, "--method", method, "--seed", "3",
                        "--patch", "14", "--targets", "1,4", "--batch-size", "1", *opts) == 0
        direct = np.asarray(getattr(jaxsal, method)(m, mnist_digits[:2], [1, 4],
                                                    key=jax.random.key(3), patch=14, **kw))
        np.testing.assert_allclose(np.load(out), direct, rtol=1e-4,
                                   atol=1e-5 * np.abs(direct).max())
        assert _explain(mnist_path, digits_file, tmp_path / "no_seed.npy", "--method",
                        method) == 2
        assert f"--method {method} draws random numbers and needs --seed" in \
            capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--seed", "0"], "--seed is used by the random methods"),
    (["--patch", "4"], "--patch is an option of --method occlusion"),
    (["--option", "oops"], "NAME=VALUE"),
    (["--targets", "cat"], "--targets"),
    # a repeated option names what gave it before: no --steps flag that explain lacks
    (["--method", "integrated_gradients", "--option", "steps=4", "--option", "steps=8"],
     "--option steps=... repeats an option given already (by another --option steps=...)"),
    (["--method", "layer_conductance", "--layer", "conv2d_1", "--option", "layer=conv2d_2"],
     "--option layer=... repeats an option given already (by --layer)"),
])
def test_misplaced_options_are_refused(tmp_path, mnist_path, digits_file, capsys, extra,
                                       message):
    assert _explain(mnist_path, digits_file, tmp_path / "m.npy", *extra) == 2
    assert message in capsys.readouterr().err


def test_changing_head_starts_over(tmp_path, mnist_path, digits_file, mnist_digits, capsys):
    """Another --head is another job: over a finished job's maps it is refused, naming
    --overwrite (it replaced them without a word); with it, it starts over."""
    out = tmp_path / "h.npy"
    assert _explain(mnist_path, digits_file, out, "--targets", "4", "--batch-size", "1",
                    "--head", "logits") == 0
    before = np.load(out)
    capsys.readouterr()
    assert _explain(mnist_path, digits_file, out, "--targets", "4", "--batch-size", "1",
                    "--head", "softmax") == 2
    assert capsys.readouterr().err == (
        f"jaxsal: error: {out} is the output of a finished job (says its progress file "
        f"{out}.progress.json; what differs from this job: the model's head); this job would "
        "replace it. Write to another path (--out), or pass overwrite=True (jaxsal: "
        "--overwrite) to replace it\n")
    np.testing.assert_array_equal(np.load(out), before)
    assert _explain(mnist_path, digits_file, out, "--targets", "4", "--batch-size", "1",
                    "--head", "softmax", "--overwrite") == 0
    direct = jaxsal.saliency(load_keras(mnist_path, head="softmax"), mnist_digits[:2], 4)
    np.testing.assert_allclose(np.load(out), direct, rtol=1e-5, atol=1e-12)


def test_a_file_the_job_may_not_replace_is_refused_before_the_model_loads(
        tmp_path, mnist_path, digits_file, mnist_digits, capsys, monkeypatch):
    """`explain`/`evaluate --out` onto an array no progress file lists, or onto an unfinished
    job's file of the old progress format (format 1, never resumed), was refused only after
    loading the model (a big one: minutes for nothing), in explain_to_file; refused now
    before, as those need no model. Where the job may resume (a progress file of this format
    with a finished chunk), or with --overwrite, the model is loaded (its signature says)."""
    import json

    import model_import

    class Loaded(Exception):
        pass

    stopped = tmp_path / "stopped.npy"  # a job of this jaxsal, stopped after a chunk
    with pytest.raises(KeyboardInterrupt):
        jaxsal.explain_to_file(jaxsal.saliency, load_keras(mnist_path, head="logits"),
                               mnist_digits[:2], stopped, targets=3, batch_size=1,
                               on_chunk=stop_after(1))
    old = tmp_path / "old.npy"  # the same, its progress file as a jaxsal of format 1 wrote it
    old.write_bytes(stopped.read_bytes())
    prog = json.loads((tmp_path / "stopped.npy.progress.json").read_text())
    (tmp_path / "old.npy.progress.json").write_text(json.dumps({**prog, "format": 1}))
    mine = tmp_path / "mine.npy"
    np.save(mine, np.full((2, 28, 28), 7.0, np.float32))

    def load(*a, **k):
        raise Loaded

    monkeypatch.setattr(model_import, "load_keras", load)
    evaluate = ["evaluate", mnist_path, digits_file, digits_file, "--metric", "deletion",
                "--targets", "3", "--steps", "2", "--out"]
    for out, held in ((mine, "exists and no progress file lists it"),
                      (old, "holds 1 of 2 finished chunks of an unfinished job that another "
                            "jaxsal version wrote")):
        before = out.read_bytes()
        for argv in (["explain", mnist_path, digits_file, "--targets", "3", "--out"],
                     evaluate):
            capsys.readouterr()
            assert cli.main([*argv, str(out)]) == 2
            err = capsys.readouterr().err
            assert err.startswith(f"jaxsal: error: {out} {held}"), err
            assert "pass overwrite=True (jaxsal: --overwrite) to replace it" in err
        assert out.read_bytes() == before
        with pytest.raises(Loaded):
            _explain(mnist_path, digits_file, out, "--targets", "3", "--overwrite")
    with pytest.raises(Loaded):  # it may resume: the model's signature says whether
        _explain(mnist_path, digits_file, stopped, "--targets", "3")


def test_changing_output_starts_over(tmp_path):
    keras = pytest.importorskip("keras")
    from keras import layers

    keras.utils.set_random_seed(0)
    inp = keras.Input((6, 6, 1))
    g = layers.GlobalAveragePooling2D()(layers.Conv2D(3, 3, name="conv")(inp))
    model = keras.Model(inp, [layers.Dense(3, name="cls")(g), layers.Dense(3, name="reg")(g)])
    path = str(tmp_path / "multi.keras")
    model.save(path)
    x = np.random.RandomState(0).rand(2, 6, 6, 1).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "o.npy"
    for name in ("cls", "reg"):
        assert _explain(path, str(tmp_path / "x.npy"), out, "--output", name,
                        "--targets", "1", "--overwrite") == 0
    direct = jaxsal.saliency(load_keras(path, head="logits").with_output("reg"), x, 1)
    np.testing.assert_allclose(np.load(out), direct, rtol=1e-5, atol=1e-9)


def test_lrp_rules_by_name_and_folding(tmp_path, mnist_path, digits_file, mnist_digits,
                                       capsys):
    """``--option rule=<zennit composite>`` and ``--option fold_batchnorm=...`` reach
    ``jaxsal.lrp`` (the MNIST model has no batch norm to fold: a wrong value shows it)."""
    assert _explain(mnist_path, digits_file, tmp_path / "f.npy", "--method", "lrp",
                    "--option", "fold_batchnorm=1") != 0
    assert "fold_batchnorm: expected True or False, got 1" in capsys.readouterr().err
    m = load_keras(mnist_path, head="logits")
    assert _explain(mnist_path, digits_file, tmp_path / "l.npy", "--method", "lrp",
                    "--targets", "1,7", "--option", "rule=epsilon_plus_flat", "--option",
                    "epsilon=0.01", "--option", "fold_batchnorm=true") == 0
    direct = np.asarray(jaxsal.lrp(m, mnist_digits[:2], [1, 7], epsilon=0.01, rule=(
        jaxsal.lrp_composite(first=jaxsal.lrp_flat(), conv=jaxsal.lrp_zplus(),
                             dense=jaxsal.lrp_epsilon(0.01)))))
    np.testing.assert_allclose(np.load(tmp_path / "l.npy"), direct, rtol=1e-5,
                               atol=1e-6 * np.abs(direct).max())


def test_evaluate_writes_the_curves_and_areas_of_saved_maps(tmp_path, mnist_path, digits_file,
                                                            mnist_digits, capsys):
    """`jaxsal evaluate` on the maps `jaxsal explain` wrote: the curves equal one
    jaxsal.deletion / jaxsal.insertion call over all inputs (chunks of 1 input), and the
    areas are written beside them."""
    maps_path = tmp_path / "ig.npy"
    assert _explain(mnist_path, digits_file, maps_path, "--method", "integrated_gradients",
                    "--targets", "1,4", "--option", "steps=8") == 0
    m = load_keras(mnist_path)  # the saved softmax head, evaluate's default
    maps = np.load(maps_path)
    blurred = np.asarray(jax.vmap(lambda im: jaxsal.gaussian_blur(im, 2.0))(mnist_digits[:2]))
    np.save(tmp_path / "blur.npy", blurred)
    for metric, extra, kw in (("deletion", [], {}),
                              ("insertion", ["--option", f"baseline=@{tmp_path / 'blur.npy'}"],
                               dict(baseline=blurred))):
        out = tmp_path / f"{metric}.npy"
        assert cli.main(["evaluate", mnist_path, digits_file, str(maps_path), "--metric", metric,
                         "--targets", "1,4", "--steps", "14", "--batch-size", "1", "--out",
                         str(out), *extra]) == 0
        direct = getattr(jaxsal, metric)(m, mnist_digits[:2], maps, [1, 4], steps=14, **kw)
        np.testing.assert_allclose(np.load(out), direct.scores, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.load(tmp_path / f"{metric}.auc.npy"), direct.auc,
                                   rtol=1e-5, atol=1e-6)
        assert f"mean {float(direct.auc.mean()):.4f}" in capsys.readouterr().out
    # 16 cells of patch=9 in 6 steps: the areas over the cells' fractions, as the API's
    out = tmp_path / "cells.npy"
    assert cli.main(["evaluate", mnist_path, digits_file, str(maps_path), "--metric",
                     "deletion", "--targets", "1,4", "--steps", "6", "--option", "patch=9",
                     "--out", str(out)]) == 0
    direct = jaxsal.deletion(m, mnist_digits[:2], maps, [1, 4], steps=6, patch=9)
    assert not np.allclose(direct.fractions, np.arange(7) / 6)
    np.testing.assert_allclose(np.load(tmp_path / "cells.auc.npy"), direct.auc, rtol=1e-5,
                               atol=1e-6)
    np.save(tmp_path / "short.npy", maps[:1])
    assert cli.main(["evaluate", mnist_path, digits_file, str(tmp_path / "short.npy"),
                     "--metric", "deletion", "--out", str(tmp_path / "s.npy")]) == 2
    assert "one row per input" in capsys.readouterr().err


def test_evaluate_refuses_maps_of_other_targets_or_inputs(tmp_path, mnist_path, digits_file,
                                                          capsys):
    """Maps an explain job wrote (its progress file beside them) are evaluated only at the
    targets and inputs they were made for: the same shapes in another order (--targets 3,5
    for maps of 5,3, the inputs reversed) gave curves of other classes or inputs, silently.
    Another model or head is allowed for given classes; for the predicted class only one
    that predicts the same. Maps with no progress file are evaluated as before."""
    x = np.load(digits_file)
    assert x.shape[0] == 2 and not np.array_equal(x[0], x[1])
    np.save(tmp_path / "reversed.npy", x[::-1])
    maps = tmp_path / "m.npy"
    assert _explain(mnist_path, digits_file, maps, "--targets", "5,3") == 0

    def evaluate(maps_path, *extra, inputs=digits_file):
        capsys.readouterr()
        # (--overwrite: each evaluation that runs is another job at d.npy)
        rc = cli.main(["evaluate", mnist_path, inputs, str(maps_path), "--metric", "deletion",
                       "--steps", "2", "--out", str(tmp_path / "d.npy"), "--overwrite",
                       *extra])
        return rc, capsys.readouterr().err

    made = f"{maps} holds maps made for --targets 5,3 (says its progress file {maps}.progress"
    rc, err = evaluate(maps, "--targets", "3,5")
    assert rc == 2 and made in err and "got --targets 3,5" in err, err
    assert "Pass --targets 5,3" in err
    rc, err = evaluate(maps)
    assert rc == 2 and made in err and "got no --targets" in err
    rc, err = evaluate(maps, "--targets", "5,3", inputs=str(tmp_path / "reversed.npy"))
    assert rc == 2 and f"{maps} holds the maps of other inputs than" in err, err
    assert "the values of inputs 0:2 differ" in err
    np.save(tmp_path / "x64.npy", x.astype(np.float64))  # the same values, as other bytes
    rc, err = evaluate(maps, "--targets", "5,3", inputs=str(tmp_path / "x64.npy"))
    assert rc == 2 and "holds the maps of 2 float32 inputs of shape (28, 28, 1)" in err, err
    assert "got 2 float64 inputs" in err
    assert not (tmp_path / "d.npy").exists()
    # the same classes on another head (evaluate's saved softmax, explain's logits): allowed
    assert evaluate(maps, "--targets", "5,3", "--head", "logits") == (0, "")
    assert evaluate(maps, "--targets", "5,3") == (0, "")
    # no progress file (maps of one's own code): evaluated as before, at whatever targets
    np.save(tmp_path / "copy.npy", np.load(maps))
    assert evaluate(tmp_path / "copy.npy", "--targets", "3,5") == (0, "")

    # per-input labels: the same file's ids, not others of the same shape
    labels, swapped = tmp_path / "labels.npy", tmp_path / "swapped.npy"
    np.save(labels, np.array([7, 2]))
    np.save(swapped, np.array([2, 7]))
    by_label = tmp_path / "l.npy"
    assert _explain(mnist_path, digits_file, by_label, "--targets", f"@{labels}") == 0
    rc, err = evaluate(by_label, "--targets", f"@{swapped}")
    assert rc == 2 and "made for per-input class ids (--targets @FILE.npy)" in err, err
    assert evaluate(by_label, "--targets", f"@{labels}") == (0, "")

    # each input's predicted class: evaluated at the predicted class of the same model (any
    # head of the same top class), never at given ids or another model's predictions
    predicted = tmp_path / "p.npy"
    assert _explain(mnist_path, digits_file, predicted) == 0
    rc, err = evaluate(predicted, "--targets", "3")
    assert rc == 2 and "made for each input's predicted class, no --targets," in err, err
    assert "Leave --targets out" in err
    rc, err = evaluate(predicted, "--head", "sigmoid_complement")
    assert rc == 2 and "at --head sigmoid_complement" in err and "predicts another class" in err
    assert evaluate(predicted) == (0, "")
    # Eigen-CAM's maps are the same for every class: made without targets, evaluated at any
    eigen = tmp_path / "e.npy"
    assert _explain(mnist_path, digits_file, eigen, "--method", "eigencam") == 0
    assert evaluate(eigen, "--targets", "3") == (0, "")
    # a score function (explain_to_file in Python): no --targets gives it
    scored = tmp_path / "s.npy"
    jaxsal.explain_to_file(jaxsal.saliency, load_keras(mnist_path, head="logits"), x, scored,
                           targets=jaxsal.class_score(3))
    rc, err = evaluate(scored, "--targets", "3")
    assert rc == 2 and "made for score functions (targets= of explain_to_file" in err, err
    assert "Evaluate them in Python" in err


@pytest.mark.parametrize("made,given", [("3,", "3"), ("3", "3,")])
def test_evaluate_names_a_class_axis_of_one_as_such(tmp_path, mnist_path, digits_file,
                                                    capsys, made, given):
    """Maps of --targets 3, evaluated with --targets 3 (or the reverse) are of the same
    class: only the class axis of one differs, which the refusal says ("other classes" was
    wrong), with the --targets that evaluates them."""
    maps = tmp_path / "m.npy"
    assert _explain(mnist_path, digits_file, maps, "--targets", made) == 0
    axis = np.load(maps).shape[1] == 1  # (N, 1, H, W) for a list of one, else (N, H, W)
    assert axis == made.endswith(",")
    capsys.readouterr()
    assert cli.main(["evaluate", mnist_path, digits_file, str(maps), "--metric", "deletion",
                     "--steps", "2", "--targets", given, "--out", str(tmp_path / "d.npy")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "other classes" not in err and f"Pass --targets {made} " in err, err
    assert ("a class axis of 1" if axis else "no class axis") in err, err
    assert not (tmp_path / "d.npy").exists()


@pytest.mark.parametrize("seed", ["99999999999999999999", "4294967296", "-1", "seven"])
def test_seed_out_of_range_is_a_usage_error(tmp_path, mnist_path, digits_file, capsys, seed):
    """Only 0 <= SEED < 2**32 gives one key per seed, the same with and without x64 (JAX's
    default 32-bit mode keeps a seed's low 32 bits: 2**32 would repeat seed 0's numbers, -1
    those of 2**32 - 1; from 2**63 jax.random.key overflows)."""
    with pytest.raises(SystemExit) as e:
        _explain(mnist_path, digits_file, tmp_path / "s.npy", "--method", "smoothgrad",
                 "--seed", seed)
    assert e.value.code == 2
    assert (f"argument --seed: expected an int 0 <= SEED < 2**32 = 4294967296 (in JAX's "
            f"default 32-bit mode jax.random.key keeps only a seed's low 32 bits), got "
            f"{seed!r}") in capsys.readouterr().err
    assert cli._seed(str(2**32 - 1)) == 2**32 - 1 and cli._seed("0") == 0


def test_evaluate_takes_steps_and_order_by_flag_or_option(tmp_path, mnist_path, digits_file,
                                                          capsys):
    """As `explain`'s --seed/--patch/--stride: --steps and --order or their --option, not
    both; maps and metric only by their argument and flag."""
    maps = str(tmp_path / "maps.npy")
    np.save(maps, np.random.RandomState(0).rand(2, 28, 28).astype(np.float32))

    def evaluate(*extra, out="d.npy"):
        return cli.main(["evaluate", mnist_path, digits_file, maps, "--metric", "deletion",
                         "--out", str(tmp_path / out), *extra])

    assert evaluate("--steps", "5", "--order", "least", out="flags.npy") == 0
    assert "(higher is better)" in capsys.readouterr().out
    assert evaluate("--option", "steps=5", "--option", "order=least", out="options.npy") == 0
    assert "(higher is better)" in capsys.readouterr().out
    by_flags, by_options = np.load(tmp_path / "flags.npy"), np.load(tmp_path / "options.npy")
    assert by_flags.shape == (2, 6)
    np.testing.assert_array_equal(by_options, by_flags)
    for extra, message in ((["--steps", "5", "--option", "steps=5"],
                            "--steps and --option steps=... both given; pass one"),
                           (["--order", "most", "--option", "order=least"],
                            "--order and --option order=... both given; pass one"),
                           (["--option", "fill=0", "--option", "fill=1"],
                            "--option fill=... given twice; pass it once"),
                           (["--option", f"maps=@{maps}"],
                            "the maps are the MAPS argument (a .npy file)"),
                           (["--option", "metric=insertion"],
                            "the metric is chosen by --metric")):
        assert evaluate(*extra) == 2
        assert message in capsys.readouterr().err
    # (a value the metric refuses: before any work, as the first chunk's call is traced)
    assert evaluate("--option", "steps=0", out="zero.npy") == 2
    err = capsys.readouterr().err
    assert "Refused before any work" in err and "failed" not in err, err
    assert not (tmp_path / "zero.npy").exists()


@pytest.mark.parametrize("name", ["targets", "batch_size", "method", "path", "head"])
def test_job_arguments_are_not_method_options(tmp_path, mnist_path, digits_file, capsys, name):
    """What the job takes by its own flags is refused as an --option, naming the flag (it
    was a TypeError about a keyword given twice). ``head``: a method's ``head=`` is the
    model's ``--head``, which has a default: given as an --option too it silently won
    (``--head softmax --option head=logits`` wrote logits maps)."""
    assert _explain(mnist_path, digits_file, tmp_path / "j.npy", "--method", "saliency",
                    "--option", f"{name}=1") == 2
    assert f"--option {name}=...: {name} is given by" in capsys.readouterr().err
    if name == "batch_size":  # deletion's own: passed on (test_a_method_s_own_batch_size_...)
        return
    maps = str(tmp_path / "maps.npy")
    np.save(maps, np.zeros((2, 28, 28), np.float32))
    assert cli.main(["evaluate", mnist_path, digits_file, maps, "--metric", "deletion",
                     "--out", str(tmp_path / "d.npy"), "--option", f"{name}=1"]) == 2
    assert f"--option {name}=...: {name} is given by" in capsys.readouterr().err


def test_per_input_targets_from_a_file(tmp_path, mnist_path, digits_file, capsys):
    """--targets @labels.npy explains each input's own class ((N,) labels: maps (N, 1, ...);
    (N, T): T ids per input), as the Python call with those (N, T) ids; evaluate follows."""
    from model_import import load_keras

    x = np.load(digits_file)
    model = load_keras(mnist_path, head="logits")
    labels = tmp_path / "labels.npy"
    np.save(labels, np.array([7, 2]))
    assert _explain(mnist_path, digits_file, tmp_path / "l.npy", "--targets", f"@{labels}") == 0
    np.testing.assert_allclose(np.load(tmp_path / "l.npy"),
                               jaxsal.saliency(model, x, np.array([[7], [2]])), rtol=1e-5,
                               atol=1e-7)
    pairs = tmp_path / "pairs.npy"
    np.save(pairs, np.array([[7, 1], [2, 3]]))
    assert _explain(mnist_path, digits_file, tmp_path / "p.npy", "--targets", f"@{pairs}") == 0
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"),
                               jaxsal.saliency(model, x, np.array([[7, 1], [2, 3]])),
                               rtol=1e-5, atol=1e-7)
    assert cli.main(["evaluate", mnist_path, digits_file, str(tmp_path / "l.npy"), "--metric",
                     "deletion", "--targets", f"@{labels}", "--steps", "4",
                     "--out", str(tmp_path / "d.npy")]) == 0
    assert np.load(tmp_path / "d.npy").shape == (2, 1, 5)
    capsys.readouterr()
    for bad in (np.array([7.0, 2.0]), np.array([7, 2, 1]), np.zeros((2, 1, 1), int)):
        np.save(labels, bad)
        assert _explain(mnist_path, digits_file, tmp_path / "b.npy",
                        "--targets", f"@{labels}") == 2
        assert "expected per-input class ids, an int array of shape (2,)" in (
            capsys.readouterr().err)
    # the labels typed as a list of classes: refused before the job, naming @FILE.npy
    assert _explain(mnist_path, digits_file, tmp_path / "r.npy", "--targets", "7,7") == 2
    assert "expected distinct class ids" in capsys.readouterr().err
    assert not (tmp_path / "r.npy").exists()
    # a row of a labels file may repeat a class (a label and a prediction that agree), as
    # the Python call's (N, T) targets may: that row's two maps are the same map
    np.save(tmp_path / "dup.npy", np.array([[7, 1], [2, 2]]))
    assert _explain(mnist_path, digits_file, tmp_path / "rep.npy",
                    "--targets", f"@{tmp_path / 'dup.npy'}") == 0
    np.testing.assert_allclose(np.load(tmp_path / "rep.npy"),
                               jaxsal.saliency(model, x, np.array([[7, 1], [2, 2]])),
                               rtol=1e-5, atol=1e-7)
    # no id, or what Python's int() reads but is not an id typed as digits ('3_0' was 30),
    # refused naming --targets
    for bad in ("", ",", "3_0", "1,3_0"):
        assert _explain(mnist_path, digits_file, tmp_path / "r.npy", "--targets", bad) == 2
        assert f"--targets: expected 'predicted', 'all', a class id, ids like 0,3,7 or " \
            f"@FILE.npy (per-input ids); got {bad!r}" in capsys.readouterr().err
    assert not (tmp_path / "r.npy").exists()


@pytest.mark.parametrize("argv, flag", [
    (["explain", "m.h5", "x.npy", "--out", "o.npy", "--batch-size", "1_0"], "--batch-size"),
    (["explain", "m.h5", "x.npy", "--out", "o.npy", "--seed", "1_0"], "--seed"),
    (["explain", "m.h5", "x.npy", "--out", "o.npy", "--devices", "1_0"], "--devices"),
    (["evaluate", "m.h5", "x.npy", "s.npy", "--metric", "deletion", "--out", "o.npy",
      "--steps", "1_0"], "--steps"),
    (["evaluate", "m.h5", "x.npy", "s.npy", "--metric", "deletion", "--out", "o.npy",
      "--batch-size", "\u0663"], "--batch-size"),
])
def test_integer_flags_are_typed_as_digits(capsys, argv, flag):
    """Python's int() reads '1_0' as 10 and the Arabic-Indic digit '\u0663' as 3: every
    integer flag took them (`--seed 1_0` gave seed 10's maps), where --targets refused them.
    Refused by argparse, naming the flag, before anything is read."""
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: expected " in err and f"got {argv[-1]!r}" in err, err


def test_sizes_are_typed_as_digits():
    """--patch and --stride (read after the model): '1_0' was patch 10."""
    for flag in ("--patch", "--stride"):
        for bad in ("1_0", "4,1_0", "\u0663", "4.0", ""):
            with pytest.raises(ValueError) as e:
                cli._parse_sizes(bad, flag)
            assert str(e.value).startswith(f"{flag}: expected an int or ints like 8,4 "), e.value
            assert f"got {bad!r}" in str(e.value), e.value
    assert cli._parse_sizes("8", "--patch") == 8
    assert cli._parse_sizes("4, 2", "--patch") == (4, 2)
    assert cli._parse_sizes("+4,-2", "--stride") == (4, -2)  # (the method checks the sign)


@pytest.mark.parametrize("typed, ids", [("3", 3), ("3,", [3]), ("1,2", [1, 2]),
                                        ("1,2,", [1, 2]), (" 1, 2 ", [1, 2])])
def test_targets_typed_as_ids(typed, ids):
    """An id is one class (maps (N, ...)); ids with commas, a list (maps (N, T, ...)): one
    comma after the last makes a list of one."""
    model = argparse.Namespace(output_shape=(10,))
    assert cli._parse_targets(typed, model, 4, "saliency") == ids


@pytest.mark.parametrize("typed, empty", [("1,,2", "item 2 of 3 is"),
                                          (",1", "item 1 of 2 is"),
                                          ("3,,", "item 2 of 3 is"),
                                          ("1, ,2,,4", "items 2 and 4 of 5 are")])
def test_targets_with_an_empty_id_are_refused(typed, empty):
    """`--targets 1,,2` was read as 1,2 (empty items dropped), while ids are otherwise typed
    strictly: an empty item other than one after the last id is refused, naming it."""
    model = argparse.Namespace(output_shape=(10,))
    with pytest.raises(ValueError) as e:
        cli._parse_targets(typed, model, 4, "saliency")
    assert f"got {typed!r}: {empty} empty" in str(e.value), e.value


def test_evaluate_never_writes_over_its_inputs_or_maps(tmp_path, mnist_path, mnist_digits,
                                                       capsys):
    """`--out` naming the MAPS file (the curves would overwrite the maps while later chunks
    read them), or a name whose areas file (.auc.npy) is the INPUTS file, is refused before
    anything is written."""
    x_path, maps_path = tmp_path / "x.auc.npy", tmp_path / "maps.npy"
    np.save(x_path, mnist_digits[:3])
    assert _explain(mnist_path, str(x_path), maps_path, "--targets", "2") == 0
    before = {p: p.read_bytes() for p in (x_path, maps_path)}
    for out, said in ((maps_path, "maps.npy is the MAPS file this command reads"),
                      (tmp_path / "x.npy", "x.auc.npy, the INPUTS file")):
        assert cli.main(["evaluate", mnist_path, str(x_path), str(maps_path), "--metric",
                         "deletion", "--targets", "2", "--steps", "4",
                         "--out", str(out)]) == 2
        assert said in capsys.readouterr().err
        assert {p: p.read_bytes() for p in before} == before


def test_the_output_of_an_unfinished_job_is_refused(tmp_path, mnist_path, digits_file,
                                                    mnist_digits, capsys):
    """The maps of an `explain` job stopped after its first chunk hold zeros for the rest:
    `evaluate` (and any command reading them, here as inputs) refuses them, naming the
    progress file, until the job is run again to the end."""
    maps_path = tmp_path / "maps.npy"

    def stop(done, total):
        raise KeyboardInterrupt

    model = load_keras(mnist_path, head="logits")
    with pytest.raises(KeyboardInterrupt):  # a job stopped after its first chunk of two
        jaxsal.explain_to_file(jaxsal.saliency, model, mnist_digits[:2], maps_path,
                               targets=3, batch_size=1, on_chunk=stop)
    evaluate = ["evaluate", mnist_path, digits_file, str(maps_path), "--metric", "deletion",
                "--targets", "3", "--steps", "4", "--out", str(tmp_path / "del.npy")]
    assert cli.main(evaluate) == 2
    err = capsys.readouterr().err
    assert (f"maps: {maps_path} is the output of an unfinished job (1 of 2 chunks done, says "
            f"{maps_path}.progress.json); the rows of the other chunks are zeros") in err
    assert not (tmp_path / "del.npy").exists()
    assert _explain(mnist_path, str(maps_path), tmp_path / "m2.npy") == 2
    assert "inputs: " in capsys.readouterr().err
    # finished by the same job (resumed: only its second chunk is computed), they are taken
    assert _explain(mnist_path, digits_file, maps_path, "--targets", "3",
                    "--batch-size", "1") == 0
    assert [line.split()[2] for line in capsys.readouterr().out.splitlines()
            if line.startswith("  chunks done ")] == ["2/2"]
    assert cli.main(evaluate) == 0


def test_maps_beside_an_unreadable_progress_file_are_refused(tmp_path, mnist_path,
                                                            digits_file, capsys):
    """A progress file that cannot be read (empty: torn by a crash of the machine before
    progress files were synced; or another program's) says nothing about which chunks are
    finished: the maps beside it are refused as unknown, not taken as finished (they were),
    and running the job again says what to delete."""
    maps_path = tmp_path / "maps.npy"
    assert _explain(mnist_path, digits_file, maps_path, "--targets", "3") == 0
    capsys.readouterr()
    progress = tmp_path / "maps.npy.progress.json"
    evaluate = ["evaluate", mnist_path, digits_file, str(maps_path), "--metric", "deletion",
                "--targets", "3", "--steps", "4", "--out", str(tmp_path / "del.npy")]
    for content in (b"", b"{\"done\": [0]"):
        progress.write_bytes(content)
        assert cli.main(evaluate) == 2
        err = capsys.readouterr().err
        assert (f"maps: cannot read the progress file {progress} (") in err, err
        assert f"so whether the job that wrote {maps_path} finished is unknown" in err, err
        assert not (tmp_path / "del.npy").exists()
    assert _explain(mnist_path, digits_file, maps_path, "--targets", "3") == 2
    err = capsys.readouterr().err
    assert f"delete {maps_path} and {progress}, or pass overwrite=True (jaxsal: " \
        "--overwrite), to start the job over" in err, err
    # --overwrite starts it over (it was refused as without it: the command cannot pass
    # resume=False); its maps are those of the same job, run before the progress file broke
    before = np.load(maps_path)
    assert _explain(mnist_path, digits_file, maps_path, "--targets", "3", "--overwrite") == 0
    np.testing.assert_array_equal(np.load(maps_path), before)
    prog = json.loads(progress.read_text())
    assert prog["done"] == list(range(prog["chunks"]))
    progress.unlink()  # the maps written otherwise: nothing says they are a job's
    assert cli.main(evaluate) == 0


def test_an_error_in_a_chunk_names_it(tmp_path, mnist_path, digits_file, capsys):
    """A TypeError of the method (uint8 images, not preprocessed) is printed; raised by the
    trace of the first chunk's call, before any work, it says nothing was computed (one
    raised in a chunk gets the job's note, which chunk failed and what is saved:
    test_batch.py::test_any_error_of_a_chunk_names_it_and_keeps_the_finished_ones)."""
    out = tmp_path / "m.npy"
    np.save(tmp_path / "u8.npy", (np.load(digits_file) * 255).astype(np.uint8))
    assert _explain(mnist_path, str(tmp_path / "u8.npy"), out) == 2
    err = capsys.readouterr().err
    assert err.startswith("jaxsal: error: x: expected a floating-point input, got integer "
                          "dtype uint8; this model reads its input with a Conv2D layer, so "
                          "these are values such as pixels")
    assert "embedding" not in err  # (no token-id advice for an image model)
    assert err.endswith(". (Refused before any work: explain_to_file traced the call of "
                        "chunk 0 (inputs 0:2), the first to compute, before computing any "
                        "chunk; nothing was computed or written. Fix the option or inputs and "
                        "run the call again.)\n")
    assert not out.exists()


def test_token_ids_without_a_layer_name_the_layer_flag(tmp_path, capsys):
    """Token ids (an int32 input read by an Embedding) have no gradient: the command names its
    own flag and the Embedding, --layer emb (it said jaxsal.integrated_gradients(model, x,
    layer='emb'), a Python call); given it, the job runs, as the Python call at that layer."""
    keras = pytest.importorskip("keras")
    from keras import layers

    keras.utils.set_random_seed(0)
    inp = keras.Input((5,), dtype="int32")
    h = layers.GlobalAveragePooling1D()(layers.Embedding(9, 3, name="emb")(inp))
    path = str(tmp_path / "tok.keras")
    keras.Model(inp, layers.Dense(2, name="out")(h)).save(path)
    ids = tmp_path / "ids.npy"
    np.save(ids, np.random.default_rng(0).integers(1, 9, size=(3, 5)).astype(np.int32))
    out = tmp_path / "t.npy"
    assert _explain(path, str(ids), out, "--targets", "1") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"jaxsal: error: INPUTS {ids}: this model takes integer inputs "
                          "(token ids or other codes), which have no gradient"), err
    assert ("attribute at a layer instead: pass --layer emb (the Embedding that reads them, "
            f"or a later layer: `jaxsal summary {path}` lists them)") in err
    assert "jaxsal.integrated_gradients(" not in err and "layer=" not in err
    # a method without a layer of its own: those that have one, with the flag
    assert _explain(path, str(ids), out, "--method", "blur_integrated_gradients") == 2
    err = capsys.readouterr().err
    assert ("--method blur_integrated_gradients takes no --layer to attribute at (it "
            "attributes to the inputs): use --method saliency, gradient_x_input") in err
    assert "with --layer emb (the Embedding that reads them" in err
    assert not out.exists()
    assert _explain(path, str(ids), out, "--targets", "1", "--layer", "emb") == 0
    model = load_keras(path, head="logits")
    np.testing.assert_allclose(np.load(out), jaxsal.saliency(model, np.load(ids), 1,
                                                             layer="emb"), rtol=1e-6)


def test_files_no_job_wrote_are_never_replaced_without_overwrite(tmp_path, mnist_path,
                                                                digits_file, capsys):
    """--out naming an array of one's own, and evaluate's areas file (OUT.auc.npy) being
    one, were overwritten: refused (status 2, the file named, --overwrite said), the file
    untouched; --overwrite replaces them. A killed job's maps whose progress file was
    deleted (rows of zeros) are refused as MAPS, by the mark in their header."""
    mine = np.full((2, 28, 28), 7.0, np.float32)
    out = tmp_path / "mine.npy"
    np.save(out, mine)
    assert _explain(mnist_path, digits_file, out, "--targets", "3") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"jaxsal: error: {out} exists and no progress file lists it"), err
    assert "pass overwrite=True (jaxsal: --overwrite) to replace it" in err
    np.testing.assert_array_equal(np.load(out), mine)
    assert _explain(mnist_path, digits_file, out, "--targets", "3", "--overwrite") == 0
    assert not np.array_equal(np.load(out), mine)
    # evaluate's areas: d.auc.npy of one's own
    areas = tmp_path / "d.auc.npy"
    np.save(areas, mine[:, 0, 0])
    evaluate = ["evaluate", mnist_path, digits_file, str(out), "--metric", "deletion",
                "--targets", "3", "--steps", "2", "--out", str(tmp_path / "d.npy")]
    capsys.readouterr()
    assert cli.main(evaluate) == 2
    assert capsys.readouterr().err.startswith(
        f"jaxsal: error: {areas} (where --out {tmp_path / 'd.npy'} puts the areas under its "
        "curves) exists and the job of --out")
    np.testing.assert_array_equal(np.load(areas), mine[:, 0, 0])
    assert not (tmp_path / "d.npy").exists()
    assert cli.main([*evaluate, "--overwrite"]) == 0
    assert np.load(areas).shape == (2,) and cli.main(evaluate) == 0  # its own now: resumes
    # a killed job's maps, its progress file deleted
    killed = tmp_path / "killed.npy"
    with pytest.raises(KeyboardInterrupt):
        jaxsal.explain_to_file(jaxsal.saliency, load_keras(mnist_path, head="logits"),
                               np.load(digits_file), killed, targets=3, batch_size=1,
                               on_chunk=stop_after(1))
    os.remove(f"{killed}.progress.json")
    capsys.readouterr()
    assert cli.main([*evaluate[:3], str(killed), *evaluate[4:-1], str(tmp_path / "k.npy")]) == 2
    assert capsys.readouterr().err == (
        f"jaxsal: error: maps: {killed} is the output of an unfinished job (its .npy header "
        "says so; no progress file lists it, so which chunks are finished is unknown): the "
        "rows of its unfinished chunks are zeros. Run the command that wrote it again (it "
        "starts over), then use it\n")


def test_keep_going_leaves_out_the_chunks_of_nan_inputs(tmp_path, mnist_path, mnist_digits,
                                                        capsys):
    """`--keep-going`: the chunk of a NaN input is left out, the others written; the command
    names the input and exits 2; fixed, running it again computes that chunk only. The same
    for `evaluate`."""
    x = mnist_digits[:6].copy()
    x[3, 4, 4, 0] = np.nan
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "m.npy"
    args = ("--targets", "3", "--batch-size", "2", "--keep-going")
    assert _explain(mnist_path, str(tmp_path / "x.npy"), out, *args) == 2
    captured = capsys.readouterr()
    assert ("jaxsal: error: 1 of 3 chunks were left out: chunk 1 (inputs 2:4): input 3 "
            f"contains NaN or inf. The other 2 chunks are saved in {out}") in captured.err
    assert [line.split()[2] for line in captured.out.splitlines()] == ["1/3", "2/3"]
    assert "left)" not in captured.out.splitlines()[-1]  # (chunk 1 left out: none to compute)
    model = load_keras(mnist_path, head="logits")
    maps = rows_of(out)
    np.testing.assert_allclose(maps[[0, 1, 4, 5]],
                               jaxsal.saliency(model, x[[0, 1, 4, 5]], 3), rtol=1e-5,
                               atol=1e-7)
    x[3] = mnist_digits[3]
    np.save(tmp_path / "x.npy", x)
    assert _explain(mnist_path, str(tmp_path / "x.npy"), out, *args) == 0
    assert [line.split()[2] for line in capsys.readouterr().out.splitlines()
            if line.startswith("  chunks done ")] == ["3/3"]
    # (other inputs than the maps': evaluated on a copy of them, no progress file beside)
    np.save(tmp_path / "copy.npy", np.load(out))
    x[0, 0, 0, 0] = np.inf
    np.save(tmp_path / "x.npy", x)
    assert cli.main(["evaluate", mnist_path, str(tmp_path / "x.npy"),
                     str(tmp_path / "copy.npy"), "--metric",
                     "deletion", "--targets", "3", "--steps", "4", "--batch-size", "2",
                     "--keep-going", "--out", str(tmp_path / "del.npy")]) == 2
    assert ("1 of 3 chunks were left out: chunk 0 (inputs 0:2): input 0 contains NaN or inf"
            in capsys.readouterr().err)
    assert not (tmp_path / "del.auc.npy").exists()


def test_big_endian_npy_files_are_read(tmp_path, mnist_path, mnist_digits):
    """A .npy stored big-endian (from a big-endian machine, FITS data) is a valid array that
    JAX does not take as it is: inputs, maps and @FILE options give what the native files
    give (they failed with "Error interpreting argument to stage as a JAX value")."""
    x = mnist_digits[:3]
    fill = np.full_like(x, 0.25)
    for name, order in (("le", "<"), ("be", ">")):
        np.save(tmp_path / f"x_{name}.npy", x.astype(f"{order}f4"))
        np.save(tmp_path / f"fill_{name}.npy", fill.astype(f"{order}f4"))
        assert _explain(mnist_path, str(tmp_path / f"x_{name}.npy"),
                        tmp_path / f"m_{name}.npy", "--targets", "2", "--batch-size", "2") == 0
        maps = np.load(tmp_path / f"m_{name}.npy")
        np.save(tmp_path / f"maps_{name}.npy", maps.astype(f"{order}f4"))
        assert cli.main(["evaluate", mnist_path, str(tmp_path / f"x_{name}.npy"),
                         str(tmp_path / f"maps_{name}.npy"), "--metric", "deletion",
                         "--targets", "2", "--steps", "4", "--batch-size", "2", "--option",
                         f"fill=@{tmp_path / f'fill_{name}.npy'}",
                         "--out", str(tmp_path / f"d_{name}.npy")]) == 0
    assert np.load(tmp_path / "x_be.npy").dtype.byteorder == ">"
    np.testing.assert_array_equal(np.load(tmp_path / "m_be.npy"), np.load(tmp_path / "m_le.npy"))
    np.testing.assert_array_equal(np.load(tmp_path / "d_be.npy"), np.load(tmp_path / "d_le.npy"))


def test_a_model_of_several_inputs_needs_a_file_per_input(tmp_path, capsys):
    """`jaxsal explain` given one inputs file for a two-input model refuses before any work,
    naming the model's inputs, their shapes and how to pass one file per input (the
    engine's error asked for "x as a list", which a command line cannot pass)."""
    import keras

    a, b = keras.Input((6,), name="a"), keras.Input((3,), name="b")
    out = keras.layers.Dense(2)(keras.layers.Concatenate()([a, b]))
    keras.Model([a, b], out).save(tmp_path / "two.keras")
    np.save(tmp_path / "x.npy", np.zeros((4, 6), np.float32))
    assert _explain(str(tmp_path / "two.keras"), str(tmp_path / "x.npy"),
                    tmp_path / "m.npy") == 2
    err = capsys.readouterr().err
    assert "two.keras has 2 inputs: a (N, 6), b (N, 3); got 1 INPUTS file" in err
    assert "two.keras A.npy B.npy ...`) or as NAME=FILE.npy with those names" in err
    assert not (tmp_path / "m.npy").exists()


def test_out_is_never_a_file_the_command_reads(tmp_path, mnist_path, digits_file, mnist_digits,
                                               capsys):
    """An --out naming the model, a --targets @FILE or an --option NAME=@FILE (a slip of tab
    completion) is refused before anything is written: the job wrote its maps over it."""
    import shutil

    model = tmp_path / "model.h5"
    shutil.copy(mnist_path, model)
    np.save(tmp_path / "labels.npy", np.array([1, 2]))
    np.save(tmp_path / "base.npy", np.zeros_like(mnist_digits[:2]))
    files = {p: p.read_bytes() for p in (model, tmp_path / "labels.npy", tmp_path / "base.npy")}
    for out, extra, what in (
            (model, [], "MODEL"),
            (tmp_path / "labels.npy", ["--targets", f"@{tmp_path / 'labels.npy'}"],
             "--targets @FILE"),
            (tmp_path / "base.npy", ["--method", "integrated_gradients", "--option",
                                     f"baseline=@{tmp_path / 'base.npy'}"],
             "--option baseline=@FILE")):
        assert _explain(str(model), digits_file, out, *extra) == 2
        err = capsys.readouterr().err
        assert f"--out {out} is the {what}" in err and "Pass another --out" in err
    assert {p: p.read_bytes() for p in files} == files


def test_out_of_memory_in_a_chunk_is_one_line_saying_what_to_do(tmp_path, mnist_path,
                                                                digits_file, capsys,
                                                                monkeypatch):
    """JAX's out-of-memory error in a chunk (a RuntimeError) escaped `jaxsal` as a traceback
    with status 1; now it is one line on stderr with the job's note and the fix: a smaller
    --batch-size, which keeps the inputs already finished. Other RuntimeErrors (bugs) still
    show their traceback."""
    saliency = jaxsal.saliency

    def oom_in_chunk_1(model, x, targets=None, **kw):
        if len(calls) == 1:
            raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 123 bytes.")
        calls.append(1)
        return saliency(model, x, targets, **kw)

    calls = []
    monkeypatch.setattr(jaxsal, "saliency", oom_in_chunk_1)
    out = tmp_path / "m.npy"
    assert _explain(mnist_path, digits_file, out, "--batch-size", "1", "--targets", "3") == 2
    assert capsys.readouterr().err == (
        "jaxsal: error: RESOURCE_EXHAUSTED: Out of memory allocating 123 bytes. "
        f"explain_to_file: chunk 1 (inputs 1:2) failed. The 1 chunk(s) finished so far are "
        f"saved in {out}; run the same call again to resume. Out of memory: a smaller "
        "--batch-size needs less (the inputs already finished are kept)\n")
    monkeypatch.setattr(jaxsal, "saliency", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        _explain(mnist_path, digits_file, tmp_path / "z.npy")


@pytest.mark.parametrize("extra, message", [
    (["--method", "fullgrad", "--layer", "conv2d_1"],
     "--layer: --method fullgrad takes no option 'layer'; its options: variant, "),
    (["--option", "nosuch=1"],
     "--option nosuch=...: --method saliency takes no option 'nosuch'; its options: "
     "reduce, chunk_size, "),
    (["evaluate", "--metric", "insertion", "--option", "fill=0.5"],
     "--option fill=...: --metric insertion takes no option 'fill'; its options: steps, "
     "baseline, "),
])
def test_an_option_the_method_does_not_take_is_refused_before_the_job(
        tmp_path, mnist_path, digits_file, capsys, monkeypatch, extra, message):
    """A misspelt --option (of explain or evaluate, fill= of deletion given to insertion) or
    a --layer for a method without one failed in the first chunk, after loading the model
    and compiling, with the engine's "got an unexpected keyword argument" and "run the call
    again"; now refused first, naming the flag and the method's options."""
    import model_import

    monkeypatch.setattr(model_import, "load_keras", lambda *a, **k: pytest.fail("loaded"))
    if extra[0] == "evaluate":
        assert cli.main(["evaluate", mnist_path, digits_file, digits_file, *extra[1:],
                         "--out", str(tmp_path / "m.npy")]) == 2
    else:
        assert _explain(mnist_path, digits_file, tmp_path / "m.npy", *extra) == 2
    err = capsys.readouterr().err
    assert err.startswith("jaxsal: error: " + message) and "chunk 0" not in err
    assert not (tmp_path / "m.npy").exists()


@pytest.mark.parametrize("name", cli.METHODS + cli.METRICS)
def test_the_options_listed_for_an_unknown_one_are_ones_option_takes(name):
    """An unknown --option listed the method's keywords, head among them, which --option
    head=... then refused ("head is given by --head"): each option listed is one --option
    takes, and a keyword given by its own flag is named with the flag."""
    fn = getattr(jaxsal, name)
    given = (("model", "x", "maps", "targets", "metric") if name in cli.METRICS
             else ("model", "x", "targets"))
    args = argparse.Namespace(layer=None, option=["nosuch=1"])
    with pytest.raises(ValueError) as e:
        cli._check_option_names(args, fn, f"--method {name}", given)
    listed, *flagged = str(e.value).split("its options: ", 1)[1].split("; ")
    for option in listed.split(", "):
        assert option in inspect.signature(fn).parameters, (option, str(e.value))
        cli._job_flag(option, fn)  # (refuses what a flag gives)
    if "head" in inspect.signature(fn).parameters:
        assert flagged == ["head is given by --head"], str(e.value)


def test_smoothgrad_s_own_method_option(tmp_path, mnist_path, digits_file, mnist_digits,
                                        capsys):
    """SmoothGrad's own `method` (the gradient it smooths) was refused as "--option
    method=...: method is given by --method"; explain_to_file passes it to SmoothGrad, so
    the command line does: the maps equal one Python call. A method without such an option
    still refuses it, naming --method."""
    assert _explain(mnist_path, digits_file, tmp_path / "s.npy", "--method", "smoothgrad",
                    "--seed", "3", "--option", "n=2", "--option",
                    "method=integrated_gradients", "--option",
                    'method_options={"steps": 3}', "--targets", "1") == 0
    direct = jaxsal.smoothgrad(load_keras(mnist_path, head="logits"), mnist_digits[:2], 1,
                               key=jax.random.key(3), n=2, method="integrated_gradients",
                               method_options={"steps": 3})
    np.testing.assert_allclose(np.load(tmp_path / "s.npy"), direct, rtol=1e-5, atol=1e-8)
    plain = jaxsal.smoothgrad(load_keras(mnist_path, head="logits"), mnist_digits[:2], 1,
                              key=jax.random.key(3), n=2)
    assert not np.allclose(direct, plain)
    capsys.readouterr()
    assert _explain(mnist_path, digits_file, tmp_path / "g.npy", "--method", "gradcam",
                    "--option", "method=saliency") == 2
    assert "--option method=...: method is given by --method" in capsys.readouterr().err


def test_evaluate_checks_its_out_before_loading_the_model(tmp_path, mnist_path, digits_file,
                                                          capsys, monkeypatch):
    """An --out not ending .npy (or whose .auc.npy is the MAPS file) was refused only after
    the model was loaded and the maps read: now first."""
    import model_import

    monkeypatch.setattr(model_import, "load_keras", lambda *a, **k: pytest.fail("loaded"))
    np.save(tmp_path / "m.auc.npy", np.zeros((2, 28, 28), np.float32))
    for out, said in (("curves.txt", "--out: expected a .npy path (the curves), got"),
                      ("m.npy", "m.auc.npy, the MAPS file; pick another --out")):
        assert cli.main(["evaluate", mnist_path, digits_file, str(tmp_path / "m.auc.npy"),
                         "--metric", "deletion", "--out", str(tmp_path / out)]) == 2
        assert said in capsys.readouterr().err


def test_evaluate_with_no_space_for_the_areas_says_the_curves_are_kept(
        tmp_path, mnist_path, digits_file, capsys, monkeypatch):
    """A full disk when the areas are written said "[Errno 28] No space left on device" and
    left a torn .auc.npy; now it names the file, says the curves are finished and that the
    same command writes the areas again without computing them."""
    import errno
    import os

    maps = tmp_path / "maps.npy"
    np.save(maps, np.random.RandomState(0).rand(2, 28, 28).astype(np.float32))
    argv = ["evaluate", mnist_path, digits_file, str(maps), "--metric", "deletion", "--steps",
            "4", "--targets", "1", "--out", str(tmp_path / "d.npy")]
    save = np.save

    def full(fh, array, *a, **k):
        fh.write(b"\x93NUMPY")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(np, "save", full)
    assert cli.main(argv) == 2
    auc = tmp_path / "d.auc.npy"
    assert capsys.readouterr().err == (
        f"jaxsal: error: [Errno 28] cannot write the areas to {auc} (No space left on "
        f"device); the curves are finished in {tmp_path / 'd.npy'}: free some space and run "
        "the same command again (it writes the areas without computing the curves again)\n")
    assert not auc.exists() and not os.path.exists(f"{auc}.tmp")
    monkeypatch.setattr(np, "save", save)
    assert cli.main(argv) == 0
    assert "chunk" not in capsys.readouterr().out and np.load(auc).shape == (2,)


@pytest.mark.parametrize("cmd", ["explain", "evaluate"])
def test_a_method_s_own_batch_size_is_passed_on(tmp_path, mnist_path, digits_file, capsys,
                                                monkeypatch, cmd):
    """occlusion's (deletion's...) own batch_size, perturbed inputs per forward pass, was
    refused as "given by --batch-size", which is the job's inputs per chunk: it is passed to
    the method now (its maps, the same, equal one call); a method without one still refuses
    it, naming --batch-size."""
    import functools

    name = {"explain": "occlusion", "evaluate": "deletion"}[cmd]
    real, seen = getattr(jaxsal, name), []

    @functools.wraps(real)
    def spy(*a, **k):
        seen.append(k.get("batch_size"))
        return real(*a, **k)

    monkeypatch.setattr(jaxsal, name, spy)
    maps = tmp_path / "maps.npy"
    np.save(maps, np.random.RandomState(0).rand(2, 28, 28).astype(np.float32))
    argv = {"explain": ["explain", mnist_path, digits_file, "--method", "occlusion",
                        "--patch", "14", "--targets", "1"],
            "evaluate": ["evaluate", mnist_path, digits_file, str(maps), "--metric",
                         "deletion", "--steps", "4", "--targets", "1"]}[cmd]
    out = tmp_path / "o.npy"
    assert cli.main(argv + ["--option", "batch_size=3", "--out", str(out)]) == 0
    assert seen == [3, 3]  # (the first chunk's call traced before any work sees it too)
    m = load_keras(mnist_path, head="logits") if cmd == "explain" else load_keras(mnist_path)
    x = np.load(digits_file)
    direct = (real(m, x, 1, patch=14) if cmd == "explain" else
              real(m, x, np.load(maps), 1, steps=4).scores)
    np.testing.assert_allclose(np.load(out), direct, rtol=1e-5, atol=1e-6)
    capsys.readouterr()
    assert cli.main(["explain", mnist_path, digits_file, "--option", "batch_size=3",
                     "--out", str(tmp_path / "s.npy")]) == 2
    assert "--option batch_size=...: batch_size is given by --batch-size" in \
        capsys.readouterr().err


def test_help_states_each_default(capsys):
    # `explain` follows the logits head unless told (the Python API: the model's own head),
    # and runs 64 inputs per chunk: --help says so, as it does for the other flags
    for cmd, flags in (("explain", ("--head", "--batch-size")), ("summary", ("--head",)),
                       ("evaluate", ("--head", "--batch-size"))):
        with pytest.raises(SystemExit):
            cli.main([cmd, "--help"])
        out = capsys.readouterr().out
        for flag in flags:  # the flag's entry: its line and the indented lines below it
            entry = re.search(rf"\n  {flag} [A-Z_]+(.*?)(?=\n  -|\Z)", out, re.S)
            assert "default" in entry.group(1), (cmd, flag, entry.group(0))


def test_xrai_takes_its_regions_from_a_file(tmp_path, mnist_path, digits_file, mnist_digits,
                                           monkeypatch):
    """Regions from --option segments=@FILE; without them, the authors' Felzenszwalb regions
    of each image (jaxsal.xrai_segments), as the Python API makes them."""
    from small_models import grid_regions

    from jaxsal._src import xrai as _xrai

    # the job's own calls of xrai_segments, watched: it segments these images with the
    # defaults (the regions are then not made a second time here, 1.2 s for 2 digits)
    calls, segment = [], _xrai.xrai_segments
    monkeypatch.setattr(_xrai, "xrai_segments",
                        lambda images, **kw: calls.append((images, kw, segment(images, **kw)))
                        or calls[-1][2])
    out = tmp_path / "xrai.npy"
    model = load_keras(mnist_path, head="logits")
    assert _explain(mnist_path, digits_file, out, "--method", "xrai", "--targets", "3",
                    "--option", "steps=4", "--option", "min_pixel_diff=5") == 0
    assert calls and all(kw == {} for _, kw, _ in calls), calls
    np.testing.assert_array_equal(np.concatenate([c[0] for c in calls]), mnist_digits[:2])
    monkeypatch.undo()
    want = jaxsal.xrai(model, mnist_digits[:2], 3, segments=np.concatenate(
        [c[2] for c in calls]), steps=4, min_pixel_diff=5)
    np.testing.assert_allclose(np.load(out), want, atol=1e-5 * np.abs(want).max())
    out.unlink()
    np.save(tmp_path / "masks.npy", np.asarray(grid_regions()))
    assert _explain(mnist_path, digits_file, out, "--method", "xrai", "--targets", "3",
                    "--option", f"segments=@{tmp_path / 'masks.npy'}", "--option", "steps=4",
                    "--option", "min_pixel_diff=5") == 0
    want = jaxsal.xrai(model, mnist_digits[:2], 3, segments=grid_regions(), steps=4,
                       min_pixel_diff=5)
    np.testing.assert_allclose(np.load(out), want, atol=1e-5 * np.abs(want).max())


def _help_entry(capsys, cmd: str, flag: str) -> str:
    """``jaxsal CMD --help``'s entry of ``flag`` (its line and the indented lines below it),
    whitespace collapsed."""
    with pytest.raises(SystemExit):
        cli.main([cmd, "--help"])
    out = capsys.readouterr().out
    entry = re.search(rf"\n  {flag} [A-Z_]+(.*?)(?=\n  -|\Z)", out, re.S)
    return " ".join(entry.group(1).split())


def test_layer_help_lists_exactly_the_methods_that_take_a_layer(capsys):
    # (it left out deeplift_shap, which takes layer= and runs with --layer)
    entry = _help_entry(capsys, "explain", "--layer")
    listed = {m for m in cli.METHODS if re.search(rf"\b{m}\b", entry)}
    takes = {m for m in cli.METHODS
             if "layer" in inspect.signature(getattr(jaxsal, m)).parameters}
    assert listed == takes, (sorted(takes - listed), sorted(listed - takes), entry)


def test_out_and_batch_size_help_say_what_the_job_does(capsys):
    """--out's per-input files are OUT without .npy, then .NAME.npy (it said OUT.NAME.npy:
    maps.npy.img.npy), and fewer inputs than --batch-size are one unpadded chunk
    (tests/test_batch.py::test_fewer_inputs_than_a_batch_are_one_unpadded_chunk); the help
    said the last chunk is always padded."""
    from jaxsal._src.job_inputs import input_paths

    out = _help_entry(capsys, "explain", "--out")
    assert "OUT.NAME.npy" not in out, out
    example = re.search(r"([\w.]+\.npy) -> ([\w.]+\.npy)", out)
    assert example and input_paths(example.group(1), ["img"]) == [example.group(2)], out
    for cmd in ("explain", "evaluate"):
        batch = _help_entry(capsys, cmd, "--batch-size")
        assert "fewer inputs than a batch are one unpadded chunk" in batch, batch
