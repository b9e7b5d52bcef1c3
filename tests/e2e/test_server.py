"""The server, through the stock zerorpc.Client, against real processes and models."""

from __future__ import annotations

import signal
import subprocess
import threading
import time

import gevent
import gevent.pool
import pytest
import zerorpc

from tests.conftest import BIN, ODD_CONFIG, ServerProcess

POSITIVE = "I love this product, it is absolutely wonderful!"
NEGATIVE = "This is the worst, most horrible and disgusting thing I have ever seen."
TWEET = "omg lol cant wait for the weekend!!! :) #friday"


def remote_error(call, *args):
    """Call and return the RemoteError it raises (fails the test if none)."""
    with pytest.raises(zerorpc.RemoteError) as info:
        call(*args)
    return info.value


# -- opinions ------------------------------------------------------------------

def test_sentiment_opinion_shape_and_values(client):
    positive = client.sentiment({"text": POSITIVE})
    negative = client.sentiment({"text": NEGATIVE})
    assert set(positive) == {"valence", "label", "confidence"}
    assert -4.0 <= positive["valence"] <= 4.0 and 0.0 <= positive["confidence"] <= 1.0
    assert positive["valence"] > 1.0 and positive["label"] == "positive"
    assert negative["valence"] < -1.0 and negative["label"] == "negative"


#: Texts on which the valence regression once left its -4..+4 scale (7.88 for the first).
OVERSHOOTING = ["I love this product. " * 8, "I love love love this wonderful amazing product! " * 20,
                "I hate this awful horrible disgusting product. " * 20]


def test_sentiment_valence_stays_on_its_documented_scale(client):
    schema = {e["name"]: e for e in client.experts()}["sentiment"]["opinion_schema"]
    assert schema["properties"]["valence"]["minimum"] == -4
    assert schema["properties"]["valence"]["maximum"] == 4
    answers = [client.sentiment({"text": text}) for text in OVERSHOOTING]
    answers += [doc["opinions"]["sentiment"] for doc in
                client.opinions_batch([{"text": text} for text in OVERSHOOTING], ["sentiment"])]
    for answer in answers:
        assert -4.0 <= answer["valence"] <= 4.0, answer
    assert answers[0]["valence"] == 4.0 and answers[0]["label"] == "positive"
    assert client.consensus({"text": OVERSHOOTING[0]})["valence"] <= 4.0


def test_genre_labels_a_tweet(client):
    opinion = client.genre({"text": TWEET})
    assert opinion["label"] == "tweet"
    probabilities = opinion["probabilities"]
    assert set(probabilities) == {"tweet", "movie_review", "product_review", "news_editorial"}
    assert abs(sum(probabilities.values()) - 1.0) < 1e-3
    assert max(probabilities, key=probabilities.get) == "tweet"


def test_vader_is_an_expert_without_tensorflow(client):
    opinion = client.vader({"text": POSITIVE})
    assert opinion["label"] == "positive" and opinion["compound"] > 0.5


def test_opinion_by_name_equals_the_expert_method(client):
    assert client.opinion("sentiment", {"text": POSITIVE}) == client.sentiment({"text": POSITIVE})


def test_opinions_adds_every_expert_and_keeps_the_document(client):
    doc = {"id": 7, "text": POSITIVE, "meta": {"lang": "en"}}
    out = client.opinions(doc, [])
    assert list(out)[:3] == ["id", "text", "meta"] and out["id"] == 7
    assert set(out["opinions"]) == {"sentiment", "genre", "vader", "learner", "consensus"}
    assert "errors" not in out
    only = client.opinions(doc, ["vader"])
    assert set(only["opinions"]) == {"vader"}


def test_opinions_keeps_earlier_opinions(client):
    first = client.opinions({"text": POSITIVE}, ["sentiment"])
    second = client.opinions(first, ["genre"])
    assert set(second["opinions"]) == {"sentiment", "genre"}


def test_batch_returns_opinions_in_order(client):
    texts = [POSITIVE, NEGATIVE, TWEET] * 10
    opinions = client.batch("sentiment", [{"text": t} for t in texts])
    assert len(opinions) == 30
    assert opinions == [client.sentiment({"text": t}) for t in texts]


