"""The command line on models whose output is not one ``(N, classes)`` array: a segmentation
map ``(N, H, W, K)`` and a classifier beside a regression. Class ids and the predicted class
need one class output, and the command line has no score functions: it refuses such a job
before any chunk, saying what it can run there (``--output``, ``eigencam``) and what needs
Python (a score function), instead of the methods' Python advice (``model.with_output``,
``targets=lambda ...``), which has no command-line form."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from jaxsal import cli  # noqa: E402

L = keras.layers


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli_outputs")
    inp = keras.Input((8, 8, 3))
    h = L.Conv2D(4, 3, padding="same", activation="relu", name="conv")(inp)
    keras.Model(inp, L.Conv2D(3, 1, activation="softmax", name="seg")(h)).save(d / "seg.keras")
    g = L.GlobalAveragePooling2D(name="gap")(h)
    keras.Model(inp, [L.Dense(4, activation="softmax", name="cls")(g),
                      L.Dense(1, name="reg")(g)]).save(d / "two.keras")
    one = L.Reshape((), name="flat")(L.Dense(1, activation="sigmoid", name="p")(g))
    keras.Model(inp, one).save(d / "scalar.keras")  # an (N,) output: no class axis
    np.save(d / "x.npy", np.random.default_rng(0).uniform(size=(2, 8, 8, 3)).astype("float32"))
    return d


def _explain(files, model, *extra):
    return cli.main(["explain", str(files / model), str(files / "x.npy"),
                     "--out", str(files / "maps.npy"), *extra])


@pytest.mark.parametrize("targets", [[], ["--targets", "all"], ["--targets", "1"]])
def test_segmentation_output_is_refused_with_command_line_advice(files, capsys, targets):
    assert _explain(files, "seg.keras", *targets) == 2
    err = capsys.readouterr().err
    assert "(N, 8, 8, 3)" in err and "*(" not in err  # the shape as it is
    assert "(N, classes)" in err and "score function" in err and "eigencam" in err
    assert "chunk 0" not in err and "Pass explicit class ids" not in err
    assert not (files / "maps.npy").exists()


def test_segmentation_output_runs_eigencam_without_targets(files, capsys):
    assert _explain(files, "seg.keras", "--method", "eigencam") == 0
    assert np.load(files / "maps.npy").shape == (2, 8, 8)
    (files / "maps.npy").unlink()


@pytest.mark.parametrize("targets", [[], ["--targets", "0,1"]])
def test_several_outputs_name_the_output_flag(files, capsys, targets):
    assert _explain(files, "two.keras", *targets) == 2
    err = capsys.readouterr().err
    assert "--output cls" in err and "'reg' (1,)" in err
    assert "with_output" not in err and "chunk 0" not in err
    assert _explain(files, "two.keras", "--output", "cls", *targets) == 0
    (files / "maps.npy").unlink()


@pytest.mark.parametrize("metric", ["deletion", "insertion"])
def test_evaluate_on_a_segmentation_output_advises_the_metric_with_its_maps(files, capsys,
                                                                           metric):
    """``jaxsal evaluate``'s refusal advises the metric's own call, maps included (the call
    it gave, without maps, raised TypeError), and none of explain's advice (no --method, no
    explain_to_file); the call it gives runs."""
    import re

    import jaxsal
    from model_import import load_keras

    maps = np.random.default_rng(1).uniform(size=(2, 8, 8)).astype("float32")
    np.save(files / "smaps.npy", maps)
    assert cli.main(["evaluate", str(files / "seg.keras"), str(files / "x.npy"),
                     str(files / "smaps.npy"), "--metric", metric,
                     "--out", str(files / "curves.npy")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "(N, 8, 8, 3)" in err and "score function" in err
    assert "eigencam" not in err and "--method" not in err and "explain_to_file" not in err
    call = re.search(rf"jaxsal\.{metric}\(model, x, maps, targets=lambda out: [^;]*?\)\)", err)
    assert call, err
    scope = {"jaxsal": jaxsal, "model": load_keras(files / "seg.keras"), "k": 1, "maps": maps,
             "x": np.load(files / "x.npy")}
    curves = eval(call.group(0), scope)  # the advice as given runs
    assert np.shape(curves.auc) == (2,)
    assert not (files / "curves.npy").exists()


@pytest.mark.parametrize("command", ["explain", "evaluate"])
@pytest.mark.parametrize("targets", [[], ["--targets", "all"], ["--targets", "0"]])
def test_an_output_of_one_value_per_input_is_refused_with_command_line_advice(
        files, capsys, command, targets):
    """A model whose output is ``(N,)`` (Keras's ``(None,)``: one sigmoid value per input,
    reshaped) has no class axis for ids to index: refused before the job like a segmentation
    map (``--targets all`` raised IndexError), with Python advice the command line can give
    (not ``targets=lambda out: out`` as a command-line fix)."""
    np.save(files / "smaps.npy", np.zeros((2, 8, 8), "float32"))
    maps = [str(files / "smaps.npy")] if command == "evaluate" else []
    extra = ["--metric", "deletion"] if command == "evaluate" else []
    assert cli.main([command, str(files / "scalar.keras"), str(files / "x.npy"), *maps,
                     "--out", str(files / "out.npy"), *extra, *targets]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "shape (N,)" in err and "(N, classes)" in err and "Traceback" not in err, err
    assert "targets=lambda out: out" in err and "chunk 0" not in err, err
    assert ("eigencam" in err) == (command == "explain"), err
    assert not (files / "out.npy").exists()
