"""explain_to_file: chunked, padded, resumable batch jobs that never lose finished chunks."""

import functools
import os
import pickle
import re

import numpy as np
import pytest

import jaxsal
from batch_helpers import rows_of, stop_after, stop_after_two
from jaxsal._src.job_files import unfinished


class Counting:
    """A method stand-in: the model's logits, with a call log; fails on NaN like jaxsal does."""

    def __init__(self):
        self.calls = []

    def __call__(self, model, x, targets=None):
        self.calls.append(len(x))
        if not np.isfinite(x).all():
            raise ValueError("inputs contain NaN or inf")
        return np.asarray(model(x))


@pytest.fixture(scope="module")
def model(fixtures_dir):
    from model_import import load_keras

    return load_keras(fixtures_dir / "mnist_cnn_keras3.keras", head="logits")


@pytest.fixture(scope="module")
def digits(mnist_digits):
    return mnist_digits[:23]


def test_matches_one_call_and_pads_last_chunk(tmp_path, model, digits):
    m = Counting()
    out = jaxsal.explain_to_file(m, model, digits, tmp_path / "maps.npy", batch_size=8)
    np.testing.assert_allclose(out, np.asarray(model(digits)), rtol=1e-5, atol=1e-5)
    assert m.calls == [8, 8, 8]  # 23 inputs -> 3 chunks, the last padded to the batch size


def test_failure_keeps_finished_chunks_and_resume_skips_them(tmp_path, model, digits):
    bad = digits.copy()
    bad[17, 3, 3, 0] = np.nan  # inside chunk 2 (inputs 16:23)
    m = Counting()
    path = tmp_path / "maps.npy"
    with pytest.raises(ValueError, match=r"chunk 2 \(inputs 16:23, padded to 8 by repeating "
                       r"the last\) failed: .*NaN.*The 2 chunk\(s\) finished so far are saved"):
        jaxsal.explain_to_file(m, model, bad, path, batch_size=8)
    saved = rows_of(path)  # (np.load refuses it until the job finishes)
    expected = np.asarray(model(digits))
    np.testing.assert_allclose(saved[:16], expected[:16], rtol=1e-5, atol=1e-5)
    m2 = Counting()
    out = jaxsal.explain_to_file(m2, model, digits, path, batch_size=8)
    assert m2.calls == [8]  # only the failed chunk is recomputed
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_failure_of_the_first_chunk_says_nothing_was_written(tmp_path, model, digits):
    """A method of one's own failing in the first chunk (never dry-run: it may have side
    effects); jaxsal's own refuses such inputs before any chunk (the first chunk's call is
    traced first: test_batch_refusals.py)."""
    path = tmp_path / "maps.npy"

    def mine(model, x, targets=None):
        return jaxsal.saliency(model, x, targets)

    with pytest.raises(ValueError, match=r"chunk 0 \(inputs 0:8\) failed: expected x of shape "
                       r"\(N, 28, 28, 1\).*No chunk had finished"):
        jaxsal.explain_to_file(mine, model, digits[..., 0], path, batch_size=8)
    assert not path.exists()
    with pytest.raises(ValueError, match=r"^expected x of shape \(N, 28, 28, 1\).*Refused "
                       "before any work"):
        jaxsal.explain_to_file(jaxsal.saliency, model, digits[..., 0], path, batch_size=8)
    assert not path.exists()


def test_changed_job_starts_over(tmp_path, model, digits):
    """Another job (other targets) at a finished job's path is refused, before any chunk
    (it replaced the finished maps without a word); with overwrite=True it starts over."""
    path = tmp_path / "maps.npy"
    jaxsal.explain_to_file(Counting(), model, digits, path, batch_size=8)
    before = np.load(path)
    m = Counting()
    with pytest.raises(FileExistsError, match=r"maps.npy is the output of a finished job \("
                       r"says its progress file .*maps.npy.progress.json; what differs from "
                       r"this job: the targets\); this job would replace it. Write to another "
                       r"path \(--out\), or pass overwrite=True"):
        jaxsal.explain_to_file(m, model, digits, path, targets=1, batch_size=8)
    assert m.calls == []
    np.testing.assert_array_equal(np.load(path), before)
    jaxsal.explain_to_file(m, model, digits, path, targets=1, batch_size=8,  # other targets
                           overwrite=True)
    assert len(m.calls) == 3


def _rewrite_after_one_chunk(model, digits, path, edit) -> None:
    """A job of 3 chunks of 8 stopped after its first, then its progress file rewritten as
    ``edit(record)`` (as another jaxsal version would have written it)."""
    import json

    progress = path.with_name(path.name + ".progress.json")
    with pytest.raises(KeyboardInterrupt):
        jaxsal.explain_to_file(Counting(), model, digits, path, batch_size=8,
                               on_chunk=stop_after(1))
    progress.write_text(json.dumps(edit(json.loads(progress.read_text()))))


