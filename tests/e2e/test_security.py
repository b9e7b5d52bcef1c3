"""CurveZMQ on the RPC port, with real processes: keys from `expertd keygen`, a real
`expertd serve` that encrypts and checks client keys, and every way in.

The experts file is tests/odd_experts.yaml (no TensorFlow): `shouting` answers
the share of upper-case letters, e.g. {"ratio": 0.5} for "HEY you".
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import BIN, EXPERTD, ODD_CONFIG, ROOT, ServerProcess, free_port

SECRET_TEXT = "the tangerine plan stays between us"


def keygen(directory: Path, *clients: str) -> None:
    """Run the real `expertd keygen`."""
    args = [EXPERTD, "keygen", "--dir", str(directory)]
    for name in clients:
        args += ["--client", name]
    subprocess.run(args, check=True, capture_output=True, cwd=ROOT)


def key_env(keys: Path, client: str | None, server_key: Path | None = None) -> dict:
    """The environment a keyed client runs with."""
    env = {"EXPERTD_SERVER_KEY": str(server_key or keys / "server.key")}
    if client:
        env["EXPERTD_CLIENT_KEY"] = str(keys / "clients" / f"{client}.key_secret")
    return env


def curve_connection(endpoint: str, env: dict, timeout: float = 3.0):
    """A ``CurveConnection`` with the keys ``env`` names."""
    from expertd.clients.curve import ClientKeys, CurveConnection

    return CurveConnection(endpoint, ClientKeys.from_env(env), timeout=timeout)


class CurveServer:
    """A real `expertd serve` with CURVE; ready when a keyed client gets `health()`."""

    def __init__(self, tmp: Path, keys: Path, *extra: str, client: str = "alice") -> None:
        """Start it on a free port with the server key and ``keys/authorized``."""
        self.endpoint = f"tcp://127.0.0.1:{free_port()}"
        self.log_path = tmp / f"curve-{self.endpoint.rsplit(':', 1)[1]}.log"
        self.log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [EXPERTD, "serve", "--config", str(ODD_CONFIG), "--bind", self.endpoint,
             "--curve-secret-key", str(keys / "server.key_secret"), *extra],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT)
        from expertd.clients.wire import ServerUnavailable

        deadline = time.monotonic() + 120
        while True:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"server did not start:\n{self.read_log()}")
            try:
                with curve_connection(self.endpoint, key_env(keys, client), 2.0) as conn:
                    conn.call("health")
                    return
            except ServerUnavailable:
                time.sleep(0.2)

    def read_log(self) -> str:
        """What the server has logged so far."""
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM and wait."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        return self.process.returncode


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> Path:
    """A server key pair and clients alice and bob, authorized; plus another server's keys."""
    directory = tmp_path_factory.mktemp("keys") / "keys"
    keygen(directory, "alice", "bob")
    keygen(directory / "other")  # a server key pair that no server uses
    return directory


@pytest.fixture(scope="module")
def curve_server(tmp_path_factory, keys):
    """CURVE on, only keys/authorized may connect."""
    server = CurveServer(tmp_path_factory.mktemp("curve"), keys,
                         "--authorized-keys", str(keys / "authorized"))
    yield server
    assert server.stop() == 0, server.read_log()


