"""The one parser of ZeroMQ endpoints (``tcp://HOST:PORT``, ``ipc:///PATH``).

Every command, the clients and the server read an endpoint through
``parse_endpoint``; a malformed one raises ``EndpointError`` whose message is
one line saying what was expected and suggesting the fix::

    endpoint 'localhost:PORT' has no transport: did you mean tcp://localhost:PORT?

The Node bridge has the same rules and messages (``express_bridge/src/endpoint.js``);
``tests/corpus/endpoints.json`` holds the cases both languages must answer alike.
Light on purpose (the pipe stage imports it): no ``ipaddress``, no ``urllib``.
"""

from __future__ import annotations

from expertd.records import record  # not collections.namedtuple, nor socket at import: the pipe stage
from expertd.spec import DEFAULT_HOST, DEFAULT_PORT, BRIDGE_PORT

#: What a well-formed endpoint looks like, for messages.
EXPECTED = "tcp://HOST:PORT or ipc:///PATH"
_HOST_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_")
_OTHER_ZMQ = ("pgm", "epgm", "tipc", "vmci", "ws", "wss", "udp")
_HTTP = ("http", "https")
_SPACES = " \t\n\r\v\f"
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\", "'": "\\'"}


class EndpointError(ValueError):
    """A malformed endpoint; the message (one line) says what was expected and how to fix it."""


class Endpoint(record("Endpoint", "transport host port path", defaults=(None, None, None))):
    """A parsed endpoint: ``transport`` is "tcp", "ipc" (or "inproc", binding only); ``host``
    (str or None); ``port`` (int) is None for ``*`` (any); ``path`` is the socket's path (or
    the inproc name)."""

    __slots__ = ()

    @property
    def is_wildcard(self) -> bool:
        """True if it names every interface (``tcp://*:PORT``) or any port: for binding only."""
        return self.transport == "tcp" and (self.host == "*" or self.port is None)

    def __str__(self) -> str:
        """The endpoint as ZeroMQ takes it (IPv6 hosts in brackets)."""
        if self.transport != "tcp":
            return f"{self.transport}://{self.path}"
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"tcp://{host}:{'*' if self.port is None else self.port}"


def shown(text: str) -> str:
    """``text`` in quotes, control characters escaped, so that a message stays one line."""
    out = []
    for c in text:
        if c in _ESCAPES:
            out.append(_ESCAPES[c])
        elif ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F:
            out.append(f"\\x{ord(c):02x}")
        elif c in "\u2028\u2029":
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return "'" + "".join(out) + "'"


def _fail(text: str, problem: str, suggestion: str | None = None) -> EndpointError:
    hint = f"did you mean {suggestion}?" if suggestion else f"expected {EXPECTED}"
    return EndpointError(f"endpoint {shown(text)} {problem}: {hint}")


def _valid_host(host: str) -> bool:
    if host == "*":
        return True
    if ":" in host or "[" in host or "]" in host:
        import socket  # only for IPv6 hosts: socket costs every pipe stage its enums

        try:
            socket.inet_pton(socket.AF_INET6, host)
        except (OSError, ValueError):
            return False
        return True
    return bool(host) and set(host) <= _HOST_CHARS and not host.startswith(("-", "."))


