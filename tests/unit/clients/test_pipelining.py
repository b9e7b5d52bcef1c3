"""The pipe stage's asker, in-process: which documents a refused chunk is blamed on.

A scripted server stands in for the connection (the e2e tests run the real
one; here the server's answers are chosen to reach each branch): it refuses
any request holding a document whose text is ``"bad"``, answers the others
with one opinion per document, and can drop the connection a few times.
"""

from __future__ import annotations

from types import SimpleNamespace

import msgpack
import pytest

from expertd.clients.pipe.pipelining import NO_OPTIONS, ONLY_OPINIONS, Asker, Refused, Sent
from expertd.clients.pipe.reading import parse_line
from expertd.clients.pipe.retrying import Backoff, Stop
from expertd.clients.wire import RemoteError, ServerUnavailable


class ScriptedConnection:
    """Answers ``opinions_batch`` as the docstring above says; counts the calls."""

    def __init__(self, server: "ScriptedServer") -> None:
        self.server = server
        self.pending: dict[str, object] = {}

    def send_packed(self, method: str, packed_args: bytes) -> str:
        assert method == "opinions_batch"
        docs, names, *options = msgpack.unpackb(packed_args, raw=False)
        self.server.calls.append(([doc.get("text") for doc in docs], names, options))
        message_id = str(len(self.server.calls))
        if self.server.drops:
            self.server.drops -= 1
            raise ServerUnavailable("the server went away")
        if options and not self.server.knows_only_opinions:
            self.pending[message_id] = RemoteError("BadArguments", "unknown option only_opinions")
        elif options and "as_json" in options[0] and not self.server.knows_as_json:
            self.pending[message_id] = RemoteError(  # as main's server said before the option
                "BadArguments", "unknown option(s) 'as_json'; options are: fresh, include_needs, "
                                "only_opinions")
        elif self.server.unknown_expert and names:
            self.pending[message_id] = RemoteError("UnknownExpert", "no expert 'nope'")
        elif any(doc.get("text") == "bad" for doc in docs):
            self.pending[message_id] = RemoteError("InvalidDocument", "a bad document")
        else:
            self.pending[message_id] = [{"opinions": {name: {"seen": doc["text"]} for name in names}}
                                        for doc in docs]
        return message_id

    def receive(self, message_id: str):
        answer = self.pending.pop(message_id)
        if isinstance(answer, Exception):
            raise answer
        return answer


class ScriptedServer:
    """What the scripted connections share: the calls made, and how to misbehave."""

    def __init__(self, drops: int = 0, unknown_expert: bool = False, knows_only_opinions: bool = True,
                 knows_as_json: bool = True):
        self.calls: list = []
        self.drops = drops
        self.unknown_expert = unknown_expert
        self.knows_only_opinions = knows_only_opinions
        self.knows_as_json = knows_as_json
        self.dropped: list = []

    # the Connector interface the asker uses
    def get(self, backoff=None):
        return ScriptedConnection(self)

    def spare(self, busy):
        return ScriptedConnection(self)

    def drop(self, connection):
        self.dropped.append(connection)

    def alive(self, connection):
        return True

    def backoff(self, timeout):
        return Backoff(timeout)


def asker_for(server: ScriptedServer, names=("sentiment",), timeout: float = 2.0) -> Asker:
    options = SimpleNamespace(names=list(names), endpoint="tcp://127.0.0.1:1", timeout=timeout)
    return Asker(SimpleNamespace(connector=server, options=options))


def items(*texts: str):
    return [parse_line(n, ('{"text": "%s"}\n' % text).encode()) for n, text in enumerate(texts, 1)]


def seen(answers) -> list:
    return ["refused" if isinstance(a, Refused) else a["opinions"]["sentiment"]["seen"] for a in answers]


def test_a_chunk_the_server_accepts_is_answered_in_one_call():
    server = ScriptedServer()
    answers = asker_for(server).ask(items("a", "b", "c"))
    assert seen(answers) == ["a", "b", "c"]
    assert len(server.calls) == 1


@pytest.mark.parametrize("texts", [
    ("bad",), ("a", "bad"), ("bad", "a", "b"), ("a", "b", "c", "bad", "d", "e", "bad"),
    tuple("abcdefg") + ("bad",) * 3 + tuple("hij"),
])
def test_a_refused_chunk_is_split_until_only_the_refused_documents_remain(texts):
    server = ScriptedServer()
    asker = asker_for(server)
    docs = items(*texts)
    with pytest.raises(RemoteError):
        asker.ask(docs)
    answers = asker.isolate(docs, RemoteError("InvalidDocument", "a bad document"))
    assert seen(answers) == ["refused" if t == "bad" else t for t in texts]
    # every refusal keeps its own reason
    assert all(a.exc.name == "InvalidDocument" for a in answers if isinstance(a, Refused))


