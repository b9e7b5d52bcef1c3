"""The experts file is checked in full, before anything heavy loads, with every problem at once.

Real files, real ``expertd check`` / ``expertd serve`` processes; no TensorFlow
unless a test says so (the busy-port test uses the default experts on purpose:
it shows that the port is checked before any model loads).
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import BIN, DEFAULT_CONFIG, ROOT, free_port
from expertd.experts.config import (BatchPolicy, ConfigError, LearnSettings, QueuePolicy, ServerSettings,
                            build_experts,
                            load_config)
from expertd.rpc_server.service import RESERVED

EXPERTD = str(BIN / "expertd")


def write(tmp_path: Path, text: str, name: str = "experts.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def problems(path: Path, **kwargs) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path, **kwargs)
    return [str(p) for p in info.value.problems]


def expertd(*args: str, cwd: Path = ROOT, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([EXPERTD, *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout)


BAD = """\
server:
  max_text_bytes: 1000
  thread: 4
experts:
  vader:
    expert: expertd.experts.vader:VaderExpert
    batch: {max_size: "64"}
  shouting:
    expert: expertd.experts.examples:shouting
    optoins: {}
  stats: expertd.experts.vader:VaderExpert
  vader: expertd.experts.examples:shouting
"""


def test_every_problem_at_once_with_file_line_and_expert(tmp_path):
    path = write(tmp_path, BAD)
    found = problems(path, reserved=RESERVED)
    assert found == [
        f"{path}:3: unknown key 'server.thread' (did you mean 'threads'?)",
        f"{path}:7: expert 'vader': batch.max_size must be an integer >= 1, got the string '64' "
        f"(write it without quotes)",
        f"{path}:10: expert 'shouting': unknown key 'optoins' (did you mean 'options'?)",
        f"{path}:11: expert 'stats': the name 'stats' is reserved for the server's RPC method of "
        f"that name ({', '.join(sorted(RESERVED))}); choose another",
        f"{path}:12: expert 'vader': defined twice (lines 5 and 12); YAML would silently keep "
        f"only the second: rename or remove one",
    ]
    with pytest.raises(ConfigError) as info:
        load_config(path, reserved=RESERVED)
    assert str(info.value).startswith(f"{path}: 5 problems:\n  {path}:3: ")


@pytest.mark.parametrize("entry, message", [
    ("batch: {max_size: 0}", "batch.max_size must be an integer >= 1, got 0"),
    ("batch: {max_size: true}", "batch.max_size must be an integer >= 1, got a boolean True"),
    ("batch: {max_wait_ms: -1}", "batch.max_wait_ms must be a number >= 0, got -1"),
    ("batch: {max_wait_ms: soon}", "batch.max_wait_ms must be a number >= 0, got the string 'soon'"),
    ("batch: {max_sise: 3}", "unknown key 'batch.max_sise' (did you mean 'max_size'?)"),
    ("batch: 64", "batch must be a mapping (key: value), got an integer 64"),
    ("options: [1]", "options must be a mapping (key: value), got a list [1]"),
    ("queue: {max_docs: '10'}", "queue.max_docs must be an integer >= 1, got the string '10' "
                                "(write it without quotes)"),
    ("queue: {budget_ms: -5}", "queue.budget_ms must be a number >= 1, got -5"),
    ("queue: {budget_ms: 0}", "queue.budget_ms must be a number >= 1, got 0"),
    ("needs: other", "needs must be a list of expert names (e.g. [other]) or a mapping"),
    ("needs: [1]", "needs must list expert names, but an integer 1 is not one"),
    ("needs: {other: 3}", "needs other: must be the name of a document field, got an integer 3"),
    ("learn: yes", "learn must be a mapping (key: value), got a boolean True"),
])
def test_types_of_expert_settings(tmp_path, entry, message):
    path = write(tmp_path, f"experts:\n  x:\n    expert: expertd.experts.examples:shouting\n    {entry}\n")
    (found,) = problems(path)
    assert found.startswith(f"{path}:4: expert 'x': {message}"), found


@pytest.mark.parametrize("setting, message", [
    ("threads: '4'", "server.threads must be an integer >= 1, got the string '4'"),
    ("max_text_bytes: 0", "server.max_text_bytes must be an integer >= 1, got 0"),
    ("max_batch_docs: 1.5", "server.max_batch_docs must be an integer >= 1, got a number 1.5"),
    ("state_dir: 3", "server.state_dir must be a non-empty string, got an integer 3"),
    ("max_message_bytes: big", "server.max_message_bytes must be an integer >= 1"),
    ("handshake_timeout_ms: -1", "server.handshake_timeout_ms must be a number >= 0, got -1"),
    ("max_text_byte: 10", "unknown key 'server.max_text_byte' (did you mean 'max_text_bytes'?)"),
])
def test_types_of_server_settings(tmp_path, setting, message):
    path = write(tmp_path, f"server:\n  {setting}\nexperts:\n  x: expertd.experts.examples:shouting\n")
    (found,) = problems(path)
    assert found.startswith(f"{path}:2: {message}"), found


def test_keys_other_engineers_add_are_accepted(tmp_path):
    path = write(tmp_path, """\
