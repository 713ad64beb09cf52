"""Helpers shared by the tests of batch jobs (``jaxsal.explain_to_file``)."""


def stop_after(k):
    """An ``on_chunk`` callback that stops the job with a Ctrl-C (``KeyboardInterrupt``) once
    ``k`` chunks are finished and recorded."""
    def on_chunk(done, total):
        if done == k:
            raise KeyboardInterrupt

    return on_chunk


#: Stops a job after its second chunk.
stop_after_two = stop_after(2)


def rows_of(path):
    """The rows of a job's ``.npy`` at ``path`` as they are on disk, read-only, also while the
    job is unfinished (its header then carries ``job_files.UNFINISHED_KEY``, which ``np.load``
    refuses: checked here, so that every test reading a half-written file checks it too)."""
    import numpy as np
    import pytest

    from jaxsal._src.job_files import marked_unfinished, open_maps

    if marked_unfinished(path):
        with pytest.raises(ValueError, match="UNFINISHED jaxsal job"):
            np.load(path)
    return np.asarray(open_maps(str(path), mode="r"))
