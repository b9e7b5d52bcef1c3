"""MkDocs hook: files of the repository that the docs link to are part of the site.

The pages in docs/ link to files beside them in the repository (``../bench/RESULTS.md``,
``../express_bridge/README.md``, images, ``../deploy/haproxy.cfg``), so that the links
work on a code host as well. MkDocs only builds what is under docs/: this hook adds each
linked file outside docs/ (and, for a Markdown file, what it links to in turn) under
``repo/<its path>`` and points the links there, so ``mkdocs build --strict`` still
checks every link.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

from mkdocs.structure.files import File, InclusionLevel

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
LINK = re.compile(r"(\]\()([^)\s#]+)(#[^)\s]*)?(\))")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)
_real: dict[str, Path] = {}  # src_uri -> the file in the repository


def _targets(path: Path):
    """The repository files that Markdown file ``path`` links to (outside code blocks)."""
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    for m in LINK.finditer(text):
        target = m.group(2)
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("/"):
            continue
        yield (path.parent / target).resolve()


def src_uri(path: Path) -> str | None:
    """Where ``path`` sits in the site's sources: itself under docs/, else under ``repo/``."""
    if path.is_dir():
        path = path / "README.md"
    if not path.is_file() or ROOT not in path.parents:
        return None
    if DOCS in path.parents:
        return path.relative_to(DOCS).as_posix()
    return "repo/" + path.relative_to(ROOT).as_posix()


def on_files(files, config):
    """Add every file outside docs/ reachable by links from the pages."""
    todo = [DOCS / f.src_uri for f in files if f.src_uri.endswith(".md")]
    seen = set(todo)
    while todo:
        page = todo.pop()
        for target in _targets(page):
            uri = src_uri(target)
            if uri is None or not uri.startswith("repo/") or uri in _real:
                continue
            real = ROOT / uri[len("repo/"):]
            _real[uri] = real
            files.append(File.generated(config, uri, abs_src_path=str(real),
                                        inclusion=InclusionLevel.NOT_IN_NAV))
            if real.suffix == ".md" and real not in seen:
                seen.add(real)
                todo.append(real)
    return files


def on_page_markdown(markdown, page, config, files):
    """Point links to repository files at their copies under ``repo/``."""
    here = _real.get(page.file.src_uri, DOCS / page.file.src_uri)

    def relink(m):
        target = m.group(2)
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("/"):
            return m.group(0)
        uri = src_uri((here.parent / target).resolve())
        if uri is None:
            return m.group(0)  # left for MkDocs to report
        rel = posixpath.relpath(uri, posixpath.dirname(page.file.src_uri) or ".")
        return f"{m.group(1)}{rel}{m.group(3) or ''}{m.group(4)}"

    parts = re.split(r"(^```.*?^```)", markdown, flags=re.M | re.S)
    return "".join(p if p.startswith("```") else LINK.sub(relink, p) for p in parts)
