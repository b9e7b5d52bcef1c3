"""What each way to deploy costs: start-up to ready and memory of the systemd unit's command
line, and the OCI image's build time, size, start-up to healthy and memory.

    .venv/bin/python -m bench.deploy                 # writes bench/RESULTS-deploy.md
    .venv/bin/python -m bench.deploy --rounds 1      # quicker, for development

systemd: deploy/systemd/expertd.service's ExecStart as written (``--workers 2``,
the default experts of deploy/systemd/experts.yaml), its paths moved to this
checkout, with a real ``NOTIFY_SOCKET``: seconds from spawn to ``READY=1``
(every worker loaded, warm and listening), resident memory of the process tree
then, and seconds from SIGTERM (the unit's KillSignal) to exit, idle.

Image (as root, with Debian's podman, debootstrap and runc): deploy/image/build.sh
from nothing (a fresh work directory, build cache and podman storage: debootstrap,
import, the wheels, podman build), each step's seconds as build.sh prints them, the
image's size; then ``podman run`` of the image: seconds from ``podman run -d`` to
200 on the published health port, resident memory of the container's process,
seconds of ``podman stop``. This machine refuses podman's defaults (see
``PODMAN``, ``RUN_OPTIONS`` and tests/e2e/test_deploy_image.py).

Kubernetes is not measured (no cluster here): a pod runs the same image.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from bench.common import free_port, median, tree_kib
from bench.machine import machine, now

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "RESULTS-deploy.md"
TMP = BENCH / "tmp" / "deploy"
BIN = ROOT / ".venv" / "bin"
UNIT = ROOT / "deploy" / "systemd" / "expertd.service"
IMAGE = "localhost/expertd:0.1.0"
#: What this machine needs (a VM without CAP_SYS_RESOURCE and with hybrid cgroups).
PODMAN_OPTIONS = ["--runtime", "runc"]
RUN_OPTIONS = ["--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096"]


def unit_command(state: Path) -> tuple[list[str], dict[str, str]]:
    """The unit's ExecStart and Environment=, paths moved to this checkout and ``state``."""
    text = UNIT.read_text()
    experts = state / "experts.yaml"
    experts.write_text((ROOT / "deploy" / "systemd" / "experts.yaml").read_text()
                       .replace("/var/lib/expertd", str(state)))
    text = (text.replace("/opt/expertd/bin/", f"{BIN}/")
            .replace("/opt/expertd/models", str(ROOT / "models"))
            .replace("/etc/expertd/experts.yaml", str(experts))
            .replace("/var/cache/expertd", str(state / "cache"))
            .replace("127.0.0.1:4242", f"127.0.0.1:{free_port()}")
            .replace("--health-port 8081", f"--health-port {free_port()}"))
    env = {k: v for k, v in os.environ.items() if k != "EXPERTD_ENDPOINT"}
    command: list[str] = []
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key == "Environment":
            for assignment in shlex.split(value):
                name, _, setting = assignment.partition("=")
                env[name] = setting
        elif key == "ExecStart":
            command = shlex.split(value)
    return command, env


