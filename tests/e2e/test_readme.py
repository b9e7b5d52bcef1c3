"""A fresh-clone walk of the README and the docs: every example marked runnable runs as written.

The pages walked: README.md and docs/*.md (``PAGES``). The convention
(docs/getting-started.md, "Examples in the README and these docs are tested"): a
```` ```console ```` block right after the line ``<!-- readme-test: server -->``
is run command by command (``$ `` lines), in one bash, from a scratch
directory, against a real server with the default experts.
``tcp://127.0.0.1:4242`` in the text stands for that server, ``4243`` for a
free port where nothing listens, ``/home/me`` for ``$HOME``. A command followed
by ``$ echo $?`` must exit with the status shown, any other with 0; its output
must match the lines shown up to numbers (JSON: the same keys), in any order;
``...`` ends what is compared. ``<!-- readme-test: server, output: status -->``
checks only the exit statuses. A ```` ```python ```` block after
``<!-- readme-test: python -->`` is run by the venv's Python against that
server, and what it prints must match the ```` ```text ```` block that follows
it, the same way. In express_bridge/README.md, a ```` ```bash ````
block after ``<!-- readme-test: bridge -->`` runs as one script (port 3000
standing for a free port, also given as PORT) and must end with a JSON answer.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import BIN, EXPERTD, ROOT, free_port, wait_ready

MARK = re.compile(r"^<!-- readme-test: (?P<kind>\w+)(?:, output: (?P<output>\w+))? -->\n"
                  r"```(?P<lang>\w+)\n(?P<body>.*?)^```$", re.M | re.S)
STATUS = "__readme_status__"


def blocks(path: Path, kind: str) -> list[tuple[int, str, str | None]]:
    """``(line, body, output mode)`` of every block marked ``kind`` in ``path``."""
    text = path.read_text()
    return [(text[:m.start()].count("\n") + 1, m["body"], m["output"])
            for m in MARK.finditer(text) if m["kind"] == kind]


def commands(body: str) -> list[tuple[str, list[str], int]]:
    """``(command, expected output lines, expected status)`` for each ``$ `` line."""
    steps: list[list] = []
    for line in body.splitlines():
        if line.startswith("$ echo $?"):
            steps[-1][3] = True
        elif line.startswith("$ "):
            steps.append([line[2:], [], 0, False])
        elif steps and steps[-1][3]:
            steps[-1][2] = int(line)
            steps[-1][3] = False
        elif steps:
            steps[-1][1].append(line)
    return [(command, expected, status) for command, expected, status, _ in steps]


def shape(value):
    """Keys without values: what a README's JSON must share with the real answer."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value]
    return type(value).__name__ if not isinstance(value, (int, float)) or isinstance(value, bool) \
        else "number"


def matches(got: list[str], expected: list[str]) -> bool:
    """Same lines up to numbers, in any order; after ``...`` only those before it must appear."""
    if "..." in expected:
        wanted = comparable(expected[:expected.index("...")])
        have = comparable(got)
        return all(line in have for line in wanted)
    return comparable(got) == comparable(expected)


def comparable(lines: list[str]) -> list[str]:
    """Lines up to numbers (a JSON text, whole or per line, by its shape), sorted."""
    text = "\n".join(lines).strip()
    if not text:
        return []
    try:
        return [json.dumps(shape(json.loads(text)))]
    except ValueError:
        pass
    out = []
    for line in lines:
        try:
            out.append(json.dumps(shape(json.loads(line))))
        except ValueError:
            out.append(re.sub(r"\d+(\.\d+)?", "N", line.rstrip()))
    return sorted(out)


def run_block(body: str, subst: dict[str, str], normal: dict[str, str], cwd: Path,
              env: dict) -> list[tuple]:
    """Run each command in one bash; return ``(command, expected, status, output, got status)``."""
    steps = commands(body)
    script = []
    for i, (command, _, _) in enumerate(steps):
        for old, new in subst.items():
            command = command.replace(old, new)
        script.append(f"{{ {command}\n}} > {i}.out 2>&1 </dev/null; echo $? > {i}.status")
    subprocess.run(["bash", "-c", "\n".join(script)], cwd=cwd, env=env, timeout=300, check=False)
    results = []
    for i, (command, expected, status) in enumerate(steps):
        output = (cwd / f"{i}.out").read_text()
        for real, shown in normal.items():
            output = output.replace(real, shown)
        results.append((command, expected, status, output,
                        int((cwd / f"{i}.status").read_text())))
    return results