def test_an_unfinished_job_of_the_old_progress_format_is_said_to_start_over(tmp_path, model,
                                                                          digits):
    """An unfinished job whose progress file is of format 1 (a jaxsal before the model
    fingerprint), which this jaxsal never resumes, was refused saying "that job's own command
    resumes it": running it again met the same refusal. Now it says the job can only start
    over (overwrite=True), which then computes every chunk."""
    path, progress = tmp_path / "maps.npy", tmp_path / "maps.npy.progress.json"
    _rewrite_after_one_chunk(model, digits, path,
                             lambda prog: {**prog, "format": 1})  # as that jaxsal wrote it
    m = Counting()
    with pytest.raises(FileExistsError, match=re.escape(
            f"{path} holds 1 of 3 finished chunks of an unfinished job that another jaxsal "
            f"version wrote (says its progress file {progress}, of format 1; this jaxsal "
            "resumes format 2 only, so it can only start that job over); this job would "
            "replace it. Write to another path (--out), or pass overwrite=True")):
        jaxsal.explain_to_file(m, model, digits, path, batch_size=8)  # the same job
    assert m.calls == []
    out = jaxsal.explain_to_file(m, model, digits, path, batch_size=8, overwrite=True)
    assert m.calls == [8, 8, 8]
    np.testing.assert_allclose(out, np.asarray(model(digits)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("batch_size", [8, 32])  # 3 chunks; one
def test_a_crash_between_the_finished_header_and_the_progress_file(tmp_path, model, digits,
                                                                   monkeypatch, batch_size):
    """Killed after the last chunk's rows are written and the files' headers marked finished
    (job_files.mark_finished), before the progress file records that chunk: the .npy reads
    as finished while its progress file lists one chunk fewer. The same call then resumes,
    computing that last chunk only (the only one, of a job of one chunk: its progress file
    lists none, and the file is its own to replace without overwrite=True), and returns the
    maps of one call."""
    import jaxsal._src.batch as batch

    class Killed(BaseException):
        pass

    marked = []
    real_mark, real_replace = batch.mark_finished, batch._replace_json

    def mark(path):
        real_mark(path)
        marked.append(path)

    def replace(path, record):
        if marked:
            raise Killed
        real_replace(path, record)

    monkeypatch.setattr(batch, "mark_finished", mark)
    monkeypatch.setattr(batch, "_replace_json", replace)
    path = tmp_path / "maps.npy"
    with pytest.raises(Killed):
        jaxsal.explain_to_file(Counting(), model, digits, path, batch_size=batch_size)
    monkeypatch.undo()
    chunks = -(-len(digits) // batch_size)
    assert marked == [str(path)] and unfinished(path)[:2] == (chunks - 1, chunks)
    expected = np.asarray(model(digits))
    np.testing.assert_allclose(np.load(path), expected, rtol=1e-5, atol=1e-5)  # every row
    m = Counting()
    out = jaxsal.explain_to_file(m, model, digits, path, batch_size=batch_size)
    assert m.calls == [min(batch_size, len(digits))]  # the last chunk, once
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    assert unfinished(path) is None
    m = Counting()
    jaxsal.explain_to_file(m, model, digits, path, batch_size=batch_size)  # finished
    assert m.calls == []


def test_rejects_bad_arguments(tmp_path, model, digits):
    with pytest.raises(ValueError, match="batch_size"):
        jaxsal.explain_to_file(Counting(), model, digits, tmp_path / "a.npy", batch_size=0)
    with pytest.raises(ValueError, match="empty"):
        jaxsal.explain_to_file(Counting(), model, digits[:0], tmp_path / "b.npy")


def test_class_ids_out_of_range_are_refused_before_any_chunk(tmp_path, model, digits):
    """One bad label among per-input targets (input 17 of 23, 10 classes) was met in chunk 2,
    after two chunks were computed, named by no input; fixing it changes the job, so they
    were lost. Refused before the first chunk, naming the input; 1-D ids too."""
    labels = np.arange(23)[:, None] % 10
    labels[17] = 10
    m = Counting()
    with pytest.raises(ValueError, match=r"target ids out of range: expected 0 <= id < 10, "
                       r"got input 17: \[10\]; checked before the job's first chunk"):
        jaxsal.explain_to_file(m, model, digits, tmp_path / "l.npy", targets=labels,
                               batch_size=8)
    with pytest.raises(ValueError, match=r"expected 0 <= id < 10, got \[-1, 12\]"):
        jaxsal.explain_to_file(m, model, digits, tmp_path / "l.npy", targets=[3, 12, -1],
                               batch_size=8)
    assert m.calls == [] and not (tmp_path / "l.npy").exists()


@pytest.mark.parametrize("units", [1, 2])
def test_out_of_range_ids_say_one_unit_only_for_a_one_unit_output(tmp_path, units):
    """Both a one-unit (sigmoid) output and a two-unit softmax have classes 0 and 1; only the
    first is "a one-unit output" (a Dense(2, softmax) was described as one), as the methods'
    own check says."""
    m = jaxsal.FunctionModel(lambda p, x: x @ p, np.ones((3, units), np.float32))
    x = np.ones((4, 3), np.float32)
    with pytest.raises(ValueError, match=r"expected 0 <= id < 2\b") as e:
        jaxsal.explain_to_file(Counting(), m, x, tmp_path / "u.npy", targets=2)
    assert ("one-unit output" in str(e.value)) == (units == 1), str(e.value)
    with pytest.raises(ValueError, match=r"expected 0 <= id < 2\b") as direct:
        jaxsal.saliency(m, x, 2)  # (the method's check, which the job's matches)
    assert ("one-unit output" in str(direct.value)) == (units == 1), str(direct.value)
    assert not (tmp_path / "u.npy").exists()


def test_output_path_that_a_job_reads_from_is_refused(tmp_path, model, digits):
    """Writing the maps over the file the inputs (or an option) are memory-mapped from would
    overwrite them while later chunks still read them: refused before any chunk."""
    calls = []

    def doubled(model, x, targets=None, *, fill=1.0):  # maps the size of the inputs
        calls.append(len(x))
        return 2 * np.asarray(x) * fill

    path = tmp_path / "x.npy"
    np.save(path, digits)
    with pytest.raises(ValueError, match=r"x\.npy is the file inputs is read from"):
        jaxsal.explain_to_file(doubled, model, np.load(path, mmap_mode="r"), path,
                               batch_size=8)
    assert calls == []
    np.testing.assert_array_equal(np.load(path), digits)  # the inputs are untouched

    fill_path = tmp_path / "fill.npy"
    np.save(fill_path, np.ones_like(digits))  # one row per input: sliced with the inputs
    with pytest.raises(ValueError, match=r"fill\.npy is the file option fill is read from"):
        jaxsal.explain_to_file(doubled, model, digits, fill_path, batch_size=8,
                               fill=np.load(fill_path, mmap_mode="r"))
    np.testing.assert_array_equal(np.load(fill_path), np.ones_like(digits))


def test_an_unwritable_output_path_fails_before_any_chunk(tmp_path, model, digits):
    for path, error in ((tmp_path / "missing" / "maps.npy", FileNotFoundError),
                        (tmp_path, IsADirectoryError)):
        m = Counting()
        with pytest.raises(error, match="does not exist|is a folder"):
            jaxsal.explain_to_file(m, model, digits, path, batch_size=8)
        assert m.calls == []  # no chunk was computed only to be lost


@pytest.mark.parametrize("name", ["", "new/", "x.npy/"])
def test_an_output_path_that_names_no_file_fails_before_any_chunk(tmp_path, model, digits,
                                                                  monkeypatch, name):
    """An empty path, or one ending in a separator (a folder to be, a file's name with a
    slash), failed only after the first chunk, leaving a stray progress file, with "[Errno 2]
    No such file or directory: ''"."""
    monkeypatch.chdir(tmp_path)
    np.save("x.npy", digits)
    m = Counting()
    with pytest.raises(ValueError, match=(
            rf"expected path as the name of the \.npy file to write the maps to, got "
            rf"'{name}', which names no file; add the file's name \(e\.g\. maps\.npy\)")):
        jaxsal.explain_to_file(m, model, digits, name, batch_size=8)
    assert m.calls == [] and sorted(os.listdir(tmp_path)) == ["x.npy"]


class Unready:
    """What a JAX call returns before its device work is done: the error (out of memory...)
    comes when the values are read."""

    def __array__(self, dtype=None, copy=None):
        raise RuntimeError("RESOURCE_EXHAUSTED: out of memory")


@pytest.mark.parametrize("when", ["call", "read"])
def test_any_error_of_a_chunk_names_it_and_keeps_the_finished_ones(tmp_path, model, digits,
                                                                   when):
    """An error other than ValueError (a TypeError, a runtime error raised when the results
    are read) keeps its type and gains a note naming the chunk; resuming computes the rest."""
    calls, transient = [], {"failing": True}  # state (a list, a dict), not a setting

    def fails_on_chunk_1(model, x, targets=None):
        calls.append(len(x))
        if len(calls) == 2 and transient["failing"]:
            if when == "call":
                raise RuntimeError("RESOURCE_EXHAUSTED: out of memory")
            return Unready()
        return np.asarray(model(x))

    path = tmp_path / "maps.npy"
    with pytest.raises(RuntimeError, match="out of memory") as e:
        jaxsal.explain_to_file(fails_on_chunk_1, model, digits, path, batch_size=8)
    assert e.value.__notes__ == [
        f"explain_to_file: chunk 1 (inputs 8:16) failed. The 1 chunk(s) finished so far are "
        f"saved in {path}; run the same call again to resume."]
    calls.clear()
    transient["failing"] = False
    out = jaxsal.explain_to_file(fails_on_chunk_1, model, digits, path, batch_size=8)
    assert calls == [8, 8]  # chunks 1 and 2
    np.testing.assert_allclose(out, np.asarray(model(digits)), rtol=1e-5, atol=1e-5)


class Shifted:
    """A method stand-in with an option of one row per input (as IG's baselines or evaluate's
    maps): the logits plus each input's first shift value; refuses NaN like jaxsal does."""

    def __init__(self):
        self.calls = []

    def __call__(self, model, x, targets=None, *, shift, check_finite=True):
        self.calls.append(len(x))
        if check_finite and not (np.isfinite(x).all() and np.isfinite(shift).all()):
            raise ValueError("inputs or shift contain NaN or inf")
        return np.asarray(model(x)) + np.asarray(shift).reshape(len(x), -1)[:, :1]


def test_an_option_given_per_input_is_checked_and_hashed_like_the_inputs(tmp_path, model,
                                                                          digits):
    """A NaN row of a per-input option (evaluate's maps, IG's baselines) stopped the job even
    with keep_going, named no input; and the option was signed whole, so fixing that row
    started the job over. Now its chunk is left out naming the input; fixed, only that chunk
    is computed; a changed row of a finished chunk recomputes that chunk alone."""
    shift = np.random.default_rng(0).normal(size=digits.shape).astype(np.float32)
    want = np.asarray(model(digits)) + shift.reshape(len(digits), -1)[:, :1]
    bad = shift.copy()
    bad[12, 3] = np.nan
    path = tmp_path / "maps.npy"
    with pytest.raises(jaxsal.IncompleteJob, match=r"chunk 1 \(inputs 8:16\): input 12's "
                       r"shift contain NaN or inf") as info:
        jaxsal.explain_to_file(Shifted(), model, digits, path, batch_size=8, shift=bad,
                               keep_going=True)
    assert info.value.rows == [12]
    m = Shifted()
    out = jaxsal.explain_to_file(m, model, digits, path, batch_size=8, shift=shift)
    assert m.calls == [8]  # only the chunk left out
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
    moved = shift.copy()
    moved[20] += 1.0  # a finished chunk's row changed: that chunk alone again
    m = Shifted()
    out = jaxsal.explain_to_file(m, model, digits, path, batch_size=8, shift=moved)
    assert m.calls == [8]
    np.testing.assert_allclose(out[20], want[20] + 1.0, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out[:16], want[:16], rtol=1e-5, atol=1e-5)


class Listed(Shifted):
    """:class:`Shifted` with its rows as the first entry of a list option, as XRAI's
    ``baselines=[rows, 0.0]``."""

    def __call__(self, model, x, targets=None, *, shift):
        return super().__call__(model, x, targets, shift=shift[0])


def test_per_input_arrays_inside_a_list_option_are_sliced_with_the_inputs(tmp_path, model,
                                                                          digits):
    """XRAI's baselines are a list, each entry a scalar, one input's shape or one row per
    input. A job passed the (N, ...) entries whole to every chunk, whose XRAI refused them
    (a baseline of N rows for a chunk of 2). Such entries are sliced with the inputs, and
    hashed with them: a changed row recomputes its chunk alone."""
    from small_models import grid_regions

    x = digits[:5]
    rows = (0.3 * x + 0.1).astype(np.float32)
    opts = dict(segments=grid_regions(), steps=3, min_pixel_diff=5)
    want = jaxsal.xrai(model, x, [2, 7], baselines=[rows, 0.0], **opts)
    out = jaxsal.explain_to_file(jaxsal.xrai, model, x, tmp_path / "xrai.npy", targets=[2, 7],
                                 batch_size=2, baselines=[rows, 0.0], **opts)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6 * np.abs(want).max())
    path = tmp_path / "listed.npy"
    m = Listed()
    jaxsal.explain_to_file(m, model, x, path, batch_size=2, shift=[rows, 1.0])
    assert m.calls == [2, 2, 2]
    moved = rows.copy()
    moved[4] += 0.5  # a row of the last chunk changed: that chunk alone again
    m = Listed()
    out = jaxsal.explain_to_file(m, model, x, path, batch_size=2, shift=[moved, 1.0])
    assert m.calls == [2]
    np.testing.assert_allclose(out[4], np.asarray(model(x[4:]))[0] + moved[4].ravel()[0],
                               rtol=1e-5, atol=1e-5)


def test_the_same_class_ids_written_another_way_are_the_same_job(tmp_path, model, digits):
    """range(3), [0, 1, 2], a tuple and an int32 array are one job: a finished job called
    again with another of them returns its file (it was computed again); an int and [1]
    differ (one map per input against one per class)."""
    path = tmp_path / "ids.npy"
    jaxsal.explain_to_file(Counting(), model, digits, path, targets=[0, 1, 2], batch_size=8)
    for same in (range(3), (0, 1, 2), np.arange(3, dtype=np.int32)):
        m = Counting()
        jaxsal.explain_to_file(m, model, digits, path, targets=same, batch_size=8)
        assert m.calls == [], same
    m = Counting()
    jaxsal.explain_to_file(m, model, digits, path, targets=1, batch_size=8, overwrite=True)
    again = Counting()
    jaxsal.explain_to_file(again, model, digits, path, targets=[1], batch_size=8,
                           overwrite=True)
    assert m.calls == again.calls == [8, 8, 8]


def _two_chunks_of_eight(tmp_path, model, digits):
    """The path of a job stopped (Ctrl-C) with inputs 0:16 of 23 finished, in chunks of 8."""
    path = tmp_path / "maps.npy"
    with pytest.raises(KeyboardInterrupt):
        jaxsal.explain_to_file(Counting(), model, digits, path, batch_size=8,
                               on_chunk=stop_after_two)
    return path


def test_an_array_no_job_wrote_is_never_replaced_without_overwrite(tmp_path, model, digits):
    """A .npy at the path that no progress file lists (an array of one's own, or a finished
    job's maps whose progress file is gone) was overwritten without a word: refused before
    any chunk, naming the file and the fix, the file untouched; overwrite=True replaces it."""
    path = tmp_path / "mine.npy"
    mine = np.arange(23 * 10, dtype=np.float32).reshape(23, 10)
    np.save(path, mine)
    m = Counting()
    with pytest.raises(FileExistsError, match=r"mine\.npy exists and no progress file lists "
                       r"it \(an array of your own, or the maps of a finished job whose "
                       r"progress file is gone\); this job would replace it\. Write to another "
                       r"path \(--out\), or pass overwrite=True \(jaxsal: --overwrite\)"):
        jaxsal.explain_to_file(m, model, digits, path, batch_size=8)
    assert m.calls == [] and not os.path.exists(f"{path}.progress.json")
    np.testing.assert_array_equal(np.load(path), mine)
    # nor with resume=False (which computes every chunk again, but owns no file by it)
    with pytest.raises(FileExistsError, match="no progress file lists it"):
        jaxsal.explain_to_file(m, model, digits, path, batch_size=8, resume=False)
    out = jaxsal.explain_to_file(m, model, digits, path, batch_size=8, overwrite=True)
    assert m.calls == [8, 8, 8]
    np.testing.assert_allclose(out, np.asarray(model(digits)), rtol=1e-5, atol=1e-5)
    # a finished job's maps whose progress file is gone: the same
    os.remove(f"{path}.progress.json")
    with pytest.raises(FileExistsError, match="no progress file lists it"):
        jaxsal.explain_to_file(Counting(), model, digits, path, batch_size=8)


def test_a_killed_job_s_file_never_reads_as_finished_maps(tmp_path, model, digits):
    """A job's .npy carries an unfinished mark in its header until its last row is written:
    np.load refuses it (it read as plain maps, rows of zeros for the unfinished chunks, once
    the progress file was deleted); resumed, or started over where the progress file is
    gone (its rows are no finished result: no overwrite=True needed), the finished file
    loads. The mark is in the header only: the data are where NumPy reads them."""
    from jaxsal._src.job_files import marked_unfinished

    path = _two_chunks_of_eight(tmp_path, model, digits)  # 2 of 3 chunks finished
    assert marked_unfinished(path)
    with pytest.raises(ValueError, match="UNFINISHED jaxsal job: its unwritten rows are "
                                         "zeros; run the job again to finish it"):
        np.load(path)
    expected = np.asarray(model(digits))
    rows = rows_of(path)
    np.testing.assert_allclose(rows[:16], expected[:16], rtol=1e-5, atol=1e-5)
    assert not rows[16:].any()
    m = Counting()
    out = jaxsal.explain_to_file(m, model, digits, path, batch_size=8)  # resumed
    assert m.calls == [8] and not marked_unfinished(path)
    np.testing.assert_allclose(np.load(path), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.load(path), out)
    # killed again (another path), its progress file deleted: still refused by np.load
    os.mkdir(tmp_path / "sub")
    other = _two_chunks_of_eight(tmp_path / "sub", model, digits)
    os.remove(f"{other}.progress.json")
    with pytest.raises(ValueError, match="UNFINISHED jaxsal job"):
        np.load(other)
    m = Counting()
    out = jaxsal.explain_to_file(m, model, digits, other, batch_size=8)  # starts over
    assert m.calls == [8, 8, 8]
    np.testing.assert_allclose(np.load(other), expected, rtol=1e-5, atol=1e-5)


def test_an_unfinished_file_of_a_jaxsal_before_the_mark_resumes(tmp_path, model, digits):
    """A job's file written before the unfinished mark (NumPy's own header, rows of zeros
    where unfinished): resumed as before, computing only the chunk left."""
    from jaxsal._src.job_files import mark_finished, marked_unfinished

    path = _two_chunks_of_eight(tmp_path, model, digits)
    mark_finished(path)  # (the header such a jaxsal wrote; its progress file: 2 of 3)
    assert not marked_unfinished(path) and unfinished(path)[:2] == (2, 3)
    m = Counting()
    out = jaxsal.explain_to_file(m, model, digits, path, batch_size=8)
    assert m.calls == [8]
    np.testing.assert_allclose(out, np.asarray(model(digits)), rtol=1e-5, atol=1e-5)


def test_resume_recomputes_the_finished_chunks_whose_inputs_changed(tmp_path, model, digits):
    """The same command over another data set of the same shape (or with one input fixed)
    keeps only the finished chunks whose inputs are unchanged: none of the old inputs' maps
    is mixed into the new job's file."""
    path = _two_chunks_of_eight(tmp_path, model, digits)  # chunks 0 and 1 of 3 finished
    other = digits.copy()
    other[9] = digits[20]  # an input of chunk 1 changed
    m = Counting()
    out = jaxsal.explain_to_file(m, model, other, path, batch_size=8)
    assert m.calls == [8, 8]  # chunks 1 and 2; chunk 0's inputs are the same
    np.testing.assert_allclose(out, np.asarray(model(other)), rtol=1e-5, atol=1e-5)


def _doubled(model, x, targets=None):
    """A method of one's own that compiles nothing: maps ``2 x`` (NaN where ``x`` is)."""
    _doubled.calls.append(len(x))
    return 2 * np.asarray(x, np.float32)


@pytest.fixture(scope="module")
def tiny():
    """A model of 4 features and 3 classes, for jobs of a method that never calls it."""
    return jaxsal.FunctionModel(lambda p, x: x @ p, np.ones((4, 3), np.float32))


@pytest.mark.parametrize("how", ["stopped", "torn", "keep_going", "stopped, numpy's header"])
def test_a_finished_job_resumed_on_changed_inputs_reads_as_unfinished(tmp_path, tiny,
                                                                      monkeypatch, how):
    """A finished job run again on inputs changed in chunks 1 and 2 recomputes them; it
    wrote their rows into a file whose header and progress file still said finished, so
    np.load, jaxsal's unfinished() and `jaxsal evaluate`'s check (against the old inputs) read
    a mix of old and new maps as finished: stopped after chunk 1, killed half-way through
    writing it ("torn"), or a chunk left out by keep_going (whose error says the file "reads
    as unfinished"). Before any row is written, the file is marked unfinished again and the
    progress file lists only the chunks kept; also in a file whose header (NumPy's, of a
    jaxsal before the mark) has no room for the mark, which is rewritten whole."""
    import jaxsal._src.batch as batch
    from jaxsal._src.job_files import marked_unfinished

    x = np.random.RandomState(0).randn(12, 4).astype(np.float32)
    path = tmp_path / "maps.npy"
    _doubled.calls = []
    jaxsal.explain_to_file(_doubled, tiny, x, path, batch_size=4)
    if how.endswith("numpy's header"):
        np.save(path, np.load(path))  # (its header padded to 128 bytes: no room for the mark)
    new = x.copy()
    new[5] += 1.0
    new[9] = np.nan if how == "keep_going" else new[9] + 1.0
    _doubled.calls = []
    if how == "torn":
        def torn(out, lo, hi, maps):  # killed with half the chunk's rows on the disk
            out[lo:lo + 2] = maps[:2]
            out.flush()
            raise KeyboardInterrupt

        monkeypatch.setattr(batch, "_write", torn)
    with pytest.raises(jaxsal.IncompleteJob if how == "keep_going" else KeyboardInterrupt):
        jaxsal.explain_to_file(_doubled, tiny, new, path, batch_size=4, keep_going=True,
                               on_chunk=stop_after(2) if how.startswith("stopped") else None)
    monkeypatch.undo()
    kept = {"torn": 1}.get(how, 2)  # chunk 0, and chunk 1 where it was written whole
    assert unfinished(path)[:2] == (kept, 3) and marked_unfinished(path)
    rows = rows_of(path)  # (checks that np.load refuses it)
    np.testing.assert_array_equal(rows[:4 * kept], 2 * new[:4 * kept])
    _doubled.calls = []
    new[9] = x[9] + 1.0
    out = jaxsal.explain_to_file(_doubled, tiny, new, path, batch_size=4)
    assert _doubled.calls == [4] * (3 - kept)  # the chunks not yet recomputed
    np.testing.assert_array_equal(np.load(path), 2 * new)
    np.testing.assert_array_equal(out, 2 * new)
    assert unfinished(path) is None and not marked_unfinished(path)


def test_a_job_starting_over_leaves_the_old_file_to_its_readers(tmp_path, tiny):
    """A job that starts over at a finished job's path (overwrite=True) opened the file in
    place, truncating it under what still reads it: the memory map the first job returned
    and an np.load(mmap_mode="r") of it (`jaxsal evaluate`'s MAPS) read the new job's rows
    and zeros (a smaller new file: SIGBUS). The new file is made beside it and put in place:
    they keep the old values, stopped or finished, and the path holds the new job's."""
    x = np.random.RandomState(0).randn(8, 4).astype(np.float32)
    path = tmp_path / "maps.npy"
    _doubled.calls = []
    first = jaxsal.explain_to_file(_doubled, tiny, x, path, batch_size=4)
    held = np.load(path, mmap_mode="r")
    with pytest.raises(KeyboardInterrupt):
        jaxsal.explain_to_file(_doubled, tiny, -x, path, batch_size=4, resume=False,
                               overwrite=True, on_chunk=stop_after(1))
    np.testing.assert_array_equal(first, 2 * x)
    np.testing.assert_array_equal(held, 2 * x)
    assert unfinished(path)[:2] == (1, 2)
    np.testing.assert_array_equal(rows_of(path)[:4], -2 * x[:4])
    out = jaxsal.explain_to_file(_doubled, tiny, -x, path, batch_size=4, resume=False,
                                 overwrite=True)
    np.testing.assert_array_equal(out, -2 * x)
    np.testing.assert_array_equal(first, 2 * x)
    assert sorted(os.listdir(tmp_path)) == ["maps.npy", "maps.npy.progress.json"]


def _labelled(model, x, targets=None):
    """A method of one's own that compiles nothing: each input's values times its label."""
    _labelled.calls.append(len(x))
    return np.asarray(x, np.float32) * np.asarray(targets, np.float32)[:, :1]


def test_per_input_labels_are_hashed_chunk_by_chunk(tmp_path, tiny):
    """(N, T) labels were hashed whole into the job's signature: one label fixed made
    another job, refused without overwrite=True, then every chunk computed again. Now their
    rows' shape and dtype are signed and their rows hashed with each chunk's inputs: fixing
    one label computes its chunk alone (in any integer dtype: the same job)."""
    x = np.random.RandomState(0).randn(12, 4).astype(np.float32)
    labels = np.arange(12)[:, None] % 3
    path = tmp_path / "maps.npy"
    _labelled.calls = []
    jaxsal.explain_to_file(_labelled, tiny, x, path, targets=labels, batch_size=4)
    fixed = labels.astype(np.int32)
    fixed[9] = 2  # (was 0)
    _labelled.calls = []
    out = jaxsal.explain_to_file(_labelled, tiny, x, path, targets=fixed, batch_size=4)
    assert _labelled.calls == [4]  # chunk 2 only
    np.testing.assert_array_equal(out, x * fixed[:, :1])


def test_another_job_s_refusal_says_what_differs(tmp_path, tiny):
    """Another job at a finished job's path is refused (overwrite=True replaces it); the
    error said nothing of how it differs. Its progress file now keeps a hash of each part of
    the job's signature, and the error names those that differ."""
    x = np.random.RandomState(0).randn(8, 4).astype(np.float32)
    path = tmp_path / "maps.npy"
    _doubled.calls = []
    jaxsal.explain_to_file(_doubled, tiny, x, path, targets=0, batch_size=4)
    for kw, differs in (({"targets": 1}, "what differs from this job: the targets"),
                        ({"targets": 0, "resume": False}, "it is this job, run with "
                         "resume=False"),
                        ({"targets": 1, "batch_size": 8, "method": _labelled},
                         "what differs from this job: the method and the targets")):
        method = kw.pop("method", _doubled)
        with pytest.raises(FileExistsError, match=re.escape(
                f"{path} is the output of a finished job (says its progress file {path}"
                f".progress.json; {differs})")):
            jaxsal.explain_to_file(method, tiny, x, path, **{"batch_size": 4, **kw})


def test_a_symbolic_link_to_a_job_s_output_is_that_job_s_file(tmp_path, model, digits):
    """Through a symbolic link, another job's output (found by its progress file, named after
    it) is still its: it reads as unfinished, and a job writing the link is refused before any
    chunk. Both went by the link's name: the unfinished maps read as plain, and a job writing
    the link overwrote them (then its progress file vouched for that job's rows)."""
    path = _two_chunks_of_eight(tmp_path, model, digits)  # 2 of 3 chunks finished
    before = rows_of(path)
    os.symlink(path.name, tmp_path / "link.npy")
    assert unfinished(tmp_path / "link.npy") == (2, 3, f"{os.path.realpath(path)}"
                                                 ".progress.json")
    m = Counting()
    with pytest.raises(FileExistsError, match=r"link.npy \(a symbolic link to .*maps.npy\) is "
                       r"the output of another job \(2 of 3 chunks done"):
        jaxsal.explain_to_file(m, model, digits[:20], tmp_path / "link.npy", batch_size=8)
    assert m.calls == []
    np.testing.assert_array_equal(rows_of(path), before)
    assert not (tmp_path / "link.npy.progress.json").exists()


def test_a_job_writing_a_hard_link_leaves_the_file_s_other_names(tmp_path, model, digits):
    """A hard link at the path of a job starting over (``ln maps.npy new.npy``) holds
    finished maps that no progress file lists by that name: refused; with overwrite=True it
    is replaced by the job's own file: it was opened in place, and maps.npy, a finished job's
    output by its progress file, got the new job's rows (had it stopped, rows of zeros)."""
    path = tmp_path / "maps.npy"
    jaxsal.explain_to_file(Counting(), model, digits, path, batch_size=8)
    before = np.load(path)
    os.link(path, tmp_path / "new.npy")
    m = Counting()
    with pytest.raises(FileExistsError, match="new.npy exists and no progress file lists it"):
        jaxsal.explain_to_file(m, model, digits[:5], tmp_path / "new.npy", batch_size=8)
    out = jaxsal.explain_to_file(m, model, digits[:5], tmp_path / "new.npy", batch_size=8,
                                 overwrite=True)
    assert m.calls == [5] and out.shape == (5, 10)
    np.testing.assert_array_equal(np.load(path), before)
    assert unfinished(path) is None and os.stat(path).st_nlink == 1


def test_fewer_inputs_than_a_batch_are_one_unpadded_chunk(tmp_path, model, digits):
    """5 inputs with batch_size=8 cost 5 inputs' work, not a batch padded with 3 copies."""
    m = Counting()
    out = jaxsal.explain_to_file(m, model, digits[:5], tmp_path / "maps.npy", batch_size=8)
    assert m.calls == [5]
    np.testing.assert_allclose(out, np.asarray(model(digits[:5])), rtol=1e-5, atol=1e-5)


def test_another_batch_size_keeps_the_finished_inputs(tmp_path, model, digits):
    """The same job run again with a smaller batch size (what one does after running out of
    memory) keeps the inputs already finished: only the chunks with unfinished inputs are
    computed (it started over, losing every finished chunk)."""
    path = _two_chunks_of_eight(tmp_path, model, digits)
    m = Counting()
    out = jaxsal.explain_to_file(m, model, digits, path, batch_size=5)
    assert m.calls == [5, 5]  # inputs 15:20 and 20:23 (padded); 0:15 are kept
    np.testing.assert_allclose(out, np.asarray(model(digits)), rtol=1e-5, atol=1e-5)
    m = Counting()
    jaxsal.explain_to_file(m, model, digits, path, batch_size=8)  # finished at any size
    assert m.calls == []


class Reads:
    """Inputs that count the rows read from them (a memory-mapped file's reads from disk)."""

    def __init__(self, x):
        self.x, self.rows = x, 0
        self.shape, self.dtype = x.shape, x.dtype

    def __len__(self):
        return len(self.x)

    def __getitem__(self, item):
        part = self.x[item]
        self.rows += len(part)
        return part


@pytest.mark.parametrize("b", [5, 4])
def test_resuming_at_another_batch_size_reads_each_finished_input_once(tmp_path, model,
                                                                        digits, b):
    """Resuming at another batch size checks the finished inputs' hashes in the old chunks
    and hashes them in the new ones from one read (each was read twice; with chunks that
    nest, 4 in 8, too); the inputs left are read once more, to compute them."""
    path = _two_chunks_of_eight(tmp_path, model, digits)
    x = Reads(digits)
    m = Counting()
    out = jaxsal.explain_to_file(m, model, x, path, batch_size=b)
    assert m.calls == {5: [5, 5], 4: [4, 4]}[b]  # 15:20, 20:23; 16:20, 20:23
    assert x.rows == 16 + {5: 8, 4: 7}[b]
    np.testing.assert_allclose(out, np.asarray(model(digits)), rtol=1e-5, atol=1e-5)
    x = Reads(digits)
    m = Counting()
    jaxsal.explain_to_file(m, model, x, path, batch_size=b)  # the new hashes are right
    assert m.calls == [] and x.rows == 23
    x = Reads(digits)
    jaxsal.explain_to_file(m, model, x, path, batch_size=8)  # and so are those at 8 again
    assert m.calls == [] and x.rows == 23


def test_a_sidecar_written_before_the_input_hashes_is_trusted_twice(tmp_path, model, digits):
    """A job whose sidecar predates the hashes of the finished chunks' inputs resumes trusting
    its chunks, and records their hashes: stopped and resumed again, it still does not
    compute them again."""
    path = tmp_path / "maps.npy"
    _rewrite_after_one_chunk(model, digits, path, lambda prog: {  # as jaxsal wrote it before
        k: v for k, v in prog.items() if k not in ("inputs", "family")})
    m = Counting()
    with pytest.raises(KeyboardInterrupt):
        jaxsal.explain_to_file(m, model, digits, path, batch_size=8, on_chunk=stop_after(2))
    assert m.calls == [8]  # chunk 1
    m = Counting()
    out = jaxsal.explain_to_file(m, model, digits, path, batch_size=8)
    assert m.calls == [8]  # chunk 2 only: chunk 0 is still trusted
    np.testing.assert_allclose(out, np.asarray(model(digits)), rtol=1e-5, atol=1e-5)


def _big_maps(model, x, targets=None):
    return np.ones((len(x), 512, 1024), np.float32)  # 2 MiB per input


def test_the_output_file_s_disk_space_is_reserved_at_its_start(tmp_path, model, digits):
    """The .npy's space is reserved when it is created, so a disk too small fails then, with
    an error naming the file and the size, not with a Bus error (SIGBUS) when a later chunk
    writes to the memory map of a sparse file."""
    import os

    path = tmp_path / "maps.npy"
    with pytest.raises(KeyboardInterrupt):  # after the first chunk of 4
        jaxsal.explain_to_file(_big_maps, model, digits[:4], path, batch_size=1,
                               on_chunk=stop_after(1))
    st = os.stat(path)
    assert st.st_size > 8 * 2**20 and st.st_blocks * 512 >= st.st_size


@pytest.mark.skipif(not hasattr(__import__("os"), "posix_fallocate"),
                    reason="no posix_fallocate")
def test_a_disk_too_small_for_the_output_is_a_clear_error(tmp_path, model, digits,
                                                          monkeypatch):
    import errno
    import os

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(OSError, match=r"cannot reserve the ([0-9,]+) bytes of .*maps\.npy on "
                                      r"its disk \(No space left on device\)") as e:
        jaxsal.explain_to_file(_big_maps, model, digits[:4], tmp_path / "maps.npy",
                               batch_size=1)
    # the whole file: 4 maps of 512 * 1024 float32s, and its header (whole blocks of 64 bytes)
    size = int(re.search(r"reserve the ([0-9,]+) bytes", str(e.value))[1].replace(",", ""))
    header = size - 4 * 512 * 1024 * 4
    assert 0 < header <= 4096 and header % 64 == 0
    assert not (tmp_path / "maps.npy").exists()  # the new, empty file is not left behind


def test_a_disk_full_while_recording_progress_says_what_is_kept(tmp_path, model, digits,
                                                                monkeypatch):
    """No space for the progress file after chunk 1: the error names the file and says what
    is kept and how to resume (it said "[Errno 28] No space left on device"), the torn
    temporary file is removed, and running again computes the chunks left."""
    import errno
    import os

    import jaxsal._src.batch as batch

    real, calls = os.fsync, []

    def full(fd):  # (where a file system reports a full disk of delayed writes)
        calls.append(fd)
        # the progress file and the folder at the start (no chunk done), the new .npy's
        # header and the folder, the progress file and the folder after chunk 0; chunk 1's
        if len(calls) == 7:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)

    path = tmp_path / "maps.npy"
    monkeypatch.setattr(batch.os, "fsync", full)
    with pytest.raises(OSError, match=(
            rf"cannot write the progress file {path}\.progress\.json \(No space left on "
            r"device\); 1 of 3 chunks are finished and recorded in it: free some space and "
            r"run the same call again to resume")) as e:
        jaxsal.explain_to_file(Counting(), model, digits, path, batch_size=8)
    assert e.value.errno == errno.ENOSPC
    assert sorted(os.listdir(tmp_path)) == ["maps.npy", "maps.npy.progress.json"]
    monkeypatch.setattr(batch.os, "fsync", real)
    m = Counting()
    out = jaxsal.explain_to_file(m, model, digits, path, batch_size=8)
    assert m.calls == [8, 8]
    np.testing.assert_allclose(out, np.asarray(model(digits)), rtol=1e-5, atol=1e-5)


def test_a_job_stopped_while_creating_its_file_starts_again(tmp_path, model, digits,
                                                             monkeypatch):
    """Stopped while writing the new .npy's header (a full disk, Ctrl-C), a job left a
    progress file with no chunk done beside a torn .npy, and every later run refused it
    ("cannot reopen ... delete ..."): with nothing finished there is nothing to keep, and
    the job starts again."""
    import jaxsal._src.batch as batch

    path = tmp_path / "maps.npy"

    def torn(filename, dtype, shape):
        open(filename, "wb").write(b"\x93NUM")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(batch, "create_maps", torn)  # (called as the new .npy is created)
    with pytest.raises(OSError, match="No space left"):
        jaxsal.explain_to_file(Counting(), model, digits, path, batch_size=8)
    monkeypatch.undo()
    m = Counting()
    out = jaxsal.explain_to_file(m, model, digits, path, batch_size=8)
    assert m.calls == [8, 8, 8]
    np.testing.assert_allclose(out, np.asarray(model(digits)), rtol=1e-5, atol=1e-5)


def test_a_new_file_reads_as_unfinished_from_its_creation(tmp_path, model, digits,
                                                         monkeypatch):
    """A job starting over on a finished file, stopped right after creating its new .npy
    (before any chunk is recorded), leaves a file that reads as unfinished: the finished
    job's sidecar was removed and nothing said the new, zero-filled file was partial."""
    import jaxsal._src.job_files as job_files

    path = tmp_path / "maps.npy"
    jaxsal.explain_to_file(Counting(), model, digits, path, batch_size=8)
    assert unfinished(path) is None

    def stopped(path, name=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(job_files, "_allocate", stopped)  # called as the new .npy is created
    with pytest.raises(KeyboardInterrupt):
        jaxsal.explain_to_file(Counting(), model, digits, path, targets=2, batch_size=8,
                               overwrite=True)
    assert unfinished(path)[:2] == (0, 3)


def test_a_folder_made_read_only_while_a_job_runs_says_so(tmp_path, model, digits,
                                                          monkeypatch):
    """The progress file cannot be replaced (permission denied): the error says to make the
    folder writable, not to free some space."""
    import errno
    import os

    import jaxsal._src.batch as batch

    real, calls = os.replace, []

    def denied(src, dst):
        if str(dst).endswith(".progress.json"):  # (not the new .npy put in place)
            calls.append(dst)
        if len(calls) == 2:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), dst)
        return real(src, dst)

    monkeypatch.setattr(batch.os, "replace", denied)
    with pytest.raises(PermissionError, match=(
            r"\(Permission denied\); 0 of 3 chunks are finished and recorded in it: make its "
            r"folder writable and run the same call again to resume")):
        jaxsal.explain_to_file(Counting(), model, digits, tmp_path / "maps.npy", batch_size=8)


