"""Checking the HDF5 global heap collections that variable-length attributes point to,
before libhdf5 reads them.

HDF5 keeps the value of a variable-length string attribute (every string attribute h5py
writes: ``model_config``, ``keras_version``, ``layer_names``, ``weight_names``, a Keras 3
``vars`` group's ``name``) in a *global heap collection* ("GCOL"); the attribute itself holds
only (length, collection address, object index). To read one object libhdf5 parses the
whole collection, walking its object headers (index, reference count, size) from one to
the next, and it trusts the sizes: an object header zeroed by damage (index 0, the free
space, with size 0) makes that walk stand still, and libhdf5 (up to 2.0 at least) loops for
ever, holding the GIL, inside ``attrs[name]``. Sizes that overflow or point past the
collection make it read outside its buffer.

:class:`HeapGuard` reads the object headers of the groups whose attributes the importer
reads (HDF5 File Format Specification: "Version 1/2 Data Object Header", "Attribute
Message", "Datatype Message", "Dataspace Message"), takes the heap IDs of their
variable-length attributes, and walks each collection they name once, as libhdf5 would,
refusing with a :class:`KerasImportError` a walk that does not advance, leaves the
collection or misses the object an attribute names. What it cannot parse (dense attribute
storage, shared messages, variable-length types inside compound types) it leaves to
libhdf5 unchecked; what it checks costs a few small reads per group.
"""

from __future__ import annotations

import os
import weakref
from typing import Any

import h5py

from model_import._errors import KerasImportError

_GUARDS: dict[Any, "HeapGuard"] = {}  # HDF5 file number -> its guard

_ATTRIBUTE, _CONTINUATION = 0x0C, 0x10
_VLEN = 9


class _Unparsed(Exception):
    """An object header this module cannot follow: left to libhdf5."""


def register(f: h5py.File, path: str, data: bytes | None = None) -> None:
    """Check the heaps of ``f`` (opened from ``path``, or from the bytes ``data``) on the
    attribute reads that go through :func:`attrs_of`."""
    try:
        key = f.id.fileno
        plist = f.id.get_create_plist()
        sizes, base = plist.get_sizes(), plist.get_userblock()
    except Exception:  # noqa: BLE001  (nothing to check with)
        return
    guard = _GUARDS[key] = HeapGuard(path, data, sizes, base)
    weakref.finalize(f, _forget, key, guard)


def _forget(key, guard: "HeapGuard") -> None:
    if _GUARDS.get(key) is guard:
        del _GUARDS[key]
    guard.close()


def attrs_of(obj) -> h5py.AttributeManager:
    """``obj.attrs``, after checking the global heap collections its variable-length
    attributes point to (once per object)."""
    guard = _GUARDS.get(obj.id.fileno)
    if guard is not None:
        guard.check(obj)
    return obj.attrs


def _num_attrs(info: Any, obj: Any) -> int:
    """How many attributes the object ``obj`` (``info``: its ``h5o.get_info``) has: the
    object info's count (h5py >= 3.9), else ``h5a.get_num_attrs``, which reads the object
    header's count, not the values."""
    n = getattr(info, "num_attrs", None)
    return int(h5py.h5a.get_num_attrs(obj.id) if n is None else n)


