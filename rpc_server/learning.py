"""Experts that learn while they serve: the log, the appliers, the checkpoints.

``Learning`` owns the feedback log (``rpc_server.feedback``) and one
``Learner`` per expert that learns. Teaching goes one way only:

1. ``teach`` checks the learner's declared limits (``LearnPolicy``: labels it
   may know, examples per call, backlog) and refuses a call beyond them
   (``LearnLimit``, ``LearnBacklogFull``) before anything is stored; it
   appends the examples to the log (durable before it returns) and wakes this
   server's learner;
2. every learner, on every server sharing the log, reads the rows after the
   last one it applied (woken, or every ``poll_ms``) and applies them in
   sequence order in its own thread, so opinions keep being answered by the
   server's thread pool meanwhile;
3. ``teach`` returns once this server has applied its examples, or before the
   caller's deadline with ``applied: false``, always saying how many examples
   are stored and at which ``model_version`` they will all be applied.

A learner's ``model_version`` is the sequence number of the last example it
applied: two servers at the same ``model_version`` hold the same model.
Checkpoints are written atomically every ``checkpoint_every`` updates or
``checkpoint_seconds`` seconds, and at shutdown, each one the model together
with the sequence number it was taken at (so that a server killed at any
moment restores a model and replays exactly what follows it: nothing lost,
nothing applied twice); a restarted server restores the checkpoint, starts
serving at once, and replays the log after it behind the opinions it serves
(``replaying``, ``replayed`` and ``replay_total`` in its state and in ``health()``).

Where the log and the checkpoints live (``open_feedback_log``): by default an
SQLite file and ``<state_dir>/checkpoints/<expert>.ckpt`` (one machine); with
``server: {feedback_log: postgresql://...}`` (or ``--feedback-log``, or
``$EXPERTD_FEEDBACK_LOG``) both are in PostgreSQL (``rpc_server.feedback_pg``),
shared by servers on any number of machines, which the database's
notifications wake when another server appends.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import logging
import os
import pickle
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import gevent
from gevent.event import Event
from gevent.threadpool import ThreadPool

from expertd import tracing
from expertd.experts.base import Expert
from expertd.rpc_server import call_trace
from expertd.rpc_server.errors import (ExpertdError, ExpertFailed, FeedbackLogUnavailable,
                                       InvalidDocument, LearnBacklogFull, LearnLimit, Overloaded)
from expertd.rpc_server.feedback import FeedbackLog, SQLiteFeedbackLog
from expertd.rpc_server.validation import json_type

log = logging.getLogger("expertd.learning")

#: Examples handed to ``Expert.learn`` at a time: the expert's lock is held per
#: chunk, so opinions asked meanwhile wait for at most one chunk.
APPLY_CHUNK = 4
#: After each chunk the learner sleeps this many times as long as the chunk took, so
#: that learning uses at most 1/(1+LEARN_YIELD) of a core and opinions keep their latency.
LEARN_YIELD = 1.0
#: Rows read from the log at a time.
READ_LIMIT = 512
LOG_FILE = "feedback.sqlite3"
#: Held (shared) by every server that learns from a state_dir; ``expertd state reset`` needs it alone.
IN_USE_FILE = "in-use.lock"
#: Longest a ``learn`` call waits for its examples to be applied (seconds) when
#: its caller did not say how long it waits (a stock zerorpc client sends no
#: deadline): short, so that a caller with a short timeout of its own (3 s) still
#: hears what was stored; ``applied: false`` and ``applied_at_version`` say the rest.
MAX_APPLY_WAIT = 2.0
#: Time kept back from the caller's deadline to send the answer (seconds; at most
#: a quarter of what is left): room for a busy event loop, so that stored examples
#: are acknowledged before their caller gives up.
ANSWER_MARGIN = 1.0
#: Least time a caller must have left for ``learn`` to store its examples
#: (seconds): with less, the call is refused (``Overloaded``) before storing, so
#: that examples are never stored after their caller has given up.
STORE_RESERVE = 0.1

#: Longest target (label) accepted by ``learn``, in characters.
MAX_TARGET_CHARS = 200


def target_value(doc: dict, field: str, target_type: type | None, where: str = "document") -> Any:
    """Return the example's target ``doc[field]``: present, of the right type, a short non-empty label."""
    try:
        value = doc[field]
    except KeyError:
        raise InvalidDocument(f"{where} has no target field {field!r} (the label to learn)") from None
    if target_type is not None and (not isinstance(value, target_type) or isinstance(value, bool)
                                    and target_type is not bool):
        raise InvalidDocument(f"{where} target field {field!r} must be of type "
                              f"{'string' if target_type is str else target_type.__name__}, "
                              f"got {json_type(value)}")
    if isinstance(value, str) and not value.strip():
        raise InvalidDocument(f"{where} target field {field!r} is empty")
    if isinstance(value, str) and len(value) > MAX_TARGET_CHARS:
        raise InvalidDocument(f"{where} target field {field!r} is {len(value)} characters; "
                              f"the limit is {MAX_TARGET_CHARS}")
    return value


