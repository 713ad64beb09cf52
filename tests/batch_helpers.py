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
