"""Every relative link and image of README.md and benchmarks/README.md points at a file of the
repository, and every ``#anchor`` at one of the document's headings (GitHub's anchors: the
heading lower-cased, its punctuation dropped, spaces made hyphens). Text, no imports of jaxsal:
a fraction of a second."""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ["README.md", "benchmarks/README.md"]

_FENCE = re.compile(r"^```.*?^```[ \t]*$", re.M | re.S)
_CODE = re.compile(r"`[^`\n]*`")
# [text](target) and ![alt](target), the text possibly over several lines; an optional "title"
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REF_DEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.M)
_HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", re.M)


def _prose(text: str) -> str:
    """``text`` without fenced code blocks (their ``# comments`` are not headings)."""
    return _FENCE.sub("", text)


def targets(text: str) -> list[str]:
    """The link targets of markdown ``text``, outside code blocks and code spans."""
    prose = _CODE.sub("", _prose(text))
    return _LINK.findall(prose) + _REF_DEF.findall(prose)


def anchors(text: str) -> set[str]:
    """GitHub's anchors of the headings of ``text`` (a repeated heading gets -1, -2, ...)."""
    seen: dict[str, int] = {}
    out = set()
    for heading in _HEADING.findall(_prose(text)):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def broken(doc: pathlib.Path, root: pathlib.Path = ROOT) -> list[str]:
    """The targets of ``doc`` that name no file (relative to ``doc``) or no heading anchor;
    files named relative to ``root``."""
    text = doc.read_text(encoding="utf-8")
    bad = []
    for t in targets(text):
        if re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:", t):  # http:, https:, mailto:
            continue
        path, _, anchor = t.partition("#")
        target = (doc.parent / path) if path else doc
        if path and not target.exists():
            bad.append(f"{t} (no file {target.relative_to(root)})")
        elif anchor and target.suffix == ".md" and anchor not in anchors(
                target.read_text(encoding="utf-8")):
            bad.append(f"{t} (no heading of {target.relative_to(root)} has anchor #{anchor})")
    return bad


@pytest.mark.parametrize("name", DOCS)
def test_links_resolve(name):
    doc = ROOT / name
    assert targets(doc.read_text(encoding="utf-8")), f"no links found in {name}: parser broken?"
    bad = broken(doc)
    assert not bad, (f"{name} links to targets that do not exist: {bad}; commit the file "
                     "(figures: python examples/<name>.py --out docs/figures) or fix the link")


def test_checker_sees_what_it_must(tmp_path):
    """The parser finds links over two lines, images, reference definitions and anchors, and
    ignores those inside code; a missing file and a missing anchor are both reported."""
    (tmp_path / "there.png").write_bytes(b"")
    doc = tmp_path / "doc.md"
    doc.write_text(
        "# Top\n\n## Importing Keras models (`model_import`)\n\n## Top\n\n"
        "![ok](there.png) [a\nlink](missing.py) [ok](#importing-keras-models-model_import)"
        " [ok](#top-1) [bad](#nowhere) [web](https://example.com/x)\n\n"
        "`[code](not_checked.py)`\n\n```\n# not a heading\n[x](also_not_checked.py)\n```\n\n"
        "[ref]: gone/ref.md\n", encoding="utf-8")
    assert targets(doc.read_text()) == [
        "there.png", "missing.py", "#importing-keras-models-model_import", "#top-1",
        "#nowhere", "https://example.com/x", "gone/ref.md"]
    bad = broken(doc, root=tmp_path)
    assert [b.split(" ")[0] for b in bad] == ["missing.py", "#nowhere", "gone/ref.md"]
