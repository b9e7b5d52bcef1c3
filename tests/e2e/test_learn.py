"""Experts that learn while they serve: real servers, the stock zerorpc.Client, real kills."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import zerorpc

from tests.conftest import BIN, EXPERTD, ServerProcess, wait_for

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "bad_examples.json"
PROBES = ["my cat purrs on the sofa", "the dog barked at the mailman", "stock markets fell today",
          "a purring kitten", "walk the dog", ""]
CATS = ["the cat purrs", "my kitten sleeps all day", "cats chase mice", "a cat on the mat"]
DOGS = ["the dog barks", "puppies love to fetch", "walk the dog in the park", "a loyal hound"]


def config(tmp: Path, checkpoint_every: int = 1_000_000, checkpoint_seconds: float = 3600) -> Path:
    """An experts file in ``tmp`` (so its state/ is ``tmp/state``): two learners and vader."""
    path = tmp / "experts.yaml"
    path.write_text(f"""
server:
  max_text_bytes: 1000
experts:
  learner:
    expert: expertd.experts.online:OnlineTextExpert
    learn: {{checkpoint_every: {checkpoint_every}, checkpoint_seconds: {checkpoint_seconds}}}
  topic:
    expert: expertd.experts.online:OnlineTextExpert
    learn: {{target: topic}}
  vader: expertd.experts.vader:VaderExpert