def test_opinions_batch_leaves_per_document_errors(client):
    out = client.opinions_batch([{"text": POSITIVE}, {"title": "no text"}], ["sentiment"])
    assert out[0]["opinions"]["sentiment"]["label"] == "positive"
    assert out[1]["errors"]["sentiment"]["name"] == "InvalidDocument"


def test_unicode_text(client):
    opinion = client.sentiment({"text": "J'adore ce café ☕ — 素晴らしい 😍"})
    assert set(opinion) == {"valence", "label", "confidence"}


def test_experts_lists_metrics(client):
    experts = {e["name"]: e for e in client.experts()}
    assert set(experts) == {"sentiment", "genre", "vader", "learner", "consensus"}
    for entry in experts.values():
        assert entry["description"] and entry["version"] and entry["field"] == "text"
    assert experts["sentiment"]["metrics"]["heldout_pearson_r"] >= 0.60
    assert experts["genre"]["metrics"]["heldout_accuracy"] >= 0.85


def test_health_and_stats(client):
    health = client.health()
    assert health["status"] == "ok" and set(health["experts"]) == {"sentiment", "genre", "vader",
                                                                 "learner", "consensus"}
    client.sentiment({"text": POSITIVE})
    stats = client.stats()["experts"]["sentiment"]
    assert stats["calls"] >= 1 and stats["latency_ms"]["p50"] > 0


# -- bad input -----------------------------------------------------------------

@pytest.mark.parametrize("args, name, words", [
    (("opinion", "nope", {"text": "x"}), "UnknownExpert", "unknown expert 'nope'"),
    (("sentiment", ["not", "an", "object"]), "InvalidDocument", "must be a JSON object"),
    (("sentiment", "just a string"), "InvalidDocument", "got string"),
    (("sentiment", {"title": "x"}), "InvalidDocument", "no 'text' field"),
    (("sentiment", {"text": 42}), "InvalidDocument", "must be a string, got number"),
    (("sentiment", {"text": None}), "InvalidDocument", "got null"),
    (("sentiment",), "BadArguments", "sentiment(doc)"),
    (("sentiment", {"text": "a"}, "extra"), "BadArguments", "too many"),
    (("batch", "sentiment", [{"text": "ok"}, {"x": 1}]), "InvalidDocument", "docs[1]"),
    (("batch", "sentiment", "not a list"), "BadArguments", "list of documents"),
    (("opinions", {"text": "x"}, ["sentiment", "nope"]), "UnknownExpert", "'nope'"),
    (("no_such_method", {"text": "x"}), "UnknownMethod", "no_such_method"),
])
def test_bad_input_gets_a_clear_error_and_the_server_keeps_serving(client, args, name, words):
    error = remote_error(client, *args)
    assert error.name == name and words in error.msg, (error.name, error.msg)
    assert client.sentiment({"text": POSITIVE})["label"] == "positive"


def test_text_over_the_limit(client):
    error = remote_error(client.sentiment, {"text": "a" * (1024 * 1024 + 1)})
    assert error.name == "TextTooLong" and "limit is 1048576 bytes" in error.msg
    assert client.sentiment({"text": "a" * 1000})  # under the limit is fine


# -- introspection -------------------------------------------------------------

def test_zerorpc_inspect_lists_methods_with_arguments_and_docs(client):
    described = client._zerorpc_inspect()
    methods = described["methods"]
    for name in ("sentiment", "genre", "vader", "opinion", "opinions", "batch",
                 "opinions_batch", "experts", "health", "stats"):
        assert name in methods and methods[name]["doc"]
    assert [a["name"] for a in methods["opinion"]["args"]] == ["name", "doc", "options"]
    assert methods["opinions"]["args"] == [{"name": "doc"}, {"name": "names", "default": None},
                                           {"name": "options", "default": None}]
    assert [a["name"] for a in methods["sentiment"]["args"]] == ["doc"]


