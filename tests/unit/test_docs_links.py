"""Every relative link in README.md and docs/*.md reaches a file of the repository, and its anchor a heading.

``mkdocs build --strict`` (tests/e2e/test_docs_site.py, ``make docs``) checks the
site; this checks the same pages as a code host shows them, from the repository.
"""

from __future__ import annotations

import re
import sys
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "express_bridge" / "README.md"]
FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.M | re.S)
CODE_SPAN = re.compile(r"`[^`\n]+`")
LINK = re.compile(r"!?\[[^\]]*\]\((?P<target>[^)\s]+)\)")
HEADING = re.compile(r"^#{1,6} +(?P<title>.+?) *#*$", re.M)


def slug(title: str) -> str:
    """The anchor of a heading, as Python-Markdown's toc (MkDocs) and GitHub make it for plain titles."""
    text = re.sub(r"[`*]|<[^>]+>", "", title)
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


@cache
def anchors(path: Path) -> frozenset[str]:
    """The anchors of a Markdown file: one per heading, numbered -1, -2... when repeated."""
    seen: dict[str, int] = {}
    out = set()
    for m in HEADING.finditer(FENCE.sub("", path.read_text(encoding="utf-8"))):
        base = slug(m["title"])
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}_{n}")
        out.add(base if n == 0 else f"{base}-{n}")
    return frozenset(out)


def links(path: Path) -> list[tuple[int, str]]:
    """``(line, target)`` of every link outside code in ``path``."""
    text = path.read_text(encoding="utf-8")
    text = FENCE.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)
    text = CODE_SPAN.sub(lambda m: " " * len(m.group(0)), text)
    return [(text[:m.start()].count("\n") + 1, m["target"]) for m in LINK.finditer(text)]


def broken(path: Path) -> list[str]:
    """What is wrong with each relative link of ``path``."""
    problems = []
    for line, target in links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):
            continue  # http:, https:, mailto:
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        where = f"{path.relative_to(ROOT)}:{line}: {target}"
        if not dest.exists():
            problems.append(f"{where}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"{where}: no heading with anchor #{anchor} in {dest.relative_to(ROOT)}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_relative_link_resolves(page):
    assert broken(page) == []


def test_the_readme_links_every_docs_page_in_the_nav():
    import yaml

    class Loader(yaml.SafeLoader):
        """mkdocs.yml names Python objects (!!python/name:...): read them as nothing."""

    Loader.add_multi_constructor("tag:yaml.org,2002:python/", lambda loader, suffix, node: None)
    nav = yaml.load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"), Loader=Loader)["nav"]

    def pages(items):
        for item in items:
            value = next(iter(item.values())) if isinstance(item, dict) else item
            yield from pages(value) if isinstance(value, list) else [value]

    listed = set(pages(nav))
    on_disk = {p.name for p in (ROOT / "docs").glob("*.md")}
    assert listed == on_disk, "every docs/*.md page is in mkdocs.yml's nav, and nothing else"
    readme_targets = {t.partition("#")[0] for _, t in links(ROOT / "README.md")}
    assert {f"docs/{p}" for p in on_disk - {"index.md"}} <= readme_targets


def test_a_broken_link_and_a_wrong_anchor_are_found(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n## The pipe stage\n\n[a](#the-pipe-stage) [b](nope.md) [c](page.md#nope)\n"
                    "`[d](code.md)`\n```\n[e](fence.md)\n```\n[f](https://example.com)\n")
    assert broken(page) == ["page.md:5: nope.md: no such file",
                            "page.md:5: page.md#nope: no heading with anchor #nope in page.md"]


def test_the_readme_is_a_short_tour():
    """Under 300 lines: everything else is a page of docs/."""
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) < 300