@pytest.mark.parametrize("resume", ["False", None, 2])
def test_resume_must_be_a_bool(tmp_path, model, digits, resume):
    # resume="False" (a string, true to Python) resumed the job it was meant not to
    with pytest.raises(TypeError, match="expected resume as a bool"):
        jaxsal.explain_to_file(Counting(), model, digits, tmp_path / "a.npy", resume=resume)
    assert not (tmp_path / "a.npy").exists()


def test_maps_that_are_not_finite_fail_their_chunk_and_keep_the_others(tmp_path, digits):
    """A model whose scores are NaN for one input (here the square root of a negative
    number: a diverged model, a damaged weight that is finite but huge) would give that
    input a NaN map, written to disk without a word; its chunk fails naming the input, and
    the chunks before it are kept."""
    import jax.numpy as jnp

    fm = jaxsal.FunctionModel(
        lambda p, x: jnp.sqrt(x.mean(axis=(1, 2, 3)) - p["c"])[:, None] * p["w"],
        {"c": jnp.float32(1e-3), "w": jnp.ones((1, 2), jnp.float32)})
    bad = digits.copy()
    bad[17] = 0.0  # sqrt(0 - 1e-3): NaN
    path = tmp_path / "maps.npy"
    with pytest.raises(ValueError, match=r"chunk 2 \(inputs 16:23, padded to 8 by repeating "
                       r"the last\) failed: the maps of input 17 are not finite.*The 2 chunk\(s\) "
                       r"finished so far are saved"):
        jaxsal.explain_to_file(jaxsal.saliency, fm, bad, path, targets=1, batch_size=8)
    np.testing.assert_allclose(rows_of(path)[:16], jaxsal.saliency(fm, bad[:16], 1),
                               rtol=1e-6)


