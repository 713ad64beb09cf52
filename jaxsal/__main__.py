"""``python -m jaxsal ...``: the ``jaxsal`` command (:mod:`jaxsal.cli`), for environments
where the console script is not on ``PATH`` (a venv that is not activated, a notebook's
``!python -m jaxsal ...``)."""

import sys

from jaxsal.cli import main

if __name__ == "__main__":
    sys.exit(main())
