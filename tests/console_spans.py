"""Spans as OpenTelemetry's console exporter prints them (JSON objects, one after another)."""

from __future__ import annotations

import json


def console_spans(stdout: str) -> list[dict]:
    """Every span the console exporter wrote to ``stdout``, in order."""
    decoder, text, spans = json.JSONDecoder(), stdout.strip(), []
    while text:
        span, end = decoder.raw_decode(text)
        spans.append(span)
        text = text[end:].strip()
    return spans
