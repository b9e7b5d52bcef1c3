"""What the server does for Python's cycle collector: freeze what loading made, thaw after an
unload, and keep the cache of opinions out of the collector's sight.

A full collection walks every tracked object; in a server holding TensorFlow that is
~330,000 objects and 160-200 ms with the loop stopped (rpc_server/collector.py). The
freeze runs in a child process: it is process-wide, and pytest's own objects are not the
server's.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys

from expertd.rpc_server.opinion_cache import OpinionCache

CHILD = """
import gc, json
from expertd.rpc_server import collector
garbage = []
for i in range(50_000):  # a loaded model's many long-lived objects
    garbage.append({"node": i, "inputs": [i]})
frozen = collector.freeze_loaded()
gc.collect()
collector.thaw()
print(json.dumps({"frozen": frozen, "after_thaw": gc.get_freeze_count(),
                  "tracked_after_thaw": len(gc.get_objects())}))
"""


def test_freeze_loaded_moves_every_object_out_of_the_collectors_walk_and_thaw_gives_them_back():
    done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                          timeout=60, check=True)
    result = json.loads(done.stdout)
    assert result["frozen"] > 100_000  # the 50,000 dicts and lists, and the interpreter's own
    assert result["after_thaw"] == 0
    assert result["tracked_after_thaw"] > 100_000


def test_cached_opinions_are_not_tracked_by_the_cycle_collector():
    cache = OpinionCache(1000, lambda: ("2", 7))  # a learner's version: (version, model version)

    def predict(texts):
        return [(True, {"valence": 0.5, "label": "positive", "confidence": 0.9}) for _ in texts]

    outcomes, hits, misses = cache.predict_through([f"text {i}" for i in range(500)], predict)
    assert misses == 500 and outcomes[0] == (True, {"valence": 0.5, "label": "positive",
                                                    "confidence": 0.9})
    gc.collect()
    tracked = [(key, value) for key, value in cache.lru.items.items()
               if gc.is_tracked(key) or gc.is_tracked(value)]
    assert tracked == [], f"{len(tracked)} of {len(cache.lru)} entries tracked, e.g. {tracked[0]}"
    again, hits, misses = cache.predict_through(["text 3", "new"], predict)
    assert (hits, misses) == (1, 1)
