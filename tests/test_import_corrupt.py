"""Damage that made libhdf5 loop for ever fails fast with a KerasImportError.

The value of a string attribute (``model_config``, ``keras_version``, ``layer_names``, a
``.keras`` file's ``vars`` names) lives in an HDF5 global heap collection ("GCOL"), whose
objects libhdf5 walks header by header, trusting each header's size: a header zeroed by
damage (free space of size 0), or a size that wraps the walk back to where it stands, made
``load_keras`` spin at 100% CPU inside ``attrs[...]`` (observed: > 400 s). The importer now
walks the collections an object's attributes point to before libhdf5 reads them
(``model_import/_heaps.py``).

Each corrupted copy is built here from the committed fixtures and loaded in a subprocess
with a timeout, so that the suite cannot hang where the check is missing.
"""

import io
import json
import os
import pathlib
import struct
import subprocess
import sys
import zipfile

import pytest

F = pathlib.Path(__file__).parent / "fixtures"
REPO = pathlib.Path(__file__).parent.parent
TIMEOUT_S = 60


def _objects(data: bytes, at: int):
    """``[(offset of the object header, index, size)]`` of the collection at ``at``
    (8-byte lengths, as in every fixture)."""
    assert data[at:at + 5] == b"GCOL\x01"
    size = struct.unpack_from("<Q", data, at + 8)[0]
    out, p = [], 16
    while p + 16 <= size:
        index, osize = struct.unpack_from("<H", data, at + p)[0], struct.unpack_from(
            "<Q", data, at + p + 8)[0]
        out.append((at + p, index, osize))
        p += 16 + (osize + 7) // 8 * 8 if index else osize
    return out


def _zero_header(data: bytes, nth: int = 1) -> bytes:
    """``data`` with the header of the ``nth`` object of its first collection zeroed."""
    at, _, _ = _objects(data, data.index(b"GCOL"))[nth]
    return data[:at] + bytes(16) + data[at + 16:]


def _set_size(data: bytes, nth: int, size: int) -> bytes:
    """``data`` with the size of the ``nth`` object of its first collection (``-1``: the
    free space at its end) set to ``size``."""
    at, _, _ = _objects(data, data.index(b"GCOL"))[nth]
    return data[:at + 8] + struct.pack("<Q", size) + data[at + 16:]


def _in_weights(rel: str, edit) -> bytes:
    """A ``.keras`` archive whose ``model.weights.h5`` went through ``edit``."""
    with zipfile.ZipFile(F / rel) as z:
        members = {n: z.read(n) for n in z.namelist()}
    members["model.weights.h5"] = edit(members["model.weights.h5"])
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for n, data in members.items():
            z.writestr(n, data)
    return out.getvalue()


def _cases():
    tf2 = (F / "mnist_cnn_tfkeras2.h5").read_bytes()
    assert tf2[2048:2052] == b"GCOL"  # the collection holding model_config: 2048..6144
    seq = (F / "keras2" / "seq_tfkeras2.h5").read_bytes()
    k3 = (F / "mnist_cnn_keras3.h5").read_bytes()
    return {
        # the report: 1000 zero bytes at 5000 cover the header of training_config's object
        "tfkeras2_zeroed_1000_at_5000.h5": tf2[:5000] + bytes(1000) + tf2[6000:],
        "keras3_zeroed_header.h5": _zero_header(k3, 1),
        # a size that makes the step 16 + (2**64 - 16) wrap to 0
        "tfkeras2_size_wraps.h5": _set_size(seq, 0, 2**64 - 16),
        # the free space at the collection's end declared 0 bytes
        "tfkeras2_free_space_0.h5": _set_size(seq, -1, 0),
        # a .keras archive's weights: the layers' recorded names ("vars" attribute "name")
        "keras3_weights_zeroed_header.keras": _in_weights("mnist_cnn_keras3.keras",
                                                          lambda d: _zero_header(d, 2)),
    }


_LOADER = """
import json, sys
from model_import import KerasImportError, load_keras
for p in sys.argv[1:]:
    try:
        load_keras(p)
        out = ["loaded", ""]
    except KerasImportError as e:
        out = ["KerasImportError", str(e)]
    except Exception as e:
        out = [type(e).__name__, str(e)]
    print(json.dumps([p] + out), flush=True)
"""


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    d = tmp_path_factory.mktemp("corrupt")
    paths = []
    for name, data in _cases().items():
        (d / name).write_bytes(data)
        paths.append(str(d / name))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    got = {}
    while paths:  # one process for all; after a hang, a new one for the cases left
        try:
            stdout = subprocess.run([sys.executable, "-c", _LOADER, *paths],
                                    capture_output=True, text=True, timeout=TIMEOUT_S,
                                    env=env, cwd=d).stdout
            hung = False
        except subprocess.TimeoutExpired as e:
            stdout = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
            hung = True
        for p, kind, msg in map(json.loads, stdout.splitlines()):
            got[pathlib.Path(p).name] = (kind, msg)
        paths = [p for p in paths if pathlib.Path(p).name not in got]
        if not hung:
            break
        if paths:  # the first one left is the one that hung
            got[pathlib.Path(paths.pop(0)).name] = ("hang", f"no answer within {TIMEOUT_S} s")
    return d, got


