"""The benchmark numbers quoted in README.md and docs/ are the committed reports' (bench/quote.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import quote

ROOT = Path(__file__).resolve().parents[2]


def test_every_quote_is_found_in_the_committed_reports():
    reports = quote.read_reports()
    for key, source in quote.QUOTES.items():
        assert source.text(reports), key


def test_every_marked_number_matches_the_reports():
    assert quote.stale() == [], "run: python -m bench.quote"


@pytest.mark.parametrize("path", quote.documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_readme_states_no_speed_or_memory_figure_outside_a_mark(path):
    found = quote.unmarked(path.read_text(encoding="utf-8"))
    assert found == [], (f"{path.relative_to(ROOT)}: mark each measurement with"
                         f" <!-- bench:KEY -->...<!-- /bench --> (or say it without the number), each"
                         f" setting, default, limit or goal as `code` or <!-- setting -->...<!-- /setting -->"
                         f": {found}")


def test_the_readme_quotes_its_headline_numbers():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    for key in ("stage_ms", "cold_s", "cold_warm_x", "stage_mib", "cold_mib", "http_rps", "http_vs_bjoern"):
        assert f"<!-- bench:{key} -->" in text, key


def test_a_report_that_changes_makes_the_quotes_stale():
    reports = quote.read_reports()
    now = quote.QUOTES["stage_ms"].text(reports)  # e.g. "38.5 ms", as the committed report says
    other = "61.0 ms" if now != "61.0 ms" else "62.0 ms"
    reports["RESULTS.md"] = reports["RESULTS.md"].replace(f"takes {now} per document",
                                                          f"takes {other} per document")
    problems = quote.stale(reports)
    assert any(f"bench:stage_ms says '{now}', the reports say '{other}'" in p for p in problems), problems
    assert any(p.startswith("README.md:") for p in problems), problems


def test_render_fills_a_mark_and_refuses_an_unknown_key():
    reports = quote.read_reports()
    assert quote.render("<!-- bench:cold_warm_x -->1x<!-- /bench -->", reports) == \
        f"<!-- bench:cold_warm_x -->{quote.QUOTES['cold_warm_x'].text(reports)}<!-- /bench -->"
    with pytest.raises(KeyError, match="unknown quote"):
        quote.render("<!-- bench:nosuch -->1<!-- /bench -->", reports)


@pytest.mark.parametrize("text, figures", [
    ("a stage answers in 38 ms instead of 3.2 s (86x)", ["38 ms", "3.2 s", "86x"]),
    ("539 MiB, 3,134 req/s, 2.2x and 234% of bjoern", ["539 MiB", "3,134 req/s", "2.2x", "234%"]),
    ("<!-- bench:stage_ms -->58.3 ms<!-- /bench --> and `--timeout 5 s` and\n```\n12 ms\n```\n", []),
    ("Python 3.11, Node 20, port 3000, 2 cores, 5 experts, v2, (3 tries)", []),
    ("heartbeats <!-- setting -->5 s<!-- /setting --> apart, goal `>= 1.6x`, but 3 ms", ["3 ms"]),
    ("<!-- spec:defaults -->\n| heartbeat | 5 s |\n<!-- /spec:defaults -->\n", []),
    ("<!-- bench:headline -->\n12 ms\n\n9 ms\n<!-- /bench -->\nthen 4 ms", ["4 ms"]),
])
def test_unmarked_finds_speed_time_size_and_ratio_figures(text, figures):
    assert [figure for _, figure in quote.unmarked(text)] == figures


def test_unmarked_counts_lines_past_a_quoted_section():
    assert quote.unmarked("<!-- bench:headline -->\na\nb\n<!-- /bench -->\n\n7 ms") == [(6, "7 ms")]
