"""Every relative link and image in the README and docs/ leads somewhere: the file exists,
and a ``#section`` names a heading of the page it points to (GitHub's anchors)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")),
         REPO / "benchmark" / "RESULTS.md", *sorted((REPO / "examples").rglob("*.md"))]

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.DOTALL | re.MULTILINE)
_CODE = re.compile(r"`[^`\n]*`")
_INLINE = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$",
                        re.MULTILINE)
_HTML = re.compile(r"<(?:img|a)\b[^>]*?\b(?:src|href)=\"([^\"]+)\"", re.IGNORECASE)
_EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # http:, https:, mailto:


def _prose(text: str) -> str:
    """The page without code: a link inside a code block or a code span is not a link."""
    return _CODE.sub("", _FENCE.sub("", text))


def links(text: str) -> list[str]:
    body = _prose(text)
    return [m for rx in (_INLINE, _REFERENCE, _HTML) for m in rx.findall(body)]


def anchors(text: str) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped, spaces to hyphens; a repeated
    heading gets -1, -2, ..."""
    seen: dict[str, int] = {}
    out = set()
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", _FENCE.sub("", text), re.MULTILINE)
    for heading in headings:
        plain = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
        slug = re.sub(r"[^\w\- ]", "", plain.lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def broken(page: Path) -> list[str]:
    """Each relative link of ``page`` that leads nowhere, with the reason."""
    out = []
    for target in links(page.read_text()):
        if _EXTERNAL.match(target):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            out.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest.read_text()):
            out.append(f"{target}: no heading #{anchor} in {dest.name}")
    return out


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page: Path):
    assert broken(page) == []


def test_the_checker_finds_what_is_broken(tmp_path: Path):
    (tmp_path / "img.png").write_bytes(b"")
    (tmp_path / "other.md").write_text("# Scale-up: how fast?\n## Scale-up: how fast?\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Here\n[ok](other.md#scale-up-how-fast) [ok](other.md#scale-up-how-fast-1) "
        "![ok](img.png) [ok](#here) [ok](https://example.org/x.md)\n"
        "[gone](missing.md) ![gone](pics/none.png) [bad](other.md#nowhere) [bad](#there)\n"
        "`[code](not-a-link.md)`\n```\n[code](also-not.md)\n```\n"
        "[ref]: ./missing-ref.md\n<img src=\"none.svg\" alt=\"x\">\n")
    assert broken(page) == [
        "missing.md: no such file", "pics/none.png: no such file",
        "other.md#nowhere: no heading #nowhere in other.md", "#there: no heading #there in page.md",
        "./missing-ref.md: no such file", "none.svg: no such file"]


def test_the_readme_stays_a_front_page():
    """What it is, the two commands, the picture, links; the reference lives in docs/."""
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 120
    assert "make demo" in readme and "make test" in readme
    assert "docs/architecture.png" in links(readme)
    shown = readme + "".join(p.read_text() for p in PAGES[1:])
    assert not re.search(r"seed[ -]?\d{3}", shown, re.IGNORECASE)