def test_a_request_the_server_refuses_even_empty_stops_the_stream():
    server = ScriptedServer(unknown_expert=True)
    asker = asker_for(server, names=("nope",))
    docs = items("a", "b")
    with pytest.raises(Stop) as stopped:
        asker.ask_or_isolate(docs)
    assert "UnknownExpert" in str(stopped.value)
    assert stopped.value.code == 2  # the catalogue's exit status for a wrong request
    assert server.calls[-1][0] == []  # it was the empty probe that told


def test_a_lost_connection_is_asked_again_on_a_new_one():
    server = ScriptedServer(drops=1)
    answers = asker_for(server).ask(items("a", "b"))
    assert seen(answers) == ["a", "b"]
    assert len(server.dropped) == 1 and len(server.calls) == 2


def test_a_request_that_loses_every_fresh_connection_is_blamed_and_split():
    server = ScriptedServer(drops=2)
    with pytest.raises(RemoteError) as refused:
        asker_for(server).ask(items("a", "b"))
    assert refused.value.name == "ServerUnavailable" and "2 times" in refused.value.msg


def test_an_older_server_without_only_opinions_is_asked_again_without_it():
    server = ScriptedServer(knows_only_opinions=False)
    asker = asker_for(server)
    answers = asker.ask(items("a", "b"))
    assert seen(answers) == ["a", "b"]
    assert asker.asks == NO_OPTIONS
    assert [len(options) for _, _, options in server.calls] == [1, 0]


def test_a_server_older_than_as_json_is_asked_again_with_only_opinions():
    server = ScriptedServer(knows_as_json=False)
    asker = asker_for(server)
    answers = asker.ask(items("a", "b"))
    assert seen(answers) == ["a", "b"]
    assert asker.asks == ONLY_OPINIONS
    assert [options for _, _, options in server.calls] == [
        [{"only_opinions": True, "as_json": True}], [{"only_opinions": True}]]
    # chunks in flight with as_json when the refusal comes are each asked again, once
    server, asker = ScriptedServer(knows_as_json=False), asker_for(ScriptedServer())
    asker.connector = server
    chunks = [Sent(items("c")), Sent(items("d", "e"))]
    for chunk in chunks:
        asker.send(chunk, chunks)
    assert [seen(asker.answers(chunk)) for chunk in chunks] == [["c"], ["d", "e"]]
    assert [len(options[0]) for _, _, options in server.calls] == [2, 2, 1, 1]


def test_chunks_in_flight_are_answered_each_with_its_own_documents():
    server = ScriptedServer()
    asker = asker_for(server)
    chunks = [Sent(items(*texts)) for texts in (("a", "b"), ("c",), ("d", "bad", "e"))]
    for chunk in chunks:
        asker.send(chunk, chunks)
    assert [seen(asker.answers(chunk)) for chunk in chunks] == [
        ["a", "b"], ["c"], ["d", "refused", "e"]]


def test_an_answer_of_the_wrong_length_is_an_internal_error_not_a_misaligned_write():
    with pytest.raises(RemoteError) as wrong:
        Asker.checked([{}], items("a", "b"))
    assert wrong.value.name == "InternalError"


def test_a_chunk_ends_at_the_batch_size_or_once_it_holds_max_chunk_bytes(monkeypatch):
    import io
    import os

    from expertd.clients.pipe import pipelining
    from expertd.clients.pipe.output import Output, Progress
    from expertd.clients.pipe.pipelining import Pipeline
    from expertd.clients.pipe.reading import LineReader

    lines = [b'{"text": "%s"}\n' % (b"x" * (40 if i % 3 else 5)) for i in range(20)] + [b"not json\n"]
    sizes = [len(msgpack.packb(json_doc)) for json_doc in
             ({"text": "x" * (40 if i % 3 else 5)} for i in range(20))]
    monkeypatch.setattr(pipelining, "MAX_CHUNK_BYTES", 100)
    read, write = os.pipe()
    os.write(write, b"".join(lines))
    os.close(write)
    try:
        stage = SimpleNamespace(options=SimpleNamespace(names=("sentiment",), batch_size=4),
                                connector=None, reader=LineReader(read), output=Output(io.BytesIO()),
                                progress=Progress(io.StringIO(), False), signum=None)
        pipeline = Pipeline(stage)
        chunks, ended = [], False
        while not ended:
            chunk, ended = pipeline.read_chunk()
            chunks.append(chunk)
    finally:
        os.close(read)
    items = [item for chunk in chunks for item in chunk]
    assert [item.raw for item in items] == lines  # every line once, in order
    assert [item.number for item in items] == list(range(1, 22))
    assert list(stage.output.pending) == items  # all on the ledger
    # each chunk: at most 4 lines, and it ends at the first line that brings it to 100 bytes
    expected, size, count = [], 0, 0
    for packed in sizes + [0]:
        size, count = size + packed, count + 1
        if count == 4 or size >= 100:
            expected.append(count)
            size, count = 0, 0
    if count:
        expected.append(count)
    assert [len(chunk) for chunk in chunks if chunk] == expected
