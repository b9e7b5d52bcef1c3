"""The server's lifecycle: load the experts, bind, serve, drain on SIGTERM/SIGINT."""

from __future__ import annotations

import dataclasses
import gc
import inspect
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import gevent
from gevent.threadpool import ThreadPool

from expertd.experts.config import (ExpertsConfig, build_experts, build_version, ensure_cwd_importable,
                            load_config, load_expert)
from expertd.rpc_server import collector, recent_traces, resident, runtime, sdnotify, transport
from expertd.rpc_server.batching import MicroBatcher
from expertd.rpc_server.endpoint import check_bindable
from expertd.rpc_server.learning import start_learning
from expertd.rpc_server.opinion_cache import build_caches
from expertd.rpc_server.security import ServerSecurity, is_local_endpoint
from expertd.rpc_server.service import Experts
from expertd.rpc_server.stats import Stats
from expertd.rpc_server.shadow import VersionMetrics
from expertd.rpc_server.versions import Canary, VersionSet
from expertd.rpc_server.live_versions import LiveVersions
from expertd.rpc_server.model_threads import size_model_threads
from expertd.rpc_server.supervisor import (FANOUT_SIGNAL, RETIRE_SIGNAL, die_with_supervisor, report_ready,
                                           worker_identity)
from expertd.spec import DEFAULT_ENDPOINT, METHODS

log = logging.getLogger("expertd.server")



@dataclass
class ServerConfig:
    """Everything ``expertd serve`` can be told; the CLI maps onto it one to one."""

    bind: str = field(default_factory=lambda: os.environ.get("EXPERTD_ENDPOINT", DEFAULT_ENDPOINT))
    config: Path | None = None
    max_text_bytes: int | None = None
    threads: int | None = None
    heartbeat: float = 5.0
    drain_timeout: float = 30.0
    metrics_port: int | None = None
    log_level: str = "info"
    health_port: int | None = None
    curve_secret_key: Path | None = None  # CURVE (see rpc_server/security.py)
    authorized_keys: Path | None = None
    insecure: bool = False
    feedback_log: str | None = None  # overrides the experts file's server.feedback_log

    def load_experts_file(self) -> ExpertsConfig:
        """Read and check the experts file this config names (or the default one)."""
        return load_config(self.config, reserved=reserved_names())


def reserved_names() -> set[str]:
    """Names an expert may not take: every RPC method of the spec and of the service."""
    return set(METHODS) | {name for name, member in inspect.getmembers(Experts)
                            if getattr(member, "rpc", False)}


