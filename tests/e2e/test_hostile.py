"""No peer can stop the server answering others; one bad input fails only itself (issue 8).

Every case runs against a real ``expertd serve`` process: a raw ZeroMQ DEALER
(pyzmq) plays the hostile peer, the stock ``zerorpc.Client`` plays everyone
else, and after each hostile input the server must answer a normal call
correctly, with its resident memory back within 10% of where it was.
"""

from __future__ import annotations

import socket
import struct
import time
from pathlib import Path

import gevent
import msgpack
import pytest
import zerorpc
import zmq

from tests.conftest import ServerProcess
from tests.corpus.events import EVENTS, ID

HOSTILE_CONFIG = Path(__file__).resolve().parents[1] / "hostile_experts.yaml"


def rss_kib(pid: int) -> int:
    """Resident memory of a process, KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """A server running the misbehaving test experts."""
    proc = ServerProcess(HOSTILE_CONFIG, tmp_path_factory.mktemp("hostile"))
    proc.pid = proc.process.pid
    yield proc
    assert proc.stop() == 0, proc.read_log()


@pytest.fixture
def stock(hostile):
    c = zerorpc.Client(hostile.endpoint, timeout=20)
    yield c
    c.close()


@pytest.fixture
def peer(hostile):
    """A raw DEALER connected to the server, for sending whatever bytes we like."""
    context = zmq.Context()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(hostile.endpoint)
    yield sock
    sock.close()
    context.term()


def still_answers(stock):
    """A normal call right after a hostile input gets the right answer."""
    assert stock.vader({"text": "I love it"})["label"] == "positive"
    assert stock.poison({"text": "abc"}) == {"length": 3}


def reply_to(sock, timeout_ms=3000):
    """The decoded zerorpc reply the raw peer receives, or None."""
    if not sock.poll(timeout_ms):
        return None
    frames = sock.recv_multipart()
    return msgpack.unpackb(frames[-1], raw=False, strict_map_key=False)


# -- events ---------------------------------------------------------------------

@pytest.mark.parametrize("case", sorted(EVENTS))
def test_hostile_event_is_answered_or_dropped_and_the_server_keeps_serving(
        case, hostile, stock, peer):
    frames, expected = EVENTS[case]
    before = rss_kib(hostile.pid)
    peer.send_multipart(frames)
    reply = reply_to(peer, 3000 if expected else 500)
    if expected is None:
        assert reply is None, reply
    else:
        assert reply is not None, f"no reply to {case}"
        header, name, args = reply
        assert header.get("response_to") == ID
        if expected == "OK":
            assert name == "OK", args
        else:
            assert name == "ERR" and args[0] == expected, args
            assert "Traceback" not in str(args) and "File \"" not in str(args)
    still_answers(stock)
    assert rss_kib(hostile.pid) < before * 1.1 + 2048


def test_a_flood_for_a_busy_call_costs_only_that_call(hostile, stock, peer):
    # A slow call (1 s), then 150 events addressed to its channel: zerorpc's own
    # dispatcher blocked for good on this.
    peer.send_multipart([b"", msgpack.packb([{"message_id": ID, "v": 3}, "counting",
                                             [{"text": "slow"}]])])
    time.sleep(0.2)
    for i in range(150):
        peer.send_multipart([b"", msgpack.packb([{"message_id": f"f{i}", "v": 3, "response_to": ID},
                                                 "_zpc_more", [1]])])
    began = time.monotonic()
    still_answers(stock)
    assert time.monotonic() - began < 5.0  # the dispatcher did not wait for the slow call
    log = hostile.read_log()
    assert log.count("queue is full") <= 2  # one line (plus a count), not 150


def test_a_peer_announcing_a_4_gib_frame_is_cut_off(hostile, stock):
    host, port = hostile.endpoint[len("tcp://"):].rsplit(":", 1)
    before = rss_kib(hostile.pid)
    with socket.create_connection((host, int(port))) as raw:
        greeting = b"\xff" + b"\x00" * 8 + b"\x7f\x03\x00" + b"NULL".ljust(20, b"\x00") + b"\x00" * 32
        raw.sendall(greeting)
        prop = b"Socket-Type"
        ready = b"\x05READY" + bytes([len(prop)]) + prop + struct.pack(">I", 6) + b"DEALER"
        raw.sendall(bytes([4, len(ready)]) + ready)
        raw.sendall(struct.pack(">BQ", 2, 4 << 30))  # a 4 GiB frame
        sent = 0
        try:
            block = b"\x00" * (1 << 20)
            for _ in range(64):
                raw.sendall(block)
                sent += len(block)
        except OSError:
            pass  # the server hung up: what we want
    still_answers(stock)
    assert sent < 64 << 20 or rss_kib(hostile.pid) < before + 16 * 1024
    assert rss_kib(hostile.pid) < before * 1.1 + 4096


def test_idle_connections_that_never_handshake_are_closed(hostile, stock):
    host, port = hostile.endpoint[len("tcp://"):].rsplit(":", 1)
    idle = [socket.create_connection((host, int(port))) for _ in range(20)]
    try:
        still_answers(stock)
        idle[0].settimeout(6.0)  # handshake_timeout_ms is 2000 in the test config
        assert idle[0].recv(4096) is not None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if idle[0].recv(4096) == b"":
                    break
            except (ConnectionResetError, socket.timeout):
                break
        else:
            pytest.fail("an idle connection was never closed")
    finally:
        for s in idle:
            s.close()


def test_a_thousand_idle_connections_do_not_lock_others_out(tmp_path):
    # Under the common soft limit of 1,024 open files; the server raises it.
    import subprocess

    from tests.conftest import EXPERTD, ROOT, free_port, wait_ready

    endpoint = f"tcp://127.0.0.1:{free_port()}"
    log = open(tmp_path / "server.log", "wb")
    process = subprocess.Popen(["prlimit", "--nofile=1024:8192", EXPERTD, "serve", "--config",
                                str(HOSTILE_CONFIG), "--bind", endpoint],
                               stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    conns = []
    try:
        wait_ready(endpoint, process)
        host, port = endpoint[len("tcp://"):].rsplit(":", 1)
        for _ in range(1100):
            conns.append(socket.create_connection((host, int(port))))
        c = zerorpc.Client(endpoint, timeout=10)
        try:
            assert c.vader({"text": "I love it"})["label"] == "positive"
        finally:
            c.close()
    finally:
        for s in conns:
            s.close()
        process.terminate()
        process.wait(30)
        log.close()


# -- calls ------------------------------------------------------------------------

def test_a_million_empty_documents_are_refused_at_once(hostile, stock):
    before = rss_kib(hostile.pid)
    with pytest.raises(zerorpc.RemoteError) as info:
        stock.opinions_batch([{}] * 1_000_000, ["vader"])
    assert info.value.name == "TooManyDocuments" and "max_batch_docs" in info.value.msg
    still_answers(stock)
    gevent.sleep(0.5)
    assert rss_kib(hostile.pid) < before * 1.1 + 4096


def test_newlines_in_names_do_not_forge_log_lines(hostile, stock):
    forged = "nope\n2026-01-01 00:00:00,000 INFO expertd.calls: call FORGED"
    with pytest.raises(zerorpc.RemoteError) as info:
        stock.opinion(forged, {"text": "x"})
    assert info.value.name == "UnknownExpert"
    with pytest.raises(zerorpc.RemoteError):
        stock.opinions({"text": "x"}, [forged])
    with pytest.raises(zerorpc.RemoteError):
        stock(forged, {"text": "x"})
    assert not any(line.startswith("2026-01-01") for line in hostile.read_log().splitlines())


def test_a_rejected_message_is_logged_small(hostile, peer, stock):
    size = len(hostile.read_log())
    peer.send_multipart([b"", msgpack.packb([{"message_id": [1] * 100_000}, "x", []])])
    still_answers(stock)
    assert len(hostile.read_log()) - size < 4096


def test_stock_client_errors_read_name_colon_message(stock):
    with pytest.raises(zerorpc.RemoteError) as info:
        stock.opinion("nosuch", {"text": "x"})
    assert str(info.value).startswith("UnknownExpert: unknown expert 'nosuch'")


def test_a_server_bug_sends_an_id_not_a_traceback(hostile, stock):
    with pytest.raises(zerorpc.RemoteError) as info:
        stock.experts()  # BrokenMetricsExpert.metrics() raises, with a path in its message
    assert info.value.name == "InternalError" and "error id" in info.value.msg
    assert "Traceback" not in str(info.value) and "/" not in info.value.msg
    error_id = info.value.msg.split("error id ")[1].split(",")[0]
    assert f"internal error {error_id}: RuntimeError" in hostile.read_log()


def test_introspecting_an_unknown_method_is_a_clear_error(stock):
    with pytest.raises(zerorpc.RemoteError) as info:
        stock._zerorpc_args("x" * 10_000)
    assert info.value.name == "UnknownMethod" and len(info.value.msg) < 300


# -- failure isolation --------------------------------------------------------------

def test_one_poison_document_fails_only_itself(stock):
    docs = [{"text": f"doc {i}"} for i in range(256)]
    docs[100] = {"text": "this one is poison"}
    out = stock.opinions_batch(docs, ["poison"])
    failed = [i for i, d in enumerate(out) if "errors" in d]
    assert failed == [100]
    assert out[100]["errors"]["poison"]["name"] == "ExpertFailed"
    assert all(out[i]["opinions"]["poison"] == {"length": len(docs[i]["text"])}
               for i in range(256) if i != 100)


def test_a_poison_request_does_not_fail_concurrent_requests(hostile):
    clients = [zerorpc.Client(hostile.endpoint, timeout=20) for _ in range(8)]
    try:
        texts = ["poison" if i == 3 else f"fine {i}" for i in range(8)]
        jobs = [gevent.spawn(c.opinions, {"text": t}, ["poison"]) for c, t in zip(clients, texts)]
        gevent.joinall(jobs, raise_error=True)
        errors = [i for i, j in enumerate(jobs) if "errors" in j.value]
        assert errors == [3]
    finally:
        for c in clients:
            c.close()


def test_batch_names_the_failing_document(stock):
    with pytest.raises(zerorpc.RemoteError) as info:
        stock.batch("poison", [{"text": "a"}, {"text": "b"}, {"text": "poison"}])
    assert info.value.name == "ExpertFailed" and info.value.msg.startswith("docs[2]:")


@pytest.mark.parametrize("text, shown", [
    ("No such file or directory: '/srv/app/models/vocab.txt'", "No such file or directory: '.../vocab.txt'"),
    ("cannot open ~/.keras/models/m.h5 here", "cannot open .../m.h5 here"),
    ("OOM in C:\\Users\\ann\\m.h5", "OOM in .../m.h5"),
    ("file:///etc/secret", ".../secret"),
    ("ratio 1/2 of a/b", "ratio 1/2 of a/b"),  # not absolute paths: left alone
    # quoted paths are taken whole, spaces and all (OSError quotes the path it names)
    ("No such file or directory: '/srv/my app/models/vocab.txt'",
     "No such file or directory: '.../vocab.txt'"),
    ('Unable to open file: "/home/Ann Lee/keras models/m.h5" (truncated)',
     'Unable to open file: ".../m.h5" (truncated)'),
    ("Permission denied: 'C:\\Program Files\\expertd\\m.h5'", "Permission denied: '.../m.h5'"),
    ('No such file or directory: "/home/O\'Brien/my models/m.h5"',  # repr's double quotes
     'No such file or directory: ".../m.h5"'),
    ("expected 'a/b c' got '/'", "expected 'a/b c' got '/'"),  # not absolute, or nothing but the root
])
def test_without_paths_keeps_only_the_file_name(text, shown):
    from expertd.rpc_server.logsafe import without_paths

    assert without_paths(text) == shown


def test_an_expert_failure_names_no_server_path_to_the_caller(hostile, stock):
    from tests.hostile import MISSING_FILE

    out = stock.opinions({"text": "a missing file"}, ["poison"])
    message = out["errors"]["poison"]["message"]
    assert out["errors"]["poison"]["name"] == "ExpertFailed"
    assert "FileNotFoundError" in message and "vocab.txt" in message
    assert "expertd-secret-dir" not in message, message
    assert MISSING_FILE in hostile.read_log()  # the operator still sees where


@pytest.mark.parametrize("trigger", ["float", "none", "set", "list", "nan", "infinity", "bigint",
                                     "bytes-key", "object", "schema", "out-of-range",
                                     "nested-out-of-range"])
def test_an_output_that_is_not_an_opinion_fails_only_that_expert_and_document(
        hostile, stock, trigger):
    out = stock.opinions({"text": trigger}, ["badoutput", "vader"])
    assert out["errors"]["badoutput"]["name"] == "ExpertFailed"
    assert "badoutput" in out["errors"]["badoutput"]["message"]
    assert "vader" in out["opinions"]
    batch = stock.opinions_batch([{"text": "fine"}, {"text": trigger}], ["badoutput"])
    assert batch[0]["opinions"]["badoutput"] == {"score": 1} and "errors" in batch[1]
    lines = [line for line in hostile.read_log().splitlines() if "call opinions " in line]
    assert "errors=ExpertFailed:1" in lines[-1]


def test_an_output_outside_its_documented_range_is_refused_naming_the_value(stock):
    out = stock.opinions({"text": "out-of-range"}, ["badoutput"])
    assert out["errors"]["badoutput"]["name"] == "ExpertFailed"
    assert "score: 1e+308 is greater than the maximum of 10" in out["errors"]["badoutput"]["message"]
    nested = stock.opinions({"text": "nested-out-of-range"}, ["badoutput"])
    assert "parts/a: -2 is less than the minimum of 0" in nested["errors"]["badoutput"]["message"]
