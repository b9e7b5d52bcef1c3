"""Fill the benchmark numbers quoted in README.md and docs/*.md from the committed reports.

A quoted number sits between two HTML comments, invisible on the site and
readable in the raw Markdown::

    a stage answers in <!-- bench:stage_ms -->58.3 ms<!-- /bench --> instead of ...

``stage_ms`` names an entry of ``QUOTES`` below: a report (bench/RESULTS*.md)
and a pattern whose groups, put into its format, give the text to show. A
``Section`` entry quotes a whole section of a report (its Markdown, between
the two comments, on lines of their own). Never edit a marked span by hand:
run this script after ``make bench``.

    python -m bench.quote          # rewrite every marked span
    python -m bench.quote --check  # exit 1 (naming each) if one differs from the reports

``tests/unit/test_quoted_numbers.py`` runs the check, and also fails when
README.md or a page of docs/ states a speed, time, size or ratio figure
outside a mark (see ``unmarked``). A figure that is no benchmark measurement
(a setting, a default, a limit, a goal, the size of an install) is written as
code when it is a value one types (`` `1 MiB` ``), else between ``<!-- setting -->`` and
``<!-- /setting -->``, which the check leaves alone (so are the tables that
docs/protocol_tables.py writes from protocol.json between ``<!-- spec:NAME -->``
and ``<!-- /spec:NAME -->``: defaults and retry profiles, no measurements)::

    a side that misses two heartbeats (<!-- setting -->5 s<!-- /setting --> apart by default) ...
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
MARK = re.compile(r"<!-- bench:(?P<key>[\w-]+) -->(?P<text>.*?)<!-- /bench -->", re.S)
NUMBER = r"[\d,]+(?:\.\d+)?"


@dataclass(frozen=True)
class Quote:
    """A figure of a report: the first match of ``pattern`` in it, its groups put into ``fmt``."""

    report: str
    pattern: str
    fmt: str = "{0}"

    def text(self, reports: dict[str, str]) -> str:
        """The text to show, from the report's current contents."""
        m = re.search(self.pattern, reports[self.report], re.M)
        if m is None:
            raise LookupError(f"bench/{self.report} has no match for {self.pattern!r}")
        return self.fmt.format(*m.groups())


@dataclass(frozen=True)
class Section:
    """A section of a report (under the ``## `` heading that starts so, up to the next one), quoted whole."""

    report: str
    heading: str

    def text(self, reports: dict[str, str]) -> str:
        """The section's body, on lines of its own between the marks."""
        m = re.search(rf"^## {re.escape(self.heading)}[^\n]*\n(.*?)(?=^## |\Z)", reports[self.report],
                      re.S | re.M)
        if m is None:
            raise LookupError(f"bench/{self.report} has no section '## {self.heading}'")
        return "\n" + m.group(1).strip() + "\n"