server: {max_batch_docs: 512, state_dir: state, max_message_bytes: 1000000,
         handshake_timeout_ms: 2500, max_text_bytes: 100, threads: 2}
experts:
  shouting:
    expert: expertd.experts.examples:shouting
    queue: {max_docs: 100, budget_ms: 250}
    learn: {checkpoint_every: 10}
  vader:
    expert: expertd.experts.vader:VaderExpert
    needs: [shouting]
  both:
    expert: expertd.experts.examples:shouting
    needs: {shouting: shout, vader: sentiment}
""")
    config = load_config(path)
    assert config.server == ServerSettings(max_text_bytes=100, threads=2, max_batch_docs=512,
                                           state_dir=str(tmp_path / "state"),
                                           max_message_bytes=1000000, handshake_timeout_ms=2500)
    shouting, vader, both = config.experts
    assert shouting.queue == QueuePolicy(max_docs=100, budget_ms=250)
    assert shouting.learn == LearnSettings(checkpoint_every=10) and shouting.batch == BatchPolicy()
    assert vader.needs == {"shouting": "shouting"} and vader.queue == QueuePolicy()  # each as named
    assert both.needs == {"shouting": "shout", "vader": "sentiment"}


def test_top_level_typo_and_duplicates_anywhere(tmp_path):
    path = write(tmp_path, "server: {threads: 2, threads: 3}\nexpert:\n  x: a:b\nexperts:\n"
                           "  x: expertd.experts.examples:shouting\n")
    assert problems(path) == [
        f"{path}:1: key 'threads' written twice in one mapping (lines 1 and 1); YAML would "
        f"silently keep only the second",
        f"{path}:2: unknown top-level key 'expert' (did you mean 'experts'?)",
    ]


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = write(tmp_path, "experts:\n  x: expertd.experts.examples:shouting\n  y: [unclosed\n")
    with pytest.raises(ConfigError, match=rf"^{path}:\d+: not valid YAML: "):
        load_config(path)


def test_import_errors_name_the_expert_and_the_file(tmp_path):
    (tmp_path / "needs_missing.py").write_text("import no_such_dependency_xyz\n")
    (tmp_path / "raises_at_import.py").write_text("raise RuntimeError('half-written module')\n")
    path = write(tmp_path, "experts:\n  a: needs_missing:thing\n  b: raises_at_import:thing\n"
                           "  c: expertd.experts.vader:NoSuchExpert\n  d: expertd.experts.vader\n")
    out = expertd("check", "--config", str(path), cwd=tmp_path)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.splitlines() == [
        f"Error: {path}: 4 problems:",
        f"  {path}:2: expert 'a': importing 'needs_missing:thing' failed: ModuleNotFoundError: "
        f"No module named 'no_such_dependency_xyz'",
        f"  {path}:3: expert 'b': importing 'raises_at_import:thing' failed: RuntimeError: "
        f"half-written module",
        f"  {path}:4: expert 'c': attribute \"NoSuchExpert\" not found in module \"expertd.experts.vader\"",
        f"  {path}:5: expert 'd': expert must be an import string \"<module>:<attribute>\", "
        f"got the string 'expertd.experts.vader'",
    ]


def test_missing_option_path_is_named_not_the_endpoint(tmp_path):
    path = write(tmp_path, "experts:\n  sentiment:\n    expert: expertd.experts.keras_text:SentimentExpert\n"
                           "    options: {model_dir: ../nowhere}\n")
    out = expertd("serve", "--config", str(path), "--bind", f"tcp://127.0.0.1:{free_port()}")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "cannot serve" not in out.stderr
    assert out.stderr.strip() == (
        f"Error: {path}:4: expert 'sentiment': options.model_dir: '../nowhere' does not exist "
        f"({tmp_path.parent / 'nowhere'}; relative paths are read from {tmp_path})")


def test_constructor_problems_are_listed_together(tmp_path):
    path = write(tmp_path, "experts:\n  slow:\n    expert: expertd.experts.examples:SlowExpert\n"
                           "    options: {seconds: soon}\n"
                           "  v:\n    expert: expertd.experts.vader:VaderExpert\n"
                           "    options: {colour: red}\n")
    with pytest.raises(ConfigError) as info:
        build_experts(load_config(path))
    assert [str(p) for p in info.value.problems] == [
        f"{path}:2: expert 'slow': SlowExpert option seconds must be a number >= 0, not 'soon'",
        f"{path}:5: expert 'v': VaderExpert got unknown options: colour",
    ]


def test_load_failure_names_the_expert_and_the_exception(tmp_path):
    (tmp_path / "fragile.py").write_text(
        "from expertd.experts.base import Expert\n\n"
        "class Fragile(Expert):\n"
        "    def load(self):\n"
        "        raise OSError('model.bin is truncated')\n")
    path = write(tmp_path, "experts:\n  fragile: fragile:Fragile\n")
    out = expertd("serve", "--config", str(path), "--bind", f"tcp://127.0.0.1:{free_port()}",
                  cwd=tmp_path)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr and "cannot serve" not in out.stderr
    assert out.stderr.strip().splitlines()[-1] == (
        "Error: expert 'fragile' (fragile:Fragile) failed to load: OSError: model.bin is truncated")


def test_check_passes_a_good_file_without_serving():
    port = free_port()
    out = expertd("check", "--bind", f"tcp://127.0.0.1:{port}")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == (f"{DEFAULT_CONFIG}: 5 experts (sentiment, genre, vader, learner, "
                                  f"consensus) look right; tcp://127.0.0.1:{port} is free to serve on")
    same = expertd("serve", "--check", "--bind", f"tcp://127.0.0.1:{port}")
    assert same.returncode == 0 and same.stdout == out.stdout


@pytest.mark.parametrize("bind, message", [
    ("tcp://no-such-host.invalid:4242", "cannot serve on tcp://no-such-host.invalid:4242: unknown host"),
    ("ipc:///no/such/dir/sock", "directory /no/such/dir does not exist"),
])
def test_unservable_endpoint_is_one_line(tmp_path, bind, message):
    out = expertd("serve", "--config", str(ROOT / "tests" / "odd_experts.yaml"), "--bind", bind)
    assert out.returncode == 1
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("Error: ") and message in line, line


@pytest.mark.parametrize("bind, message", [
    ("localhost:4242", "endpoint 'localhost:4242' has no transport: did you mean tcp://localhost:4242?"),
    ("tcp://127.0.0.1", "endpoint 'tcp://127.0.0.1' has no port: did you mean tcp://127.0.0.1:4242?"),
    ("tcp://127.0.0.1:99999", "port '99999' must be a number from 1 to 65535"),
])
def test_malformed_endpoint_is_a_usage_error_in_one_line(tmp_path, bind, message):
    """A malformed endpoint is refused by the one parser (tests/e2e/test_endpoint_cli.py has them all)."""
    out = expertd("serve", "--config", str(ROOT / "tests" / "odd_experts.yaml"), "--bind", bind)
    assert out.returncode == 2
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("expertd serve: ") and message in line, line


def test_busy_port_fails_before_any_model_loads(tmp_path):
    """The default experts take seconds to load; a busy port must be reported before that."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        endpoint = f"tcp://127.0.0.1:{taken.getsockname()[1]}"
        began = time.monotonic()
        out = expertd("serve", "--bind", endpoint)
        took = time.monotonic() - began
    assert out.returncode == 1
    assert "loaded expert" not in out.stderr and "Traceback" not in out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith(f"Error: cannot serve on {endpoint}: the port is already in use")
    assert took < 30, took  # generous: the evidence is that no model was loaded


