"""The Keras version that wrote a file, parsed once for every rule that depends on it.

Keras releases differ in semantics a file does not spell out (``hard_sigmoid``, masks, node
numbering), so converters ask which release wrote the config. Files record it as a string:
``"2.2.4"``, ``"2.15.0-tf"`` (tf.keras), ``"3.4.1"``, ``"3.1rc0"``, or only a major version
(``"2"`` for an ``.h5`` without a ``keras_version`` attribute, ``"3"`` for a ``.weights.h5``
whose config records none). What an unrecorded minor version means differs by major version
and is decided by each rule (:attr:`KerasVersion.minor` is ``None`` then).
"""

from __future__ import annotations

import dataclasses
import re

#: a version string as files record it: digits, then optionally ``.minor`` and anything
_PATTERN = re.compile(r"(\d+)(?:\.(\d+))?")


@dataclasses.dataclass(frozen=True)
class KerasVersion:
    """A parsed Keras version.

    Attributes:
      major: 1, 2 or 3 (a string without leading digits is read as the newest, ``3``).
      minor: the minor release, or ``None`` when the string records none (``"3"``) or it
        does not start with digits (``"3.x"``).
      tf_keras: whether the string has tf.keras's ``-tf`` suffix (``"2.2.4-tf"``).
    """

    major: int
    minor: int | None
    tf_keras: bool

    def before(self, major: int, minor: int, *, unrecorded: bool) -> bool:
        """Whether this is a release older than ``major.minor``; ``unrecorded`` is the answer
        for a string of the same major version without a minor one."""
        if self.major != major:
            return self.major < major
        return unrecorded if self.minor is None else self.minor < minor


def is_version_string(value: object) -> bool:
    """Whether ``value`` looks like a recorded Keras version (starts with ``<digits>`` then
    ``.`` or the end)."""
    return isinstance(value, str) and re.match(r"\d+(\.|$)", value) is not None


def parse_version(version: object) -> KerasVersion:
    """Parses a recorded version string; anything unreadable counts as the newest Keras 3."""
    text = str(version).strip()
    m = _PATTERN.match(text)
    if m is None:
        return KerasVersion(3, None, False)
    return KerasVersion(int(m[1]), None if m[2] is None else int(m[2]), text.endswith("-tf"))


def keras_major(version: object) -> int:
    """The major version of a recorded version string (3 when unreadable)."""
    return parse_version(version).major


#: The Keras 3 backends whose computations the importer can follow where they differ
#: (README, "The backend Keras ran on").
KERAS_BACKENDS = ("jax", "numpy", "tensorflow", "torch")


def keras_backend_of(value: object, where: str) -> str:
    """A Keras backend name (``"jax"``, ``"numpy"``, ``"tensorflow"``, ``"torch"``), as given
    to ``load_keras(keras_backend=)`` or recorded in a Keras 3 ``.h5``; ``where`` names the
    source in the error."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str) and value.strip().lower() in KERAS_BACKENDS:
        return value.strip().lower()
    raise ValueError(f"{where} is {value!r}; expected one of {KERAS_BACKENDS} (the backend "
                     "Keras ran the model on)")