# What README.md and docs/ may quote. Patterns read the reports as `make bench` writes them.
QUOTES: dict[str, Quote | Section] = {
    # bench/RESULTS.md (python -m bench.run)
    "run_date": Quote("RESULTS.md", r"^Run (\d{4}-\d\d-\d\d \d\d:\d\d):\d\d UTC", "{0} UTC"),
    "stage_ms": Quote("RESULTS.md", rf"`expertd pipe sentiment` takes ({NUMBER}) ms per document", "{0} ms"),
    "cold_s": Quote("RESULTS.md", rf"against ({NUMBER}) s for a stage that loads TensorFlow", "{0} s"),
    "cold_warm_x": Quote("RESULTS.md", rf"\*\*({NUMBER})x\*\* faster", "{0}x"),
    "stage_mib": Quote("RESULTS.md", rf"peak memory ({NUMBER}) MiB vs", "{0} MiB"),
    "cold_mib": Quote("RESULTS.md", rf"peak memory {NUMBER} MiB vs ({NUMBER}) MiB", "{0} MiB"),
    "floor_ms": Quote("RESULTS.md", rf"\| floor: `python -c pass` \| \d+ \| ({NUMBER}) \|", "{0} ms"),
    "stream_docs_s": Quote("RESULTS.md", rf"moves \*\*({NUMBER}) documents/s\*\*", "{0} documents/s"),
    "http_rps": Quote("RESULTS.md", rf"Express bridge ({NUMBER}) req/s, p99", "{0} req/s"),
    "http_p99": Quote("RESULTS.md", rf"Express bridge {NUMBER} req/s, p99 ({NUMBER}) ms", "{0} ms"),
    "bjoern_rps": Quote("RESULTS.md", rf"Falcon \+ bjoern ({NUMBER}) req/s", "{0} req/s"),
    "http_vs_bjoern": Quote("RESULTS.md", r"the bridge has \*\*(\d+%)\*\* of bjoern"),
    "rpc_c64_x": Quote("RESULTS.md", rf"c=64: {NUMBER} vs {NUMBER} calls/s \(({NUMBER})x\)", "{0}x"),
    "batch_share": Quote("RESULTS.md", r"runs at [\d,]+ documents/s, \*\*(\d+%)\*\*"),
    "server_mib": Quote("RESULTS.md", rf"all default experts ({NUMBER}) MiB resident", "{0} MiB"),
    "headline": Section("RESULTS.md", "Headline"),
    # bench/RESULTS-shadow.md (python -m bench.shadow)
    "shadow_table": Section("RESULTS-shadow.md", "p99 with and without a shadow"),
    "shadow_p99_x": Quote("RESULTS-shadow.md", rf"\(\*\*({NUMBER})x\*\*\)", "{0}x"),
    # bench/RESULTS-scale.md (python -m bench.scale)
    "workers_x": Quote("RESULTS-scale.md", rf"2 workers give \*\*({NUMBER})x\*\*", "{0}x"),
    "haproxy_x": Quote("RESULTS-scale.md", rf"\| HAProxy, 2 servers x 1 \| {NUMBER} \| ({NUMBER})x", "{0}x"),
    "one_worker_cps": Quote("RESULTS-scale.md", rf"\| 1 worker \| ({NUMBER}) \| 1\.00x", "{0}"),
    "two_workers_cps": Quote("RESULTS-scale.md", rf"\| 2 workers \| ({NUMBER}) \|", "{0}"),
    "haproxy_cps": Quote("RESULTS-scale.md", rf"\| HAProxy, 2 servers x 1 \| ({NUMBER}) \|", "{0}"),
    "scale_stream": Quote("RESULTS-scale.md", rf"streams \*\*({NUMBER}) documents/s\*\*", "{0} documents/s"),
    "scale_stream_1w": Quote("RESULTS-scale.md", rf"\| 1 worker, --connections 1 \| ({NUMBER}) \|",
                             "{0} documents/s"),
    "worker_vader_mib": Quote("RESULTS-scale.md", rf"\| vader \| worker 0 \| ({NUMBER}) \|", "{0} MiB"),
    "worker_default_mib": Quote("RESULTS-scale.md", rf"\| default \| single-process server \| ({NUMBER}) \|",
                                "{0} MiB"),
    "supervisor_mib": Quote("RESULTS-scale.md",
        rf"\| vader \| supervisor \(of 2\) \| ({NUMBER}) \|", "{0} MiB"),
    # bench/RESULTS-chains.md (python -m bench.chains)
    "chain_p50": Quote("RESULTS-chains.md",
        rf"\| chain \| `opinions\(doc, \[\"consensus\"\]\)` \| ({NUMBER}) \|",
                       "{0} ms"),
    "flat_p50": Quote("RESULTS-chains.md", rf"\| flat \| `opinions\(doc, \[\"sentiment\", \"vader\"\]\)` \| "
                                           rf"({NUMBER}) \|", "{0} ms"),
    "named_p50": Quote("RESULTS-chains.md", rf"\| named \| `[^`]+` \| ({NUMBER}) \|", "{0} ms"),
    "chain_x": Quote("RESULTS-chains.md", rf"A chain costs \*\*({NUMBER})x\*\*", "{0}x"),
    "two_calls_p50": Quote("RESULTS-chains.md", rf"\| two calls \| [^|]+ \| ({NUMBER}) \|", "{0} ms"),
    "two_calls_x": Quote("RESULTS-chains.md",
        rf"\| two calls \| [^|]+ \| {NUMBER} \| {NUMBER} \| ({NUMBER})x",
                         "{0}x"),
    "chain_batch": Quote("RESULTS-chains.md", rf"\| chain \| ({NUMBER}) \| ({NUMBER})x", "{0} documents/s"),
    "chain_batch_x": Quote("RESULTS-chains.md", rf"\| chain \| {NUMBER} \| ({NUMBER})x", "{0}x"),
    "flat_batch": Quote("RESULTS-chains.md", rf"\| flat \| ({NUMBER}) \| 1\.00x", "{0} documents/s"),
    # bench/RESULTS-curve.md (python -m bench.curve)
    "curve_stage_off": Quote("RESULTS-curve.md", rf"\| off \| ({NUMBER}) \| {NUMBER} \| 20 \|", "{0} ms"),
    "curve_stage_on": Quote("RESULTS-curve.md", rf"\| on \| ({NUMBER}) \| {NUMBER} \| 20 \|", "{0} ms"),
    "curve_stage_plus": Quote("RESULTS-curve.md", rf"\+({NUMBER}) ms a stage", "+{0} ms"),
    "curve_raw_100": Quote("RESULTS-curve.md", r"\| 100 \| [\d.]+ \| [\d.]+ \| ([+-][\d.]+) \|", "{0} µs"),
    "curve_raw_10k": Quote("RESULTS-curve.md", r"\| 10,000 \| [\d.]+ \| [\d.]+ \| ([+-][\d.]+) \|", "{0} µs"),
    "curve_stock_c1": Quote("RESULTS-curve.md",
        rf"\| 1 \| on \| {NUMBER} \| [\d.]+ \| [\d.]+ \| ([\d.]+) \|", "{0}x"),
    "curve_stock_c16": Quote("RESULTS-curve.md",
        rf"\| 16 \| on \| {NUMBER} \| [\d.]+ \| [\d.]+ \| ([\d.]+) \|",
                             "{0}x"),
    "curve_wire_x": Quote("RESULTS-curve.md",
        rf"(?s)pipe stage's connection.*?\| 1 \| on \| {NUMBER} \| [\d.]+ \| [\d.]+ \| ([\d.]+) \|", "{0}x"),
    "curve_wire_p99_x": Quote("RESULTS-curve.md",
        rf"(?s)pipe stage's connection.*?\| 1 \| on \| {NUMBER} \| [\d.]+ \| [\d.]+ \| [\d.]+ \| [\d.]+ \| "
        r"([\d.]+) \|", "{0}x"),
    # bench/RESULTS-learning.md (python -m bench.learning)
    "learn_1k": Quote("RESULTS-learning.md", rf"After 1k examples: \*\*({NUMBER})\*\*"),
    "learn_5k": Quote("RESULTS-learning.md", rf"after 5k: \*\*({NUMBER})\*\*"),
    "learn_all": Quote("RESULTS-learning.md", rf"after all [\d,]+: \*\*({NUMBER})\*\*"),
    "learn_rate": Quote("RESULTS-learning.md",
        rf"Teaching throughput: ({NUMBER}) examples/s", "{0} examples/s"),
    "learn_idle_p99": Quote("RESULTS-learning.md", rf"\| idle \| {NUMBER} \| ({NUMBER}) \|", "{0} ms"),
    "learn_busy_p99": Quote("RESULTS-learning.md", rf"\| learning \| {NUMBER} \| ({NUMBER}) \|", "{0} ms"),
    "learn_idle_p50": Quote("RESULTS-learning.md", rf"\| idle \| ({NUMBER}) \|", "{0} ms"),
    "learn_busy_p50": Quote("RESULTS-learning.md", rf"\| learning \| ({NUMBER}) \|", "{0} ms"),
    "log_delay_median": Quote("RESULTS-learning.md", rf"median \*\*({NUMBER}) ms\*\*", "{0} ms"),
    "log_delay_max": Quote("RESULTS-learning.md", rf"max \*\*({NUMBER}) ms\*\*", "{0} ms"),
    # bench/RESULTS-learning-pg.md (python -m bench.learning_pg)
    "pg_step_median": Quote("RESULTS-learning-pg.md",
                            rf"^\| in-step delay, median [^|]*\| ({NUMBER}) \|", "{0} ms"),
    "sqlite_step_median": Quote("RESULTS-learning-pg.md",
                                rf"^\| in-step delay, median [^|]*\| {NUMBER} \| ({NUMBER}) \|", "{0} ms"),
    "pg_learn_rate": Quote("RESULTS-learning-pg.md",
                           rf"^\| learn throughput[^|]*\| ({NUMBER}) \|", "{0} examples/s"),
    "sqlite_learn_rate": Quote("RESULTS-learning-pg.md",
                               rf"^\| learn throughput[^|]*\| {NUMBER} \| ({NUMBER}) \|", "{0} examples/s"),
    "pg_stream_total": Quote("RESULTS-learning-pg.md", rf"^\| learn throughput, ({NUMBER}) examples"),
    "pg_busy_p99": Quote("RESULTS-learning-pg.md",
                         rf"^\| opinion p99 while [^|]*\| ({NUMBER}) \|", "{0} ms"),
    "sqlite_busy_p99": Quote("RESULTS-learning-pg.md",
                             rf"^\| opinion p99 while [^|]*\| {NUMBER} \| ({NUMBER}) \|", "{0} ms"),
    "pg_first_ready": Quote("RESULTS-learning-pg.md",
                            rf"^\| first three servers, empty log[^|]*\| ({NUMBER}) \|", "{0} s"),
    "pg_fourth_ready": Quote("RESULTS-learning-pg.md",
                             rf"^\| fourth server: seconds until it answers[^|]*\| ({NUMBER}) \|", "{0} s"),
    "pg_fourth_catch_up": Quote("RESULTS-learning-pg.md",
                                rf"^\| fourth server: seconds until it reaches[^|]*\| ({NUMBER}) \|",
                                "{0} s"),
    # bench/RESULTS-tracing.md (python -m bench.tracing)
    "tracing_cost_section": Section("RESULTS-tracing.md", "Tracing off, 1% and 100% sampled"),
    "tracing_run": Quote("RESULTS-tracing.md", r"^Run (\d{4}-\d\d-\d\d \d\d:\d\d) UTC", "{0} UTC"),
    "tracing_load": Quote("RESULTS-tracing.md", rf"1-minute load average ({NUMBER}) before", "{0}"),
    "tracing_1pct_x": Quote("RESULTS-tracing.md", rf"\| 1% sampled \| {NUMBER} \| ({NUMBER})x", "{0}x"),
    "tracing_100pct_x": Quote("RESULTS-tracing.md", rf"\| 100% sampled \| {NUMBER} \| ({NUMBER})x", "{0}x"),
    "tracing_load_end": Quote("RESULTS-tracing.md", rf"{NUMBER} before, ({NUMBER}) at the end", "{0}"),
    "tracing_cpu_section": Section("RESULTS-tracing.md", "CPU per answered call"),
    "tracing_server_recorded_pct": Quote("RESULTS-tracing.md", rf"the server recorded \*\*({NUMBER}%)\*\*"),
    "tracing_cpu_1pct_x": Quote("RESULTS-tracing.md", rf"the two processes spent \*\*({NUMBER})x\*\*",
                                "{0}x"),
    # bench/RESULTS-overload.md (python -m bench.overload)
    "overload_capacity_section": Section("RESULTS-overload.md", "Capacity and unloaded latency"),
    "overload_row_section": Section("RESULTS-overload.md", "The overload row"),
    "one_core_section": Section("RESULTS-overload.md", "What one core can give"),
    "one_document_section": Section("RESULTS-overload.md", "One document while"),
    "overload_headline": Quote("RESULTS-overload.md", r"^Headline: (.*)$"),
    "overload_capacity": Quote("RESULTS-overload.md", rf"\| bridge \| ({NUMBER}) \|", "{0} req/s"),
    "bjoern_capacity": Quote("RESULTS-overload.md", rf"\| bjoern \| ({NUMBER}) \|", "{0} req/s"),
    "overload_goodput": Quote("RESULTS-overload.md", r"goodput \*\*(\d+%)\*\* of capacity"),
    "one_doc_p99_x": Quote("RESULTS-overload.md", rf"^Median ratio: ({NUMBER})x", "{0}x"),
    "overload_p99_x": Quote("RESULTS-overload.md", rf"p99 of the 200s \*\*({NUMBER})x\*\*", "{0}x"),
    # bench/RESULTS-deploy.md (python -m bench.deploy --image)
    "deploy_date": Quote("RESULTS-deploy.md", r"^Run (\d{4}-\d\d-\d\d \d\d:\d\d):\d\d UTC", "{0} UTC"),
    "deploy_systemd_ready_s": Quote("RESULTS-deploy.md", rf"ready \(READY=1\) in ({NUMBER}) s", "{0} s"),
    "deploy_systemd_mib": Quote("RESULTS-deploy.md", rf"READY=1\) in {NUMBER} s, ({NUMBER}) MiB", "{0} MiB"),
    "deploy_systemd_stop_s": Quote("RESULTS-deploy.md", rf"2 workers\), stopped in ({NUMBER}) s", "{0} s"),
    "deploy_image_mib": Quote("RESULTS-deploy.md", rf"\*\*OCI image\*\*: ({NUMBER}) MiB", "{0} MiB"),
    "deploy_image_build_s": Quote("RESULTS-deploy.md", rf"built from nothing in ({NUMBER}) s", "{0} s"),
    "deploy_image_ready_s": Quote("RESULTS-deploy.md", rf"healthy in ({NUMBER}) s", "{0} s"),
    "deploy_image_rss_mib": Quote("RESULTS-deploy.md", rf"after `podman run`, ({NUMBER}) MiB", "{0} MiB"),
    "deploy_image_stop_s": Quote("RESULTS-deploy.md", rf"\(one process\), stopped in ({NUMBER}) s", "{0} s"),
    "deploy_debootstrap_s": Quote("RESULTS-deploy.md", rf"^\| debootstrap \| ({NUMBER}) \|", "{0} s"),
    "deploy_podman_build_s": Quote("RESULTS-deploy.md", rf"^\| build \| ({NUMBER}) \|", "{0} s"),
    # bench/RESULTS-image-cache.md (python -m bench.image_cache)
    "image_test_cold_s": Quote("RESULTS-image-cache.md", rf"empty cache\*\*: .* took ({NUMBER}) s", "{0} s"),
    "image_test_warm_s": Quote("RESULTS-image-cache.md", rf"Python code only\*\*: ({NUMBER}) s", "{0} s"),
    "image_test_same_s": Quote("RESULTS-image-cache.md", rf"Nothing changed\*\*: ({NUMBER}) s", "{0} s"),
    "image_cache_mib": Quote("RESULTS-image-cache.md", rf"Cache after the three: ({NUMBER}) MiB", "{0} MiB"),
}