@dataclass
class LearnPolicy:
    """The per-expert ``learn:`` settings of the experts file."""

    target: str | None = None
    checkpoint_every: int = 1000
    checkpoint_seconds: float = 60.0
    poll_ms: float = 150.0
    max_labels: int = 1000
    max_examples_per_call: int = 10_000
    max_backlog: int = 100_000

    def __post_init__(self) -> None:
        """Refuse settings that cannot work."""
        if self.target is not None and (not isinstance(self.target, str) or not self.target):
            raise ValueError(f"target must be a field name, not {self.target!r}")
        if not isinstance(self.checkpoint_every, int) or self.checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be an integer >= 1, not {self.checkpoint_every!r}")
        for name in ("max_labels", "max_examples_per_call", "max_backlog"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, not {value!r}")
        for name in ("checkpoint_seconds", "poll_ms"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"{name} must be a number > 0, not {value!r}")


def label_key(target: Any) -> str:
    """How a target is told apart from others when counting labels: its JSON text, as the log stores it."""
    return json.dumps(target, ensure_ascii=False)


def open_feedback_log(url: str | None, state_dir: Path) -> FeedbackLog:
    """The feedback log named by ``url``: PostgreSQL for ``postgresql://...``, else SQLite in ``state_dir``.

    Raises ``ValueError`` for a URL of another kind, or when the PostgreSQL
    client is not installed; ``FeedbackLogUnavailable`` when the database
    cannot be reached (its schema is created or upgraded on opening).
    """
    if not url:
        return SQLiteFeedbackLog(Path(state_dir) / LOG_FILE)
    if url.split("://", 1)[0] not in ("postgresql", "postgres"):
        raise ValueError("feedback_log must be a postgresql:// URL (or unset: SQLite in state_dir)")
    try:
        from expertd.rpc_server.feedback_pg import PostgresFeedbackLog
    except ImportError:
        raise ValueError("a postgresql:// feedback_log needs psycopg: "
                         "pip install 'expertd[postgresql]'") from None
    return PostgresFeedbackLog(url)


class FileCheckpoints:
    """Checkpoints as files, ``<state_dir>/checkpoints/<expert>.ckpt``, each written atomically."""

    def __init__(self, state_dir: Path) -> None:
        """Nothing is read or written until asked."""
        self.state_dir = Path(state_dir)

    def save_checkpoint(self, expert: str, seq: int, record: bytes) -> None:
        """Replace the expert's checkpoint with ``record`` (taken at ``seq``)."""
        path = checkpoint_path(self.state_dir, expert)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, record)

    def load_checkpoint(self, expert: str) -> bytes | None:
        """The expert's checkpoint record, or ``None``."""
        path = checkpoint_path(self.state_dir, expert)
        return path.read_bytes() if path.exists() else None


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old file or the new, never half."""
    tmp = path.with_name(f"{path.name}.tmp.{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Learner:
    """Applies one expert's examples from the log, in order, in its own thread."""

    def __init__(self, expert: Expert, feedback: FeedbackLog, log_pool: ThreadPool,
                 checkpoints: Any, policy: LearnPolicy) -> None:
        """Nothing is read until ``restore``; ``checkpoints``: a ``FileCheckpoints`` or the log."""
        self.expert = expert
        self.feedback = feedback
        self.log_pool = log_pool
        self.checkpoints = checkpoints
        self.policy = policy
        self.pool = ThreadPool(1)  # one thread: updates are applied in order
        self.applied_seq = 0
        self.checkpoint_seq = 0
        self.failed_updates = 0
        #: Examples stored but not yet applied here, as last seen (``pending`` is exact).
        self.backlog = 0
        #: The labels of every example applied or stored (as ``label_key``), for ``max_labels``.
        self.labels: set[str] = set()
        #: True from a restart until the backlog found then is applied.
        self.replaying = False
        self.replayed = 0
        self.replay_total = 0
        self._checkpointed_at = time.monotonic()
        self._wake = Event()
        self._progress = Event()
        self._poller: gevent.Greenlet | None = None
        self._stopping = False  # set at shutdown: the learner's thread stops at its next chunk

    # -- start and stop ---------------------------------------------------------

    def restore(self) -> None:
        """Restore the latest checkpoint and count the log after it (at start; the replay comes later).

        Reads no example: a restarted server serves opinions from the checkpoint
        at once, and ``start`` applies the backlog behind them.
        """
        self._restore()
        known = self.expert.state().get("known_labels")
        if isinstance(known, list):
            self.labels = {label_key(label) for label in known}
            self.labels |= self.feedback.targets_after(self.expert.name, self.applied_seq)
        else:  # an expert that does not list its labels: every label it was ever taught
            self.labels = self.feedback.targets_after(self.expert.name, 0)
        self.backlog = self.replay_total = self.feedback.pending(self.expert.name, self.applied_seq)
        self.replaying = self.replay_total > 0
        log.info("expert %s restored: checkpoint at seq %d, %d examples to replay from the log "
                 "behind the opinions served", self.expert.name, self.checkpoint_seq,
                 self.replay_total)
        if not self.replaying:
            self._rebuilt()

    def _rebuilt(self) -> None:
        self.replaying = False
        log.info("expert %s rebuilt: checkpoint at seq %d, %d examples replayed from the log, "
                 "model version %d", self.expert.name, self.checkpoint_seq, self.replayed,
                 self.applied_seq)

    def start(self) -> None:
        """Start following the log (the replay of the backlog first)."""
        self._wake.set()
        self._poller = gevent.spawn(self._follow)

    def close(self) -> None:
        """Stop following the log and write a last checkpoint (at shutdown)."""
        self._stopping = True
        if self._poller is not None:
            self._poller.kill()
        if self.applied_seq > self.checkpoint_seq:
            self.pool.spawn(self._checkpoint).get()
        self.pool.kill()

    # -- teaching ---------------------------------------------------------------

    def wake(self) -> None:
        """Read the log now (this server has just appended to it)."""
        self._wake.set()

    def admit_and_append(self, inputs: list, targets: list, deadline: float | None) -> list[int]:
        """Check the limits, then append (in the log's thread, so checks and appends take turns).

        Raises ``LearnLimit``, ``LearnBacklogFull`` or ``Overloaded`` (the caller's
        deadline is too near) before anything is stored.
        """
        name, policy = self.expert.name, self.policy
        new = {label_key(t) for t in targets} - self.labels
        if new and len(self.labels) + len(new) > policy.max_labels:
            raise LearnLimit(
                f"expert {name!r} knows {len(self.labels)} labels and may know at most "
                f"{policy.max_labels} (max_labels); this call brings {len(new)} new ones, so "
                "none of its examples was stored")
        pending = self.feedback.pending(name, self.applied_seq)
        self.backlog = pending
        if pending + len(inputs) > policy.max_backlog:
            raise LearnBacklogFull(
                f"expert {name!r} has {pending} examples stored but not yet applied and takes at "
                f"most {policy.max_backlog} (max_backlog); this call's {len(inputs)} were not "
                "stored; send them again once its backlog is lower")
        if deadline is not None and deadline - time.monotonic() < STORE_RESERVE:
            raise Overloaded(
                f"expert {name!r}: the call's deadline is too near to store its examples durably "
                f"(learn needs {STORE_RESERVE * 1000:.0f} ms); none was stored; call again with "
                "a longer timeout")
        seqs = self.feedback.append(name, list(zip(inputs, targets)))
        self.labels |= new
        self.backlog += len(seqs)
        return seqs

    def wait_applied(self, seq: int, timeout: float) -> bool:
        """Wait until the example ``seq`` is applied here; False if ``timeout`` ran out."""
        deadline = time.monotonic() + timeout
        while self.applied_seq < seq:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._progress.wait(remaining)
        return True

    def limits(self) -> dict:
        """The limits this learner declares."""
        return {"max_labels": self.policy.max_labels,
                "max_examples_per_call": self.policy.max_examples_per_call,
                "max_backlog": self.policy.max_backlog}

    def progress(self) -> dict:
        """Where it stands in the log: what ``health()`` reports (cheap, no log read)."""
        return {"model_version": self.applied_seq, "backlog": self.backlog,
                "replaying": self.replaying, "replayed": self.replayed,
                "replay_total": self.replay_total}

    def state(self) -> dict:
        """The expert's own state plus where it stands in the log and its limits."""
        return {**self.expert.state(), **self.progress(), "checkpoint_version": self.checkpoint_seq,
                "failed_updates": self.failed_updates, "limits": self.limits()}

    # -- the follower -----------------------------------------------------------

    def _follow(self) -> None:
        """Apply the log after ``applied_seq`` in slices of ``READ_LIMIT`` rows, in the learner's
        thread (this greenlet only waits, so the gevent loop answers calls meanwhile)."""
        # A log that wakes its readers (PostgreSQL's notifications) is polled only as a fallback.
        interval = getattr(self.feedback, "poll_s", None) or self.policy.poll_ms / 1000.0
        while True:
            self._wake.wait(interval)
            self._wake.clear()
            try:
                while True:
                    rows = self.log_pool.spawn(self.feedback.read_after, self.expert.name,
                                               self.applied_seq, READ_LIMIT).get()
                    if not rows:
                        self.backlog = 0
                        if self.replaying:
                            self._rebuilt()
                        break
                    # How far behind (health(), experts()): exact when the read took all there was.
                    self.backlog = len(rows) if len(rows) < READ_LIMIT else self.log_pool.spawn(
                        self.feedback.pending, self.expert.name, self.applied_seq).get()
                    self.labels.update(label_key(y) for _, _, y in rows)
                    self.pool.spawn(self._apply, rows).get()
                    progress, self._progress = self._progress, Event()
                    progress.set()
                    if self._checkpoint_due():
                        self.pool.spawn(self._checkpoint).get()
                if self._checkpoint_due():
                    self.pool.spawn(self._checkpoint).get()
            except gevent.GreenletExit:
                raise
            except FeedbackLogUnavailable as exc:  # the database is down: resume when it is back
                log.warning("expert %s: %s; serving opinions from model version %d meanwhile",
                            self.expert.name, exc, self.applied_seq)
                gevent.sleep(1.0)
            except Exception:  # a locked or lost log: try again a little later
                log.exception("expert %s: could not follow the feedback log", self.expert.name)
                gevent.sleep(1.0)

    def _apply(self, rows: Sequence[tuple[int, Any, Any]]) -> None:
        """Apply rows in order (in the learner's thread); a failing example is skipped everywhere."""
        for start in range(0, len(rows), APPLY_CHUNK):
            if self._stopping:  # shutting down: the rest is applied after the restart
                return
            chunk = rows[start:start + APPLY_CHUNK]
            began = time.perf_counter()
            # One example per call: an expert that raises part-way through a batch
            # cannot say how far it got, and retrying the batch would learn some twice.
            for seq, x, y in chunk:  # the same examples fail the same way on every server
                try:
                    self.expert.learn([x], [y])
                except Exception as exc:
                    self.failed_updates += 1
                    log.warning("expert %s could not learn example %d: %s: %s",
                                self.expert.name, seq, type(exc).__name__, str(exc)[:200])
            self.applied_seq = chunk[-1][0]
            self.backlog = max(0, self.backlog - len(chunk))
            if self.replaying:
                self.replayed = min(self.replay_total, self.replayed + len(chunk))
            # Leave the GIL and the model to opinions for as long as learning took.
            time.sleep((time.perf_counter() - began) * LEARN_YIELD)

    # -- checkpoints --------------------------------------------------------------

    def _checkpoint_due(self) -> bool:
        behind = self.applied_seq - self.checkpoint_seq
        return behind >= self.policy.checkpoint_every or (
            behind > 0 and time.monotonic() - self._checkpointed_at >= self.policy.checkpoint_seconds)

    def _checkpoint(self) -> None:
        """Save the model at ``applied_seq`` (in the learner's thread, so nothing is applied meanwhile)."""
        seq = self.applied_seq
        record = {"expert": self.expert.name, "class": type(self.expert).__qualname__,
                  "version": self.expert.version, "seq": seq,
                  "failed_updates": self.failed_updates, "model": self.expert.checkpoint()}
        self.checkpoints.save_checkpoint(self.expert.name, seq,
                                         pickle.dumps(record, protocol=pickle.HIGHEST_PROTOCOL))
        self.checkpoint_seq = seq
        self._checkpointed_at = time.monotonic()
        log.info("expert %s: checkpoint at model version %d", self.expert.name, seq)

    def _restore(self) -> None:
        data = self.checkpoints.load_checkpoint(self.expert.name)
        if data is None:
            return
        try:
            record = pickle.loads(data)
            if (record["class"], record["version"]) != (type(self.expert).__qualname__,
                                                        self.expert.version):
                log.warning("expert %s: checkpoint is of %s version %s; replaying the whole log",
                            self.expert.name, record["class"], record["version"])
                return
            self.expert.restore(record["model"])
        except Exception as exc:
            log.warning("expert %s: unreadable checkpoint (%s: %s); replaying the whole log",
                        self.expert.name, type(exc).__name__, exc)
            self.expert.load()
            return
        self.applied_seq = self.checkpoint_seq = record["seq"]
        self.failed_updates = record.get("failed_updates", 0)