def test_a_nan_input_is_named_by_its_index_in_the_job(tmp_path, model, digits):
    """The job checks a chunk's inputs for the method: the error names the input, not only
    the chunk (the method's own check cannot say which)."""
    bad = digits.copy()
    bad[19, 5, 5, 0] = np.inf
    with pytest.raises(ValueError, match=r"chunk 2 \(inputs 16:23, padded to 8 by repeating "
                       r"the last\) failed: input 19 contains NaN or infinite values"):
        jaxsal.explain_to_file(jaxsal.saliency, model, bad, tmp_path / "m.npy", targets=1,
                               batch_size=8)


def test_keep_going_leaves_out_chunks_at_fault_and_writes_the_others(tmp_path, digits):
    """keep_going=True: a chunk with a NaN input (chunk 0) and one whose maps are not finite
    (chunk 2) are left out, the others written, and the job ends with IncompleteJob naming
    both inputs. Run again at batch_size=1, only those two inputs stay out; fixed, the job
    finishes and equals one call over all the inputs."""
    import jax.numpy as jnp

    fm = jaxsal.FunctionModel(
        lambda p, x: jnp.sqrt(x.mean(axis=(1, 2, 3)) - p["c"])[:, None] * p["w"],
        {"c": jnp.float32(1e-3), "w": jnp.ones((1, 2), jnp.float32)})
    bad = digits.copy()
    bad[3, 0, 0, 0] = np.nan  # chunk 0: the input
    bad[17] = 0.0  # chunk 2: sqrt(0 - 1e-3), the map
    path = tmp_path / "maps.npy"
    written = []
    with pytest.raises(jaxsal.IncompleteJob, match=r"2 of 3 chunks were left out: chunk 0 "
                       r"\(inputs 0:8\): input 3 contains NaN or inf; chunk 2 \(inputs "
                       r"16:23\): the maps of input 17 are not finite. The other 1 chunk is saved "
                       r"in .*maps.npy \(which reads as unfinished") as e:
        jaxsal.explain_to_file(jaxsal.saliency, fm, bad, path, targets=1, batch_size=8,
                               keep_going=True, on_chunk=lambda d, t: written.append((d, t)))
    assert isinstance(e.value, ValueError)
    assert e.value.rows == [3, 17] and e.value.chunks == [(0, 8), (16, 23)]
    assert written == [(1, 3)]
    np.testing.assert_allclose(rows_of(path)[8:16], jaxsal.saliency(fm, bad[8:16], 1),
                               rtol=1e-6)
    assert unfinished(path)[:2] == (1, 3)

    written.clear()
    with pytest.raises(jaxsal.IncompleteJob) as e:  # the same job, inputs one by one
        jaxsal.explain_to_file(jaxsal.saliency, fm, bad, path, targets=1, batch_size=1,
                               keep_going=True, on_chunk=lambda d, t: written.append((d, t)))
    assert e.value.rows == [3, 17] and e.value.chunks == [(3, 4), (17, 18)]
    assert "at a batch size of 1" not in str(e.value)
    # the 8 inputs written are kept; of the 15 others, all but the two at fault are written
    assert written == [(d, 23) for d in range(9, 22)]
    good = bad.copy()
    good[3], good[17] = digits[3], digits[17]
    written.clear()
    out = jaxsal.explain_to_file(jaxsal.saliency, fm, good, path, targets=1, batch_size=1,
                                 keep_going=True, on_chunk=lambda d, t: written.append((d, t)))
    assert written == [(22, 23), (23, 23)]  # only the two inputs left out
    assert unfinished(path) is None
    np.testing.assert_allclose(out, jaxsal.saliency(fm, good, 1), rtol=1e-5, atol=1e-7)


