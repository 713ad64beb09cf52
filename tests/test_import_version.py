"""The recorded Keras version, parsed once (model_import/_version.py), and the rules that
depend on the release that wrote a file."""

import pytest

from model_import._layers.masking import _keras3_before_3_4, _keras3_masked_merges
from model_import._version import KerasVersion, is_version_string, keras_major, parse_version


@pytest.mark.parametrize("text, parsed", [
    ("2.2.4", KerasVersion(2, 2, False)), ("2.15.0-tf", KerasVersion(2, 15, True)),
    ("3.4.1", KerasVersion(3, 4, False)), ("3.1rc0", KerasVersion(3, 1, False)),
    ("3", KerasVersion(3, None, False)), ("2", KerasVersion(2, None, False)),
    ("3.x", KerasVersion(3, None, False)), ("1.2.2", KerasVersion(1, 2, False)),
    ("", KerasVersion(3, None, False)), ("keras", KerasVersion(3, None, False))])
def test_parse_version(text, parsed):
    assert parse_version(text) == parsed
    assert keras_major(text) == parsed.major


def test_before_reads_an_unrecorded_minor_as_told():
    assert parse_version("3.13.2").before(3, 14, unrecorded=False)
    assert not parse_version("3.14.0").before(3, 14, unrecorded=False)
    assert parse_version("2.15.0").before(3, 0, unrecorded=False)  # an older major
    assert not parse_version("4.0").before(3, 14, unrecorded=True)  # a newer major
    assert parse_version("3").before(3, 14, unrecorded=True)
    assert not parse_version("3").before(3, 14, unrecorded=False)


@pytest.mark.parametrize("value, ok", [("2.15.0", True), ("3", True), ("3.", True),
                                       ("3x", False), ("v3", False), ("", False), (3, False)])
def test_is_version_string(value, ok):
    assert is_version_string(value) is ok


@pytest.mark.parametrize("version, before_3_4, masked_merges", [
    ("3.0.5", True, False), ("3.1rc0", True, False), ("3.3.3", True, False),
    ("3.4.1", False, True), ("3.13.2", False, True), ("3.14.0", False, True),
    ("3.15.1", False, True), ("3", False, True), ("2.15.0", False, False),
    ("2.2.4-tf", False, False)])
def test_merge_rules_by_version(version, before_3_4, masked_merges):
    assert _keras3_before_3_4(version) is before_3_4
    assert _keras3_masked_merges(version) is masked_merges