class Learning:
    """Every learning expert of a server, and the feedback log they share."""

    def __init__(self, experts: dict[str, Expert], policies: dict[str, LearnPolicy],
                 state_dir: Path, feedback: FeedbackLog | None = None) -> None:
        """Open the log (SQLite under ``state_dir`` unless one is given) and make the learners.

        Checkpoints go where the log keeps them (PostgreSQL), else to files in ``state_dir``.
        """
        self.state_dir = Path(state_dir)
        self._in_use = hold_state(self.state_dir)
        self.feedback = feedback or SQLiteFeedbackLog(self.state_dir / LOG_FILE)
        checkpoints = self.feedback if hasattr(self.feedback, "save_checkpoint") \
            else FileCheckpoints(self.state_dir)
        self._woken = None
        self.log_pool = ThreadPool(1)
        self.learners: dict[str, Learner] = {}
        for name, expert in experts.items():
            if not expert.learns:
                continue
            policy = policies.get(name) or LearnPolicy()
            if policy.target:
                expert.target = policy.target
            self.learners[name] = Learner(expert, self.feedback, self.log_pool, checkpoints, policy)

    def start(self) -> None:
        """Restore every learner from its checkpoint, then follow the log (the backlog replayed behind)."""
        for learner in self.learners.values():
            learner.restore()
        for learner in self.learners.values():
            learner.start()
        # A refusal raised in the log's thread is an answer, not a crash: no traceback on stderr.
        hub = gevent.get_hub()
        if ExpertdError not in hub.NOT_ERROR:
            hub.NOT_ERROR = (*hub.NOT_ERROR, ExpertdError)
        if hasattr(self.feedback, "listen"):  # woken by other servers' appends
            # The log calls back from a thread of its own: an async watcher brings the
            # wake-up onto the gevent loop (its send() is the one thread-safe call).
            self._woken = gevent.get_hub().loop.async_()
            self._woken.start(self._wake_all)
            self.feedback.listen(self._woken.send)

    def _wake_all(self) -> None:
        for learner in self.learners.values():
            learner.wake()

    def progress(self) -> dict:
        """Each learner's ``progress`` by name (for ``health()``)."""
        return {name: learner.progress() for name, learner in self.learners.items()}

    def check_call(self, name: str, count: int) -> None:
        """Refuse (``LearnLimit``) a call of more examples than the learner ever takes at once."""
        policy = self.learners[name].policy
        if count > policy.max_examples_per_call:
            raise LearnLimit(f"expert {name!r} takes at most {policy.max_examples_per_call} examples "
                             f"per learn call (max_examples_per_call); this one carries {count}, "
                             "none was stored; split it")
        if count > policy.max_backlog:  # would never fit, however empty the backlog
            raise LearnLimit(f"expert {name!r} holds at most {policy.max_backlog} examples not yet "
                             f"applied (max_backlog); this call carries {count}, none was stored; "
                             "split it")

    def teach(self, name: str, inputs: list, targets: list, deadline: float | None = None) -> dict:
        """Store examples durably, wait until this server has applied them, say what is stored.

        Refused before anything is stored beyond the learner's limits, or when
        the caller's ``deadline`` (``time.monotonic()``) leaves too little time
        to store. Waits at most ``MAX_APPLY_WAIT`` seconds, and never past the
        deadline less a margin to send the answer: ``applied`` says whether the
        examples were applied by then; either way the ``stored`` examples are
        all applied once the learner's ``model_version`` reaches ``applied_at_version``.
        """
        learner = self.learners[name]
        applied, last = True, None
        parent = call_trace.span_context()
        if inputs:
            try:
                with tracing.span(f"learn append {name}", parent,
                                  attributes={"expertd.expert": name, "expertd.examples": len(inputs)}) \
                        if tracing.records(parent) else tracing.NO_SPAN:
                    seqs = self.log_pool.spawn(learner.admit_and_append, inputs, targets, deadline).get()
            except (LearnLimit, LearnBacklogFull, Overloaded):
                raise
            except FeedbackLogUnavailable as exc:
                log.warning("expert %s: %s; learn call refused", name, exc)
                raise FeedbackLogUnavailable(
                    f"expert {name!r}: its feedback log's database cannot be reached, so none of "
                    "this call's examples was acknowledged; send them again shortly (opinions "
                    "are still served)") from None
            except Exception as exc:
                trace = call_trace.current()
                log.exception("expert %s: could not append to the feedback log%s", name,
                              trace.log_field() if trace is not None else "")
                raise ExpertFailed(f"expert {name!r}: the examples could not be stored in the "
                                   f"feedback log ({type(exc).__name__}), so none was learned; "
                                   "the server log has the details") from None
            last = seqs[-1]
            learner.wake()
            wait = MAX_APPLY_WAIT
            if deadline is not None:
                left = deadline - time.monotonic()
                wait = min(wait, max(0.0, left - min(ANSWER_MARGIN, left / 4)))
            with tracing.span(f"learn apply {name}", parent,
                              attributes={"expertd.expert": name, "expertd.seq": last}) \
                    if tracing.records(parent) else tracing.NO_SPAN as span:
                applied = learner.wait_applied(last, wait)
                span.set(**{"expertd.applied": applied})
        return {"stored": len(inputs), "applied": applied, "applied_at_version": last,
                "state": {**learner.state(), "applied": applied}}

    def close(self) -> None:
        """Checkpoint every learner and close the log (at shutdown)."""
        for name, learner in self.learners.items():
            try:
                learner.close()
            except Exception:
                log.exception("expert %s: could not write its last checkpoint", name)
        self.log_pool.kill()
        self.feedback.close()
        if self._woken is not None:
            self._woken.stop()
        os.close(self._in_use)