def test_keep_going_names_every_input_at_fault_beyond_five_chunks(tmp_path, model, digits):
    bad = digits.copy()
    bad[[0, 2, 4, 6, 8, 10, 12], 0, 0, 0] = np.nan
    with pytest.raises(jaxsal.IncompleteJob, match=r"7 of 12 chunks were left out: chunk 0 "
                       r"\(inputs 0:2\): input 0 contains NaN or inf; .*; chunk 4 \(inputs "
                       r"8:10\): input 8 contains NaN or inf; and 2 more \(at fault in all: "
                       r"inputs 0, 2, 4, 6, 8, 10, 12\)\. The other 5 chunks are saved") as e:
        jaxsal.explain_to_file(jaxsal.saliency, model, bad, tmp_path / "m.npy", targets=1,
                               batch_size=2, keep_going=True)
    assert e.value.rows == [0, 2, 4, 6, 8, 10, 12]
    assert e.value.chunks == [(i, i + 2) for i in range(0, 14, 2)]
    assert pickle.loads(pickle.dumps(e.value)).chunks == e.value.chunks
    assert "run the same job again: it computes only" in str(e.value)
    with pytest.raises(jaxsal.IncompleteJob, match="run the same job again with resume=True: "
                       "it computes only the chunks left out"):
        jaxsal.explain_to_file(jaxsal.saliency, model, bad, tmp_path / "m.npy", targets=1,
                               batch_size=2, keep_going=True, resume=False, overwrite=True)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_keep_going_leaves_out_a_nan_input_of_any_float_dtype(tmp_path, tiny, dtype):
    """bfloat16 (ml_dtypes) is no np.inexact: its NaN rows went unnamed, so the method's own
    check stopped the job that keep_going=True should finish but for the chunk at fault."""
    import ml_dtypes

    from jaxsal._src.finite import non_finite_rows

    x = np.ones((6, 4), np.float32)
    x[3, 1] = np.nan
    x = x.astype(ml_dtypes.bfloat16 if dtype == "bfloat16" else dtype)
    assert non_finite_rows(x) == [3]

    def refusing(model, x, targets=None, check_finite=True):  # as jaxsal's methods refuse
        x = np.asarray(x, np.float32)
        if check_finite and not np.isfinite(x).all():
            raise ValueError("x contains NaN or infinite values")
        return 2 * x

    with pytest.raises(jaxsal.IncompleteJob, match=r"1 of 3 chunks were left out: chunk 1 "
                       r"\(inputs 2:4\): input 3 contains NaN or inf") as e:
        jaxsal.explain_to_file(refusing, tiny, x, tmp_path / "m.npy", batch_size=2,
                               keep_going=True)
    assert e.value.rows == [3]


