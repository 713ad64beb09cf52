"""Every public function's docstring documents its parameters as its signature has them.

For each public function, class and method of ``jaxsal`` and ``model_import``:
- a name in its ``Args:`` (``Attributes:`` for a class) section is a parameter;
- every parameter is documented: in that section, named anywhere in the docstring (``reduce``,
  ``layer=``, "the layer ``name``"...), or through a reference that covers it ("as in
  :func:`jaxsal.saliency`", "Same arguments as", "made by :func:`lrp_composite`"...);
- an entry "name: as in :func:`f`" names parameters that ``f`` has, with the same default
  (the default ``help(f)`` describes is the one the caller gets).
"""

import inspect
import re
import typing

import pytest

import jaxsal
import model_import

_SECTION = re.compile(r"^(\s*)(Args|Arguments|Attributes)\s*:\s*$")
_ENTRY = re.compile(r"^\*{0,2}([A-Za-z_]\w*(?:\s*,\s*\*{0,2}[A-Za-z_]\w*)*)\s*:(?!:)")
_REF = re.compile(r":(?:func|meth|class):`~?([\w.]+)`")
# "as in :func:`x`", "Same arguments as :func:`x`", "like :meth:`x`", "made by :func:`x`"...
_REF_PHRASE = re.compile(r"\b(?:as in|as for|as|like|made by)\s+(?:\S+\s+)?:(?:func|meth|class):"
                         r"`~?([\w.]+)`", re.IGNORECASE)


def _public_objects():
    # jaxsal's whole namespace; of model_import, what loads a model and the model itself
    # (its registry and error classes are for converter writers)
    named = [("jaxsal", jaxsal, name) for name in jaxsal.__all__]
    named += [("model_import", model_import, name)
              for name in ("load_keras", "build_model", "KerasModel", "LayerInfo")]
    objs = []
    for modname, mod, name in named:
        obj = getattr(mod, name)
        if typing.get_origin(obj) is not None or not callable(obj):
            continue  # type aliases (documented in the README) and constants
        if obj is not model_import.KerasModel:  # made by load_keras, not by its constructor
            objs.append((f"{modname}.{name}", obj))
        if inspect.isclass(obj):
            for attr, value in vars(obj).items():
                if not attr.startswith("_") and inspect.isfunction(value):
                    objs.append((f"{modname}.{name}.{attr}", value))
    return objs


def _parameters(obj):
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return None
    return {n: p for n, p in sig.parameters.items() if n not in ("self", "cls")}


def _sections(doc: str) -> dict[str, str]:
    """``{name: description}`` of the docstring's Args/Attributes section (one entry may name
    several parameters, ``model, x, targets: as in ...``, over one or more lines)."""
    lines = doc.splitlines()
    entries: dict[str, str] = {}
    for i, line in enumerate(lines):
        m = _SECTION.match(line)
        if not m:
            continue
        head = len(m.group(1))
        body = []
        for ln in lines[i + 1:]:
            if ln.strip() and len(ln) - len(ln.lstrip()) <= head:
                break
            body.append(ln)
        indents = [len(ln) - len(ln.lstrip()) for ln in body if ln.strip()]
        if not indents:
            continue
        item = min(indents)
        current: list[str] = []
        pending = ""
        for ln in body:
            if not ln.strip():
                continue
            text = ln.strip()
            at_item = len(ln) - len(ln.lstrip()) == item
            if at_item or pending:
                text = pending + text
                m2 = _ENTRY.match(text)
                if m2:
                    current = [n.strip().lstrip("*") for n in m2.group(1).split(",")]
                    for n in current:
                        entries[n] = text[m2.end():]
                    pending = ""
                    continue
                if re.fullmatch(r"[\w*, ]+,", text):  # a list of names wrapped onto 2 lines
                    pending = text + " "
                    continue
                if at_item:
                    current = []  # a paragraph inside the section, not an entry
                    continue
            for n in current:
                entries[n] += " " + text
    return entries


def _resolve(ref: str, owner):
    """The object ``ref`` (``saliency``, ``jaxsal.saliency``, ``KerasModel.apply``, a name of
    the owner class) names, or ``None``."""
    parts = ref.split(".")
    if parts[0] in ("jaxsal", "model_import"):
        parts = parts[1:]
    for scope in (owner, jaxsal, model_import, model_import.KerasModel, jaxsal.FunctionModel):
        obj = scope
        for p in parts:
            obj = getattr(obj, p, None) if obj is not None else None
        if obj is not None:
            return obj
    return None


def _owner(qualname: str):
    parts = qualname.split(".")
    if len(parts) == 3:
        return getattr({"jaxsal": jaxsal, "model_import": model_import}[parts[0]], parts[1])
    return None


@pytest.mark.parametrize("qualname,obj", _public_objects(), ids=lambda v: v
                         if isinstance(v, str) else "")
def test_docstring_documents_the_signature(qualname, obj):
    params = _parameters(obj)
    if not params:
        return
    doc = inspect.getdoc(obj) or ""
    owner = _owner(qualname)
    entries = _sections(doc)
    problems = [f"documents {n!r}, which is not a parameter" for n in entries if n not in params]

    referenced = {}
    for ref in _REF_PHRASE.findall(doc):
        target = _resolve(ref, owner)
        if target is not None and target is not obj:
            referenced.update(_parameters(target) or {})
    for name in params:
        if name in entries or re.search(rf"(?<!\w){name}\b", doc) or name in referenced:
            continue
        problems.append(f"parameter {name!r} is not documented")

    for name, desc in entries.items():
        m = re.match(r"\s*(?:as in|as for|as)\s+:(?:func|meth|class):`~?([\w.]+)`", desc)
        if not m or name not in params:
            continue
        target = _resolve(m.group(1), owner)
        tparams = _parameters(target) if target is not None else None
        if tparams is None:
            problems.append(f"{name!r}: 'as in {m.group(1)}', which is not found")
        elif name not in tparams:
            problems.append(f"{name!r}: 'as in {m.group(1)}', which has no {name!r}")
        elif tparams[name].default != params[name].default:
            problems.append(f"{name!r}: default {params[name].default!r}, but 'as in "
                            f"{m.group(1)}' whose default is {tparams[name].default!r}")
    assert not problems, f"{qualname}: " + "; ".join(problems)


def test_the_parser_reads_entries():
    doc = inspect.getdoc(jaxsal.feature_permutation)
    entries = _sections(doc)
    # a list of names wrapped onto two lines, and a plain entry
    assert {"model", "check_finite", "return_groups", "key", "n"} <= entries.keys()
    assert entries["return_groups"].lstrip().startswith("as in")
    bad = _sections("Args:\n  x: the input.\n  nope: gone.\nReturns:\n  y: not an arg.\n")
    assert list(bad) == ["x", "nope"]


def test_every_reference_resolves():
    # help() readers look a :func:/:meth:/:class: reference up in jaxsal (or model_import):
    # a private helper's name sends them nowhere
    unresolved = []
    for qualname, obj in _public_objects():
        for ref in _REF.findall(inspect.getdoc(obj) or ""):
            if _resolve(ref, _owner(qualname)) is None:
                unresolved.append(f"{qualname} -> {ref}")
    assert not unresolved, ("references to names help() cannot find (describe them in plain "
                            "text, or make them public): " + "; ".join(sorted(set(unresolved))))