def start_learning(experts: dict[str, Expert], file: Any,
                   feedback_log: str | None = None) -> Learning | None:
    """Build and start ``Learning`` for the experts that learn in an experts file (or ``None``).

    ``feedback_log`` (``--feedback-log``) overrides the file's ``server.feedback_log``.
    """
    from expertd.experts.config import ConfigError

    policies = {}
    for spec in file.experts:
        if spec.learn is not None and not experts[spec.name].learns:
            raise ConfigError(f"expert {spec.name!r} has 'learn:' settings but does not learn")
        try:
            policies[spec.name] = LearnPolicy(**dataclasses.asdict(spec.learn)) \
                if spec.learn is not None else LearnPolicy()
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"expert {spec.name!r}: bad learn settings: {exc}") from None
    if not any(expert.learns for expert in experts.values()):
        return None
    url = feedback_log or file.server.feedback_log
    try:
        feedback = open_feedback_log(url, Path(file.server.state_dir))
    except (ValueError, RuntimeError, FeedbackLogUnavailable) as exc:  # one line, no traceback
        raise ConfigError(f"server.feedback_log: {exc}") from None
    learning = Learning(experts, policies, Path(file.server.state_dir), feedback)
    learning.start()
    log.info("experts that learn: %s (feedback log and checkpoints in %s)",
             ", ".join(learning.learners), getattr(feedback, "where", learning.state_dir))
    return learning


