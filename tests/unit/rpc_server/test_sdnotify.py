"""sd_notify datagrams on a real AF_UNIX socket (what systemd reads for Type=notify)."""

import socket

from expertd.rpc_server import sdnotify


def _receiver(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(5)
    return sock


def test_ready_sends_one_datagram_of_states(tmp_path):
    path = str(tmp_path / "notify")
    with _receiver(path) as sock:
        assert sdnotify.notify("READY=1", "STATUS=serving", environ={"NOTIFY_SOCKET": path})
        assert sock.recv(4096) == b"READY=1\nSTATUS=serving"


def test_abstract_namespace_address():
    name = f"expertd-test-{id(object())}"
    with _receiver("\0" + name) as sock:
        assert sdnotify.notify("STOPPING=1", environ={"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(4096) == b"STOPPING=1"


def test_helpers_read_the_process_environment(tmp_path, monkeypatch):
    path = str(tmp_path / "notify")
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    with _receiver(path) as sock:
        assert sdnotify.ready("2 workers serving")
        assert sock.recv(4096) == b"READY=1\nSTATUS=2 workers serving"
        assert sdnotify.reloading("reload")
        assert sock.recv(4096) == b"RELOADING=1\nSTATUS=reload"
        assert sdnotify.stopping("SIGTERM: draining")
        assert sock.recv(4096) == b"STOPPING=1\nSTATUS=SIGTERM: draining"


def test_without_notify_socket_nothing_is_sent(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.notify("READY=1") is False
    assert sdnotify.notify("READY=1", environ={"NOTIFY_SOCKET": "vsock:2:1234"}) is False


def test_a_missing_socket_is_logged_not_raised(tmp_path, caplog):
    missing = str(tmp_path / "gone")
    assert sdnotify.notify("READY=1", environ={"NOTIFY_SOCKET": missing}) is False
    assert "could not notify systemd" in caplog.text