def _is_number(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _with_port(host: str) -> str:
    return f"tcp://{f'[{host}]' if ':' in host else host}:{DEFAULT_PORT}"


def parse_endpoint(text: str, binding: bool = False) -> Endpoint:
    """Parse ``text``; raise ``EndpointError`` (a ``ValueError``) if it is malformed.

    ``binding``: the endpoint is one to listen on, where ``tcp://*:PORT`` (every
    interface) and ``tcp://HOST:*`` (any free port) are allowed; a client
    connects to one host and one port.
    """
    if not isinstance(text, str) or not text.strip(_SPACES):
        raise EndpointError(f"endpoint is empty: expected {EXPECTED}, "
                            f"e.g. tcp://{DEFAULT_HOST}:{DEFAULT_PORT}")
    if text != text.strip(_SPACES):
        raise _fail(text, "has spaces around it", text.strip(_SPACES))
    if any(c in _SPACES for c in text):
        raise _fail(text, "has spaces in it")
    transport, sep, address = text.partition("://")
    if not sep:
        return _no_transport(text)
    lowered = transport.lower()
    if lowered in _HTTP:
        authority = address.split("/")[0].rpartition("@")[2]
        if authority.startswith("["):
            host = authority[1:].partition("]")[0]
        else:
            host = authority.partition(":")[0]
        raise EndpointError(f"endpoint {shown(text)} is an HTTP address (the bridge's, port "
                            f"{BRIDGE_PORT} by default); expertd speaks ZeroMQ: did you mean "
                            f"{_with_port(host or DEFAULT_HOST)}?")
    if lowered != transport and lowered in ("tcp", "ipc"):
        raise _fail(text, "has an upper-case transport", f"{lowered}://{address}")
    if transport == "ipc":
        if not address:
            raise EndpointError(f"endpoint {shown(text)} has no path: expected ipc:///PATH/TO/SOCKET")
        return Endpoint("ipc", path=address)
    if transport == "inproc":
        if binding and address:  # inside one process: nothing outside can reach it (expertd check)
            return Endpoint("inproc", path=address)
        if binding:
            raise EndpointError(f"endpoint {shown(text)} has no name: expected inproc://NAME")
        raise EndpointError(f"endpoint {shown(text)}: an inproc:// endpoint lives inside one "
                            f"process, so no client can connect to it: expected {EXPECTED}")
    if transport != "tcp":
        if not transport:
            raise _fail(text, "has no transport", _tcp_suggestion(address))
        if transport in _OTHER_ZMQ:
            raise EndpointError(f"endpoint {shown(text)}: expertd serves and connects over tcp:// "
                                f"and ipc:// only, not {transport}://")
        raise _fail(text, f"has an unknown transport {shown(transport)}", _tcp_suggestion(address))
    return _parse_tcp(text, address, binding)


def _tcp_suggestion(address: str) -> str | None:
    """``tcp://ADDRESS`` when it is a host and a port, with the default port when only a host."""
    host, sep, port = address.rpartition(":")
    if sep and _is_number(port) and _valid_host(host):
        return f"tcp://{address}"
    return _with_port(address) if _valid_host(address) and address != "*" else None


def _no_transport(text: str) -> Endpoint:
    if text.startswith("/"):
        raise _fail(text, "has no transport", f"ipc://{text}")
    if _is_number(text):
        raise _fail(text, "has no transport", f"tcp://{DEFAULT_HOST}:{text}")
    host, sep, port = text.rpartition(":")
    if sep and _is_number(port) and _valid_host(host.strip("[]") or "x"):
        raise _fail(text, "has no transport", f"tcp://{host or DEFAULT_HOST}:{port}")
    if _valid_host(text) and text != "*":
        raise _fail(text, "has no transport", _with_port(text))
    raise _fail(text, "has no transport")


def _parse_tcp(text: str, address: str, binding: bool) -> Endpoint:
    if not address:
        raise _fail(text, "has no host and no port", f"tcp://{DEFAULT_HOST}:{DEFAULT_PORT}")
    address, slash, rest = address.partition("/")
    if slash:
        raise _fail(text, "has a path after the port", f"tcp://{address}")
    if address.startswith("["):
        host, bracket, tail = address[1:].partition("]")
        if not bracket:
            raise _fail(text, "has an unclosed '['")
        if ":" not in host:
            raise _fail(text, "has brackets around a host that is not an IPv6 address",
                        f"tcp://{host}{tail}")
        if not tail:
            raise _fail(text, "has no port", _with_port(host))
        if not tail.startswith(":"):
            raise _fail(text, "has something between ']' and the port", f"tcp://[{host}]:{DEFAULT_PORT}")
        port_text = tail[1:]
    elif address.count(":") > 1:
        host, _, port_text = address.rpartition(":")
        if _is_number(port_text) and _valid_host(host):
            raise _fail(text, "has an IPv6 address without brackets", f"tcp://[{host}]:{port_text}")
        raise _fail(text, "has an IPv6 address without brackets", _with_port(address))
    else:
        host, colon, port_text = address.partition(":")
        if not colon:
            raise _fail(text, "has no port", _with_port(host))
    if not host:
        raise _fail(text, "has no host", f"tcp://{DEFAULT_HOST}:{port_text or DEFAULT_PORT}")
    if not _valid_host(host):
        raise EndpointError(f"endpoint {shown(text)}: {shown(host)} is not a host name or an IP address: "
                            f"expected {EXPECTED}")
    if not port_text:
        raise _fail(text, "has no port", _with_port(host))
    if port_text == "*":
        port = None
    elif not _is_number(port_text) or not 1 <= int(port_text) <= 65535:
        raise EndpointError(f"endpoint {shown(text)}: port {shown(port_text)} must be a number from 1 to "
                            f"65535, e.g. {_with_port(host)}")
    else:
        port = int(port_text)
    endpoint = Endpoint("tcp", host=host, port=port)
    if endpoint.is_wildcard and not binding:
        what = "every interface" if host == "*" else "any port"
        connect_host = DEFAULT_HOST if host == "*" else host
        raise EndpointError(f"endpoint {shown(text)} names {what}, which a server binds but a client "
                            f"cannot connect to: did you mean "
                            f"{_with_port(connect_host) if port is None else f'tcp://{connect_host}:{port}'}?")
    return endpoint


def click_callback(binding: bool = False):
    """A click option callback that parses the endpoint, or says why not in one line (exit 2)."""

    def callback(ctx, param, value):
        if value is None:
            return value
        try:
            parse_endpoint(value, binding=binding)
        except EndpointError as exc:
            source = ctx.get_parameter_source(param.name)
            origin = f"{param.envvar}: " if source is not None and source.name == "ENVIRONMENT" else ""
            exit_usage(f"{ctx.command_path}: {origin}{exc}")
        return value

    return callback


def exit_usage(line: str) -> None:
    """Write ``line`` to stderr and exit with status 2 (a usage error), no traceback."""
    import sys

    sys.stderr.write(line + "\n")
    sys.stderr.flush()
    raise SystemExit(2)