@pytest.fixture
def walk(server, tmp_path):
    """README -> real substitutions, real -> README ones, a scratch directory, the environment."""
    home = tmp_path / "home"
    home.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXPERTD_")}
    env.update(HOME=str(home), PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
               EXPERTD_ENDPOINT=server.endpoint)
    subst = {"tcp://127.0.0.1:4242": server.endpoint,
             "tcp://127.0.0.1:4243": f"tcp://127.0.0.1:{free_port()}", "/home/me": str(home)}
    normal = {real: shown for shown, real in subst.items()}
    normal.update({f"{work}/": "", f"{ROOT}/": ""})
    return subst, normal, work, env


PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def marked(kind: str) -> list[tuple[str, int, str, str | None]]:
    """``(page, line, body, output mode)`` of every block marked ``kind`` in the README and the docs."""
    return [(str(page.relative_to(ROOT)), *block) for page in PAGES for block in blocks(page, kind)]


README_BLOCKS = marked("server")


def test_readme_and_docs_keep_their_runnable_blocks():
    """The README tours each way in; the docs keep every block the long README had marked."""
    kinds = {kind: [b for b in marked(kind) if b[0].startswith("docs/")]
             for kind in ("server", "http", "python")}
    assert len(kinds["server"]) >= 7 and len(kinds["http"]) >= 1 and len(kinds["python"]) >= 1, kinds
    readme = {kind: blocks(ROOT / "README.md", kind) for kind in ("server", "http", "python")}
    assert all(readme.values()), readme


@pytest.mark.parametrize("page, line, body, output", README_BLOCKS,
                         ids=[f"{b[0]}:{b[1]}" for b in README_BLOCKS])
def test_readme_shell_block_runs_as_written(walk, page, line, body, output):
    subst, normal, work, env = walk
    for command, expected, status, got, got_status in run_block(body, subst, normal, work, env):
        assert "Traceback" not in got, (command, got)
        assert got_status == status, (command, got)
        if output != "status":
            assert matches(got.splitlines(), expected), (command, got)


HTTP_BLOCKS = marked("http")


