"""Constant load for the versions e2e test: ``python tests/constant_load.py ENDPOINT URL OUT``.

Greenlets call the server without retries, each on its own connection: RPC
``opinions(doc, ["sentiment"])`` and ``opinions(doc, ["consensus"])`` (a chain
on sentiment), and HTTP ``POST URL/experts/sentiment`` through the bridge. It
runs until stdin closes, then writes ``{"calls", "failed", "failures"}`` (the
first failures, with their error) as JSON to OUT.
"""

from gevent import monkey

monkey.patch_all()

import http.client  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import urllib.parse  # noqa: E402

import gevent  # noqa: E402
import zerorpc  # noqa: E402

RPC_CALLERS = 4
HTTP_CALLERS = 2


def main(endpoint: str, url: str, out: str) -> None:
    counts = {"calls": 0, "failed": 0, "failures": []}
    running = [True]

    def failed(what: str) -> None:
        counts["failed"] += 1
        if len(counts["failures"]) < 20:
            counts["failures"].append(what)

    def rpc_caller(index: int) -> None:
        client = zerorpc.Client(endpoint, timeout=60, heartbeat=5)
        names = ["sentiment"] if index % 2 == 0 else ["consensus"]
        n = 0
        while running[0]:
            n += 1
            try:
                doc = client.opinions({"text": f"what a lovely day number {index} {n}"}, names)
                if doc.get("errors"):
                    failed(f"rpc {names}: errors {doc['errors']}")
            except Exception as exc:
                failed(f"rpc {names}: {type(exc).__name__}: {exc}")
            counts["calls"] += 1
        client.close()

    def http_caller(index: int) -> None:
        parsed = urllib.parse.urlsplit(url)
        connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
        n = 0
        while running[0]:
            n += 1
            body = json.dumps({"text": f"a terrible awful day {index} {n}"})
            try:
                connection.request("POST", "/experts/sentiment", body,
                                   {"Content-Type": "application/json"})
                response = connection.getresponse()
                answer = response.read()
                if response.status != 200:
                    failed(f"http {response.status}: {answer[:300]!r}")
            except Exception as exc:
                failed(f"http: {type(exc).__name__}: {exc}")
                connection.close()
                connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
            counts["calls"] += 1
        connection.close()

    callers = [gevent.spawn(rpc_caller, i) for i in range(RPC_CALLERS)]
    callers += [gevent.spawn(http_caller, i) for i in range(HTTP_CALLERS)]
    sys.stdout.write("started\n")
    sys.stdout.flush()
    gevent.get_hub().threadpool.apply(sys.stdin.read)  # until the test closes it (off the loop)
    running[0] = False
    gevent.joinall(callers, timeout=90)
    with open(out, "w") as file:
        json.dump(counts, file)


if __name__ == "__main__":
    main(*sys.argv[1:4])