def test_keep_going_still_stops_at_any_other_error(tmp_path, model, digits):
    """Only inputs or maps that are not finite are left out: an error of the method (here a
    TypeError in chunk 1) stops the job, as without keep_going."""
    def method(model, x, targets=None):
        if float(x[0, 0, 0, 0]) == -1.0:
            raise TypeError("a bug in my method")
        return np.asarray(model(x))

    bad = digits.copy()
    bad[8, 0, 0, 0] = -1.0
    with pytest.raises(TypeError, match="a bug in my method") as e:
        jaxsal.explain_to_file(method, model, bad, tmp_path / "m.npy", batch_size=8,
                               keep_going=True)
    assert "chunk 1 (inputs 8:16) failed" in e.value.__notes__[0]
    with pytest.raises(TypeError, match="expected keep_going as a bool"):
        jaxsal.explain_to_file(method, model, digits, tmp_path / "n.npy", keep_going="yes")


def test_inputs_are_checked_only_for_a_method_that_refuses_nan(tmp_path, model, digits):
    """The job's own check of the inputs follows the method's check_finite: a method of
    one's own (no check_finite) and check_finite=False get NaN inputs as given."""
    from jaxsal._src.batch import _checks_inputs

    nan = digits[:4].copy()
    nan[1, 0, 0, 0] = np.nan

    def mine(model, x, targets=None):  # NaN-tolerant
        return np.nan_to_num(np.asarray(x)).sum(axis=(1, 2, 3))

    out = jaxsal.explain_to_file(mine, model, nan, tmp_path / "m.npy", batch_size=2)
    np.testing.assert_allclose(out, mine(model, nan), rtol=1e-6)
    assert _checks_inputs(jaxsal.saliency, {})
    assert not _checks_inputs(jaxsal.saliency, {"check_finite": False})
    assert not _checks_inputs(functools.partial(jaxsal.saliency, check_finite=False), {})
    assert _checks_inputs(functools.partial(jaxsal.saliency, check_finite=False),
                          {"check_finite": True})
    assert not _checks_inputs(mine, {}) and not _checks_inputs(Counting(), {})


