"""Changing one expert's versions on a running server: load, unload, promote, roll back.

The admin methods (``expert_load`` ... in ``protocol.json``, ``admin: true``)
land on one worker. That worker does the change itself first (a load runs in a
thread, off the loop; one that raises is refused with ``VersionRefused`` and
nothing changes), then writes what every worker should serve to
``<state_dir>/versions.json`` (under a lock, replaced atomically) and signals
its supervisor (``FANOUT_SIGNAL``), which passes the signal to every worker;
each then reads the file and does the same (``converge``). A worker that
starts later (a restart, a rolling reload) reads the file before it serves, so
the live changes stay until the file is removed.

A switch of the default version (promote, rollback) is one assignment on the
worker's loop, between two calls: a call is answered wholly by the old default
or wholly by the new one. A version that is unloaded stops taking calls at
once; its batcher is closed once the calls it already queued are answered.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import gevent
from gevent.lock import RLock

from expertd.experts.versions import DEFAULT_LABEL, numbered_folders, sticky_problem
from expertd.rpc_server import collector
from expertd.rpc_server.errors import NotAllowed, UnknownExpert, VersionRefused
from expertd.rpc_server.logsafe import shown
from expertd.rpc_server.supervisor import FANOUT_SIGNAL
from expertd.rpc_server.versions import Canary, VersionSet

log = logging.getLogger("expertd.versions")

STATE_FILE = "versions.json"
#: How long an unloaded version's batcher may take to answer what it had queued.
CLOSE_AFTER_S = 30.0


class LiveVersions:
    """The versions of every versioned expert of one server process, changed live."""

    def __init__(self, sets: dict[str, VersionSet], load_version: Callable[[str, str, Path], Any],
                 make_batcher: Callable[[str, Any], Any], on_switch: Callable[[str], None],
                 state_dir: Path, supervisor_pid: int | None, allowed: bool) -> None:
        """``load_version(name, version, folder)`` builds and loads one version (in a thread: it
        blocks); ``make_batcher(name, expert)`` makes its batcher; ``on_switch(name)`` is told
        after the default changed. ``allowed``: the server binds locally or checks CURVE keys."""
        self.sets = sets
        self._load_version = load_version
        self._make_batcher = make_batcher
        self._on_switch = on_switch
        self.state_path = Path(state_dir) / STATE_FILE
        self._supervisor_pid = supervisor_pid
        self.allowed = allowed
        self._lock = RLock()

    # -- the admin methods --------------------------------------------------------------

    def load(self, name: Any, version: Any) -> dict:
        """Load ``version`` of ``name`` beside the served ones (``VersionRefused`` if it fails)."""
        versions, version = self._checked(name, version, number=True)
        with self._lock:
            self._load(versions, version, raise_errors=True)
            return self._changed(versions)

    def unload(self, name: Any, version: Any) -> dict:
        """Stop serving ``version`` of ``name`` (not its default)."""
        versions, version = self._checked(name, version)
        with self._lock:
            self._unload(versions, versions.resolve_loaded(version), raise_errors=True)
            return self._changed(versions)

    def promote(self, name: Any, version: Any) -> dict:
        """Make ``version`` the one unnamed calls get; the old default is kept for ``rollback``."""
        versions, version = self._checked(name, version)
        with self._lock:
            try:
                target = versions.resolve(version)
            except UnknownExpert as exc:
                raise VersionRefused(f"{exc}; load it first") from None
            if target != versions.default:
                versions.history.append(versions.default)
                self._switch(versions, target)
            return self._changed(versions)

    def set_policy(self, name: Any, policy: Any) -> dict:
        """Set ``{"shadow": VERSION | null, "canary": {version, share, sticky} | null}``; a key
        left out keeps its value."""
        versions, _ = self._checked(name, None)
        if not isinstance(policy, dict) or set(policy) - {"shadow", "canary"}:
            raise VersionRefused('the policy must be an object {"shadow": VERSION or null, '
                                 '"canary": {"version", "share", "sticky"} or null}')
        with self._lock:
            shadow, canary = versions.shadow, versions.canary
            if "shadow" in policy:
                shadow = None if policy["shadow"] is None else versions.resolve_loaded(
                    str(policy["shadow"]))
            if "canary" in policy:
                canary = None if policy["canary"] is None else _canary(versions, policy["canary"])
            versions.shadow, versions.canary = shadow, canary
            log.info("expert %s: policy %s", versions.name, versions.policy())
            return self._changed(versions)

    def rollback(self, name: Any) -> dict:
        """Make the default the one before the last ``promote`` again."""
        versions, _ = self._checked(name, None)
        with self._lock:
            if not versions.history:
                raise VersionRefused(f"expert {versions.name!r} has no promote to roll back "
                                     f"(default {versions.default})")
            previous = versions.history[-1]
            if previous not in versions.experts:
                raise VersionRefused(f"expert {versions.name!r}: version {previous}, the default "
                                     f"before the last promote, is not served any more; load it "
                                     f"first")
            versions.history.pop()
            self._switch(versions, previous)
            return self._changed(versions)

    # -- every worker ----------------------------------------------------------------------

    def converge(self) -> None:
        """Serve what ``versions.json`` says (each failure logged, the rest still done)."""
        wanted = self.read_state()
        with self._lock:
            for name, state in wanted.items():
                versions = self.sets.get(name)
                if versions is None or not isinstance(state, dict):
                    continue
                for version in state.get("versions", []):
                    if version not in versions.experts and version not in versions.members:
                        self._load(versions, str(version), raise_errors=False)
                labels = state.get("labels")
                if isinstance(labels, dict):
                    versions.labels = {str(k): str(v) for k, v in labels.items()}
                history = state.get("history")
                if isinstance(history, list):
                    versions.history = [str(v) for v in history]
                default = str(state.get("default", versions.default))
                if default in versions.experts and default != versions.default:
                    self._switch(versions, default)
                policy = state.get("policy")
                if isinstance(policy, dict):
                    shadow = policy.get("shadow")
                    versions.shadow = str(shadow) if shadow is not None else None
                    try:
                        versions.canary = None if policy.get("canary") is None else _canary(
                            versions, policy["canary"])
                    except VersionRefused as exc:
                        log.error("expert %s: canary not applied: %s", name, exc)
                for version in list(versions.experts):
                    if version not in state.get("versions", []) and version != versions.default:
                        self._unload(versions, version, raise_errors=False)

    def read_state(self) -> dict:
        """What ``versions.json`` says each expert should serve (``{}`` if there is none)."""
        try:
            data = json.loads(self.state_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.error("cannot read %s (%s); serving the versions as they are", self.state_path, exc)
            return {}
        experts = data.get("experts") if isinstance(data, dict) else None
        return experts if isinstance(experts, dict) else {}

    def fanout(self) -> None:
        """Ask the supervisor to make every worker read the state (nothing to do alone)."""
        if self._supervisor_pid:
            try:
                os.kill(self._supervisor_pid, FANOUT_SIGNAL)
            except ProcessLookupError:
                log.warning("supervisor %d is gone; the other workers keep their versions",
                            self._supervisor_pid)

    def watch(self, name: str, every_s: float) -> None:
        """Forever: load and promote each new highest numbered folder of ``name``'s versions
        folder (one that fails to load is logged and tried again once it changes)."""
        versions = self.sets[name]
        failed: dict[str, float] = {}
        while True:
            gevent.sleep(every_s)
            try:
                found = numbered_folders(versions.root)
            except OSError as exc:
                log.warning("expert %s: cannot list %s: %s", name, versions.root, exc)
                continue
            numbers = [int(v) for v in versions.experts if v.isdigit()]
            newest = max(found, default=None)
            if newest is None or (numbers and newest <= max(numbers)):
                continue
            version = str(newest)
            stamp = _stamp(found[newest])
            if failed.get(version) == stamp:
                continue
            try:
                with self._lock:  # the experts file asked for it: no admin check
                    self._load(versions, version, raise_errors=True)
                    if version != versions.default:
                        versions.history.append(versions.default)
                        self._switch(versions, version)
                    self._changed(versions)
            except VersionRefused:
                failed[version] = stamp  # logged by _load; tried again once the folder changes
            except Exception:
                log.exception("expert %s: watching %s failed", name, versions.root)

    # -- plumbing --------------------------------------------------------------------------

    def _checked(self, name: Any, version: Any, number: bool = False) -> tuple[VersionSet, str | None]:
        if not self.allowed:
            raise NotAllowed("admin methods are answered only by a server that binds a local "
                             "endpoint or checks CURVE keys")
        if not isinstance(name, str):
            raise VersionRefused(f"the expert name must be a string, got {type(name).__name__}")
        versions = self.sets.get(name)
        if versions is None:
            raise VersionRefused(f"expert {shown(name)!r} has no versions on this server (its "
                                 f"experts-file entry needs versions:; versioned: "
                                 f"{', '.join(self.sets) or 'none'})")
        if version is None:
            return versions, None
        if isinstance(version, int) and not isinstance(version, bool):
            version = str(version)
        if not isinstance(version, str) or not version:
            raise VersionRefused(f"the version must be a number or a label, got {shown(version)!r}")
        if number:
            if not version.isdigit() or not version.isascii():
                raise VersionRefused(f"the version to load must be a number (a folder under the "
                                     f"expert's versions folder), got {shown(version)!r}")
            version = str(int(version))
        return versions, version

    def _load(self, versions: VersionSet, version: str, raise_errors: bool) -> None:
        if version in versions.experts:
            return
        folder = numbered_folders(versions.root).get(int(version)) if version.isdigit() else None
        problem = None
        if folder is None:
            problem = f"has no folder {version} in its versions folder"
        else:
            try:
                expert = gevent.get_hub().threadpool.apply(
                    self._load_version, (versions.name, version, folder))
            except Exception as exc:  # the version's own load: refused, the rest untouched
                problem = f"failed to load: {type(exc).__name__}: {shown(str(exc), 300)}"
        if problem is not None:
            message = (f"expert {versions.name!r} version {version} {problem}; still serving "
                       f"{versions.served_text()}")
            log.error("%s", message)
            if raise_errors:
                raise VersionRefused(message)
            return
        versions.batchers[version] = self._make_batcher(versions.name, expert)
        versions.experts = {v: versions.experts.get(v, expert)
                            for v in sorted({*versions.experts, version}, key=_order)}
        collector.freeze_loaded()  # the new model's objects too (rpc_server/collector.py)
        log.info("expert %s: version %s loaded; serving %s", versions.name, version,
                 versions.served_text())

    def _unload(self, versions: VersionSet, version: str, raise_errors: bool) -> None:
        if version in versions.members:
            if raise_errors:
                raise VersionRefused(f"expert {versions.name!r}: {version} is another expert of "
                                     f"this server (its shadow in the experts file); it stays")
            return
        if version == versions.default:
            if raise_errors:
                raise VersionRefused(f"expert {versions.name!r}: version {version} is the default; "
                                     f"promote another version first")
            return
        if versions.shadow == version:
            versions.shadow = None
        if versions.canary is not None and versions.canary.version == version:
            versions.canary = None
        versions.experts = {v: e for v, e in versions.experts.items() if v != version}
        batcher = versions.batchers.pop(version)
        versions.history = [v for v in versions.history if v != version]
        gevent.spawn(_close_when_idle, batcher)
        collector.thaw()  # its model's objects were frozen: let the collector free their cycles
        log.info("expert %s: version %s unloaded; serving %s", versions.name, version,
                 versions.served_text())

    def _switch(self, versions: VersionSet, version: str) -> None:
        if versions.shadow == version:  # promoted: it answers now, nothing left to shadow
            versions.shadow = None
        if versions.canary is not None and versions.canary.version == version:
            versions.canary = None
        versions.default = version
        if DEFAULT_LABEL in versions.labels:
            versions.labels[DEFAULT_LABEL] = version
        self._on_switch(versions.name)
        log.info("expert %s: version %s is the default now", versions.name, version)

    def _changed(self, versions: VersionSet) -> dict:
        """Write the state, tell the other workers, and answer what is served now."""
        self._write(versions)
        self.fanout()
        return versions.summary()

    def _write(self, versions: VersionSet) -> None:
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.state_path.with_suffix(".lock")
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            state = self.read_state()
            state[versions.name] = {"versions": list(versions.experts), "default": versions.default,
                                    "labels": dict(versions.labels), "history": list(versions.history),
                                    "policy": versions.policy()}
            fd, tmp = tempfile.mkstemp(dir=self.state_path.parent, prefix=".versions.")
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump({"experts": state}, out, indent=1)
            os.replace(tmp, self.state_path)


def _canary(versions: VersionSet, raw: Any) -> Canary:
    """``{"version", "share", "sticky"?}`` checked against what ``versions`` serves."""
    if not isinstance(raw, dict) or "version" not in raw or "share" not in raw:
        raise VersionRefused('a canary is {"version": VERSION, "share": 0..1, "sticky": '
                             '"none" | "document"}')
    version = versions.resolve_loaded(str(raw["version"]))
    share, sticky = raw["share"], raw.get("sticky", "none")
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share <= 1:
        raise VersionRefused(f"the canary's share must be a number from 0 to 1, got {share!r}")
    problem = sticky_problem(sticky)
    if problem is not None:
        raise VersionRefused(f"the canary's sticky {problem}")
    return Canary(version, float(share), sticky)


def _stamp(folder: Path) -> float:
    """The latest modification time in ``folder`` (a copy still being written changes it)."""
    times = [folder.stat().st_mtime]
    for path in folder.rglob("*"):
        try:
            times.append(path.stat().st_mtime)
        except OSError:
            pass
    return max(times)


def _order(version: str) -> tuple:
    return (0, int(version), "") if version.isdigit() else (1, 0, version)


def _close_when_idle(batcher) -> None:
    """Close an unloaded version's batcher once what it queued is answered (or after a while)."""
    waited = 0.0
    while batcher.queued_docs and waited < CLOSE_AFTER_S:
        gevent.sleep(0.1)
        waited += 0.1
    gevent.sleep(1.0)  # a call that chose this version just before the unload reaches it now
    batcher.close()