class HeapGuard:
    def __init__(self, path: str, data: bytes | None, sizes: tuple[int, int], base: int):
        self.path = path
        self.data = data
        self.o, self.l = sizes  # bytes of a file address and of a length
        self.base = base
        self.eof = len(data) if data is not None else os.path.getsize(path)
        self.names: set[str] = set()  # objects checked, by path
        self.headers: set[int] = set()  # object headers checked, by address
        self.collections: dict[int, dict[int, int]] = {}  # address -> {index: size}
        self._fh = None

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    # ------------------------------------------------------------------ raw bytes
    def _read(self, addr: int, n: int) -> bytes:
        at = self.base + addr
        if addr < 0 or n < 0 or at + n > self.eof:
            raise _Unparsed
        if self.data is not None:
            return self.data[at:at + n]
        if self._fh is None:
            self._fh = open(self.path, "rb", buffering=0)
        if hasattr(os, "pread"):  # one system call, no seek
            return os.pread(self._fh.fileno(), n, at)
        self._fh.seek(at)
        return self._fh.read(n)

    def _uint(self, b: bytes, at: int, n: int) -> int:
        if at + n > len(b):
            raise _Unparsed
        return int.from_bytes(b[at:at + n], "little")

    # ------------------------------------------------------------------ object headers
    def check(self, obj) -> None:
        owner = obj.name
        if owner in self.names:
            return
        try:
            info = h5py.h5o.get_info(obj.id)
            addr = info.addr
            count = _num_attrs(info, obj)
        except Exception:  # noqa: BLE001  (libhdf5 reports damage on the read; an h5py
            return         # without these calls leaves the object unchecked, not refused)
        if addr not in self.headers and count:
            refs: list[tuple[int, int, int, int | None, str]] = []
            try:
                for name, msg in self._attribute_messages(addr):
                    refs += self._heap_ids(name, msg)
                for seq_len, gaddr, index, item, name in refs:
                    self._check_object(owner, name, seq_len, gaddr, index, item)
            except (_Unparsed, OSError, IndexError):  # left to libhdf5
                pass
        self.headers.add(addr)
        if owner is not None:
            self.names.add(owner)

    def _attribute_messages(self, addr: int):
        """The data of the attribute messages of the object header at ``addr``, with the
        attribute names."""
        for mtype, data in self._messages(addr):
            if mtype != _ATTRIBUTE:
                continue
            name = self._attribute_name(data)
            if name is not None:
                yield name, data

    def _messages(self, addr: int):
        first = self._read(addr, 16)
        if first[:4] == b"OHDR":
            yield from self._messages_v2(addr)
            return
        if first[0] != 1:
            raise _Unparsed
        chunks = [(addr + 16, self._uint(first, 8, 4))]
        seen = 0
        while chunks:
            at, size = chunks.pop(0)
            seen += 1
            if seen > 1000:
                raise _Unparsed
            block = self._read(at, size)
            p = 0
            while p + 8 <= size:
                mtype, msize = self._uint(block, p, 2), self._uint(block, p + 2, 2)
                data = block[p + 8:p + 8 + msize]
                if len(data) != msize:
                    raise _Unparsed
                if mtype == _CONTINUATION:
                    chunks.append((self._uint(data, 0, self.o),
                                   self._uint(data, self.o, self.l)))
                elif block[p + 4] & 0x02 == 0:  # not a shared message
                    yield mtype, data
                p += 8 + msize

    def _messages_v2(self, addr: int):
        head = self._read(addr, 6 + 16 + 4 + 8)
        flags = head[5]
        p = 6 + (16 if flags & 0x20 else 0) + (4 if flags & 0x10 else 0)
        width = 1 << (flags & 0x03)
        chunks = [(addr + p + width, self._uint(head, p, width), False)]
        hdr = 4 + (2 if flags & 0x04 else 0)
        seen = 0
        while chunks:
            at, size, signed = chunks.pop(0)
            seen += 1
            if seen > 1000:
                raise _Unparsed
            block = self._read(at, size)
            p, end = (4, size - 4) if signed else (0, size)
            if signed and block[:4] != b"OCHK":
                raise _Unparsed
            while p + hdr <= end:
                mtype, msize, mflags = block[p], self._uint(block, p + 1, 2), block[p + 3]
                data = block[p + hdr:p + hdr + msize]
                if len(data) != msize:
                    raise _Unparsed
                if mtype == _CONTINUATION:
                    chunks.append((self._uint(data, 0, self.o),
                                   self._uint(data, self.o, self.l), True))
                elif mflags & 0x02 == 0:
                    yield mtype, data
                p += hdr + msize

    # ------------------------------------------------------------------ attribute messages
    def _layout(self, msg: bytes) -> tuple[int, int, int, int]:
        """(name at, datatype at, dataspace at, data at) of an attribute message."""
        version = msg[0]
        nsize, tsize, ssize = (self._uint(msg, 2, 2), self._uint(msg, 4, 2),
                               self._uint(msg, 6, 2))
        if version == 1:
            def pad(n):
                return (n + 7) // 8 * 8
            name = 8
            dt = name + pad(nsize)
            ds = dt + pad(tsize)
            return name, dt, ds, ds + pad(ssize)
        if version in (2, 3):
            if msg[1] & 0x03:  # shared datatype or dataspace
                raise _Unparsed
            name = 8 if version == 2 else 9
            return name, name + nsize, name + nsize + tsize, name + nsize + tsize + ssize
        raise _Unparsed

    def _attribute_name(self, msg: bytes) -> str | None:
        try:
            name_at, dt, _, _ = self._layout(msg)
        except _Unparsed:
            return None
        return msg[name_at:dt].split(b"\0", 1)[0].decode("utf-8", "replace")

    def _heap_ids(self, name: str, msg: bytes) -> list:
        """``(length, collection address, index, bytes per item or None, name)`` of each
        value of a variable-length attribute; none for other attributes."""
        _, dt, ds, data_at = self._layout(msg)
        if len(msg) < dt + 8 or msg[dt] & 0x0F != _VLEN:
            return []
        item = 1 if msg[dt + 1] & 0x0F == 1 else None  # string: bytes; sequence: its base
        if item is None and len(msg) >= dt + 16:
            item = self._uint(msg, dt + 12, 4)  # the base datatype's size
        n = self._elements(msg, ds)
        width = 4 + self.o + 4
        out = []
        for i in range(n):
            at = data_at + i * width
            if at + width > len(msg):
                raise _Unparsed
            out.append((self._uint(msg, at, 4), self._uint(msg, at + 4, self.o),
                        self._uint(msg, at + 4 + self.o, 4), item, name))
        return out

    def _elements(self, msg: bytes, ds: int) -> int:
        version, rank = msg[ds], msg[ds + 1]
        if version == 1:
            dims_at, kind = ds + 8, 1 if rank else 0
        elif version == 2:
            dims_at, kind = ds + 4, msg[ds + 3]
        else:
            raise _Unparsed
        if kind == 2:  # null dataspace
            return 0
        n = 1
        for i in range(rank if kind == 1 else 0):
            n *= self._uint(msg, dims_at + i * self.l, self.l)
        if n > 1 << 20:
            raise _Unparsed
        return n

    # ------------------------------------------------------------------ collections
    def _check_object(self, owner: str, name: str, seq_len: int, addr: int, index: int,
                      item: int | None) -> None:
        if addr == (1 << (8 * self.o)) - 1 or (addr == 0 and seq_len == 0):
            return  # no value stored (undefined address)
        objects = self.collections.get(addr)
        if objects is None:
            objects = self.collections[addr] = self._walk(addr, owner, name)
        where = f"the attribute {name!r} of {owner!r}"
        if index not in objects or index == 0:
            held = sorted(i for i in objects if i)
            raise self._error(
                f"{where} names object {index} of the HDF5 global heap collection at byte "
                f"{addr}, which holds " + (f"objects {held[0]} to {held[-1]}" if held and
                                           len(held) == held[-1] - held[0] + 1 else
                                           f"the objects {held[:12]}"))
        if item is not None and objects[index] != seq_len * item:
            raise self._error(
                f"{where} is {seq_len} items of {item} bytes, its object {index} in the "
                f"HDF5 global heap collection at byte {addr} holds {objects[index]} bytes")

    def _walk(self, addr: int, owner: str, name: str) -> dict[int, int]:
        """``{index: size}`` of the objects of the collection at ``addr``, walked as libhdf5
        walks it; a walk that stands still, goes back or leaves the collection refused."""
        where = (f"the HDF5 global heap collection at byte {addr} (holding the value of the "
                 f"attribute {name!r} of {owner!r})")
        hdr = 8 + self.l
        try:
            head = self._read(addr, hdr)
        except _Unparsed:
            raise self._error(f"{where} lies past the end of the file ({self.eof} bytes)")
        if head[:4] != b"GCOL" or head[4] != 1:
            raise self._error(f"{where} starts with {head[:5]!r}, expected b'GCOL\\x01'")
        size = self._uint(head, 8, self.l)
        if size < 4096:  # libhdf5 allocates and accepts no smaller collection (H5HG_MINSIZE)
            raise self._error(f"{where} declares {size} bytes, expected at least 4096")
        if self.base + addr + size > self.eof:
            raise self._error(f"{where} declares {size} bytes; from byte {addr} the file "
                              f"holds {self.eof - self.base - addr}")
        block = self._read(addr, size)
        objhdr = 8 + self.l
        objects: dict[int, int] = {}
        p = hdr
        while p < size:
            if p + objhdr > size:  # too small for an object: free space
                break
            index, osize = self._uint(block, p, 2), self._uint(block, p + 8, self.l)
            need = objhdr + (osize + 7) // 8 * 8 if index else osize
            if need < objhdr or p + need > size:
                raise self._error(
                    f"{where}: the object header at byte {addr + p} (index {index}, "
                    f"{osize} bytes) " + (
                        "takes no bytes, so that libhdf5 would parse it again and again "
                        "(an endless loop)" if need == 0 else
                        f"takes fewer bytes ({need}) than its own header ({objhdr})"
                        if need < objhdr else
                        f"runs past the collection's end ({size} bytes)"))
            objects[index] = osize
            p += need
        return objects

    def _error(self, what: str) -> KerasImportError:
        return KerasImportError(
            f"{what}. The file is corrupt: HDF5 cannot read this attribute (checked before "
            "libhdf5 reads it, which on such damage loops for ever or reads out of bounds). "
            "Save the model again", path=self.path)
