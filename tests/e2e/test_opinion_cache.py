"""The cache of opinions in a real server: hits and misses counted, bounded, shared by chains,
keyed by a learner's model version (rpc_server/opinion_cache.py)."""

from __future__ import annotations

import urllib.request

import pytest

from expertd.clients.wire import connect
from tests.conftest import ServerProcess, free_port

CONFIG = """
server:
  cache_size: 3              # pure experts without a cache of their own: vader
experts:
  vader: expertd.experts.vader:VaderExpert
  base:                      # not pure (it counts): cached only because it asks
    expert: tests.chain_experts:Tally
    cache: {size: 100}
  other: tests.chain_experts:Tally
  pair:
    expert: tests.chain_experts:Combine
    needs: {base: left, other: right}
  learner:
    expert: expertd.experts.online:OnlineTextExpert
    cache: {size: 100}
"""


@pytest.fixture(scope="module")
def cached(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cache")
    config = tmp / "experts.yaml"
    config.write_text(CONFIG)
    metrics_port = free_port()
    proc = ServerProcess(config, tmp, "--metrics-port", str(metrics_port))
    proc.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    yield proc
    proc.stop()


@pytest.fixture
def server(cached):
    with connect(cached.endpoint, timeout=30) as connection:
        yield connection


def counters(server, name):
    entry = server.call("stats")["experts"][name]
    return entry["cache_hits"], entry["cache_misses"]


def cache_of(server, name):
    return next(e for e in server.call("experts") if e["name"] == name).get("cache")


def test_a_repeated_document_is_answered_from_the_cache_and_the_counters_say_so(cached, server):
    first = server.call("opinion", "vader", {"text": "what a lovely day"})
    calls = server.call("stats")["experts"]["vader"]["calls"]
    assert counters(server, "vader") == (0, 1)
    again = server.call("opinion", "vader", {"text": "what a lovely day"})
    assert again == first and counters(server, "vader") == (1, 1)
    assert server.call("stats")["experts"]["vader"]["calls"] == calls  # the model was not asked
    assert cache_of(server, "vader") == {"size": 3, "entries": 1, "hits": 1, "misses": 1,
                                         "keep_every": 1}
    with urllib.request.urlopen(cached.metrics_url, timeout=10) as response:
        metrics = response.read().decode()
    assert 'expertd_cache_lookups_total{expert="vader",outcome="hit"} 1.0' in metrics
    assert 'expertd_cache_lookups_total{expert="vader",outcome="miss"} 1.0' in metrics


def test_the_cache_holds_its_bound_and_drops_the_least_recently_used(server):
    texts = [f"text number {i}" for i in range(5)]
    for text in texts:
        server.call("opinion", "vader", {"text": text})
    assert cache_of(server, "vader")["entries"] == 3
    hits, misses = counters(server, "vader")
    server.call("opinion", "vader", {"text": texts[-1]})  # among the 3 most recent
    assert counters(server, "vader") == (hits + 1, misses)
    server.call("opinion", "vader", {"text": texts[0]})  # pushed out
    assert counters(server, "vader") == (hits + 1, misses + 1)


def test_repeats_within_one_batch_are_computed_once_and_answered_alike(server):
    docs = [{"text": "same old"}, {"text": "brand new"}, {"text": "same old"}]
    answers = server.call("opinions_batch", docs, ["base"])
    seen = [a["opinions"]["base"]["seen"] for a in answers]
    assert seen == [1, 1, 1]  # Tally counts computations: "same old" was computed once
    assert server.call("opinions_batch", docs, ["base"]) == answers  # all three from the cache


def test_a_chain_shares_the_cache_of_what_it_needs_and_uncached_experts_compute_again(server):
    direct = server.call("opinion", "base", {"text": "shared text"})
    assert direct["seen"] == 1
    chained = server.call("opinion", "pair", {"text": "shared text"})
    assert chained["got"]["left"] == direct  # base answered from its cache, not computed again
    assert server.call("opinion", "other", {"text": "shared text"})["seen"] == 2  # no cache
    assert cache_of(server, "other") is None and cache_of(server, "pair") is None


def test_a_learners_cached_answer_changes_once_it_learns(server):
    probe = {"text": "my kitten purrs"}
    before = server.call("opinion", "learner", probe)
    assert server.call("opinion", "learner", probe) == before
    hits, misses = counters(server, "learner")
    assert hits >= 1
    taught = server.call("learn", "learner", [{"text": "the kitten purrs", "label": "cat"},
                                              {"text": "a dog barks", "label": "dog"}])
    assert taught["applied"] is True
    after = server.call("opinion", "learner", probe)
    assert after != before and after["label"] == "cat"
    assert counters(server, "learner") == (hits, misses + 1)  # a new model version: asked again
    assert server.call("opinion", "learner", probe) == after
    assert counters(server, "learner") == (hits + 1, misses + 1)
