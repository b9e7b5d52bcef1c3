"""The machine description: CPU, cores, RAM, kernel, and the versions of everything measured."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
from datetime import datetime, timezone

from bench.common import ROOT


def _first_line(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "not found"
    text = (done.stdout or done.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _npm_version(package: str) -> str:
    try:
        path = ROOT / "express_bridge" / "node_modules" / package / "package.json"
        return json.loads(path.read_text())["version"]
    except (OSError, ValueError, KeyError):
        return "not installed"


def machine() -> dict:
    """CPU, cores, RAM, kernel, OS, and the versions of everything measured."""
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line_.split(":", 1)[1].strip() for line_ in f if line_.startswith("model name")),
                       cpu)
    except OSError:
        pass
    mem_kib = 0
    try:
        with open("/proc/meminfo") as f:
            mem_kib = int(next(line_ for line_ in f if line_.startswith("MemTotal")).split()[1])
    except (OSError, StopIteration):
        pass
    os_name = platform.system()
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    os_name = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "ram_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": f"{platform.system()} {platform.release()} {platform.machine()}",
        "os": os_name,
        "python": platform.python_version(),
        "node": _first_line(["node", "--version"]),
        "tensorflow": _version("tensorflow-cpu") if _version("tensorflow-cpu") != "not installed"
        else _version("tensorflow"),
        "keras": _version("keras"),
        "zerorpc": _version("zerorpc"),
        "pyzmq": _version("pyzmq"),
        "gevent": _version("gevent"),
        "falcon": _version("falcon"),
        "bjoern": _version("bjoern"),
        "gunicorn": _version("gunicorn"),
        "express": _npm_version("express"),
        "zerorpc_node": _npm_version("zerorpc"),
        "wrk": _first_line(["wrk", "--version"]).split(" Copyright")[0],
    }


def now() -> str:
    """The current time, UTC, to the second."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