@pytest.mark.parametrize("name", sorted(_cases()))
def test_heap_damage_fails_fast(outcomes, name):
    d, got = outcomes
    kind, msg = got[name]
    assert kind == "KerasImportError", (kind, msg)
    assert str(d / name) in msg and "global heap collection" in msg and "corrupt" in msg, msg


# ------------------------------------------------------------------ non-finite weights
def _with_weight(tmp_path, rel, dataset, value, member=None):
    """A copy of the fixture ``rel`` whose ``dataset`` (in its ``member``, for a .keras
    archive) has ``value`` at its first entry."""
    import h5py

    src = (F / rel).read_bytes()
    if member is None:
        p = tmp_path / pathlib.Path(rel).name
        p.write_bytes(src)
        target = p
    else:
        target = tmp_path / "w.h5"
        with zipfile.ZipFile(F / rel) as z:
            target.write_bytes(z.read(member))
    with h5py.File(target, "r+") as f:
        a = f[dataset][()]
        a.flat[0] = value
        f[dataset][...] = a
    if member is not None:
        p = tmp_path / pathlib.Path(rel).name
        with zipfile.ZipFile(F / rel) as z, zipfile.ZipFile(p, "w") as out:
            for n in z.namelist():
                out.writestr(n, target.read_bytes() if n == member else z.read(n))
    return p


@pytest.mark.parametrize("rel,dataset,member,layer", [
    ("mnist_cnn_keras3.h5", "model_weights/dense/dense/kernel", None, "dense"),
    ("mnist_cnn_tfkeras2.h5", "model_weights/conv2d_1/conv2d_1/bias:0", None, "conv2d_1"),
    ("mnist_cnn_keras3.keras", "layers/conv2d_1/vars/0", "model.weights.h5", "conv2d_2"),
])
@pytest.mark.parametrize("value", [float("nan"), float("-inf")])
def test_non_finite_weights_are_refused(tmp_path, rel, dataset, member, layer, value):
    # random bytes over a weight that decode as NaN or inf loaded, and every output and
    # attribution of the model was NaN, without a word
    from model_import import KerasImportError, load_keras

    p = _with_weight(tmp_path, rel, dataset, value, member)
    with pytest.raises(KerasImportError, match=rf"layer '{layer}' .*holds 1 NaN or infinite "
                                               r"values") as e:
        load_keras(p)
    assert str(p) in str(e.value)


# ------------------------------------------------------------------ damaged zip archives
def _deflated(rel):
    """The fixture's archive written again with its members compressed (as ``zip -r``
    writes an unzipped .keras directory; Keras stores them uncompressed)."""
    with zipfile.ZipFile(F / rel) as z:
        members = {n: z.read(n) for n in z.namelist()}
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for n, data in members.items():
            z.writestr(n, data)
    return out.getvalue()


def _central_entry(data: bytes, name: str) -> int:
    """Where the central directory's entry of the member ``name`` starts."""
    at = data.index(b"PK\x01\x02")
    while not data[at + 46:].startswith(name.encode()):
        at = data.index(b"PK\x01\x02", at + 4)
    return at


def _zip_damage(kind: str) -> bytes:
    data = bytearray(_deflated("mnist_cnn_keras3.keras"))
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as z:
        info = z.getinfo("model.weights.h5")
    local = info.header_offset
    start = local + 30 + struct.unpack_from("<HH", data, local + 26)[0] + struct.unpack_from(
        "<HH", data, local + 26)[1]
    if kind == "deflate_stream":  # zeroed compressed data: zlib.error
        data[start + 100:start + 164] = bytes(64)
    elif kind == "compression_method":  # a method zipfile does not know: NotImplementedError
        struct.pack_into("<H", data, _central_entry(bytes(data), "model.weights.h5") + 10, 77)
    elif kind == "version_needed":  # "zip file version 14.8": NotImplementedError at open
        struct.pack_into("<H", data, _central_entry(bytes(data), "config.json") + 6, 148)
    return bytes(data)


@pytest.mark.parametrize("kind,words", [
    ("deflate_stream", ["model.weights.h5 does not extract", "damaged"]),
    ("compression_method", ["model.weights.h5 does not extract", "NotImplementedError"]),
    ("version_needed", ["not a readable zip archive", "zip file version"]),
])
def test_damaged_zip_structure_is_refused(tmp_path, kind, words):
    # a bare zlib.error or NotImplementedError came out of zipfile
    from model_import import KerasImportError, load_keras

    p = tmp_path / "m.keras"
    p.write_bytes(_zip_damage(kind))
    with pytest.raises(KerasImportError) as e:
        load_keras(p)
    msg = str(e.value)
    assert str(p) in msg and all(w in msg for w in words), msg


def test_damaged_config_json_says_so(tmp_path):
    # was: "the archive's contents cannot be read (JSONDecodeError(...))", not naming the
    # member nor what to do
    from model_import import KerasImportError, load_keras

    with zipfile.ZipFile(F / "mnist_cnn_keras3.keras") as z:
        members = {n: z.read(n) for n in z.namelist()}
    members["config.json"] = members["config.json"][:100]
    p = tmp_path / "m.keras"
    with zipfile.ZipFile(p, "w") as z:
        for n, data in members.items():
            z.writestr(n, data)
    with pytest.raises(KerasImportError, match=r"its config.json is not valid JSON .*Save the "
                                               r"model again"):
        load_keras(p)
