"""Write the spec tables of docs/protocol.md and docs/errors.md from expertd/protocol.json.

``--check`` only compares.

Each table sits between ``<!-- spec:NAME -->`` and ``<!-- /spec:NAME -->``;
the prose around them is written by hand. ``tests/unit/expertd/test_spec.py``
fails when a page's tables are not what this script would write.

    python docs/protocol_tables.py          # rewrite the tables
    python docs/protocol_tables.py --check  # exit 1 if they are out of date
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from expertd import spec

DOC = Path(__file__).resolve().parent / "protocol.md"
ERRORS_PAGE = DOC.parent / "errors.md"


def _table(header: list[str], rows: list[list]) -> str:
    def cell(value) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def defaults() -> str:
    """The defaults table."""
    d = spec.RAW["defaults"]
    return _table(["setting", "default", "where"], [
        ["RPC endpoint", f"`{d['endpoint']}`", "`--endpoint`/`--bind`, `EXPERTD_ENDPOINT` (every command, "
                                               "the Python client, the bridge)"],
        ["RPC host, port", f"`{d['host']}`, `{d['port']}`", "the port is the one suggested when an endpoint "
                                                            "has none"],
        ["bridge HTTP address", f"`{d['bridge_host']}:{d['bridge_port']}`", "the bridge's `HOST`, `PORT`"],
        ["heartbeat", f"{d['heartbeat_s']} s", "`expertd serve --heartbeat`, the bridge's `RPC_HEARTBEAT`"],
    ])


def headers() -> str:
    """The header keys table."""
    return _table(["key", "type", "sent by", "meaning"],
                  [[f"`{h['key']}`", h["type"], h["sent_by"], h["doc"]] for h in spec.HEADERS.values()])


def methods() -> str:
    """The RPC methods table."""
    return _table(["method", "arguments", "changes state", "result"], [
        [f"`{m.name}`", ", ".join(f"`{a}`" for a in m.args) or "none", _yes(m.stateful), m.result]
        for m in spec.METHODS.values()])


def options() -> str:
    """The keys of the ``options`` argument."""
    return _table(["key", "type", "default", "meaning"], [
        [f"`{key}`", o["type"], f"`{str(o['default']).lower()}`", o["doc"]]
        for key, o in spec.RAW["options"].items() if not key.startswith("_")])


def health() -> str:
    """The health() fields table."""
    return _table(["field", "type", "meaning"],
                  [[f"`{name}`", f["type"], f["doc"]] for name, f in spec.HEALTH_FIELDS.items()])


def errors() -> str:
    """The error catalogue table."""
    return _table(["name", "HTTP status", "retryable", "per document", "pipe exit", "raised by", "meaning",
                   "what to do"], [
        [f"`{e.name}`", e.status, _yes(e.retryable), _yes(e.per_document), e.exit, e.side, e.summary, e.hint]
        for e in spec.ERRORS.values()])


def retry() -> str:
    """The retry profiles table."""
    rows = []
    for name, p in spec.RETRY_PROFILES.items():
        limits = ", ".join(f"{k} = {v}" for k, v in p.items()
                           if k not in ("base_s", "factor", "cap_s", "jitter", "doc"))
        rows.append([name, p["base_s"], p["factor"], p["cap_s"], f"{p['jitter'][0]} to {p['jitter'][1]}",
                     limits or "none", p["doc"]])
    return _table(["profile", "base (s)", "factor", "cap (s)", "jitter", "limits", "who"], rows)


def refused() -> str:
    """The errors a stateful call may be asked again after."""
    return ", ".join(f"`{name}`" for name in spec.RAW["retry"]["refused_before_running"])


TABLES = {"refused": refused, "defaults": defaults, "headers": headers, "methods": methods,
          "options": options, "health": health,
          "errors": errors, "retry": retry}


# Each page and the tables it holds (all of them, in the protocol's page).
PAGES = {DOC: list(TABLES), ERRORS_PAGE: ["errors"]}


def render(text: str, names: list[str] | None = None, page: Path = DOC) -> str:
    """``text`` with the spec tables ``names`` (default: every one) written anew."""
    for name in TABLES if names is None else names:
        make = TABLES[name]
        pattern = re.compile(rf"(<!-- spec:{name} -->\n).*?(\n<!-- /spec:{name} -->)", re.S)
        if not pattern.search(text):
            raise ValueError(f"{page} has no <!-- spec:{name} --> block")
        text = pattern.sub(lambda m, make=make: m.group(1) + make() + m.group(2), text)
    return text


def main(argv: list[str]) -> int:
    """Rewrite the tables, or with ``--check`` say whether they are up to date."""
    stale = 0
    for page, names in PAGES.items():
        text = page.read_text(encoding="utf-8")
        fresh = render(text, names, page)
        if "--check" in argv:
            if fresh != text:
                print(f"{page}: its tables differ from expertd/protocol.json; run python {__file__}",
                      file=sys.stderr)
                stale = 1
        else:
            page.write_text(fresh, encoding="utf-8")
    return stale


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