def test_bound_keywords_of_partial_layers():
    """The options bound in functools.partial layers, as the job reads them: for
    whole_batch an outer layer's over an inner one's (None too, as the call gets it) and the
    options passed over both; for check_finite a None (passed or bound) is unset, so an
    inner layer's or the method's default shows through."""
    from jaxsal._src.batch import _checks_inputs, _whole_batch

    def part(fn, **kw):  # a layer kept as one (partial flattens a partial without a __dict__)
        layer = functools.partial(fn, **kw)
        layer.layer = True
        return layer

    off = part(jaxsal.saliency, check_finite=False)
    assert isinstance(part(off, check_finite=None).func, functools.partial)
    assert not _checks_inputs(part(off, check_finite=None), {})
    assert not _checks_inputs(off, {"check_finite": None})
    assert _checks_inputs(part(jaxsal.saliency, check_finite=None), {})
    assert _checks_inputs(part(part(off, check_finite=None), check_finite=True), {})
    union, per = (part(jaxsal.scorecam, top_k_mode=m) for m in ("union", "per_sample"))
    assert _whole_batch(part(per, top_k_mode="union"), {"top_k": 2})
    assert _whole_batch(part(union, top_k_mode="per_sample"), {"top_k": 2}) is None
    assert _whole_batch(part(part(union, top_k=2), top_k=None), {}) is None
    assert _whole_batch(part(part(union, top_k=None), top_k=2), {})
    assert _whole_batch(part(union, top_k=2), {"top_k_mode": "per_sample"}) is None


