"""Shared by the table-driven tests of the hyperparameter rules (tests/test_reals.py,
tests/test_ints.py): run a method only as far as one argument's check."""
from __future__ import annotations


class Stop(Exception):
    """Raised right after the check of the armed argument: nothing after it runs."""


def stop_after_check(monkeypatch, module, fn_name: str, name: str) -> list:
    """Patch ``module.fn_name`` (a check called as ``fn(value, name, **kw)``) to record what
    its check of argument ``name`` returned, then raise :class:`Stop`; other arguments' checks
    run as before. Returns the list the results are appended to."""
    seen, original = [], getattr(module, fn_name)

    def check(value, n, **kw):
        out = original(value, n, **kw)
        if n == name:
            seen.append(out)
            raise Stop
        return out

    monkeypatch.setattr(module, fn_name, check)
    return seen