def documents() -> list[Path]:
    """The Markdown files that may quote: README.md and docs/**/*.md."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def read_reports() -> dict[str, str]:
    """Every committed report, by file name."""
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(BENCH.glob("RESULTS*.md"))}


def render(text: str, reports: dict[str, str], where: str = "") -> str:
    """``text`` with every marked span filled from ``reports`` (an unknown key is an error)."""
    def fill(m: re.Match) -> str:
        key = m["key"]
        if key not in QUOTES:
            raise KeyError(f"{where}: unknown quote <!-- bench:{key} -->; known: {', '.join(QUOTES)}")
        return f"<!-- bench:{key} -->{QUOTES[key].text(reports)}<!-- /bench -->"
    return MARK.sub(fill, text)


def stale(reports: dict[str, str] | None = None) -> list[str]:
    """One line per marked span that differs from the reports: file, line, shown and reported text."""
    reports = read_reports() if reports is None else reports
    problems = []
    for path in documents():
        text = path.read_text(encoding="utf-8")
        for m in MARK.finditer(text):
            want = render(m.group(0), reports, str(path))
            if want != m.group(0):
                line = text[:m.start()].count("\n") + 1
                fresh = MARK.match(want)["text"]
                problems.append(f"{path.relative_to(ROOT)}:{line}: bench:{m['key']} says {m['text']!r}, "
                                f"the reports say {fresh!r}")
    return problems


# A speed, time, size or ratio figure: "58.3 ms", "5.38 s", "584 MiB", "3,043 req/s", "92.3x", "234%".
CLAIM = re.compile(r"(?<![\w.])\d[\d,]*(?:\.\d+)? ?(?:ms|µs|us|s|MiB|MB|GiB|GB|KiB|KB|req/s|calls/s|"
                   r"docs/s|documents/s|x|%)(?![\w/])")
SETTING = re.compile(r"<!-- setting -->.*?<!-- /setting -->|<!-- spec:([\w-]+) -->.*?<!-- /spec:\1 -->", re.S)
CODE = re.compile(r"^(```|~~~).*?^\1[^\n]*$|`[^`\n]+`|<!--(?! bench:| /bench).*?-->", re.M | re.S)


def unmarked(text: str) -> list[tuple[int, str]]:
    """``(line, figure)`` of each speed/time/size/ratio figure outside code, bench marks and setting marks."""
    def spaces(m: re.Match) -> str:
        return re.sub(r"[^\n]", " ", m.group(0))  # keeps the line numbers
    blank = CODE.sub(spaces, SETTING.sub(spaces, MARK.sub(spaces, text)))
    return [(blank[:m.start()].count("\n") + 1, m.group(0)) for m in CLAIM.finditer(blank)]


def main(argv: list[str]) -> int:
    """Rewrite the marked spans, or with ``--check`` report those that differ."""
    if "--check" in argv:
        problems = stale()
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print("run: python -m bench.quote", file=sys.stderr)
        return 1 if problems else 0
    reports = read_reports()
    for path in documents():
        text = path.read_text(encoding="utf-8")
        fresh = render(text, reports, str(path))
        if fresh != text:
            path.write_text(fresh, encoding="utf-8")
            print(f"updated {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