def test_replace_file_keeps_a_symbolic_link_and_the_old_file_on_an_error(tmp_path):
    """batch.replace_file (progress files, `jaxsal evaluate`'s areas) replaces the file a
    link points to, not the link, and leaves the old file whole when the write fails."""
    import os

    from jaxsal._src.job_files import replace_file

    target, link = tmp_path / "real.npy", tmp_path / "link.npy"
    np.save(target, np.zeros(3))
    os.symlink(target, link)
    replace_file(str(link), lambda fh: np.save(fh, np.arange(4.0)))
    assert os.path.islink(link) and os.path.realpath(link) == str(target)
    np.testing.assert_array_equal(np.load(target), np.arange(4.0))

    def torn(fh):
        fh.write(b"\x93NUM")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        replace_file(str(link), torn)
    np.testing.assert_array_equal(np.load(target), np.arange(4.0))
    assert sorted(os.listdir(tmp_path)) == ["link.npy", "real.npy"]


@pytest.mark.parametrize("wrong", ["one row", "rows of the job", "another map shape"])
def test_a_chunk_s_maps_of_another_shape_than_the_file_s_are_refused(tmp_path, tiny, wrong):
    """A chunk's maps went into the file as they came: a method returning one row for a
    chunk of 4 (a batch mean) broadcast it into all 4 rows, one returning more rows than the
    chunk was cut, one whose maps changed shape in a later chunk was written into the file's
    shape. Each now fails its chunk, saying the shape got and expected."""
    x = np.arange(40, dtype=np.float32).reshape(10, 4)

    def method(model, x, targets=None):
        maps = 2 * np.asarray(x)
        if wrong == "one row":
            return maps.mean(0, keepdims=True)
        if wrong == "rows of the job":
            return np.concatenate([maps, maps])
        return maps if x[0, 0] == 0 else maps[:, :2]  # chunk 0 right, chunk 1 not

    chunk = 0 if wrong != "another map shape" else 1
    got, expected = {"one row": ("(1, 4)", "(4, ...)"), "rows of the job": ("(8, 4)", "(4, ...)"),
                     "another map shape": ("(4, 2)", "(4, 4)")}[wrong]
    with pytest.raises(ValueError, match=rf"chunk {chunk} \(inputs {4 * chunk}:{4 * chunk + 4}"
                       r"\) failed: .*(of )?shape") as e:
        jaxsal.explain_to_file(method, tiny, x, tmp_path / "maps.npy", batch_size=4)
    assert f"shape {got}" in str(e.value) and f"expected {expected}" in str(e.value) or (
        f"an array of shape {expected}" in str(e.value) and f"got shape {got}" in str(e.value))


def _minus(model, x, targets=None, *, baseline=0.0):
    """A method of one's own with an option of one row per input: ``x - baseline``."""
    return np.asarray(x) - np.asarray(baseline)


@pytest.mark.parametrize("method", ["own", "integrated_gradients"])
def test_rows_per_input_bound_in_a_partial_are_sliced_with_one_input_array(tmp_path, tiny,
                                                                          method):
    """An (N, ...) option bound in a functools.partial of the method, for a job over one
    input array: passed whole to every chunk, IG refused it (a baseline of N rows for a
    chunk of 4) and a method of one's own broadcast it wrongly. It is taken as the option
    passed to the job: sliced with the inputs, and the same job."""
    x = np.arange(40, dtype=np.float32).reshape(10, 4) / 10
    base = np.random.default_rng(0).normal(size=x.shape).astype(np.float32)
    fn = _minus if method == "own" else functools.partial(jaxsal.integrated_gradients, steps=4)
    want = x - base  # IG of a linear model of weights 1: (x - baseline) * 1, exactly
    path = tmp_path / "maps.npy"
    out = jaxsal.explain_to_file(functools.partial(fn, baseline=base), tiny, x, path,
                                 targets=1, batch_size=4)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
    chunks = []  # the baseline passed to the job: the same job, finished
    jaxsal.explain_to_file(fn, tiny, x, path, targets=1, batch_size=4, baseline=base,
                           on_chunk=lambda done, total: chunks.append(done))
    assert chunks == []


def test_on_chunk_is_told_the_chunks_left_out(tmp_path, digits):
    """An ``on_chunk`` taking ``left_out`` is told how many chunks ``keep_going`` left out so
    far, so that the time left counts only the chunks still to compute (the command line's
    said "about 1 s left" after the last chunk it computed); ``on_chunk(done, total)`` alone
    is called as before."""
    import jax.numpy as jnp

    fm = jaxsal.FunctionModel(lambda p, x: x.mean(axis=(1, 2, 3))[:, None] * p,
                              jnp.ones((1, 2), jnp.float32))
    bad = digits.copy()
    bad[12, 3] = np.nan  # chunk 1 of 0, 1, 2 (8 inputs each) left out
    seen, plain, forwarded = [], [], []

    def log(done, total):
        forwarded.append((done, total))

    def forward(*args, **kwargs):  # a wrapper forwarding to a two-argument callback
        log(*args, **kwargs)

    for path, on_chunk in (("a.npy", lambda done, total, left_out=0:
                            seen.append((done, total, left_out))),
                           ("b.npy", lambda *a: plain.append(a)), ("c.npy", forward)):
        with pytest.raises(jaxsal.IncompleteJob):
            jaxsal.explain_to_file(jaxsal.saliency, fm, bad, tmp_path / path, targets=1,
                                   batch_size=8, keep_going=True, on_chunk=on_chunk)
    assert seen == [(1, 3, 0), (2, 3, 1)]
    assert plain == forwarded == [(1, 3), (2, 3)]