def test_stock_zerorpc_command_line_lists_methods(server):
    out = subprocess.run([str(BIN / "zerorpc"), "-?", server.endpoint], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "opinion(name, doc, options)" in out.stdout and "sentiment(doc)" in out.stdout


# -- concurrency ---------------------------------------------------------------

def test_100_concurrent_calls_get_their_own_opinions(server, client):
    texts = [f"{POSITIVE} {i}" if i % 2 else f"{NEGATIVE} {i}" for i in range(100)]
    expected = client.batch("sentiment", [{"text": t} for t in texts])
    callers = [zerorpc.Client(server.endpoint, timeout=60) for _ in range(4)]
    before = client.stats()["experts"]["sentiment"]
    pool = gevent.pool.Pool(100)
    results = pool.map(lambda i: callers[i % 4].sentiment({"text": texts[i]}), range(100))
    for c in callers:
        c.close()
    assert results == expected
    after = client.stats()["experts"]["sentiment"]
    # Only the concurrent calls count: 100 documents in fewer model calls than documents.
    assert after["batched_items"] - before["batched_items"] == 100
    assert after["batches"] - before["batches"] < 100  # concurrent calls were batched together


def test_15_second_expert_does_not_lose_the_heartbeat(odd_client):
    # zerorpc gives up after two missed 5 s heartbeats; inference runs off the loop.
    began = time.monotonic()
    assert odd_client.slow({"text": "wait for it"}) == {"slept": 15}
    assert time.monotonic() - began >= 15


def test_failing_expert_leaves_its_error_and_others_answer(odd_client):
    error = remote_error(odd_client.failing, {"text": "x"})
    assert error.name == "ExpertFailed" and "always fails" in error.msg
    out = odd_client.opinions({"text": "HELLO there"}, ["failing", "shouting", "vader"])
    assert out["errors"]["failing"]["name"] == "ExpertFailed"
    assert set(out["opinions"]) == {"shouting", "vader"}


def test_configured_text_limit(odd_client):
    error = remote_error(odd_client.vader, {"text": "é" * 600})  # 1200 bytes > 1000
    assert error.name == "TextTooLong" and "1200 bytes" in error.msg


# -- lifecycle -----------------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_finishes_in_flight_calls_then_exits_0(tmp_path, sig):
    config = tmp_path / "experts.yaml"
    config.write_text(ODD_CONFIG.read_text().replace("seconds: 15", "seconds: 3"))
    proc = ServerProcess(config, tmp_path)
    answer = {}

    def slow_call():
        c = zerorpc.Client(proc.endpoint, timeout=30)
        answer["value"] = c.slow({"text": "x"})
        c.close()

    thread = threading.Thread(target=slow_call)
    thread.start()
    time.sleep(1.0)  # the call is in flight
    proc.process.send_signal(sig)
    time.sleep(0.5)
    late = zerorpc.Client(proc.endpoint, timeout=10)
    error = remote_error(late.shouting, {"text": "too late"})
    late.close()
    assert error.name == "ShuttingDown"
    assert proc.stop(sig) == 0, proc.read_log()
    thread.join(30)
    assert answer.get("value") == {"slept": 3}, proc.read_log()
    assert "finishing in-flight calls" in proc.read_log()


def test_bad_config_is_a_clear_error(tmp_path):
    config = tmp_path / "experts.yaml"
    config.write_text("experts:\n  broken: no_such_module_xyz:thing\n")
    out = subprocess.run([str(BIN / "expertd"), "serve", "--config", str(config), "--bind",
                          "tcp://127.0.0.1:1"], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert 'could not import module "no_such_module_xyz"' in out.stderr


def test_prometheus_metrics(odd_server, odd_client):
    import urllib.request

    odd_client.shouting({"text": "HEY you"})
    with pytest.raises(zerorpc.RemoteError):
        odd_client.failing({"text": "x"})
    text = urllib.request.urlopen(odd_server.metrics_url, timeout=10).read().decode()
    assert 'expertd_calls_total{expert="shouting",outcome="ok"}' in text
    assert 'expertd_calls_total{expert="failing",outcome="error"}' in text
    assert 'expertd_call_seconds_bucket{expert="shouting"' in text
