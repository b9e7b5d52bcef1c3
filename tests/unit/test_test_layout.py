"""The test tree mirrors the package, and pytest can collect all of it in one run."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_every_test_file_name_is_unique():
    """pytest imports test files by their base name (no __init__.py): two alike stop the run."""
    names = Counter(path.name for path in TESTS.rglob("test_*.py"))
    assert [name for name, count in names.items() if count > 1] == []


def test_tests_live_under_unit_or_e2e():
    stray = [str(p.relative_to(TESTS)) for p in TESTS.glob("test_*.py")]
    assert stray == [], "put in-process tests under tests/unit/<package>/, process tests under tests/e2e/"
