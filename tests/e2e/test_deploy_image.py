"""deploy/image/: the server image from Debian packages, built and run as far as this machine allows.

Always (seconds): hadolint on the Containerfile, ``bash -n`` on build.sh, and
the recipe's promises read from the Containerfile (non-root user, the health
check on the port the server opens, configuration and state as volumes).

Then the build and a run of the image (``make test`` installs Debian's podman,
buildah, debootstrap and runc): deploy/image/build.sh keeps what it makes in a
cache outside the clone (the Debian root, the dependencies' wheels, podman's
storage with its layers; see ``CACHE``), so the first build on a machine takes
minutes and a rebuild after a commit to the Python code rebuilds only the last
layer. Each step is reported on the terminal as ran (seconds) or reused from the
cache; a step this machine refuses is reported as a warning naming what was
refused and the work-around used, or skipped with the step and the reason when
there is none (``pytest -rs``). ``EXPERTD_IMAGE_BUILD=0`` turns the build off.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.request
import warnings
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port, wait_for

IMAGE_DIR = ROOT / "deploy" / "image"
CONTAINERFILE = IMAGE_DIR / "Containerfile"
BUILD_SH = IMAGE_DIR / "build.sh"
HADOLINT = ROOT / ".venv-deploy" / "bin" / "hadolint"
WORK = ROOT / "build" / "image"
IMAGE = "localhost/expertd:0.1.0"
TURNED_OFF = os.environ.get("EXPERTD_IMAGE_BUILD") == "0"


def cache_dir() -> Path:
    """Where build.sh keeps what it reuses (the same rule as build.sh's CACHE)."""
    if os.environ.get("EXPERTD_IMAGE_CACHE"):
        return Path(os.environ["EXPERTD_IMAGE_CACHE"])
    if os.geteuid() == 0:
        return Path("/var/cache/expertd-image")
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "expertd-image"


CACHE = cache_dir()
#: Where a default `podman run` asks for higher limits than a process without
#: CAP_SYS_RESOURCE may set, lower ones are always allowed.
LOWER_LIMITS = ["--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096"]


def instructions() -> list[tuple[str, str]]:
    """The Containerfile's instructions as ``(KEYWORD, arguments)``, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", CONTAINERFILE.read_text())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def test_containerfile_passes_hadolint():
    if not HADOLINT.exists():
        pytest.fail("hadolint is missing: `make test` installs it into .venv-deploy "
                    "(deploy/requirements.txt)")
    done = subprocess.run([str(HADOLINT), str(CONTAINERFILE)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_build_script_parses():
    done = subprocess.run(["bash", "-n", str(BUILD_SH)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "set -euo pipefail" in BUILD_SH.read_text()


def test_the_wheels_list_is_copied_right_before_the_step_that_mounts_the_wheels():
    """podman keys a RUN layer by its text and the layers before it, not by what it mounts:
    the list of the wheels, copied just before, is what rebuilds the venv when they change."""
    found = instructions()
    mounts = [i for i, (keyword, rest) in enumerate(found)
              if keyword == "RUN" and "--mount=type=bind,source=wheels," in rest]
    assert len(mounts) == 1, found
    keyword, rest = found[mounts[0] - 1]
    assert (keyword, rest.split()[0]) == ("COPY", "wheels.sha256"), found[mounts[0] - 1]
    assert not any(keyword in ("COPY", "ADD") and rest.split()[0].startswith("wheels/")
                   for keyword, rest in found), "the wheels are copied into a layer"
    assert "sha256sum -- *.whl) > \"$CONTEXT/wheels.sha256\"" in BUILD_SH.read_text()


def test_recipe_is_non_root_with_health_check_and_volumes():
    found = instructions()
    by_keyword: dict[str, list[str]] = {}
    for keyword, rest in found:
        by_keyword.setdefault(keyword, []).append(rest)
    user = by_keyword["USER"][-1].split(":")[0]
    assert user not in ("root", "0"), user
    cmd = json.loads(by_keyword["CMD"][-1])
    health_port = cmd[cmd.index("--health-port") + 1]
    (healthcheck,) = by_keyword["HEALTHCHECK"]
    assert f"127.0.0.1:{health_port}/health" in healthcheck
    volumes = json.loads(by_keyword["VOLUME"][-1])
    assert "/etc/expertd" in volumes and "/var/lib/expertd" in volumes
    assert cmd[cmd.index("--config") + 1].startswith("/etc/expertd/")
    # The learner's state goes to the state volume (deploy/systemd/experts.yaml, copied in).
    assert "state_dir: /var/lib/expertd" in (ROOT / "deploy" / "systemd" / "experts.yaml").read_text()


# -- the build and a run, as far as the machine allows --


class Podman:
    """``podman`` on the build cache's storage, with the options this machine needs."""

    def __init__(self) -> None:
        """Storage under the cache (outside the clone: a later clone reuses its layers)."""
        runroot = CACHE / "run"
        if len(str(runroot)) > 50:  # podman refuses a longer one
            runroot = Path(f"/tmp/expertd-image-run-{os.geteuid()}")
        self.global_options = ["--root", str(CACHE / "storage"), "--runroot", str(runroot)]
        self.run_options: list[str] = []

    def command(self, *args: str) -> list[str]:
        """A podman command line with the global options."""
        return ["podman", *self.global_options, *args]

    def run(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        """Run podman, its output captured."""
        return subprocess.run(self.command(*args), capture_output=True, text=True, timeout=timeout)


def refused(done: subprocess.CompletedProcess) -> str:
    """The line in which a tool says what it was refused."""
    lines = [line for line in done.stderr.splitlines() if "rror" in line] or done.stderr.splitlines()
    return lines[-1].strip() if lines else f"exit status {done.returncode}"


def failed_step(done: subprocess.CompletedProcess) -> str:
    """The step of build.sh that was running when it failed (its last ``==>`` heading)."""
    headings = re.findall(r"^==> (.*)$", done.stdout, re.M)
    return headings[-1] if headings else "before its first step"


@pytest.fixture(scope="module")
def say(request):
    """Write a line on the terminal even while pytest captures output: what each step did."""
    plugins = request.config.pluginmanager
    reporter, capture = plugins.getplugin("terminalreporter"), plugins.getplugin("capturemanager")

    def line(text: str) -> None:
        if reporter is None or capture is None:
            print(f"[image] {text}")
            return
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"[image] {text}")
    return line


def report_steps(output: str, say, said: tuple[str, ...] = ()) -> dict:
    """Each ``step NAME: ...`` line of build.sh said on the terminal (but the steps in ``said``);
    the steps' seconds (None: reused)."""
    steps: dict[str, float | None] = {}
    for name, what in re.findall(r"^step (\w+): (.*)$", output, re.M):
        if name in said:
            continue
        ran = re.fullmatch(r"([\d.]+) s", what)
        steps[name] = float(ran.group(1)) if ran else None
        say(f"step {name}: ran, {what}" if ran
            else f"step {name}: {what.replace('reused', 'reused from the cache', 1)}")
    for layers in re.findall(r"^layers: (.*)$", output, re.M):
        say(f"podman build layers: {layers}")
    return steps


def build_sh(*args: str, podman: Podman, timeout: float) -> subprocess.CompletedProcess:
    """deploy/image/build.sh with the cache, this podman and its options."""
    env = dict(os.environ, WORK=str(WORK), EXPERTD_IMAGE_CACHE=str(CACHE),
               PODMAN=" ".join(podman.command()), BUILD_OPTS=" ".join(podman.run_options),
               IMAGE=IMAGE)
    return subprocess.run(["bash", str(BUILD_SH), *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture(scope="module")
def podman(say) -> Podman:
    """A podman that can run a container of the Debian root here (work-arounds reported), or a skip."""
    if TURNED_OFF:
        pytest.skip("step debootstrap (and every later one) not run: turned off by EXPERTD_IMAGE_BUILD=0")
    missing = [tool for tool in ("podman", "debootstrap") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"step debootstrap not run: not installed: {', '.join(missing)} "
                    "(Debian packages; `make test` installs them)")
    if os.geteuid() != 0:
        pytest.skip(f"step debootstrap not run: it needs root here (running as uid {os.geteuid()})")
    say(f"build cache: {CACHE}")
    tool = Podman()
    base = build_sh("base", podman=tool, timeout=1800)
    report_steps(base.stdout, say)
    if base.returncode != 0:
        pytest.skip(f"this machine refused step `{failed_step(base)}`: {refused(base)}")
    base_name = re.search(r"^base (\S+)$", base.stdout, re.M).group(1)
    tried = []
    for options in ([], LOWER_LIMITS, ["--runtime", "runc", *LOWER_LIMITS]):
        if "runc" in options and shutil.which("runc") is None:
            continue
        global_options = ["--runtime", "runc"] if "runc" in options else []
        run_options = [o for o in options if o not in ("--runtime", "runc")]
        probe = subprocess.run(["podman", *tool.global_options, *global_options, "run", "--rm",
                                "--network", "none", *run_options, base_name, "true"],
                               capture_output=True, text=True, timeout=120)
        if probe.returncode == 0:
            tool.global_options += global_options
            tool.run_options = run_options
            for attempt, reason in tried:
                warnings.warn(f"this machine refused `podman run {attempt}`: {reason}; "
                              f"using `{' '.join(global_options + run_options)}`", stacklevel=1)
            return tool
        tried.append((" ".join(global_options + run_options) or "(defaults)", refused(probe)))
    pytest.skip("this machine refused step `podman run` of the base image: " +
                "; ".join(f"`podman run {a}`: {r}" for a, r in tried))


@pytest.fixture(scope="module")
def image(podman, say) -> dict:
    """The image, built by deploy/image/build.sh (reusing the cache) with the options this machine needs."""
    began = time.monotonic()
    done = build_sh(podman=podman, timeout=3600)
    steps = report_steps(done.stdout, say, said=("debootstrap", "import"))  # by `build.sh base`
    if done.returncode != 0:
        pytest.fail(f"build.sh failed in step `{failed_step(done)}`: {refused(done)}\n"
                    f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    size = int(podman.run("image", "inspect", "--format", "{{.Size}}", IMAGE).stdout.strip())
    build_s = time.monotonic() - began
    say(f"image {IMAGE}: {size / 2**20:,.0f} MiB, build.sh {build_s:.1f} s")
    return {"steps": steps, "size": size, "build_s": build_s}


@pytest.mark.timeout(3600)  # the first build: debootstrap, the wheels, podman build
def test_image_runs_non_root_healthy_and_stops_gracefully(podman, image, say):
    rpc_port, health_port = free_port(), free_port()
    name = f"expertd-test-{rpc_port}"
    started = time.monotonic()
    run = podman.run("run", "-d", "--name", name, *podman.run_options,
                     "-p", f"127.0.0.1:{rpc_port}:4242", "-p", f"127.0.0.1:{health_port}:8081",
                     IMAGE)
    if run.returncode != 0:
        pytest.skip(f"podman run of the image refused here: {refused(run)}")
    if "systemd" in run.stderr:  # podman schedules HEALTHCHECK runs with systemd timers
        warnings.warn("this machine refused podman's periodic health checks (no systemd): "
                      f"{refused(run)}; the test runs `podman healthcheck run` itself",
                      stacklevel=1)
    try:
        def healthy():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{health_port}/health",
                                            timeout=2) as reply:
                    return json.load(reply)
            except OSError:
                state = podman.run("inspect", "--format", "{{.State.Running}}", name).stdout.strip()
                if state != "true":
                    raise AssertionError(podman.run("logs", name).stderr[-4000:]) from None
                return None

        health = wait_for(healthy, 300, "the container's health port")
        ready_s = time.monotonic() - started
        assert health["status"] == "ok"
        assert "sentiment" in health["experts"] and "learner" in health["experts"]
        import zerorpc

        client = zerorpc.Client(f"tcp://127.0.0.1:{rpc_port}", timeout=30, heartbeat=None)
        try:
            assert client.opinion("sentiment", {"text": "I love this"})["label"] == "positive"
        finally:
            client.close()
        check = podman.run("healthcheck", "run", name)
        assert check.returncode == 0, check.stdout + check.stderr  # the image's HEALTHCHECK
        user = podman.run("exec", name, "id", "-u").stdout.strip()
        assert user == "10001"
        memory = podman.run("exec", name, "sh", "-c",
                            "grep VmRSS /proc/1/status").stdout.split()[1]
        stop = podman.run("stop", "--time", "45", name)
        assert stop.returncode == 0, stop.stderr
        code = podman.run("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
        assert code == "0", podman.run("logs", name).stderr[-4000:]
        say(f"step run: healthy {ready_s:.1f} s after `podman run`, answered a call, "
            f"user 10001, server RSS {int(memory) / 1024:.0f} MiB, stopped with exit code 0")
    finally:
        podman.run("rm", "-f", name)


def test_image_holds_no_copy_of_the_wheels(podman, image):
    """The dependencies' wheels are mounted into the step that installs them: no layer copies them.

    A ``COPY wheels/`` kept every wheel in a layer of its own (386 MB) although
    the next step deleted them; only their list (``wheels.sha256``) is copied now.
    """
    listed = (WORK / "context" / "wheels.sha256").read_text().splitlines()
    wheels = [WORK / "context" / "wheels" / line.split()[1] for line in listed]
    assert any(wheel.name.startswith("tensorflow") for wheel in wheels), listed
    wheels_size = sum(wheel.stat().st_size for wheel in wheels)
    history = json.loads(podman.run("history", "--format", "json", IMAGE).stdout)
    copied = [(entry["size"], entry.get("CreatedBy", "")[:80]) for entry in history
              if "COPY" in entry.get("CreatedBy", "")]
    assert copied, history
    assert max(copied)[0] < wheels_size / 2, (
        f"a COPY layer of the image is {max(copied)[0] / 2**20:.0f} MiB, "
        f"the wheels {wheels_size / 2**20:.0f} MiB: {max(copied)[1]}")