class StateInUse(Exception):
    """A running server learns from this state_dir: it cannot be reset under it."""


def hold_state(state_dir: Path) -> int:
    """Take a shared lock on ``<state_dir>/in-use.lock`` for as long as the server runs (its fd)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(state_dir / IN_USE_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_SH)
    return fd


def learned_state(state_dir: Path, name: str, url: str | None = None) -> dict:
    """What persists for expert ``name``: examples in the feedback log and its checkpoint
    (in the PostgreSQL database ``url`` if given, else in ``state_dir``)."""
    if url:
        feedback = open_feedback_log(url, state_dir)
        try:
            has_checkpoint = feedback.load_checkpoint(name) is not None
            return {"examples": feedback.count(name), "log": feedback.where,
                    "checkpoint": f"{feedback.where} (expertd_checkpoints)" if has_checkpoint else None}
        finally:
            feedback.close()
    log_path, checkpoint = Path(state_dir) / LOG_FILE, checkpoint_path(state_dir, name)
    examples = 0
    if log_path.exists():
        feedback = SQLiteFeedbackLog(log_path)
        try:
            examples = feedback.count(name)
        finally:
            feedback.close()
    return {"examples": examples, "log": str(log_path),
            "checkpoint": str(checkpoint) if checkpoint.exists() else None}


def checkpoint_path(state_dir: Path, name: str) -> Path:
    """Where expert ``name``'s checkpoint lives."""
    return Path(state_dir) / "checkpoints" / f"{name}.ckpt"


