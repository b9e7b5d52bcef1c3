"""`make docs`: the site builds with `mkdocs build --strict` (no broken link, anchor or nav page)."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.conftest import ROOT

MKDOCS = ROOT / ".venv-docs" / "bin" / "mkdocs"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site, built as `make docs` builds it, into a scratch directory."""
    if not MKDOCS.exists():
        pytest.fail("the docs tools are missing: `make docs` installs them into .venv-docs")
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run([str(MKDOCS), "build", "--strict", "--site-dir", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, NO_MKDOCS_2_WARNING="1"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "WARNING" not in done.stderr, done.stderr
    return out


def test_the_config_is_strict():
    assert "\nstrict: true\n" in (ROOT / "mkdocs.yml").read_text()


def test_every_docs_page_is_built(site):
    for page in (ROOT / "docs").glob("*.md"):
        built = site / ("index.html" if page.stem == "index" else f"{page.stem}/index.html")
        assert built.is_file(), page


def test_linked_repository_files_are_in_the_site(site):
    """The reports, the bridge's README and the images the pages link to are built with them."""
    assert (site / "repo" / "bench" / "RESULTS" / "index.html").is_file()
    assert (site / "repo" / "express_bridge" / "index.html").is_file()
    assert (site / "repo" / "bench" / "latency.png").is_file()
    html = (site / "benchmarks" / "index.html").read_text()
    assert 'href="../repo/bench/RESULTS/"' in html
    from bench import quote

    stage = quote.QUOTES["stage_ms"].text(quote.read_reports())  # as the committed report says
    assert stage in html or "<!-- bench:" not in html