def systemd_round(tmp: Path) -> dict:
    """One start of the unit's command line: seconds to READY=1, RSS then, seconds to stop."""
    state = tmp / f"state-{time.monotonic_ns()}"
    state.mkdir(parents=True)
    command, env = unit_command(state)
    notify_path = str(state / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(notify_path)
        notify.settimeout(600)
        env["NOTIFY_SOCKET"] = notify_path
        began = time.monotonic()
        server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        try:
            while b"READY=1" not in notify.recv(4096).split(b"\n"):
                pass
            ready_s = time.monotonic() - began
            time.sleep(2)  # settle: the same moment as bench.run's "when ready"
            rss_kib = tree_kib(server.pid, "VmRSS")
            stopping = time.monotonic()
            server.send_signal(signal.SIGTERM)
            status = server.wait(timeout=120)
            stop_s = time.monotonic() - stopping
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
    return {"ready_s": ready_s, "rss_mib": rss_kib / 1024, "stop_s": stop_s, "status": status}


def podman(storage: Path, *args: str, timeout: float = 3600) -> subprocess.CompletedProcess:
    """podman with a storage of its own and the options this machine needs."""
    return subprocess.run(["podman", "--root", str(storage / "storage"), "--runroot",
                           str(storage / "run"), *PODMAN_OPTIONS, *args],
                          capture_output=True, text=True, timeout=timeout)


def image_build(work: Path) -> dict:
    """deploy/image/build.sh from nothing: each step's seconds, the image's size in bytes."""
    if work.exists():
        podman(work, "system", "reset", "--force")
        shutil.rmtree(work)
    work.mkdir(parents=True)
    podman_cmd = " ".join(["podman", "--root", str(work / "storage"), "--runroot",
                           str(work / "run"), *PODMAN_OPTIONS])
    began = time.monotonic()
    done = subprocess.run(["bash", str(ROOT / "deploy" / "image" / "build.sh")],
                          env=dict(os.environ, WORK=str(work), PODMAN=podman_cmd,
                                   EXPERTD_IMAGE_CACHE=str(work / "cache"),  # an empty cache
                                   BUILD_OPTS=" ".join(RUN_OPTIONS), IMAGE=IMAGE),
                          capture_output=True, text=True, timeout=7200)
    if done.returncode != 0:
        raise SystemExit(f"build.sh failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    total_s = time.monotonic() - began
    steps = {name: float(s) for name, s in re.findall(r"^step (\w+): ([\d.]+) s$", done.stdout, re.M)}
    size = int(podman(work, "image", "inspect", "--format", "{{.Size}}", IMAGE).stdout.strip())
    return {"steps": steps, "total_s": total_s, "size_bytes": size}


def image_round(work: Path) -> dict:
    """One ``podman run`` of the image: seconds to a 200 on the health port, RSS then, stop."""
    health_port = free_port()
    name = f"expertd-bench-{health_port}"
    began = time.monotonic()
    run = podman(work, "run", "-d", "--name", name, *RUN_OPTIONS,
                 "-p", f"127.0.0.1:{free_port()}:4242", "-p", f"127.0.0.1:{health_port}:8081", IMAGE)
    if run.returncode != 0:
        raise SystemExit(f"podman run failed: {run.stderr}")
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{health_port}/health", timeout=2):
                    break
            except OSError:
                if time.monotonic() - began > 600:
                    raise SystemExit("the container was not healthy after 600 s") from None
                time.sleep(0.2)
        ready_s = time.monotonic() - began
        time.sleep(2)
        pid = int(podman(work, "inspect", "--format", "{{.State.Pid}}", name).stdout.strip())
        rss_kib = tree_kib(pid, "VmRSS")
        stopping = time.monotonic()
        podman(work, "stop", "--time", "45", name)
        stop_s = time.monotonic() - stopping
        code = podman(work, "inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
    finally:
        podman(work, "rm", "-f", name)
    return {"ready_s": ready_s, "rss_mib": rss_kib / 1024, "stop_s": stop_s, "status": code}


def render(results: dict) -> str:
    """The report."""
    m = results["machine"]
    lines = [
        "# What each way to deploy costs",
        "",
        f"Run {results['date']} on {m['cpu']} ({m['usable_cores']} usable cores, {m['ram_gib']} GiB), "
        f"{m['os']}; `python -m bench.deploy`, medians of {results['rounds']} rounds.",
        "",
    ]
    s = results["systemd"]
    image = results.get("image")
    lines += ["## Headline", ""]
    lines.append(f"- **systemd unit** (`--workers 2`, default experts): ready (READY=1) in "
                 f"{median(r['ready_s'] for r in s):.1f} s, {median(r['rss_mib'] for r in s):,.0f} MiB "
                 f"resident (supervisor + 2 workers), stopped in {median(r['stop_s'] for r in s):.1f} s.")
    if image:
        b = image["build"]
        runs = image["runs"]
        lines.append(f"- **OCI image**: {b['size_bytes'] / 2**20:,.0f} MiB, built from nothing in "
                     f"{b['total_s']:.0f} s; healthy in {median(r['ready_s'] for r in runs):.1f} s "
                     f"after `podman run`, {median(r['rss_mib'] for r in runs):,.0f} MiB resident "
                     f"(one process), stopped in {median(r['stop_s'] for r in runs):.1f} s.")
    else:
        lines.append("- **OCI image**: not measured in this run (`--image` builds it; as root, "
                     "with podman).")
    lines.append("- **Kubernetes**: not measured (no cluster here); a pod runs the image above, "
                 "one process per pod.")
    lines += ["", "## systemd unit", "",
              "deploy/systemd/expertd.service's ExecStart as written, paths moved to this checkout, "
              "with a real NOTIFY_SOCKET.", "",
              "| round | seconds to READY=1 | RSS when ready MiB | seconds SIGTERM to exit | exit status |",
              "|---:|---:|---:|---:|---:|"]
    for i, r in enumerate(s, 1):
        lines.append(f"| {i} | {r['ready_s']:.1f} | {r['rss_mib']:,.0f} | {r['stop_s']:.1f} "
                     f"| {r['status']} |")
    if image:
        b = image["build"]
        lines += ["", "## OCI image", "",
                  f"deploy/image/build.sh from an empty work directory and podman storage "
                  f"(podman options used: `{' '.join(PODMAN_OPTIONS)}`, run options "
                  f"`{' '.join(RUN_OPTIONS)}`).", "",
                  "| build step | seconds |", "|---|---:|"]
        for name, seconds in b["steps"].items():
            lines.append(f"| {name} | {seconds:.1f} |")
        lines.append(f"| whole build.sh | {b['total_s']:.1f} |")
        lines += ["", f"Image size: {b['size_bytes'] / 2**20:,.0f} MiB ({b['size_bytes']:,} bytes).", "",
                  "| round | seconds from `podman run -d` to healthy | RSS MiB | seconds of `podman stop` "
                  "| exit code |", "|---:|---:|---:|---:|---:|"]
        for i, r in enumerate(image["runs"], 1):
            lines.append(f"| {i} | {r['ready_s']:.1f} | {r['rss_mib']:,.0f} | {r['stop_s']:.1f} "
                         f"| {r['status']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Measure and write bench/RESULTS-deploy.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--image", action="store_true",
                        help="also build the image from nothing and run it (minutes, about 5 GB)")
    args = parser.parse_args(argv)
    TMP.mkdir(parents=True, exist_ok=True)
    results: dict = {"date": now(), "machine": machine(), "rounds": args.rounds}
    results["systemd"] = []
    for i in range(args.rounds):
        results["systemd"].append(systemd_round(TMP))
        print(f"systemd round {i + 1}: {results['systemd'][-1]}", file=sys.stderr)
    if args.image:
        work = ROOT / "build" / "bench-image"
        build = image_build(work)
        print(f"image build: {build}", file=sys.stderr)
        runs = []
        for i in range(args.rounds):
            runs.append(image_round(work))
            print(f"image round {i + 1}: {runs[-1]}", file=sys.stderr)
        results["image"] = {"build": build, "runs": runs}
    RESULTS.write_text(render(results))
    print(f"wrote {RESULTS}", file=sys.stderr)


if __name__ == "__main__":
    main()
