"""The command line: the README's demo, summary, and resumable explain jobs."""

import os

import numpy as np
import pytest

import jaxsal
from jaxsal import cli
from model_import import load_keras


def test_demo_writes_all_class_saliency(tmp_path, capsys):
    assert cli.main(["demo", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Total params: 34,826" in out
    # both files it writes are named (the .npy was written without a word)
    assert f"wrote {tmp_path / 'saliency_all_classes.png'}\n" in out
    assert f"wrote {tmp_path / 'saliency_all_classes.npy'} (the maps, (10, 10, 28, 28)" in out
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


def test_python_dash_m_runs_the_command(fixtures_dir):
    """``python -m jaxsal`` is the ``jaxsal`` command (for a venv whose bin/ is not on PATH),
    with its output and exit status."""
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root, JAX_PLATFORMS="cpu")
    ok = subprocess.run([sys.executable, "-m", "jaxsal", "summary",
                         str(fixtures_dir / "mnist_cnn_tfkeras2.h5")],
                        cwd=root, env=env, capture_output=True, text=True)
    assert ok.returncode == 0 and "conv2d_2 (Conv2D)" in ok.stdout, ok.stderr
    bad = subprocess.run([sys.executable, "-m", "jaxsal", "summary", "missing.h5"],
                         cwd=root, env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "missing.h5" in bad.stderr


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


def test_weights_only_files_run_with_config(tmp_path, fixtures_dir, mnist_digits, capsys):
    """A weights-only file (the .weights.h5 inside a .keras archive) with its architecture:
    the commands had no way to give it (only load_keras(..., config=) could). --config
    JSON gives the maps of the whole .keras file; without it the error says to pass one;
    an --out that is the config file is refused."""
    import zipfile

    keras_file = fixtures_dir / "mnist_cnn_keras3.keras"
    with zipfile.ZipFile(keras_file) as z:
        z.extract("config.json", tmp_path)
        z.extract("model.weights.h5", tmp_path)
    cfg, weights = str(tmp_path / "config.json"), str(tmp_path / "model.weights.h5")
    assert cli.main(["summary", weights, "--config", cfg]) == 0
    assert "conv2d_2 (Conv2D)" in capsys.readouterr().out
    assert cli.main(["summary", weights]) == 2
    # the command line's flag, as other errors name theirs ("overwrite=True (jaxsal:
    # --overwrite)"), not only load_keras's config=
    assert "pass the architecture as config= (model.to_json() or a config.json; jaxsal: " \
        "--config model.json)" in capsys.readouterr().err
    np.save(tmp_path / "x.npy", mnist_digits[:3])
    job = ["explain", weights, str(tmp_path / "x.npy"), "--targets", "3", "--config", cfg]
    assert cli.main(job + ["--out", str(tmp_path / "maps.npy")]) == 0
    model = load_keras(keras_file, head="logits")
    np.testing.assert_allclose(np.load(tmp_path / "maps.npy"),
                               jaxsal.saliency(model, mnist_digits[:3], 3), rtol=1e-5,
                               atol=1e-7)
    assert cli.main(job + ["--out", cfg]) == 2
    assert "is the --config file this command reads" in capsys.readouterr().err


def test_bad_file_is_a_clean_error(tmp_path, capsys):
    bad = tmp_path / "model.h5"
    bad.write_bytes(b"not a model")
    assert cli.main(["summary", str(bad)]) == 2
    assert "not a Keras file" in capsys.readouterr().err


@pytest.mark.parametrize("given, expected", [
    (["explain", "--method", "salency"], "unknown method 'salency'; did you mean 'saliency'?"),
    (["explain", "--method", "GradCAM"], "did you mean 'gradcam'?"),
    (["explain", "--method", "integrated-gradients"], "did you mean 'integrated_gradients'?"),
    (["explain", "--method", "xyz"], "unknown method 'xyz'; expected one of: saliency, "),
    (["evaluate", "maps.npy", "--metric", "delete"],
     "unknown metric 'delete'; did you mean 'deletion'? expected one of: deletion, insertion"),
])
def test_a_misspelt_method_or_metric_is_a_usage_error_naming_the_nearest(capsys, given,
                                                                        expected):
    """An unknown --method or --metric exits with argparse's status 2 before anything is
    read, suggesting the nearest names (argparse's own error listed all 34 methods, no
    hint)."""
    cmd, *rest = given
    with pytest.raises(SystemExit) as e:
        cli.main([cmd, "model.h5", "x.npy", *rest, "--out", "o.npy"])
    assert e.value.code == 2
    assert expected in capsys.readouterr().err


def test_a_cache_dir_that_is_a_file_is_refused_before_the_model_loads(tmp_path, capsys):
    """--cache-dir naming a file: JAX warned once and ran the job without the cache asked
    for; refused, exit status 2, before the model is read (here: no model file at all)."""
    np.save(tmp_path / "x.npy", np.zeros((2, 28, 28, 1), np.float32))
    taken = tmp_path / "cache"
    taken.write_text("")
    assert cli.main(["explain", str(tmp_path / "no_model.h5"), str(tmp_path / "x.npy"),
                     "--cache-dir", str(taken), "--out", str(tmp_path / "o.npy")]) == 2
    err = capsys.readouterr().err
    assert f"--cache-dir {taken} (or $JAXSAL_CACHE_DIR) is a file" in err, err
    assert not (tmp_path / "o.npy").exists()


@pytest.mark.parametrize("cmd", ["explain", "evaluate"])
def test_inputs_of_one_number_are_refused_before_the_model_loads(tmp_path, capsys, cmd,
                                                                 fixtures_dir):
    """A 0-d .npy as INPUTS failed, once the model was loaded, with Python's "len() of
    unsized object"."""
    np.save(tmp_path / "x.npy", np.float32(3))
    maps = ["x.npy", "--metric", "deletion"] if cmd == "evaluate" else []
    assert cli.main([cmd, str(fixtures_dir / "mnist_cnn_tfkeras2.h5"), str(tmp_path / "x.npy"),
                     *(str(tmp_path / m) if m.endswith(".npy") else m for m in maps),
                     "--out", str(tmp_path / "o.npy")]) == 2
    err = capsys.readouterr().err
    assert "x.npy: expected a batch (N, ...) with the examples along axis 0, got a 0-d " \
        "array (one float32 number)" in err, err


def test_help_names_every_command(capsys):
    """`jaxsal --help` states the whole first paragraph of the module docstring."""
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "``evaluate`` (batch jobs to disk)." in out


@pytest.fixture
def bad_npy_files(tmp_path, mnist_digits):
    """A good inputs file and the wrong files a user passes for one: an .npz archive, a
    truncated .npy and a text file named .npy (name -> path)."""
    np.save(tmp_path / "x.npy", mnist_digits[:2])
    np.savez(tmp_path / "x.npz", digits=mnist_digits[:2])
    (tmp_path / "trunc.npy").write_bytes((tmp_path / "x.npy").read_bytes()[:2000])
    (tmp_path / "text.npy").write_text("hi\n")
    return {n: str(tmp_path / n) for n in ("x.npy", "x.npz", "trunc.npy", "text.npy")}


_BAD_NPY_MESSAGES = {
    "x.npz": ["x.npz, an .npz archive", "(arrays: digits)",
              "np.save('{dir}/x_digits.npy', np.load('{dir}/x.npz')['digits'])"],
    "trunc.npy": ["trunc.npy is not a readable .npy file (truncated", "): "],
    "text.npy": ["text.npy is not a readable .npy file", "does not start with the .npy "
                 "signature"],
}


@pytest.mark.parametrize("where, bad", [
    (where, bad) for where in ("explain inputs", "explain --option", "evaluate maps",
                               "evaluate --option")
    for bad in ("x.npz", "trunc.npy", "text.npy")
    if not (where.endswith("--option") and bad == "x.npz")])  # @FILE must end .npy anyway
def test_npy_files_that_are_not_npy_arrays_are_named_and_explained(
        fixtures_dir, bad_npy_files, capsys, where, bad):
    """Every .npy a job reads (inputs, maps, --option NAME=@FILE) is checked by one helper:
    the error names the argument and the file, says a .npy array was expected and why the
    file is not one (with the archive's arrays and a command to extract one from an .npz)."""
    model = str(fixtures_dir / "mnist_cnn_keras3.keras")
    x, path = bad_npy_files["x.npy"], bad_npy_files[bad]
    argv = {"explain inputs": ["explain", model, path, "--out", path + ".maps.npy"],
            "explain --option": ["explain", model, x, "--method", "integrated_gradients",
                                 "--option", f"baseline=@{path}", "--out", x + ".maps.npy"],
            "evaluate maps": ["evaluate", model, x, path, "--metric", "deletion",
                              "--out", x + ".curves.npy"],
            "evaluate --option": ["evaluate", model, x, x, "--metric", "deletion", "--option",
                                  f"fill=@{path}", "--out", x + ".curves.npy"]}[where]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    what = {"explain inputs": "inputs: ", "evaluate maps": "maps: "}.get(where, "=@FILE: ")
    assert err.startswith("jaxsal: error: ") and what in err and "expected a .npy array" in err
    for part in _BAD_NPY_MESSAGES[bad]:
        assert part.format(dir=os.path.dirname(path)) in err


def _two_chunk_job(tmp_path, fixtures_dir, mnist_digits):
    """``jaxsal explain``'s argv for 4 digits in 2 chunks, and its --out."""
    np.save(tmp_path / "x.npy", mnist_digits[:4])
    out = str(tmp_path / "maps.npy")
    return ["explain", str(fixtures_dir / "mnist_cnn_keras3.keras"), str(tmp_path / "x.npy"),
            "--batch-size", "2", "--targets", "3", "--out", out], out


def _stopped_after_each_chunk(job, stop):
    """``cli._job`` whose progress callback calls ``stop()`` after reporting a chunk."""
    def stopped_job(args):
        model, inputs, progress = job(args)

        def progress_then_stop(done, total):
            progress(done, total)
            stop()

        return model, inputs, progress_then_stop

    return stopped_job


def test_ctrl_c_says_the_job_resumes(tmp_path, fixtures_dir, mnist_digits, capsys,
                                     monkeypatch):
    """Ctrl-C in a job (here after its first chunk) prints one line, not a traceback, and
    exits 130; running the same command again computes only the chunks left."""
    argv, out = _two_chunk_job(tmp_path, fixtures_dir, mnist_digits)
    job = cli._job

    def ctrl_c():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_job", _stopped_after_each_chunk(job, ctrl_c))
    try:
        rc = cli.main(argv)
    except KeyboardInterrupt:
        pytest.fail("KeyboardInterrupt escaped cli.main")
    assert rc == 130
    err = capsys.readouterr().err
    assert err == (f"jaxsal explain: interrupted; 1 of 2 chunks are finished and kept in {out}, "
                   "and running the same command again computes the rest\n")
    monkeypatch.setattr(cli, "_job", job)
    assert cli.main(argv) == 0
    progress = [line.split()[2] for line in capsys.readouterr().out.splitlines()
                if line.startswith("  chunks done ")]
    assert progress == ["2/2"]  # the first chunk was not computed again
    model = load_keras(fixtures_dir / "mnist_cnn_keras3.keras", head="logits")
    np.testing.assert_allclose(np.load(out), jaxsal.saliency(model, mnist_digits[:4], 3),
                               rtol=1e-5, atol=1e-8)


def test_sigterm_says_the_job_resumes(tmp_path, fixtures_dir, mnist_digits, capsys,
                                      monkeypatch):
    """SIGTERM (a scheduler's stop) in a job prints Ctrl-C's line, saying what is kept, and
    exits 143 (128 + SIGTERM); it ended the process silently. The handler is put back."""
    import signal

    argv, out = _two_chunk_job(tmp_path, fixtures_dir, mnist_digits)

    def callers(signum, frame):  # (the default handler would end pytest)
        raise RuntimeError("SIGTERM reached the caller's handler")

    monkeypatch.setattr(cli, "_job", _stopped_after_each_chunk(
        cli._job, lambda: os.kill(os.getpid(), signal.SIGTERM)))
    before = signal.signal(signal.SIGTERM, callers)
    try:
        assert cli.main(argv) == 143
        assert signal.getsignal(signal.SIGTERM) is callers
    finally:
        signal.signal(signal.SIGTERM, before)
    assert capsys.readouterr().err == (
        f"jaxsal explain: terminated (SIGTERM); 1 of 2 chunks are finished and kept in {out}, "
        "and running the same command again computes the rest\n")


def test_ctrl_c_before_any_chunk_says_so(tmp_path, fixtures_dir, mnist_digits, capsys,
                                         monkeypatch):
    """Ctrl-C before the first chunk finished said that the chunks finished so far are kept,
    although there were none."""
    argv, out = _two_chunk_job(tmp_path, fixtures_dir, mnist_digits)
    job = cli._job

    def ctrl_c_in_the_first_chunk(args):
        model, inputs, progress = job(args)

        class Stop:  # inputs whose first chunk is interrupted while it is read
            shape, dtype = inputs.shape, inputs.dtype

            def __len__(self):
                return len(inputs)

            def __getitem__(self, item):
                raise KeyboardInterrupt

            def __array__(self, *a, **k):
                return np.asarray(inputs, *a, **k)

        return model, Stop(), progress

    monkeypatch.setattr(cli, "_job", ctrl_c_in_the_first_chunk)
    assert cli.main(argv) == 130
    assert capsys.readouterr().err == (
        f"jaxsal explain: interrupted; no chunk had finished ({out} holds no maps yet): "
        "running the same command again starts the job\n")


@pytest.mark.parametrize("overwrite", [True, False])
def test_ctrl_c_before_a_job_says_none_had_started(tmp_path, fixtures_dir, mnist_digits, capsys,
                                                   monkeypatch, overwrite):
    """Ctrl-C before a job began, with --out an array of one's own (no progress file), said
    "running the same command again resumes the job in OUT where it stopped": there was no
    job, and the command again starts one replacing OUT (--overwrite) or refuses to."""
    import model_import

    argv, out = _two_chunk_job(tmp_path, fixtures_dir, mnist_digits)
    np.save(out, np.arange(6.0))  # the user's own array

    def ctrl_c(*args, **kwargs):  # while the model is read
        raise KeyboardInterrupt

    monkeypatch.setattr(model_import, "load_keras", ctrl_c)
    if not overwrite:  # (refused before the model is read: the Ctrl-C while reading inputs)
        monkeypatch.setattr(cli, "_input_files", ctrl_c)
    assert cli.main(argv + ["--overwrite"] * overwrite) == 130
    err = capsys.readouterr().err
    assert "resumes" not in err and not os.path.exists(out + ".progress.json"), err
    np.testing.assert_array_equal(np.load(out), np.arange(6.0))
    assert err == "jaxsal explain: interrupted; " + (
        f"no job had started: running the same command again starts the job (it replaces "
        f"{out}: --overwrite)\n" if overwrite else
        f"no job had started ({out} is left as it was, an array no job wrote: running the "
        f"same command again refuses to replace it; --overwrite replaces it)\n")


def _doubled(model, x, targets=None):
    """A method stand-in (no compilation): ``2 x``."""
    return 2 * np.asarray(x)


@pytest.mark.parametrize("overwrite", [False, True])
def test_ctrl_c_before_a_job_over_another_job_s_maps_promises_no_resume(
        tmp_path, fixtures_dir, mnist_digits, capsys, monkeypatch, overwrite):
    """Ctrl-C before the job began, with --out the maps of another job that finished, said
    "running the same command again resumes the job in OUT where it stopped": the command
    again was refused (another job's finished maps), or with --overwrite replaced them. It
    says OUT holds a finished job's maps and what the command does with another job's."""
    import model_import

    argv, out = _two_chunk_job(tmp_path, fixtures_dir, mnist_digits)
    other = jaxsal.FunctionModel(lambda p, xx: xx.reshape(len(xx), -1)[:, :3] * p, 1.0)
    jaxsal.explain_to_file(_doubled, other, mnist_digits[:4], out)  # another job, finished
    before = np.load(out)

    def ctrl_c(*args, **kwargs):  # while the model is read
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(model_import, "load_keras", ctrl_c)
        assert cli.main(argv + ["--overwrite"] * overwrite) == 130
    err = capsys.readouterr().err
    assert err == (
        f"jaxsal explain: interrupted; {out} holds the maps of a finished job (says its "
        f"progress file {out}.progress.json): running the same command again ends at once "
        "where they are its own maps, and " + (
            "replaces another job's (--overwrite)\n" if overwrite else
            "refuses to replace another job's (--overwrite replaces them)\n")), err
    np.testing.assert_array_equal(np.load(out), before)
    if not overwrite:  # (what it says: the same command refuses them, before any chunk)
        assert cli.main(argv) == 2
        assert f"{out} is the output of a finished job" in capsys.readouterr().err
        np.testing.assert_array_equal(np.load(out), before)


def test_ctrl_c_before_a_job_beside_an_unreadable_progress_file(tmp_path, fixtures_dir,
                                                                mnist_digits, capsys,
                                                                monkeypatch):
    """Ctrl-C before the job began, beside a progress file that cannot be read, promised a
    resume "where it stopped"; the command again refuses (nothing says which chunks are
    finished) and --overwrite starts over (test_cli_options, unreadable progress file)."""
    import model_import

    argv, out = _two_chunk_job(tmp_path, fixtures_dir, mnist_digits)
    np.save(out, np.arange(6.0))
    with open(out + ".progress.json", "w") as fh:
        fh.write("{")

    def ctrl_c(*args, **kwargs):  # while the model is read
        raise KeyboardInterrupt

    monkeypatch.setattr(model_import, "load_keras", ctrl_c)
    assert cli.main(argv) == 130
    err = capsys.readouterr().err
    assert err.startswith(f"jaxsal explain: interrupted; its progress file {out}.progress.json "
                          "cannot be read (") and err.endswith(
        f"so nothing says which chunks of {out} are finished: running the same command again "
        "refuses to resume it, saying what to delete; --overwrite starts it over\n"), err


def test_the_module_docstring_commands_run_as_written(tmp_path, fixtures_dir, mnist_digits,
                                                      monkeypatch):
    """Every `jaxsal ...` line of the CLI's docstring runs in order, with the fixture model
    for model.h5 and two digits for inputs.npy (shapley_values on patches of 14, not 7: 4
    groups, not 16, keeps it fast); the evaluate line takes the maps the first explain line
    wrote."""
    import shlex

    np.save(tmp_path / "inputs.npy", mnist_digits[:2])
    os.symlink(fixtures_dir / "mnist_cnn_tfkeras2.h5", tmp_path / "model.h5")
    monkeypatch.chdir(tmp_path)
    lines = [line.split() for line in cli.__doc__.splitlines()
             if line.strip().startswith("jaxsal ")]
    assert [words[1] for words in lines] == ["demo", "summary"] + ["explain"] * 4 + ["evaluate"]
    for words in lines:
        argv = [("14" if w == "7" else w) for w in words[1:]]
        assert cli.main(argv) == 0, shlex.join(words)


def test_demo_out_that_is_a_file_is_a_clear_error(tmp_path, capsys):
    """`jaxsal demo --out FILE` said "[Errno 17] File exists" (its --out is a folder)."""
    f = tmp_path / "out.npy"
    f.write_bytes(b"mine")
    assert cli.main(["demo", "--out", str(f)]) == 2
    assert capsys.readouterr().err == (
        f"jaxsal: error: --out {f} is a file; `jaxsal demo` writes a PNG and a .npy into the "
        "folder --out names (made if missing): pass a folder's path\n")
    assert f.read_bytes() == b"mine"


def test_every_argument_of_every_command_has_help(capsys):
    """`jaxsal CMD --help` explains every argument: MODEL, --method, --head (logits for
    explain, saved for evaluate), --batch-size, --cache-dir's environment variable, demo's
    and summary's options were listed bare."""
    import re

    for cmd in ("demo", "summary", "explain", "evaluate"):
        with pytest.raises(SystemExit):
            cli.main([cmd, "--help"])
        text = capsys.readouterr().out
        body = text.split("positional arguments:", 1)[-1].split("options:", 1)
        lines = "\n".join(body).splitlines()
        for i, line in enumerate(lines):
            # an argument's own line ("  --head HEAD   help..."): its help follows on it or
            # on the next, more indented, line
            m = re.match(r"^  (\S+(?: [A-Z_=]+)?)(\s{2,}\S.*)?$", line)
            if m and not m.group(2):
                nxt = lines[i + 1] if i + 1 < len(lines) else ""
                assert nxt.startswith(" " * 6) and nxt.strip(), f"jaxsal {cmd}: {line.strip()}"
    with pytest.raises(SystemExit):
        cli.main(["explain", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "JAXSAL_CACHE_DIR" in text and "default: logits" in text


def test_the_documented_progress_line_is_one_the_job_prints(capsys):
    """README and progress_printer's docstring showed "about 1 min left", which is never
    printed (below 90 s the time left is in seconds). The line shown is the one printed for
    a first chunk at 4.3 s and the fifth at 12.3 s: 2 s each, 35 chunks, 70 s left."""
    import pathlib

    times = iter([0.0, 4.3, 12.3])
    progress = cli.progress_printer(clock=lambda: next(times))
    progress(1, 40)
    progress(5, 40)
    line = capsys.readouterr().out.splitlines()[-1]
    assert line == "  chunks done 5/40  (12.3 s, about 70 s left)"
    readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert f"`{line}`" in readme
    assert " ".join(line.split()) in " ".join(cli.progress_printer.__doc__.split())


def test_progress_lines_say_the_time_left_at_this_run_s_rate(capsys):
    """The first chunk a run writes (it compiled the program; earlier runs' chunks are not
    this run's work) sets the start of the rate; from the next, each line says the time
    left."""
    times = iter([100.0, 130.0, 132.0, 134.0, 234.0, 9000.0])
    progress = cli.progress_printer(clock=lambda: next(times))
    for done in (4, 5, 6, 7, 8):  # a resumed job of 300 chunks, 3 finished before
        progress(done, 300 if done < 8 else 8)
    assert capsys.readouterr().out.splitlines() == [
        "  chunks done 4/300  (30.0 s)",
        "  chunks done 5/300  (32.0 s, about 10 min left)",  # 2 s each, 295 left
        "  chunks done 6/300  (34.0 s, about 10 min left)",
        "  chunks done 7/300  (134.0 s, about 2 h 49 min left)",  # 104 s / 3 each, 293 left
        "  chunks done 8/8  (8900.0 s)"]
    assert [cli._duration(s) for s in (0.2, 89, 91, 5300, 5431)] == [
        "1 s", "89 s", "2 min", "88 min", "1 h 31 min"]


def test_progress_counts_chunks_done_and_the_time_left_of_those_to_compute(capsys):
    """The progress line counts chunks done ("chunk 1/3" read as chunk 1, which errors name
    the second: "chunk 1 (inputs 2:4) failed"), and chunks left out (``--keep-going``) are
    not in the time left: after the last chunk to compute none is said."""
    times = iter([0.0, 1.0, 2.0, 0.0, 2.0, 4.0])
    progress = cli.progress_printer(clock=lambda: next(times))
    progress(1, 3)
    progress(2, 3, left_out=1)  # chunk 1 left out, chunk 2 the last
    late = cli.progress_printer(clock=lambda: next(times))
    late(1, 5)
    late(2, 5, left_out=1)  # 2 s each, 2 chunks to compute
    assert capsys.readouterr().out.splitlines() == [
        "  chunks done 1/3  (1.0 s)", "  chunks done 2/3  (2.0 s)",
        "  chunks done 1/5  (2.0 s)", "  chunks done 2/5  (4.0 s, about 4 s left)"]