def reset_learner(state_dir: Path, name: str, url: str | None = None) -> dict:
    """Forget what expert ``name`` learned: its examples in the feedback log and its checkpoint.

    Raises ``StateInUse`` while a server learns from ``state_dir`` (it would
    write its checkpoint back at shutdown). With a PostgreSQL log (``url``),
    servers on other machines are not seen: stop them all first. Returns what
    was removed.
    """
    state_dir = Path(state_dir)
    if url:
        feedback = open_feedback_log(url, state_dir)
        try:
            had_checkpoint = feedback.load_checkpoint(name) is not None
            removed = feedback.forget(name)
        finally:
            feedback.close()
        return {"examples": removed,
                "checkpoint": f"{feedback.where} (expertd_checkpoints)" if had_checkpoint else None}
    if not state_dir.exists():
        return {"examples": 0, "checkpoint": None}
    fd = os.open(state_dir / IN_USE_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StateInUse(f"a running expertd server learns from {state_dir}; stop it first "
                             f"(`expertd stop`), then reset") from None
        removed = 0
        if (state_dir / LOG_FILE).exists():
            feedback = SQLiteFeedbackLog(state_dir / LOG_FILE)
            try:
                removed = feedback.forget(name)
            finally:
                feedback.close()
        checkpoint = checkpoint_path(state_dir, name)
        existed = checkpoint.exists()
        checkpoint.unlink(missing_ok=True)
        return {"examples": removed, "checkpoint": str(checkpoint) if existed else None}
    finally:
        os.close(fd)