def test_reserved_name_via_serve(tmp_path):
    path = write(tmp_path, "experts:\n  health: expertd.experts.examples:shouting\n")
    out = expertd("serve", "--config", str(path), "--bind", f"tcp://127.0.0.1:{free_port()}")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert f"{path}:2: expert 'health': the name 'health' is reserved" in out.stderr


CORPUS = ROOT / "tests" / "corpus" / "experts_files"


@pytest.mark.parametrize("name", sorted(p.name for p in CORPUS.glob("*.yaml")))
def test_corpus_of_bad_experts_files(name):
    """Each file names, in ``# expect:`` lines, what ``expertd check`` must say about it."""
    expected = [line.split("# expect: ", 1)[1].rstrip()
                for line in (CORPUS / name).read_bytes().decode("utf-8", "replace").splitlines()
                if line.startswith("# expect: ")]
    assert expected, f"{name} has no '# expect:' line"
    out = expertd("check", "--config", name, "--bind", f"tcp://127.0.0.1:{free_port()}",
                  cwd=CORPUS)
    assert out.returncode == 1, out.stdout
    assert "Traceback" not in out.stderr
    for line in expected:
        assert line in out.stderr, out.stderr


def test_check_load_warns_in_one_line_about_an_expert_that_pays_per_call(tmp_path):
    """``expertd check --load`` times one document against a batch (Keras' predict pays ~40 ms a call)."""
    (tmp_path / "per_call.py").write_text(
        "import time\n\n"
        "def slow(texts):\n    time.sleep(0.03)\n    return [{'n': len(t)} for t in texts]\n\n"
        "def quick(text):\n    return {'n': len(text)}\n")
    path = write(tmp_path, "experts:\n  slow: {expert: per_call:slow, options: {batched: true}}\n"
                           "  quick: per_call:quick\n")
    out = expertd("check", "--load", "--config", str(path), "--bind", f"tcp://127.0.0.1:{free_port()}")
    assert out.returncode == 0, out.stderr
    warnings = [line for line in out.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, out.stderr
    assert warnings[0].startswith("warning: expert 'slow': predict() for one document takes")
    assert "load and look right" in out.stdout