""")
    return path


def labelled(texts, label, target="label"):
    return [{"text": t, target: label} for t in texts]


def opinions(client, name="learner"):
    return [client.opinion(name, {"text": t}) for t in PROBES]


def learning_state(client, name="learner"):
    return next(e for e in client.experts() if e["name"] == name)["learning"]


#: What says where a server stands in its replay, not what its model holds.
REPLAY_FIELDS = ("backlog", "replaying", "replayed", "replay_total")


def replayed_state(client, name="learner"):
    """The learner's state once a restarted server has replayed its backlog, without the replay's fields."""
    state = wait_for(lambda: (lambda s: s if not s["replaying"] else None)(learning_state(client, name)),
                     120, f"{name} to replay its backlog")
    return {k: v for k, v in state.items() if k not in REPLAY_FIELDS}


@pytest.fixture(scope="module")
def learn_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("learn")
    proc = ServerProcess(config(tmp), tmp)
    yield proc
    assert proc.stop() == 0, proc.read_log()


@pytest.fixture
def learn_client(learn_server):
    c = zerorpc.Client(learn_server.endpoint, timeout=30)
    yield c
    c.close()


def connect(server):
    return zerorpc.Client(server.endpoint, timeout=30)


# -- the interface -------------------------------------------------------------

def test_taught_examples_change_the_opinion(tmp_path):
    server = ServerProcess(config(tmp_path), tmp_path)
    client = connect(server)
    try:
        assert client.learner({"text": "my cat purrs"}) == {
            "label": None, "known_labels": [], "updates": 0}
        result = client.learn("learner", labelled(CATS, "cats") + labelled(DOGS, "dogs"))
        assert result["accepted"] == 8 and result["refused"] == []
        assert result["state"]["updates"] == 8 and result["state"]["model_version"] == 8
        cat = client.learner({"text": "my cat purrs"})
        assert cat["label"] == "cats" and cat["known_labels"] == ["cats", "dogs"]
        assert cat["updates"] == 8 and cat["probabilities"]["cats"] > 0.5
        assert client.learner({"text": "the dog barks at night"})["label"] == "dogs"
        # A correction moves the opinion: teach "purrs" as dogs until it flips.
        client.learn("learner", labelled(["purrs purrs purrs"] * 6, "dogs"))
        assert client.learner({"text": "my cat purrs"})["label"] == "dogs"
    finally:
        client.close()
        assert server.stop() == 0, server.read_log()


def test_bad_examples_are_refused_one_by_one(learn_client):
    cases = json.loads(CORPUS.read_text())["cases"]
    docs = []
    for doc, _ in cases:
        docs.append(doc)
        docs.append({"text": "a good example between bad ones", "label": "good"})
    docs.append({"text": "x" * 1001, "label": "too long"})
    before = learning_state(learn_client)["updates"]
    result = learn_client.learn("learner", docs)
    assert result["accepted"] == len(cases)
    refused = {r["index"]: r for r in result["refused"]}
    assert sorted(refused) == [2 * i for i in range(len(cases))] + [len(docs) - 1]
    for i, (_, fragment) in enumerate(cases):
        assert refused[2 * i]["name"] == "InvalidDocument"
        assert fragment in refused[2 * i]["message"], (i, refused[2 * i])
        assert refused[2 * i]["message"].startswith(f"docs[{2 * i}]")
    assert refused[len(docs) - 1]["name"] == "TextTooLong"
    assert result["state"]["updates"] == before + len(cases)


def test_learn_takes_a_list_and_names_a_learning_expert(learn_client):
    with pytest.raises(zerorpc.RemoteError) as info:
        learn_client.learn("vader", [{"text": "hi", "label": "x"}])
    assert info.value.name == "NotLearnable"
    assert "'vader' does not learn" in info.value.msg and "learner, topic" in info.value.msg
    with pytest.raises(zerorpc.RemoteError) as info:
        learn_client.learn("nobody", [])
    assert info.value.name == "UnknownExpert"
    with pytest.raises(zerorpc.RemoteError) as info:
        learn_client.learn("learner", {"text": "not a list", "label": "x"})
    assert info.value.name == "BadArguments"
    empty = learn_client.learn("learner", [])
    assert empty["accepted"] == 0 and empty["refused"] == []


def test_the_target_field_is_configurable(learn_client):
    refused = learn_client.learn("topic", labelled(["a label in the wrong field"], "x"))
    assert refused["accepted"] == 0 and "no target field 'topic'" in refused["refused"][0]["message"]
    result = learn_client.learn("topic", labelled(CATS, "pets", target="topic"))
    assert result["accepted"] == 4
    assert learn_client.topic({"text": "cat"})["label"] == "pets"


def test_experts_reports_learning_state(learn_client):
    learn_client.learn("learner", labelled(CATS, "cats") + labelled(DOGS, "dogs"))
    entries = {e["name"]: e for e in learn_client.experts()}
    assert entries["vader"]["learns"] is False and "learning" not in entries["vader"]
    learner = entries["learner"]
    assert learner["learns"] is True and learner["target"] == "label"
    state = learner["learning"]
    assert state["updates"] >= 8 and state["model_version"] >= state["updates"]
    assert 0.0 <= state["progressive_accuracy"] <= 1.0
    assert {"cats", "dogs"} <= set(state["known_labels"])
    assert entries["topic"]["target"] == "topic"


# -- nothing learned is lost ---------------------------------------------------

def test_kill_9_after_an_acknowledged_learn_loses_nothing(tmp_path):
    server = ServerProcess(config(tmp_path), tmp_path)
    client = connect(server)
    result = client.learn("learner", labelled(CATS, "cats") + labelled(DOGS, "dogs"))
    assert result["accepted"] == 8
    taught = opinions(client)
    state = learning_state(client)
    client.close()
    server.stop(signal.SIGKILL)  # no checkpoint, no goodbye
    assert not (tmp_path / "state" / "checkpoints" / "learner.ckpt").exists()

    again = ServerProcess(config(tmp_path), tmp_path)
    client = connect(again)
    try:
        assert replayed_state(client) == {k: v for k, v in state.items() if k not in REPLAY_FIELDS}
        assert opinions(client) == taught
        assert "8 examples replayed from the log" in again.read_log()
    finally:
        client.close()
        assert again.stop() == 0, again.read_log()


def test_restart_rebuilds_from_the_checkpoint_plus_the_log_after_it(tmp_path):
    server = ServerProcess(config(tmp_path, checkpoint_every=5), tmp_path)
    client = connect(server)
    client.learn("learner", labelled(CATS * 3, "cats"))  # 12 examples: due a checkpoint
    deadline = time.monotonic() + 60
    while learning_state(client)["checkpoint_version"] < 12:
        assert time.monotonic() < deadline, server.read_log()
        time.sleep(0.1)
    client.learn("learner", labelled(DOGS[:3], "dogs"))  # 3 more, only in the log
    taught, state = opinions(client), learning_state(client)
    client.close()
    server.stop(signal.SIGKILL)

    again = ServerProcess(config(tmp_path, checkpoint_every=5), tmp_path)
    client = connect(again)
    try:
        assert replayed_state(client)["updates"] == state["updates"] == 15
        assert "checkpoint at seq 12, 3 examples replayed from the log" in again.read_log()
        assert opinions(client) == taught
    finally:
        client.close()
        assert again.stop() == 0, again.read_log()
    assert "checkpoint at model version 15" in again.read_log()  # written at shutdown


# -- every copy in step --------------------------------------------------------

def test_two_servers_sharing_one_log_give_identical_opinions(tmp_path):
    path = config(tmp_path)
    first, second = ServerProcess(path, tmp_path), ServerProcess(path, tmp_path)
    a, b = connect(first), connect(second)
    try:
        assert opinions(a) == opinions(b)
        a.learn("learner", labelled(CATS, "cats"))
        b.learn("learner", labelled(DOGS, "dogs"))  # taught through either server
        a.learn("learner", labelled(["markets fell", "stocks rose"], "finance"))
        version = learning_state(a)["model_version"]
        deadline = time.monotonic() + 30  # the README promises ~0.2 s; be generous here
        while learning_state(b)["model_version"] < version:
            assert time.monotonic() < deadline, second.read_log()
            time.sleep(0.05)
        assert learning_state(a) == learning_state(b)
        assert learning_state(a)["updates"] == 10
        assert opinions(a) == opinions(b)
        assert a.learner({"text": "stocks fell"})["label"] == "finance"
    finally:
        a.close()
        b.close()
        assert first.stop() == 0, first.read_log()
        assert second.stop() == 0, second.read_log()


# -- the shell -----------------------------------------------------------------

def shell_env(server):
    env = dict(os.environ)
    env["EXPERTD_ENDPOINT"] = server.endpoint
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def test_expertd_learn_accounts_for_every_line(learn_server, learn_client):
    before = learning_state(learn_client, "topic")["updates"]
    lines = [json.dumps({"text": "football match tonight", "topic": "sport"}),
             "this is not json",
             "",
             json.dumps({"text": "election results", "topic": "politics"}),
             json.dumps({"text": "no topic"}),
             json.dumps({"text": "tennis final", "topic": "sport"})]
    done = subprocess.run([EXPERTD, "learn", "topic"], input="\n".join(lines) + "\n",
                          capture_output=True, text=True, env=shell_env(learn_server), timeout=60)
    assert done.returncode == 1, done.stderr
    summary = json.loads(done.stdout)
    assert summary["lines"] == 6 and summary["accepted"] == 3
    assert summary["refused_lines"] == [2, 5]
    assert "line 2: not valid JSON" in done.stderr
    assert "line 5: InvalidDocument: line 5 has no target field 'topic'" in done.stderr
    assert summary["state"]["updates"] == before + 3
    assert learn_client.topic({"text": "football"})["label"] == "sport"


def test_expertd_learn_refuses_lines_msgpack_cannot_carry(learn_server, learn_client):
    lines = [json.dumps({"text": "football match tonight", "topic": "sport"}),
             '{"text": "huge", "topic": "sport", "n": 123456789012345678901234567890}',
             '{"text": "half an emoji \\ud83d", "topic": "sport"}',
             '{"text": "not a number", "topic": "sport", "x": NaN}',
             json.dumps({"text": "tennis final", "topic": "sport"})]
    done = subprocess.run([EXPERTD, "learn", "topic"], input="\n".join(lines) + "\n",
                          capture_output=True, text=True, env=shell_env(learn_server), timeout=60)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    summary = json.loads(done.stdout)
    assert summary["accepted"] == 2 and summary["refused_lines"] == [2, 3, 4], summary
    assert "line 2: cannot be sent: it holds an integer beyond 64 bits" in done.stderr


def test_expertd_learn_streams_before_its_input_ends(learn_server, learn_client):
    stage = subprocess.Popen([EXPERTD, "learn", "topic"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=shell_env(learn_server))
    try:
        stage.stdin.write(json.dumps({"text": "quantum entanglement lab", "topic": "physics"}) + "\n")
        stage.stdin.flush()
        deadline = time.monotonic() + 30
        while "physics" not in learning_state(learn_client, "topic")["known_labels"]:
            assert time.monotonic() < deadline and stage.poll() is None
            time.sleep(0.05)
        stage.stdin.write(json.dumps({"text": "the orbit of a comet", "topic": "physics"}) + "\n")
    finally:
        out, err = stage.communicate(timeout=60)
    assert stage.returncode == 0, err
    assert json.loads(out)["accepted"] == 2


def test_expertd_learn_to_an_expert_that_does_not_learn(learn_server):
    done = subprocess.run([EXPERTD, "learn", "vader"], input='{"text": "x", "label": "y"}\n',
                          capture_output=True, text=True, env=shell_env(learn_server), timeout=60)
    assert done.returncode == 2
    assert "NotLearnable: expert 'vader' does not learn" in done.stderr


def test_an_unreadable_checkpoint_means_replaying_the_whole_log(tmp_path):
    server = ServerProcess(config(tmp_path), tmp_path)
    client = connect(server)
    client.learn("learner", labelled(CATS, "cats") + labelled(DOGS, "dogs"))
    taught, state = opinions(client), learning_state(client)
    client.close()
    assert server.stop() == 0  # writes the checkpoint
    checkpoint = tmp_path / "state" / "checkpoints" / "learner.ckpt"
    checkpoint.write_bytes(b"not a checkpoint")

    again = ServerProcess(config(tmp_path), tmp_path)
    client = connect(again)
    try:
        assert "unreadable checkpoint" in again.read_log()
        assert replayed_state(client)["updates"] == state["updates"]
        assert "checkpoint at seq 0, 8 examples replayed from the log" in again.read_log()
        assert opinions(client) == taught
    finally:
        client.close()
        assert again.stop() == 0, again.read_log()


def test_learn_answers_by_the_callers_deadline_with_applied_false(tmp_path):
    import msgpack
    import zmq

    from expertd.spec import TIMEOUT_HEADER

    path = tmp_path / "experts.yaml"
    path.write_text("experts:\n  slow:\n    expert: tests.hostile:SlowLearner\n"
                    "    options: {learn_delay_s: 0.5}\n")
    server = ServerProcess(path, tmp_path)
    context = zmq.Context()
    peer = context.socket(zmq.DEALER)
    peer.setsockopt(zmq.LINGER, 0)
    peer.connect(server.endpoint)
    try:
        docs = labelled(CATS * 5, "cat")  # 20 examples: 5 chunks of 0.5 s, plus the learner's yield
        header = {"message_id": "learn-1", "v": 3, TIMEOUT_HEADER: 1500}
        peer.send_multipart([b"", msgpack.packb([header, "learn", ["slow", docs]])])
        assert peer.poll(20_000)
        _, name, args = msgpack.unpackb(peer.recv_multipart()[-1], raw=False)
        assert name == "OK", args
        answer = args[0]
        assert answer["accepted"] == 20 and answer["state"]["applied"] is False
        assert answer["state"]["updates"] < 20
        client = connect(server)
        try:  # stored, so applied soon after
            assert wait_for(lambda: learning_state(client, "slow")["updates"] == 20, 30)
            # A stock client (no deadline) hears within 2 s what is stored, applied or not.
            done = client.learn("slow", labelled(DOGS, "dog"))
            assert done["stored"] == 4 and done["applied_at_version"] == 24, done
            assert wait_for(lambda: learning_state(client, "slow")["updates"] == 24, 30)
        finally:
            client.close()
    finally:
        peer.close()
        context.term()
        assert server.stop() == 0, server.read_log()


# -- learning is bounded ---------------------------------------------------------

def bounded_config(tmp: Path, expert: str = "expertd.experts.online:OnlineTextExpert",
                   options: str = "{}", learn: str = "{}") -> Path:
    """An experts file with one learner, ``learner``, of the given kind, options and learn: block."""
    path = tmp / "experts.yaml"
    path.write_text(f"experts:\n  learner:\n    expert: {expert}\n    options: {options}\n"
                    f"    learn: {learn}\n")
    return path


def stored_rows(tmp: Path, name: str = "learner") -> list:
    """Every example of ``name`` in the feedback log under ``tmp/state``, read by a second reader."""
    from expertd.rpc_server.feedback import SQLiteFeedbackLog

    log = SQLiteFeedbackLog(tmp / "state" / "feedback.sqlite3")
    try:
        return log.read_after(name, 0, limit=1_000_000)
    finally:
        log.close()


def test_a_call_beyond_the_learners_limits_is_refused_whole_and_nothing_is_stored(tmp_path):
    path = bounded_config(tmp_path, learn="{max_labels: 5, max_examples_per_call: 20}")
    server = ServerProcess(path, tmp_path)
    client = connect(server)
    try:
        taught = client.learn("learner", labelled(CATS, "cats") + labelled(DOGS, "dogs"))
        assert taught["stored"] == 8 and taught["accepted"] == 8
        assert taught["state"]["limits"] == {"max_labels": 5, "max_examples_per_call": 20,
                                             "max_backlog": 100_000}
        # 100 distinct labels at once (the 100,000, scaled down): refused whole.
        with pytest.raises(zerorpc.RemoteError) as info:
            client.learn("learner", [{"text": f"text {i}", "label": f"label {i}"} for i in range(19)])
        assert info.value.name == "LearnLimit"
        assert "max_labels" in info.value.msg and "19 new ones" in info.value.msg
        # One call over the limit with known labels in it too: refused whole, not in part.
        mixed = labelled(CATS[:1], "cats") + labelled(["a", "b", "c", "d"], "new") + \
            [{"text": f"t{i}", "label": f"l{i}"} for i in range(3)]
        with pytest.raises(zerorpc.RemoteError) as info:
            client.learn("learner", mixed)
        assert info.value.name == "LearnLimit" and "4 new ones" in info.value.msg
        with pytest.raises(zerorpc.RemoteError) as info:
            client.learn("learner", labelled(CATS * 6, "cats"))  # 24 examples
        assert info.value.name == "LearnLimit" and "max_examples_per_call" in info.value.msg
        assert "24" in info.value.msg
        lines = "".join(json.dumps({"text": f"cat {i}", "label": "cats"}) + "\n" for i in range(25))
        done = subprocess.run([EXPERTD, "learn", "learner", "--batch-size", "25"], input=lines,
                              capture_output=True, text=True, env=shell_env(server), timeout=60)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert "LearnLimit: expert 'learner' takes at most 20 examples per learn call" in done.stderr
        assert "lines 1-25 were not learned (nothing of them was stored)" in done.stderr
        state = learning_state(client)
        assert state["updates"] == 8 and state["model_version"] == 8 and state["backlog"] == 0
        # Up to the limit is fine: three new labels make five.
        fine = client.learn("learner", labelled(["x"], "a") + labelled(["y"], "b") + labelled(["z"], "c"))
        assert fine["stored"] == 3 and fine["applied"] is True
    finally:
        client.close()
        server.stop(signal.SIGKILL)
    rows = stored_rows(tmp_path)
    assert len(rows) == 11 and {y for _, _, y in rows} == {"cats", "dogs", "a", "b", "c"}
    again = ServerProcess(path, tmp_path)
    client = connect(again)
    try:  # after a restart: the refused calls left nothing, and the limit still holds
        state = replayed_state(client)
        assert state["updates"] == 11
        assert sorted(state["known_labels"]) == ["a", "b", "c", "cats", "dogs"]
        with pytest.raises(zerorpc.RemoteError) as info:
            client.learn("learner", labelled(["one more"], "f"))
        assert info.value.name == "LearnLimit"
    finally:
        client.close()
        assert again.stop() == 0, again.read_log()
    assert len(stored_rows(tmp_path)) == 11


def test_a_restarted_server_serves_at_once_and_replays_its_backlog_behind(tmp_path):
    from expertd.rpc_server.feedback import SQLiteFeedbackLog

    path = bounded_config(tmp_path, "tests.hostile:SlowLearner", "{learn_delay_s: 0.05}")
    first = ServerProcess(path, tmp_path)
    writer = SQLiteFeedbackLog(tmp_path / "state" / "feedback.sqlite3")  # a second server's appends
    writer.append("learner", [(f"{t} {i}", label) for i in range(250)
                              for t, label in (("the cat purrs", "cats"), ("the dog barks", "dogs"))])
    writer.close()
    client = connect(first)
    wait_for(lambda: learning_state(client)["model_version"] > 0, 60, "the first server to learn")
    client.close()
    first.stop(signal.SIGKILL)  # mid-way through 500 slow examples, no checkpoint

    again = ServerProcess(path, tmp_path)
    client = zerorpc.Client(again.endpoint, timeout=10)
    try:
        # Opinions are answered while the backlog is replayed (about 100 ms an example).
        assert "label" in client.opinion("learner", {"text": "a cat"})
        health = client.health()["learning"]["learner"]
        assert health["replaying"] is True
        assert 0 < health["replay_total"] <= 500 and health["replayed"] < health["replay_total"]
        assert health["backlog"] > 0
        state = learning_state(client)
        assert state["replaying"] is True and state["replay_total"] == health["replay_total"]
        progress = wait_for(lambda: (lambda h: h if h["replayed"] > health["replayed"] + 4 else None)(
            client.health()["learning"]["learner"]), 120, "the replay to progress")
        assert progress["model_version"] > health["model_version"]
        assert progress["backlog"] < health["backlog"]
        assert "examples to replay from the log behind the opinions served" in again.read_log()
    finally:
        client.close()
        assert again.stop() == 0, again.read_log()  # does not wait for the whole replay


def test_a_learn_call_with_a_short_deadline_is_acknowledged_or_stores_nothing(tmp_path):
    import msgpack
    import zmq

    from expertd.spec import TIMEOUT_HEADER

    path = bounded_config(tmp_path, "tests.hostile:SlowLearner", "{learn_delay_s: 0.2}")
    server = ServerProcess(path, tmp_path)
    context = zmq.Context()
    peer = context.socket(zmq.DEALER)
    peer.setsockopt(zmq.LINGER, 0)
    peer.connect(server.endpoint)

    def learn(text, timeout_ms):
        """One learn call that gives up at its deadline: its answer, its error name, or None."""
        header = {"message_id": f"learn-{text}", "v": 3, TIMEOUT_HEADER: timeout_ms}
        began = time.monotonic()
        peer.send_multipart([b"", msgpack.packb([header, "learn", ["learner", [
            {"text": text, "label": "cats"}]]])])
        while True:
            left = began + timeout_ms / 1000 - time.monotonic()
            if left <= 0 or not peer.poll(left * 1000):
                return None  # the caller gives up
            reply, name, args = msgpack.unpackb(peer.recv_multipart()[-1], raw=False)
            if reply.get("response_to") != header["message_id"] or name == "_zpc_hb":
                continue  # a late answer to a call given up on, or a heartbeat
            return args[0]  # OK: the answer; ERR: [name, message, traceback]

    try:
        from expertd.rpc_server.feedback import SQLiteFeedbackLog

        writer = SQLiteFeedbackLog(tmp_path / "state" / "feedback.sqlite3")  # a backlog of 40
        writer.append("learner", [(f"backlog {i}", "dogs") for i in range(40)])
        writer.close()
        acknowledged, applied, refused, unanswered = [], [], [], []
        for i in range(6):  # each waits behind the backlog: answered applied=false in time
            answer = learn(f"slow {i}", 3000)
            if isinstance(answer, dict):
                assert answer["stored"] == 1 and answer["accepted"] == 1
                assert answer["applied"] is False or answer["applied_at_version"] <= \
                    answer["state"]["model_version"]
                acknowledged.append((f"slow {i}", answer["applied_at_version"]))
                applied.append(answer["applied"])
            else:
                (refused if answer == "Overloaded" else unanswered).append((i, answer))
        assert len(acknowledged) >= 4, (acknowledged, refused, unanswered)
        for i in range(5):  # too short to store durably: refused before storing
            assert learn(f"hopeless {i}", 20) in ("Overloaded", None)
        rows = [(x, seq) for seq, x, _ in stored_rows(tmp_path) if not x.startswith("backlog")]
        assert rows == acknowledged, (rows, refused, unanswered)
        assert False in applied  # answered before the deadline, not yet applied
        client = connect(server)
        try:  # the acknowledged examples are applied once model_version reaches their version
            last = acknowledged[-1][1]
            wait_for(lambda: learning_state(client)["model_version"] >= last, 60, "the backlog")
            assert learning_state(client)["updates"] == 40 + len(acknowledged)
        finally:
            client.close()
    finally:
        peer.close()
        context.term()
        assert server.stop() == 0, server.read_log()


def test_expertd_learn_waits_for_a_learner_that_is_behind(tmp_path):
    path = bounded_config(tmp_path, "tests.hostile:SlowLearner", "{learn_delay_s: 0.25}",
                          "{max_backlog: 4, max_examples_per_call: 4}")
    server = ServerProcess(path, tmp_path)
    try:
        client = connect(server)
        with pytest.raises(zerorpc.RemoteError) as info:  # never fits: refused for good
            client.learn("learner", labelled(CATS + DOGS, "pets")[:5])
        assert info.value.name == "LearnLimit"
        client.close()
        from expertd.rpc_server.feedback import SQLiteFeedbackLog

        writer = SQLiteFeedbackLog(tmp_path / "state" / "feedback.sqlite3")  # another server's 4
        writer.append("learner", [(f"dog {i}", "dogs") for i in range(4)])  # about 4 s to apply
        writer.close()
        lines = "".join(json.dumps({"text": f"cat {i}", "label": "cats"}) + "\n" for i in range(6))
        done = subprocess.run([EXPERTD, "learn", "learner", "--batch-size", "3"], input=lines,
                              capture_output=True, text=True, env=shell_env(server), timeout=120)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["accepted"] == 6
        assert "call learn expert=learner items=3 latency_ms" in server.read_log()
        assert "outcome=LearnBacklogFull" in server.read_log()  # it was full, and waited for
        assert "Traceback" not in server.read_log()  # refusals are answers, not crashes
        assert len(stored_rows(tmp_path)) == 10
    finally:
        assert server.stop() == 0, server.read_log()


def test_a_carried_learner_opinion_is_checked_before_a_chain_reuses_it(tmp_path):
    # A chain that needs the learner: a forged learner opinion a document carries (a
    # probability of 1e308, a label it was never taught the shape of) fails the learner's
    # opinion_schema, is recomputed and named under recomputed; a valid one is reused.
    path = tmp_path / "experts.yaml"
    path.write_text("""
