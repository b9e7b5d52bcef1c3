"""Real peers for client tests, run as processes: ``python -m tests.pipe_peers KIND ENDPOINT``.

* ``refusing``: a stock zerorpc server with expertd's ``opinions_batch``
  signature that refuses a whole call the way a server bug does: the call
  fails with ``InternalError`` when any document holds the key ``"poison"``
  (every call, if started with ``--always``), and with ``UnknownExpert`` when
  a name is ``nope``. Answered documents get ``opinions.<name> = {"seen": n}``.
  It counts its calls in ``calls()``.
* ``older``: ``refusing``'s answers, from a server that predates the
  ``only_opinions`` option (it refuses the option with ``BadArguments``, as
  expertd did before 2026-12-02); it counts the calls that brought options.
* ``before-json``: the same, from a server that knows ``only_opinions`` (it then
  answers only the opinions) but predates ``as_json`` (refused as expertd did
  before 2026-12-07, naming the options it knows).
* ``echo``: a stock zerorpc server with ``echo(x)`` and ``headers()`` (the
  header of every request it has received, as a list), for conformance tests.
"""

from __future__ import annotations

import sys


class InternalError(Exception):
    """Named as expertd names a server bug."""


class UnknownExpert(Exception):
    """Named as expertd names an unknown expert."""


class Refusing:
    """expertd's ``opinions_batch`` and ``health``, refusing poisoned calls whole."""

    def __init__(self, always: bool) -> None:
        """Refuse every call if ``always``."""
        self.always = always
        self.count = 0

    def opinions_batch(self, docs, names, options=None):
        """Each document with an opinion per name, unless the call is refused."""
        self.count += 1
        if "nope" in names:
            raise UnknownExpert("unknown expert 'nope'")
        if self.always or any(isinstance(d, dict) and "poison" in d for d in docs):
            raise InternalError("a bug in the server, id 1234")
        return [dict(d, opinions={n: {"seen": len(docs)} for n in names}) for d in docs]

    def health(self):
        """Up."""
        return {"status": "ok"}

    def calls(self):
        """How many ``opinions_batch`` calls arrived."""
        return self.count


class BadArguments(Exception):
    """The server's name for arguments it cannot take."""


class Older(Refusing):
    """``opinions_batch`` as expertd answered it before the ``only_opinions`` option (or,
    with ``only_opinions`` among the options it ``knows``, before ``as_json``)."""

    def __init__(self, knows: tuple[str, ...] = ("fresh", "include_needs")) -> None:
        """Count the calls refused for their options."""
        super().__init__(always=False)
        self.refused = 0
        self.slim = 0
        self.knows = knows

    def opinions_batch(self, docs, names, options=None):
        """Refuse an option it does not know the way an older server did; otherwise answer
        whole documents (only the opinions, if asked and known)."""
        unknown = sorted(set(options or ()) - set(self.knows))
        if unknown:
            self.refused += 1
            raise BadArguments(f"unknown option(s) {', '.join(map(repr, unknown))}; options are: "
                               f"{', '.join(self.knows)}")
        answers = super().opinions_batch(docs, names)
        if (options or {}).get("only_opinions"):
            self.slim += 1
            return [{"opinions": answer["opinions"]} for answer in answers]
        return answers

    def calls(self):
        """Calls answered (``only_opinions``: with only the opinions), and calls refused for
        their options."""
        return {"answered": self.count, "refused": self.refused, "only_opinions": self.slim}


class Echo:
    """Echoes, and remembers request headers."""

    def __init__(self) -> None:
        """No headers seen yet."""
        self.seen: list = []

    def server_before_exec(self, event) -> None:
        """zerorpc middleware hook: keep the request's header."""
        if event.name != "headers":
            self.seen.append(dict(event.header))

    def echo(self, x):
        """``x``."""
        return x

    def headers(self):
        """Every request header seen so far."""
        return self.seen


def main() -> None:
    """Serve the peer named on the command line."""
    import zerorpc

    kind, endpoint = sys.argv[1], sys.argv[2]
    if kind == "echo":
        echo = Echo()
        context = zerorpc.Context()
        context.register_middleware(echo)
        server = zerorpc.Server(echo, context=context)
    elif kind == "older":
        server = zerorpc.Server(Older())
    elif kind == "before-json":
        server = zerorpc.Server(Older(knows=("fresh", "include_needs", "only_opinions")))
    else:
        assert kind == "refusing", kind
        server = zerorpc.Server(Refusing(always="--always" in sys.argv))
    server.bind(endpoint)
    print("ready", flush=True)
    server.run()


if __name__ == "__main__":
    main()