@pytest.fixture
def bridge(server, tmp_path):
    """The HTTP bridge, as `make run` starts it, in front of the default server."""
    port = free_port()
    env = dict(os.environ, PORT=str(port), EXPERTD_ENDPOINT=server.endpoint)
    env.pop("EXPERTD_HTTP_TOKEN", None)
    log = open(tmp_path / "bridge.log", "wb")
    proc = subprocess.Popen(["node", "src/server.js"], cwd=ROOT / "express_bridge", env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    yield port
    proc.terminate()
    proc.wait(30)
    log.close()


@pytest.mark.parametrize("page, line, body, output", HTTP_BLOCKS,
                         ids=[f"{b[0]}:{b[1]}" for b in HTTP_BLOCKS])
def test_readme_http_block_runs_as_written(walk, bridge, page, line, body, output):
    subst, normal, work, env = walk
    subst = dict(subst, **{"localhost:3000": f"127.0.0.1:{bridge}",
                           "127.0.0.1:3000": f"127.0.0.1:{bridge}"})
    for command, expected, status, got, got_status in run_block(body, subst, normal, work, env):
        assert got_status == status, (command, got)
        assert matches(got.splitlines(), expected), (command, got)


PYTHON_MARK = re.compile(r"^<!-- readme-test: python -->\n```python\n(?P<code>.*?)^```\n+"
                         r"```text\n(?P<out>.*?)^```$", re.M | re.S)
PYTHON_BLOCKS = [(str(page.relative_to(ROOT)), page.read_text()[:m.start()].count("\n") + 1,
                  m["code"], m["out"])
                 for page in PAGES for m in PYTHON_MARK.finditer(page.read_text())]


def test_every_python_mark_has_its_output():
    assert len(PYTHON_BLOCKS) == len(marked("python"))


@pytest.mark.parametrize("page, line, code, expected", PYTHON_BLOCKS,
                         ids=[f"{b[0]}:{b[1]}" for b in PYTHON_BLOCKS])
def test_python_block_prints_what_it_shows(walk, page, line, code, expected):
    subst, normal, work, env = walk
    out = subprocess.run([str(BIN / "python"), "-"], input=code, capture_output=True, text=True, cwd=work,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    assert matches(out.stdout.splitlines(), expected.splitlines()), out.stdout


def node_example(path: Path) -> str:
    (code,) = re.findall(r"```js\n(.*?)```", path.read_text(), re.S)[:1]
    return code


@pytest.mark.parametrize("readme", ["README.md", "docs/node.md", "express_bridge/README.md"])
def test_node_example_answers_and_survives_a_missing_server(server, readme):
    code = node_example(ROOT / readme)
    bridge = ROOT / "express_bridge"
    env = dict(os.environ, EXPERTD_ENDPOINT=server.endpoint)
    out = subprocess.run(["node", "-"], input=code, capture_output=True, text=True, cwd=bridge,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "UnknownExpert - unknown expert 'nosuch'" in out.stdout
    nobody = f"tcp://127.0.0.1:{free_port()}"
    out = subprocess.run(["node", "-"], input=code, capture_output=True, text=True, cwd=bridge,
                         env=dict(env, EXPERTD_ENDPOINT=nobody), timeout=120)
    assert out.returncode == 1
    assert out.stderr.startswith(f"expertd at {nobody} did not answer"), out.stderr
    assert "Unhandled" not in out.stderr and "    at " not in out.stderr


BRIDGE_BLOCKS = blocks(ROOT / "express_bridge" / "README.md", "bridge")


@pytest.mark.parametrize("line, body, output", BRIDGE_BLOCKS,
                         ids=[f"express_bridge/README.md:{b[0]}" for b in BRIDGE_BLOCKS])
def test_bridge_readme_block_runs_as_written(walk, line, body, output):
    subst, normal, work, env = walk
    port = str(free_port())
    script = body.replace("3000", port).replace("--prefix express_bridge",
                                                f"--prefix {ROOT / 'express_bridge'}")
    proc = subprocess.Popen(["bash", "-c", script], cwd=ROOT, env=dict(env, PORT=port),
                            stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        answer = read_json_list(proc.stdout.fileno(), within=120)
        default_experts = set(yaml.safe_load((ROOT / "config" / "experts.yaml").read_text())["experts"])
        assert {e["name"] for e in answer} == default_experts, answer
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def read_json_list(fd: int, within: float) -> list:
    """Read ``fd`` until a JSON list of objects (curl's answer) appears among the log lines."""
    seen = b""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            seen += chunk
            start = seen.find(b'[{"name"')
            if start >= 0:
                try:
                    return json.JSONDecoder().raw_decode(seen[start:].decode())[0]
                except ValueError:
                    continue  # not all of it yet
    raise AssertionError(f"no JSON answer from the block; its output:\n{seen.decode(errors='replace')}")


def own_expert(path: Path) -> tuple[str, str]:
    """The README's own-expert example: the ``# my_experts.py`` module and the experts file after it."""
    m = re.search(r"```python\n(?P<module># my_experts\.py\n.*?)```\n+```yaml\n(?P<config>.*?)```",
                  path.read_text(), re.S)
    assert m, f"{path} shows no `# my_experts.py` block followed by its experts file"
    return m["module"], m["config"]


def test_readme_own_expert_serves_as_written(tmp_path):
    """The module and the experts file of "Your own expert", saved as shown: checked, served, answered."""
    module, config = own_expert(ROOT / "README.md")
    (tmp_path / "my_experts.py").write_text(module)
    (tmp_path / "experts.yaml").write_text(config)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXPERTD_")}
    check = subprocess.run([EXPERTD, "check", "--config", "experts.yaml"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    with open(tmp_path / "server.log", "wb") as log:
        proc = subprocess.Popen([EXPERTD, "serve", "--config", "experts.yaml", "--bind", endpoint],
                                cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_ready(endpoint, proc)
            out = subprocess.run([EXPERTD, "pipe", "shouting", "--endpoint", endpoint],
                                 input='{"text": "HEY you"}\n', capture_output=True, text=True,
                                 cwd=tmp_path, env=env, timeout=60)
            assert out.returncode == 0, out.stderr
            assert json.loads(out.stdout)["opinions"] == {"shouting": {"ratio": 0.5}}
        finally:
            proc.terminate()
            proc.wait(60)
