"""Whole-document experts served for real: a script's ``opinion(doc)`` moved over unchanged.

A real server from a project folder (not the current directory), the Python
client and the pipe stage; no TensorFlow.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from expertd import ExpertsClient
from tests.conftest import EXPERTD, ServerProcess

MODULE = '''\
from expertd import Expert, whole_document


@whole_document
def summary(doc):
    """The logic of a stdin/stdout script, unchanged: it reads the whole document."""
    return {"title_words": len(doc.get("title", "").split()), "has_body": "body" in doc}


def reads_it_all(doc):
    """A plain function made whole-document by the experts file (reads: document)."""
    return {"keys": sorted(doc)}


class Size(Expert):
    """An Expert subclass that reads whole documents, a batch at a time."""

    field = None

    def predict(self, docs):
        return [{"fields": len(doc)} for doc in docs]


@whole_document
def built_on(doc):
    """Builds on Size's opinion (needs), and still sees the document."""
    return {"fields_and_title": doc["size"]["fields"], "title": doc.get("title")}
'''

EXPERTS = '''\
experts:
  summary: whole_doc_module:summary
  everything: {expert: whole_doc_module:reads_it_all, reads: document}
  size: whole_doc_module:Size
  built_on: {expert: whole_doc_module:built_on, needs: {size: size}}
'''


@pytest.fixture(scope="module")
def whole_server(tmp_path_factory):
    project = tmp_path_factory.mktemp("project")
    (project / "whole_doc_module.py").write_text(MODULE)
    (project / "experts.yaml").write_text(EXPERTS)
    proc = ServerProcess(project / "experts.yaml", tmp_path_factory.mktemp("log"))
    yield proc
    assert proc.stop() == 0, proc.read_log()


def test_whole_document_experts_answer_documents_without_a_text_field(whole_server):
    doc = {"id": 7, "title": "three little words", "body": {"nested": [1, 2]}}
    with ExpertsClient(whole_server.endpoint, timeout=30) as client:
        assert client.opinion("summary", doc) == {"title_words": 3, "has_body": True}
        assert client.opinion("everything", doc) == {"keys": ["body", "id", "title"]}
        assert client.opinion("size", doc) == {"fields": 3}
        assert client.opinion("built_on", doc) == {"fields_and_title": 3, "title": "three little words"}
        described = {e["name"]: e for e in client.experts()}
    assert described["summary"]["field"] is None and described["summary"]["reads"] == "document"
    assert described["everything"]["reads"] == "document"


def test_the_pipe_stage_keeps_the_document_and_adds_the_opinions(whole_server):
    lines = [{"id": 1, "title": "a b"}, {"id": 2, "title": "c", "body": "x"}]
    out = subprocess.run([EXPERTD, "pipe", "summary", "size", "--endpoint", whole_server.endpoint],
                         input="".join(json.dumps(line) + "\n" for line in lines),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    answered = [json.loads(line) for line in out.stdout.splitlines()]
    assert [a["id"] for a in answered] == [1, 2]
    assert answered[0]["opinions"] == {"summary": {"title_words": 2, "has_body": False},
                                       "size": {"fields": 2}}
    assert answered[1]["opinions"]["summary"] == {"title_words": 1, "has_body": True}


def test_a_document_that_is_not_an_object_is_refused_by_name(whole_server):
    out = subprocess.run([EXPERTD, "pipe", "summary", "--endpoint", whole_server.endpoint],
                         input="[1, 2]\n", capture_output=True, text=True, timeout=60)
    assert out.stdout == "[1, 2]\n"  # nothing lost: the line comes out unchanged
    assert "summary" in out.stderr or "JSON object" in out.stderr, out.stderr


def test_list_and_info_say_the_expert_reads_the_whole_document(whole_server):
    listed = subprocess.run([EXPERTD, "list", "--endpoint", whole_server.endpoint], capture_output=True,
                            text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert any(line.startswith("  summary") and " reads document " in line
               for line in listed.stdout.splitlines()), listed.stdout
    info = subprocess.run([EXPERTD, "info", "summary", "--endpoint", whole_server.endpoint],
                          capture_output=True, text=True, timeout=60)
    assert info.returncode == 0, info.stderr
    assert "  reads:    the whole JSON-object document" in info.stdout.splitlines()
