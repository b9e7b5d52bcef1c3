"""The lean ZMTP client of the pipe stage, against a real zerorpc server."""

from __future__ import annotations

import threading
import time

import pytest

from expertd.clients.wire import CallTimeout, Connection, RemoteError, ServerUnavailable
from tests.conftest import ServerProcess, free_port


@pytest.fixture(scope="module")
def beating_server(tmp_path_factory):
    """A server with a 1 s heartbeat and two 4 s experts (so two calls run at once)."""
    tmp = tmp_path_factory.mktemp("beat")
    config = tmp / "experts.yaml"
    config.write_text("experts:\n"
                      "  slow_a: {expert: expertd.experts.examples:SlowExpert, options: {seconds: 4}}\n"
                      "  slow_b: {expert: expertd.experts.examples:SlowExpert, options: {seconds: 4}}\n"
                      "  shouting: expertd.experts.examples:shouting\n")
    proc = ServerProcess(config, tmp, "--heartbeat", "1")
    yield proc
    assert proc.stop() == 0, proc.read_log()


def test_heartbeats_keep_a_long_call_alive_and_their_absence_does_not(beating_server):
    results = {}

    def call(name, heartbeat):
        try:
            with Connection(beating_server.endpoint, timeout=8, heartbeat=heartbeat) as c:
                results[heartbeat] = c.call(name, {"text": "x"})
        except Exception as exc:  # noqa: BLE001 - recorded for the assertion
            results[heartbeat] = exc

    threads = [threading.Thread(target=call, args=("slow_a", 0.5)),
               threading.Thread(target=call, args=("slow_b", 1000))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results[0.5] == {"slept": 4}
    # Without heartbeats the server gives up on the caller after two missed beats.
    assert not isinstance(results[1000], dict), results[1000]


def test_pipelined_calls_and_remote_errors(beating_server):
    with Connection(beating_server.endpoint, timeout=15) as c:
        ids = [c.send("shouting", {"text": t}) for t in ("AB", "ab", "Ab")]
        assert [c.receive(i)["ratio"] for i in reversed(ids)] == [0.5, 0.0, 1.0]
        with pytest.raises(RemoteError) as info:
            c.call("opinion", "nope", {"text": "x"})
        assert info.value.name == "UnknownExpert"
        big = "Ä" * 300_000  # frames over 255 bytes use the long size form
        assert c.call("shouting", {"text": big}) == {"ratio": 1.0}


def test_a_call_given_up_on_is_forgotten_and_the_connection_goes_on(beating_server):
    with Connection(beating_server.endpoint, timeout=15, heartbeat=0.5) as c:
        slow = c.send("slow_a", {"text": "x"})
        with pytest.raises(CallTimeout):
            c.receive(slow, timeout=0.3)
        assert c.call("shouting", {"text": "AB"}) == {"ratio": 1.0}  # while the slow one runs
        # Waiting on another 4 s call: heartbeats go only for it, and the slow call's
        # reply (had it still been heartbeaten) would come meanwhile; none is kept.
        assert c.call("slow_b", {"text": "x"}) == {"slept": 4}
        time.sleep(0.5)
        assert c.collect() == set()
        assert c.call("shouting", {"text": "ab"}) == {"ratio": 0.0}


def test_nothing_listening():
    with pytest.raises(ServerUnavailable):
        Connection(f"tcp://127.0.0.1:{free_port()}", timeout=2)


def test_bad_endpoint():
    with pytest.raises(ValueError):
        Connection("udp://127.0.0.1:1", timeout=1)


# -- conformance: frames, fragments, and real ZeroMQ peers ----------------------

def test_frames_long_and_short_are_zmtp_framed():
    from expertd.clients.wire import FLAG_LONG, FLAG_MORE, _frame

    assert _frame(b"x" * 255) == bytes([0, 255]) + b"x" * 255
    long = _frame(b"y" * 256, FLAG_MORE)
    assert long[0] == FLAG_MORE | FLAG_LONG and long[1:9] == (256).to_bytes(8, "big")
    assert long[9:] == b"y" * 256


@pytest.fixture(scope="module")
def echo_server(tmp_path_factory):
    """A stock zerorpc server (another process) that echoes and records request headers."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    endpoint = f"tcp://127.0.0.1:{free_port()}"
    proc = subprocess.Popen([sys.executable, "-m", "tests.pipe_peers", "echo", endpoint],
                            cwd=ROOT, stdout=subprocess.PIPE)
    assert proc.stdout.readline() == b"ready\n"
    yield endpoint
    proc.kill()
    proc.wait()


def test_talks_to_a_stock_zerorpc_server_with_the_timeout_header(echo_server):
    from expertd.spec import TIMEOUT_HEADER

    with Connection(echo_server, timeout=10) as c:
        value = {"text": "é" * 5000, "n": [1, 2.5, None, True], "b": "x" * 300}
        assert c.call("echo", value) == value
        assert c.call("echo", "short", timeout=2.5) == "short"
        seen = c.call("headers")
    assert [h[TIMEOUT_HEADER] for h in seen[-2:]] == [10000, 2500]
    assert all(h["v"] == 3 and len(h["message_id"]) == 32 for h in seen)


def test_collect_and_fileno_serve_several_connections_from_one_selector(echo_server):
    import selectors

    conns = [Connection(echo_server, timeout=10) for _ in range(3)]
    try:
        assert conns[0].collect() == set()  # nothing sent: returns after a millisecond
        sent = {c: {c.send("echo", [n, k]) for k in range(2)} for n, c in enumerate(conns)}
        selector = selectors.DefaultSelector()
        for c in conns:
            selector.register(c, selectors.EVENT_READ)
        answers = {}
        deadline = time.monotonic() + 30
        while any(sent.values()):
            assert time.monotonic() < deadline, f"replies still missing: {sent}"
            for key, _ in selector.select(timeout=5):
                conn = key.fileobj
                ready = conn.collect()
                assert ready <= sent[conn] | set(answers)
                for message_id in ready & sent[conn]:
                    sent[conn].discard(message_id)
                    answers[message_id] = conn.receive(message_id, timeout=0)
        selector.close()
        assert sorted(answers.values()) == [[n, k] for n in range(3) for k in range(2)]
    finally:
        for c in conns:
            c.close()


class ByteRelay:
    """A TCP relay that forwards one byte per send, so every read of the client is fragmented."""

    def __init__(self, upstream: str) -> None:
        """Listen on a free port; relay each connection to ``upstream`` (tcp://host:port)."""
        import socket

        host, port = upstream[len("tcp://"):].rsplit(":", 1)
        self.upstream = (host, int(port))
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(4)
        self.endpoint = f"tcp://127.0.0.1:{self.listener.getsockname()[1]}"
        self.sends = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket

        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source, sink) -> None:
        import socket
        import time

        sink.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                return
            if not data:
                sink.close()
                return
            for i in range(len(data)):
                sink.sendall(data[i:i + 1])
                self.sends += 1
                time.sleep(0.0005)

    def close(self) -> None:
        """Stop accepting."""
        self.listener.close()


def test_fragmented_reads_one_byte_at_a_time(echo_server):
    relay = ByteRelay(echo_server)
    try:
        with Connection(relay.endpoint, timeout=60) as c:
            ids = [c.send("echo", n) for n in range(3)]
            assert [c.receive(i) for i in reversed(ids)] == [2, 1, 0]
            assert c.call("echo", "z" * 400) == "z" * 400  # a long frame, byte by byte
    finally:
        relay.close()
    assert relay.sends > 1000


def test_a_pyzmq_router_peer():
    """A pyzmq ROUTER: it receives [identity, "", event]; replies may come out of order."""
    import msgpack
    import zmq

    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    got = {}

    def serve():
        requests = []
        for _ in range(2):
            identity, empty, payload = router.recv_multipart()
            assert empty == b""
            header, name, args = msgpack.unpackb(payload, raw=False)
            requests.append((identity, header, name, args))
        got["requests"] = requests
        for identity, header, _name, args in reversed(requests):
            reply = [{"message_id": "r" + header["message_id"][:8], "v": 3,
                      "response_to": header["message_id"]}, "OK", [args[0] * 200]]
            router.send_multipart([identity, b"", msgpack.packb(reply, use_bin_type=True)])
        identity, empty, payload = router.recv_multipart()
        header, name, args = msgpack.unpackb(payload, raw=False)
        error = [{"message_id": "e1", "v": 3, "response_to": header["message_id"]}, "ERR",
                 ["Overloaded", "queue full", ""]]
        router.send_multipart([identity, b"", msgpack.packb(error, use_bin_type=True)])

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with Connection(f"tcp://127.0.0.1:{port}", timeout=10) as c:
            first, second = c.send("echo", "ab"), c.send("echo", "cd", timeout=3)
            assert c.receive(second) == "cd" * 200 and c.receive(first) == "ab" * 200
            with pytest.raises(RemoteError) as info:
                c.call("echo", "x")
            assert (info.value.name, info.value.msg) == ("Overloaded", "queue full")
    finally:
        thread.join(10)
        router.close(linger=0)
        context.term()
    (_, h1, n1, a1), (_, h2, n2, a2) = got["requests"]
    assert (n1, a1, n2, a2) == ("echo", ["ab"], "echo", ["cd"])
    assert h1["expertd_timeout_ms"] == 10000 and h2["expertd_timeout_ms"] == 3000
