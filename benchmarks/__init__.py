"""jaxsal benchmark harness (``python -m benchmarks.run --suite cpu|gpu|smoke``).

This package is imported by three interpreters (the jaxsal venv, the tf-keras-vis peer venv
and the PyTorch peer), so its top level imports nothing beyond the standard library.
"""