class ExpertdServer:
    """Owns the experts, their batchers, the thread pool and the zerorpc server."""

    def __init__(self, config: ServerConfig) -> None:
        """Nothing is loaded until ``start``."""
        self.config = config
        self.zerorpc: transport.Server | None = None
        self.service: Experts | None = None
        self.batchers: dict[str, MicroBatcher] = {}
        self.versions: dict[str, VersionSet] = {}
        self.learning = None
        self.security: ServerSecurity | None = None
        self._stopping = False
        self.worker = worker_identity()  # set when a supervisor started this process
        self.health_http = None

    def start(self) -> None:
        """Check the experts file and the endpoint, load every expert once, then bind."""
        if self.worker is not None:  # until serve() handles it: a live version change
            signal.signal(FANOUT_SIGNAL, signal.SIG_IGN)  # is read from the state file then
        soft, _ = transport.raise_open_file_limit()
        ensure_cwd_importable()
        file = self.config.load_experts_file()
        self.check_endpoint()
        security = ServerSecurity(self.config.bind, self.config.curve_secret_key,
                                  self.config.authorized_keys, self.config.insecure)
        max_text_bytes = self.config.max_text_bytes or file.server.max_text_bytes
        threads = self.config.threads or file.server.threads
        experts = build_experts(file)
        size_model_threads()  # the experts file is good: before the first model loads
        for spec in file.experts:
            began = time.perf_counter()
            expert = experts[spec.name]
            load_expert(spec, expert)
            log.info("loaded expert %s (version %s) in %.2f s", spec.name, expert.version,
                     time.perf_counter() - began)
        others = self.load_other_versions(file, experts)
        if self.worker is not None:
            die_with_supervisor(self.worker)
            warm_up(experts)
        # The models leave ~300,000 long-lived objects behind; move them out of
        # the collector's reach so full collections stop pausing calls (~190 ms
        # each, measured by `make bench`) instead of rescanning them forever.
        gc.collect()
        gc.freeze()
        stats = Stats(list(experts))
        runtime.tune()  # the GIL switch interval and full collections (see rpc_server/runtime.py)
        self.pool = ThreadPool(threads)
        self.batchers = {
            spec.name: MicroBatcher(experts[spec.name], self.pool, spec.batch.max_size,
                                    spec.batch.max_wait_ms, on_batch=stats.record_batch,
                                    on_shed=stats.record_shed,
                                    max_queued_docs=spec.queue.max_docs,
                                    budget_ms=spec.queue.budget_ms)
            for spec in file.experts}
        versions = {}
        for spec in file.experts:
            if spec.served is None:
                continue
            batchers = {version: self.make_batcher(spec, expert, stats)
                        for version, expert in others[spec.name].items()}
            batchers[spec.served.default] = self.batchers[spec.name]
            loaded = {**others[spec.name], spec.served.default: experts[spec.name]}
            versions[spec.name] = VersionSet(
                spec.name, spec.served, {v: loaded[v] for v in spec.served.folders},
                {v: batchers[v] for v in spec.served.folders})
            versions[spec.name].shadow = None if spec.shadow is None else str(spec.shadow)
            if isinstance(spec.shadow, str):  # another expert (e.g. a learner) as a member
                versions[spec.name].add_member(spec.shadow, experts[spec.shadow],
                                               self.batchers[spec.shadow])
            if spec.canary is not None:
                versions[spec.name].canary = Canary(str(spec.canary.version), spec.canary.share,
                                                    spec.canary.sticky)
        self.versions = versions
        self.specs = {spec.name: spec for spec in file.experts}
        self.learning = start_learning(experts, file, self.config.feedback_log)  # log replayed before serving
        self.service = Experts(experts, self.batchers, stats, max_text_bytes,
                               file.server.max_batch_docs, learning=self.learning,
                               caches=build_caches(experts, file, self.learning),
                               versions=versions)
        recent_traces.start()  # the ring of recent calls' spans (tracing on only): traces()
        self.zerorpc = transport.make_server(self.service.rpc_methods(), "Experts",
                                             self.config.heartbeat, file.server.max_message_bytes,
                                             file.server.handshake_timeout_ms)
        self.security = security
        security.apply(self.zerorpc)  # socket options must precede bind
        self.service.identity = self.identity()
        if versions:
            self.service.version_metrics = VersionMetrics(stats.registry)
            self.service.live = LiveVersions(
                versions, self.load_version, lambda name, expert: self.make_batcher(
                    self.specs[name], expert, stats), self.service.switch_default,
                Path(file.server.state_dir), self.worker.supervisor_pid if self.worker else None,
                allowed=is_local_endpoint(self.config.bind) or security.curve)
            self.service.live.converge()  # what was changed live before this process started
            if self.worker is None or self.worker.index == 0:  # one watcher; it tells the rest
                for spec in file.experts:
                    if spec.served is not None and spec.watch_s is not None:
                        gevent.spawn(self.service.live.watch, spec.name, spec.watch_s)
        self.bind()
        if self.config.metrics_port:
            port = self.config.metrics_port + (self.worker.index if self.worker else 0)
            self.serve_metrics(port, stats.registry)
        if self.config.health_port:
            self.start_health_http()
        collector.freeze_loaded()  # full collections skip what loading made (rpc_server/collector.py)
        resident.release_after_start()  # start-up-only library pages, sources (rpc_server/resident.py)
        log.info("serving %d experts (%s) on %s, pid %d, up to %d open files", len(experts),
                 ", ".join(experts), self.config.bind, os.getpid(), soft)
        if self.worker is not None:
            report_ready(self.worker, {n: e.version for n, e in experts.items()})

    def load_other_versions(self, file: ExpertsConfig, experts: dict) -> dict[str, dict]:
        """Build and load every served version besides each versioned expert's default one."""
        others: dict[str, dict] = {}
        for spec in file.experts:
            if spec.served is None:
                continue
            others[spec.name] = {}
            for version in spec.served.folders:
                if version == spec.served.default:
                    continue
                began = time.perf_counter()
                expert = build_version(spec, version)
                load_expert(spec, expert)
                others[spec.name][version] = expert
                log.info("loaded expert %s version %s in %.2f s", spec.name, version,
                         time.perf_counter() - began)
        return others

    def load_version(self, name: str, version: str, folder: Path):
        """Build and load one more version of a versioned expert (blocks: run it in a thread)."""
        spec = self.specs[name]
        served = dataclasses.replace(spec.served, folders={**spec.served.folders, version: folder})
        expert = build_version(dataclasses.replace(spec, served=served), version)
        expert.load()
        return expert

    def make_batcher(self, spec, expert, stats: Stats) -> MicroBatcher:
        """A batcher for one loaded version of an expert, with the entry's batch and queue policy."""
        return MicroBatcher(expert, self.pool, spec.batch.max_size, spec.batch.max_wait_ms,
                            on_batch=stats.record_batch, on_shed=stats.record_shed,
                            max_queued_docs=spec.queue.max_docs, budget_ms=spec.queue.budget_ms)

    def identity(self) -> dict:
        """What ``health()`` says about this process: a random instance id (unique across
        machines, where pids are not: every container's worker may be pid 7), worker
        index, worker count, supervisor pid."""
        instance = os.urandom(8).hex()
        if self.worker is None:
            return {"instance": instance, "worker": None, "workers": 1, "supervisor_pid": None}
        return {"instance": instance, "worker": self.worker.index, "workers": self.worker.count,
                "supervisor_pid": self.worker.supervisor_pid}

    def bind(self) -> None:
        """Listen on the endpoint; a worker shares its port with the others (SO_REUSEPORT)."""
        if self.worker is not None:
            transport.bind_shared(self.zerorpc, self.config.bind, self.worker.steer_index)
        else:
            self.zerorpc.bind(self.config.bind)

    def start_health_http(self) -> None:
        """``GET /health`` for load balancers, on the bind host (all interfaces for ``*``)."""
        from expertd.rpc_server.health_http import HealthServer

        try:
            host = transport.tcp_address(self.config.bind)[0]
        except ValueError:
            host = "127.0.0.1"
        try:
            self.health_http = HealthServer(host, self.config.health_port, self.health_status,
                                            shared=self.worker is not None)
        except OSError as exc:
            raise OSError(f"--health-port {self.config.health_port} on {host}: "
                          f"{exc.strerror or exc}") from None

    def serve_metrics(self, port: int, registry) -> None:
        """Prometheus metrics on 127.0.0.1:``port``.

        A worker started by a reload may find the port still held by the worker
        it replaces (which drains first): it takes the port over once it is free.
        """
        from prometheus_client import start_http_server

        def take_over() -> None:
            for _ in range(int(self.config.drain_timeout * 4) + 120):
                time.sleep(0.5)
                try:
                    start_http_server(port, addr="127.0.0.1", registry=registry)
                except OSError:
                    continue
                log.info("Prometheus metrics on http://127.0.0.1:%d/metrics", port)
                return
            log.warning("metrics port %d stayed busy; no metrics from this worker", port)

        try:
            start_http_server(port, addr="127.0.0.1", registry=registry)
        except OSError:
            if self.worker is None:
                raise
            log.info("metrics port %d is still the old worker's; taking it over when free", port)
            threading.Thread(target=take_over, name="metrics-takeover", daemon=True).start()
            return
        log.info("Prometheus metrics on http://127.0.0.1:%d/metrics", port)

    def health_status(self) -> tuple[bool, dict]:
        """``(serving, body)`` for the HTTP health check (not serving once draining)."""
        # The plain method, not the RPC one: a balancer's probes are not calls to log.
        body = type(self.service).health.__wrapped__(self.service)
        if self._stopping:
            body["status"] = "draining"
        return not self._stopping, body

    def check_endpoint(self) -> None:
        """Fail in milliseconds, before any model loads, if the endpoints cannot be bound."""
        if self.worker is not None:
            return  # workers share the port (the supervisor checked it once, before the first)
        check_bindable(self.config.bind)
        if self.config.metrics_port:
            check_bindable(f"tcp://127.0.0.1:{self.config.metrics_port}")

    def serve(self) -> None:
        """Answer calls until SIGTERM or SIGINT, then drain and return."""
        gevent.signal_handler(signal.SIGTERM, self.shutdown, "SIGTERM")
        gevent.signal_handler(signal.SIGINT, self.shutdown, "SIGINT")
        gevent.signal_handler(signal.SIGHUP, self.hangup)
        if self.worker is not None:
            gevent.signal_handler(RETIRE_SIGNAL, self.retire)
            gevent.signal_handler(FANOUT_SIGNAL, self.read_versions_state)
            if self.service.live is not None:
                gevent.spawn(self.service.live.converge)  # a change made while this one started
        try:
            self.zerorpc.run()
        except gevent.GreenletExit:
            pass
        self.close()

    def read_versions_state(self) -> None:
        """``FANOUT_SIGNAL``: serve the versions ``versions.json`` says (see ``live_versions``)."""
        if self.service is not None and self.service.live is not None and not self._stopping:
            gevent.spawn(self.service.live.converge)

    def shutdown(self, reason: str = "shutdown") -> None:
        """Stop taking calls, let in-flight ones finish (up to ``drain_timeout``)."""
        if self._stopping:
            return
        self._stopping = True
        log.info("%s: finishing in-flight calls, then exiting", reason)
        if self.worker is None:  # a supervised worker's supervisor speaks to systemd
            sdnotify.stopping(f"{reason}: draining in-flight calls")
        gevent.spawn(self._drain)

    def hangup(self) -> None:
        """SIGHUP: a supervised worker leaves reloads to its supervisor; alone, say how."""
        if self.worker is None:
            log.warning("SIGHUP ignored: this server runs in one process and cannot reload "
                        "in place; restart it, or serve with --workers N (then SIGHUP or "
                        "`expertd reload` replaces the workers one at a time)")

    def retire(self) -> None:
        """Replaced by a newer worker: stop taking connections, finish the calls, exit.

        The new worker already steers the port's new connections to itself.
        libzmq's ``unbind`` also closes the connections the listener accepted, so
        this waits for a moment with no call in flight (their callers' sockets then
        reconnect to another worker); past half the drain timeout, new calls get
        ``ShuttingDown`` (retryable) until the last one has finished.
        """
        if self._stopping:
            return
        self._stopping = True
        log.info("retiring: closing the listener once no call is in flight")
        gevent.spawn(self._retire)

    def _retire(self) -> None:
        if self.health_http is not None:  # the balancer's next check goes to another worker
            self.health_http.close()
            self.health_http = None
        transport.retire(self.zerorpc, self.config.bind, self.config.drain_timeout)

    def _drain(self) -> None:
        transport.drain(self.zerorpc, self.config.drain_timeout)

    def close(self) -> None:
        """Release the socket, the batchers and the threads."""
        if self.health_http is not None:
            self.health_http.close()
            self.health_http = None
        for batcher in self.batchers.values():
            batcher.close()
        for versions in self.versions.values():
            for batcher in versions.batchers.values():
                if batcher is not self.batchers.get(versions.name):
                    batcher.close()
        if self.security is not None:
            self.security.close()
        if self.zerorpc is not None:
            self.zerorpc.close()
        if self.learning is not None:
            self.learning.close()  # the last checkpoints
        self.pool.kill()
        log.info("stopped")


def warm_up(experts: dict) -> None:
    """One prediction per expert before taking calls (a failure is logged, not fatal)."""
    for name, expert in experts.items():
        if getattr(expert, "takes_opinions", False):
            continue  # its inputs are other experts' opinions: warmed by theirs
        began = time.perf_counter()
        try:
            expert.predict(["warm-up"] if expert.input_type in (str, None) else [{}])
        except Exception as exc:
            log.warning("warm-up of expert %s failed (%s: %s); serving it anyway", name,
                        type(exc).__name__, str(exc)[:200])
            continue
        log.info("warmed expert %s in %.2f s", name, time.perf_counter() - began)


def run(config: ServerConfig) -> None:
    """Start and serve until signalled (what ``expertd serve`` does)."""
    server = ExpertdServer(config)
    server.start()
    if server.worker is None:  # bound and loaded: calls queued from now on are answered
        sdnotify.ready(f"serving {', '.join(server.batchers)} on {config.bind}")
    server.serve()