experts:
  learner: expertd.experts.online:OnlineTextExpert
  on_learner:
    expert: tests.chain_experts:Combine
    needs: [learner]
""")
    server = ServerProcess(path, tmp_path)
    client = connect(server)
    try:
        client.learn("learner", labelled(CATS, "cats") + labelled(DOGS, "dogs"))
        text = "my cat purrs"
        fresh = wait_for(lambda: (lambda o: o if o["updates"] == 8 else None)(
            client.learner({"text": text})), what="the examples applied")
        forged = [
            dict(fresh, probabilities={"cats": 1e308, "dogs": 0.0}),
            dict(fresh, label=None),
            dict(fresh, updates=-1),
            {"label": "cats"},
        ]
        for carried in forged:
            answer = client.opinions({"text": text, "opinions": {"learner": carried}},
                                     ["on_learner"])
            assert "learner" in answer.get("recomputed", {}), (carried, answer)
            assert answer["opinions"]["learner"] == fresh, answer
            assert answer["opinions"]["on_learner"]["got"]["learner"] == fresh, answer
        answer = client.opinions({"text": text, "opinions": {"learner": fresh}}, ["on_learner"])
        assert "recomputed" not in answer, answer
        assert answer["opinions"]["on_learner"]["got"]["learner"] == fresh
    finally:
        client.close()
        assert server.stop() == 0, server.read_log()


def test_the_client_asks_a_learn_refused_with_learner_backlog_full_again(tmp_path):
    # LearnBacklogFull is answered before anything is stored (retry.refused_before_running):
    # ExpertsClient asks the learn call again, with backoff, and it is stored once, when
    # the learner has caught up.
    from expertd.clients.client import ExpertsClient

    path = bounded_config(tmp_path, "tests.hostile:SlowLearner", "{learn_delay_s: 0.25}",
                          "{max_backlog: 4, max_examples_per_call: 4}")
    server = ServerProcess(path, tmp_path)
    client = ExpertsClient(server.endpoint, retries=10, backoff=0.3)
    try:
        from expertd.rpc_server.feedback import SQLiteFeedbackLog

        writer = SQLiteFeedbackLog(tmp_path / "state" / "feedback.sqlite3")  # another server's 4
        writer.append("learner", [(f"dog {i}", "dogs") for i in range(4)])  # about 1 s to apply
        writer.close()
        # 4 more fit only once all 4 are applied: refused (stored nothing) until then.
        result = client.call("learn", "learner", labelled(CATS, "cats"))
        assert result["accepted"] == 4 and result["stored"] == 4, result
        log = server.read_log()
        assert "outcome=LearnBacklogFull" in log, log[-3000:]  # refused first, then asked again
        assert "Traceback" not in log, log[-3000:]  # a refusal is the caller's answer, not a crash
        assert [x for _, x, _ in stored_rows(tmp_path)] == [f"dog {i}" for i in range(4)] + CATS
    finally:
        client.close()
        assert server.stop() == 0, server.read_log()


def test_a_stock_client_with_a_short_timeout_hears_what_was_stored(tmp_path):
    # A stock zerorpc client sends no deadline. With a learner slower than the caller's own
    # 3 s timeout (1 s per example here), learn answers what it stored (applied: false,
    # applied_at_version) before the caller gives up: never stored-but-unacknowledged.
    path = bounded_config(tmp_path, "tests.hostile:SlowLearner", "{learn_delay_s: 1.0}")
    server = ServerProcess(path, tmp_path)
    client = zerorpc.Client(server.endpoint, timeout=3)
    try:
        done = client.learn("learner", labelled(CATS, "cats"))
        assert done["stored"] == 4 and done["applied"] is False, done
        assert [x for _, x, _ in stored_rows(tmp_path)] == CATS
    finally:
        client.close()
        assert server.stop() == 0, server.read_log()
