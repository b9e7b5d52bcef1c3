"""A canary draws once per document: the same draw decides reuse and routing.

With ``sticky: none`` each document's version is drawn at random. A document
carrying version 3's opinion is reused when its draw is 3; when its draw is 2 it
is recomputed by version 2 (and the note says so), never refused as "version 2
serves this call" and then recomputed by version 3 on a second draw.
"""

from __future__ import annotations

from pathlib import Path

from expertd.experts.base import Expert
from expertd.experts.versions import ServedVersions
from expertd.rpc_server.service import Experts
from expertd.rpc_server.stats import Stats
from expertd.rpc_server.versions import Canary, VersionSet


class Versioned(Expert):
    """Answers its own version."""

    def predict(self, inputs):
        return [{"v": self.version} for _ in inputs]


class OnSent(Expert):
    """A chained expert that needs ``sent``: answers the opinion it was given."""

    takes_opinions = True

    def predict(self, inputs):
        return [{"got": item["sent"]} for item in inputs]


class Batcher:
    """Stands for a version's MicroBatcher in process: calls the expert at once."""

    def __init__(self, expert):
        self.expert = expert

    def predict_each(self, values, deadline=None, trace=None, links=()):
        return [(True, opinion) for opinion in self.expert.predict(values)]

    def check_opinion(self, opinion):
        return None


def test_a_canary_reuses_or_recomputes_on_one_draw_per_document():
    v2, v3 = Versioned("sent", version="2"), Versioned("sent", version="3")
    served = ServedVersions("model_dir", Path("m"), {"2": Path("2"), "3": Path("3")}, {"stable": "2"})
    versions = VersionSet("sent", served, {"2": v2, "3": v3}, {"2": Batcher(v2), "3": Batcher(v3)})
    versions.canary = Canary("3", 0.5, "none")
    on_sent = OnSent("on_sent")
    on_sent.needs = {"sent": "sent"}
    service = Experts({"sent": v2, "on_sent": on_sent},
                      {"sent": versions.batchers["2"], "on_sent": Batcher(on_sent)},
                      Stats(["sent", "on_sent"]), 1000, versions={"sent": versions})
    docs = [{"text": f"doc {i}", "opinions": {"sent": {"v": "3"}}, "versions": {"sent": "3"}}
            for i in range(60)]
    # A chain reuses the opinion a document carries for what it needs (sent, for on_sent).
    answered = type(service).opinions_batch.__wrapped__(service, docs, ["on_sent"])
    reused = [d for d in answered if "sent" not in d.get("recomputed", {})]
    recomputed = [d for d in answered if "sent" in d.get("recomputed", {})]
    assert reused and recomputed  # both draws happened
    assert all(d["opinions"]["on_sent"] == {"got": {"v": "3"}} for d in reused)
    # Refused because version 2 serves it: then version 2 answers, not a second draw's 3.
    assert [d["opinions"]["on_sent"] for d in recomputed] == [{"got": {"v": "2"}}] * len(recomputed), \
        recomputed[:3]
