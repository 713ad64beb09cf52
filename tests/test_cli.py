"""The command line: the README's demo, summary, and resumable explain jobs."""

import numpy as np
import pytest

import jaxsal
from jaxsal import cli
from model_import import load_keras


def test_demo_writes_all_class_saliency(tmp_path, capsys):
    assert cli.main(["demo", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Total params: 34,826" in out
    assert (tmp_path / "saliency_all_classes.png").stat().st_size > 10_000
    maps = np.load(tmp_path / "saliency_all_classes.npy")
    digits = np.load(cli._data_path("mnist_digits.npz"))
    model = load_keras(cli._data_path("mnist_cnn_keras3.keras"), head="logits")
    direct = np.asarray(jaxsal.saliency(model, digits["x"], list(range(10))))
    assert maps.shape == (10, 10, 28, 28)
    np.testing.assert_allclose(maps, direct, rtol=1e-5, atol=1e-7)


def test_summary(capsys, fixtures_dir):
    assert cli.main(["summary", str(fixtures_dir / "mnist_cnn_tfkeras2.h5")]) == 0
    out = capsys.readouterr().out
    assert "conv2d_2 (Conv2D)" in out and "Total params: 1,199,882" in out


def test_keras_backend_option(capsys, fixtures_dir):
    path = str(fixtures_dir / "keras3_backends" / "backends_tensorflow.keras")
    assert cli.main(["summary", path, "--keras-backend", "tensorflow"]) == 0
    assert "Keras 3.15.1 on tensorflow)" in capsys.readouterr().out.splitlines()[0]
    assert cli.main(["summary", path, "--keras-backend", "theano"]) == 2
    assert "keras_backend is 'theano'" in capsys.readouterr().err


def test_explain_job(tmp_path, fixtures_dir, mnist_digits, capsys):
    x = mnist_digits[:12]
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "maps.npy"
    args = ["explain", str(fixtures_dir / "mnist_cnn_tfkeras2.h5"), str(tmp_path / "x.npy"),
            "--method", "gradcam", "--targets", "all", "--layer", "conv2d_2",
            "--batch-size", "5", "--out", str(out)]
    assert cli.main(args) == 0
    maps = np.load(out)
    model = load_keras(fixtures_dir / "mnist_cnn_tfkeras2.h5", head="logits")
    direct = np.asarray(jaxsal.gradcam(model, x, list(range(10)), layer="conv2d_2"))
    assert maps.shape == direct.shape == (12, 10, 28, 28)
    np.testing.assert_allclose(maps, direct, rtol=1e-4, atol=1e-6)


def test_bad_file_is_a_clean_error(tmp_path, capsys):
    bad = tmp_path / "model.h5"
    bad.write_bytes(b"not a model")
    assert cli.main(["summary", str(bad)]) == 2
    assert "not a Keras file" in capsys.readouterr().err


def test_help_names_every_command(capsys):
    """`jaxsal --help` states the whole first paragraph of the module docstring."""
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "``evaluate`` (batch jobs to disk)." in out