def subprocess_env(extra: dict) -> dict:
    """os.environ without any keys of the test runner, plus ``extra``, venv on PATH."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("EXPERTD_SERVER_KEY", "EXPERTD_CLIENT_KEY")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


# -- keys ---------------------------------------------------------------------

def test_keygen_writes_private_secret_keys_and_keeps_existing_ones(tmp_path):
    import zmq.auth

    directory = tmp_path / "keys"
    keygen(directory, "alice")
    for sub in (directory, directory / "clients", directory / "authorized"):
        assert stat.S_IMODE(sub.stat().st_mode) == 0o700
    for secret in (directory / "server.key_secret", directory / "clients" / "alice.key_secret"):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
        public, secret_key = zmq.auth.load_certificate(secret)
        assert len(public) == 40 and len(secret_key) == 40
    server_before = (directory / "server.key_secret").read_bytes()
    alice_before = (directory / "clients" / "alice.key_secret").read_bytes()
    keygen(directory, "alice", "carol")  # again, with one more client
    assert (directory / "server.key_secret").read_bytes() == server_before
    assert (directory / "clients" / "alice.key_secret").read_bytes() == alice_before
    assert sorted(p.name for p in (directory / "authorized").iterdir()) == ["alice.key",
                                                                           "carol.key"]


# -- every way in, with keys ----------------------------------------------------

def test_pipe_stage_with_keys_from_the_environment(curve_server, keys):
    lines = [json.dumps({"id": i, "text": text}) for i, text in
             enumerate(["HEY you", "quiet", "LOUD"])]
    result = subprocess.run(
        [EXPERTD, "pipe", "shouting"], input="\n".join(lines) + "\n", capture_output=True,
        text=True, timeout=60,
        env=subprocess_env({**key_env(keys, "alice"), "EXPERTD_ENDPOINT": curve_server.endpoint}))
    assert result.returncode == 0, result.stderr
    out = [json.loads(line) for line in result.stdout.splitlines()]
    assert [d["id"] for d in out] == [0, 1, 2]
    assert [d["opinions"]["shouting"]["ratio"] for d in out] == [0.5, 0.0, 1.0]


def test_expertd_call_with_keys(curve_server, keys):
    result = subprocess.run(
        [EXPERTD, "call", "--endpoint", curve_server.endpoint, "shouting",
         '{"text": "HEY you"}'], capture_output=True, text=True, timeout=60,
        env=subprocess_env(key_env(keys, "bob")))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"ratio": 0.5}


def test_experts_client_with_keys(curve_server, keys, monkeypatch):
    from expertd.clients import ExpertsClient

    for name, value in key_env(keys, "alice").items():
        monkeypatch.setenv(name, value)
    with ExpertsClient(curve_server.endpoint, timeout=10, retries=0) as experts:
        answer = experts.opinions({"text": "HEY you"}, ["shouting"])
        assert answer["opinions"] == {"shouting": {"ratio": 0.5}}
        assert experts.shouting({"text": "LOUD"}) == {"ratio": 1.0}


def test_stock_zerorpc_client_recipe(curve_server, keys):
    """The recipe of docs/security.md, word for word: keys on the socket before connect."""
    import zerorpc
    import zmq
    import zmq.auth

    server_public, _ = zmq.auth.load_certificate(keys / "server.key")
    public, secret = zmq.auth.load_certificate(keys / "clients" / "bob.key_secret")
    client = zerorpc.Client(timeout=10)
    client._events.setsockopt(zmq.CURVE_SERVERKEY, server_public)
    client._events.setsockopt(zmq.CURVE_PUBLICKEY, public)
    client._events.setsockopt(zmq.CURVE_SECRETKEY, secret)
    client.connect(curve_server.endpoint)
    try:
        assert client.shouting({"text": "HEY you"}) == {"ratio": 0.5}
    finally:
        client.close()


# -- who gets no answer -----------------------------------------------------------

def test_no_keys_wrong_server_key_or_unauthorized_key_get_no_answer(curve_server, keys):
    import zerorpc
    from expertd.clients.wire import ServerUnavailable, connect

    refused = {
        "no keys": lambda: connect(curve_server.endpoint, timeout=3),
        "wrong server key": lambda: curve_connection(
            curve_server.endpoint, key_env(keys, "alice", keys / "other" / "server.key")),
        "key not authorized": lambda: curve_connection(
            curve_server.endpoint, key_env(keys, None)),  # a throwaway key pair
    }
    for what, make in refused.items():
        with pytest.raises(ServerUnavailable) as info:
            with make() as conn:
                conn.call("health", timeout=3)
        print(what, "->", info.value)
    assert "refused this client's key" in str(info.value)
    stock = zerorpc.Client(curve_server.endpoint, timeout=2)
    try:
        with pytest.raises(zerorpc.TimeoutExpired):
            stock.health()
    finally:
        stock.close()
    with curve_connection(curve_server.endpoint, key_env(keys, "alice")) as conn:
        assert conn.call("shouting", {"text": "STILL HERE"}) == {"ratio": 1.0}
    log = curve_server.read_log()
    # The peer of a handshake that fails before ZAP is read from a socket that libzmq
    # may already have closed: best effort. ZAP refusals always carry the address.
    peer = r"refused a connection from (127\.0\.0\.1|unknown peer): "
    assert re.search(peer + "it does not use CURVE", log), log
    assert re.search(peer + r"CURVE handshake failed \(wrong server public key\?\)", log), log
    assert "refused a connection from 127.0.0.1: client key" in log


def test_refusals_are_logged_once_per_host_then_counted(tmp_path, keys):
    server = CurveServer(tmp_path, keys, "--authorized-keys", str(keys / "authorized"))
    from expertd.clients.wire import ServerUnavailable

    try:
        for _ in range(20):
            with pytest.raises(ServerUnavailable):
                curve_connection(server.endpoint, key_env(keys, None)).close()
    finally:
        assert server.stop() == 0
    log = server.read_log()
    assert log.count("refused a connection from 127.0.0.1: client key") == 1, log
    repeats = re.search(r"refused (\d+) more connections from 127\.0\.0\.1", log)
    assert repeats and int(repeats.group(1)) >= 19, log  # (a retry may add one)


def test_editing_the_authorized_directory_takes_effect_without_restart(tmp_path):
    from expertd.clients.wire import ServerUnavailable

    keys = tmp_path / "keys"
    keygen(keys, "alice")
    server = CurveServer(tmp_path, keys, "--authorized-keys", str(keys / "authorized"))
    try:
        keygen(keys, "carol")  # a new client, authorized while the server runs
        with curve_connection(server.endpoint, key_env(keys, "carol")) as conn:
            assert conn.call("shouting", {"text": "NEW"}) == {"ratio": 1.0}
        (keys / "authorized" / "alice.key").unlink()  # alice revoked
        with pytest.raises(ServerUnavailable, match="refused this client's key"):
            curve_connection(server.endpoint, key_env(keys, "alice")).close()
        shutil.copy(keys / "clients" / "alice.key", keys / "authorized" / "alice.key")
        with curve_connection(server.endpoint, key_env(keys, "alice")) as conn:
            assert conn.call("health")["status"] == "ok"
    finally:
        assert server.stop() == 0, server.read_log()


# -- nothing in the clear -------------------------------------------------------------

class Relay:
    """A loopback TCP relay that forwards to ``target`` and records every byte both ways."""

    def __init__(self, target_port: int) -> None:
        """Listen on a free port."""
        self.target_port = target_port
        self.recorded = bytearray()
        self.lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        peers = {a: b, b: a}
        while True:
            readable, _, _ = select.select(list(peers), [], [])
            for sock in readable:
                data = sock.recv(65536)
                if not data:
                    a.close()
                    b.close()
                    return
                with self.lock:
                    self.recorded += data
                peers[sock].sendall(data)

    def close(self) -> None:
        """Stop accepting."""
        self.listener.close()


def test_no_document_text_in_the_clear_with_curve(curve_server, keys, odd_server):
    port = int(curve_server.endpoint.rsplit(":", 1)[1])
    relay = Relay(port)
    with curve_connection(f"tcp://127.0.0.1:{relay.port}", key_env(keys, "alice")) as conn:
        answer = conn.call("opinions", {"text": SECRET_TEXT}, ["shouting"])
    relay.close()
    assert answer["text"] == SECRET_TEXT  # it went there and came back
    assert len(relay.recorded) > 200
    assert b"tangerine" not in relay.recorded and b"shouting" not in relay.recorded

    # The same call to a server without CURVE: the relay sees the text (the test can fail).
    from expertd.clients.wire import Connection

    plain = Relay(int(odd_server.endpoint.rsplit(":", 1)[1]))
    with Connection(f"tcp://127.0.0.1:{plain.port}", timeout=10) as conn:
        conn.call("opinions", {"text": SECRET_TEXT}, ["shouting"])
    plain.close()
    assert b"tangerine" in plain.recorded


# -- no silent exposure -------------------------------------------------------------------

@pytest.mark.parametrize("endpoint, local", [
    ("tcp://127.0.0.1:4242", True), ("tcp://127.8.0.1:1", True), ("tcp://localhost:4242", True),
    ("tcp://[::1]:4242", True), ("tcp://[::ffff:127.0.0.1]:4242", True), ("ipc:///tmp/x", True),
    ("tcp://0.0.0.0:4242", False), ("tcp://*:4242", False), ("tcp://eth0:4242", False),
    ("tcp://[::]:4242", False), ("tcp://10.0.0.1:4242", False), ("tcp://example.com:1", False),
])
def test_which_endpoints_count_as_this_machine_only(endpoint, local):
    from expertd.rpc_server.security import is_local_endpoint

    assert is_local_endpoint(endpoint) is local


def test_non_loopback_bind_without_curve_refuses_to_start():
    port = free_port()
    result = subprocess.run(
        [EXPERTD, "serve", "--config", str(ODD_CONFIG), "--bind", f"tcp://0.0.0.0:{port}"],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env=subprocess_env({}))
    assert result.returncode != 0
    assert "refusing to serve tcp://0.0.0.0" in result.stderr
    assert "expertd keygen" in result.stderr and "--insecure" in result.stderr
    assert "Traceback" not in result.stderr
    assert "loaded expert" not in result.stderr  # refused before loading anything


def test_insecure_flag_serves_and_warns(tmp_path):
    port = free_port()
    server = ServerProcess(ODD_CONFIG, tmp_path, "--insecure", endpoint=f"tcp://0.0.0.0:{port}")
    try:
        assert "WITHOUT encryption" in server.read_log()
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize("args, message", [
    (["--authorized-keys", "{keys}/authorized"], "--authorized-keys needs --curve-secret-key"),
    (["--curve-secret-key", "{keys}/server.key"], "holds only a public key"),
    (["--curve-secret-key", "{keys}/nope"], "cannot read a ZeroMQ certificate"),
    (["--curve-secret-key", "{keys}/server.key_secret", "--authorized-keys", "{keys}/nope"],
     "does not exist"),
])
def test_unusable_key_settings_say_what_to_fix(keys, args, message):
    args = [a.format(keys=keys) for a in args]
    result = subprocess.run(
        [EXPERTD, "serve", "--config", str(ODD_CONFIG), "--bind",
         f"tcp://127.0.0.1:{free_port()}", *args],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env=subprocess_env({}))
    assert result.returncode != 0
    assert message in result.stderr and "Traceback" not in result.stderr


def test_a_client_without_keys_does_not_import_pyzmq(odd_server):
    code = ("import sys; from expertd.clients.wire import connect\n"
            f"with connect({odd_server.endpoint!r}) as c: c.call('health')\n"
            "assert 'zmq' not in sys.modules, 'pyzmq imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True, env=subprocess_env({}), cwd=ROOT)


# -- hostile key files (tests/corpus/keys) -------------------------------------------------

BAD_KEYS = sorted((ROOT / "tests" / "corpus" / "keys").glob("*.key"))


def test_bad_key_files_in_the_authorized_directory_are_ignored_and_logged(tmp_path, keys):
    authorized = tmp_path / "authorized"
    authorized.mkdir()
    for bad in BAD_KEYS:
        shutil.copy(bad, authorized / bad.name)
    shutil.copy(keys / "clients" / "alice.key", authorized / "alice.key")
    server = CurveServer(tmp_path, keys, "--authorized-keys", str(authorized))
    try:
        with curve_connection(server.endpoint, key_env(keys, "alice")) as conn:
            assert conn.call("shouting", {"text": "OK"}) == {"ratio": 1.0}
    finally:
        assert server.stop() == 0
    log = server.read_log()
    for bad in BAD_KEYS:
        assert f"ignoring authorized key {authorized / bad.name}" in log, bad.name
    assert "authorized client keys: 1 (alice.key)" in log


@pytest.mark.parametrize("bad", BAD_KEYS, ids=lambda p: p.name)
def test_a_bad_client_key_file_names_the_variable(bad, keys):
    from expertd.clients.curve import ClientKeys, KeyFileError

    with pytest.raises(KeyFileError, match=f"EXPERTD_SERVER_KEY={bad}"):
        ClientKeys.from_env({"EXPERTD_SERVER_KEY": str(bad)})
    with pytest.raises(KeyFileError, match=f"EXPERTD_CLIENT_KEY={bad}"):
        ClientKeys.from_env({"EXPERTD_SERVER_KEY": str(keys / "server.key"),
                             "EXPERTD_CLIENT_KEY": str(bad)})


def test_expertd_call_with_a_bad_key_file_says_so_without_a_traceback(keys):
    bad = BAD_KEYS[0]
    result = subprocess.run([EXPERTD, "call", "health"], capture_output=True, text=True,
                            timeout=60, env=subprocess_env({"EXPERTD_SERVER_KEY": str(bad)}))
    assert result.returncode == 3
    assert f"EXPERTD_SERVER_KEY={bad}" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("bad", BAD_KEYS, ids=lambda p: p.name)
def test_a_bad_server_secret_key_refuses_to_start(bad):
    result = subprocess.run(
        [EXPERTD, "serve", "--config", str(ODD_CONFIG), "--bind",
         f"tcp://127.0.0.1:{free_port()}", "--curve-secret-key", str(bad)],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env=subprocess_env({}))
    assert result.returncode != 0
    assert f"server secret key {bad}" in result.stderr and "Traceback" not in result.stderr
