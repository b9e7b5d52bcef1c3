"""``rpc_server.live_versions``: what the admin methods refuse before touching anything."""

from __future__ import annotations

import pytest

from expertd.rpc_server.errors import NotAllowed, VersionRefused
from expertd.rpc_server.live_versions import LiveVersions


def controller(tmp_path, allowed=True, sets=None):
    return LiveVersions(sets or {}, load_version=None, make_batcher=None, on_switch=None,
                        state_dir=tmp_path, supervisor_pid=None, allowed=allowed)


def test_a_server_reachable_without_keys_refuses_admin_methods(tmp_path):
    live = controller(tmp_path, allowed=False)
    for call in (lambda: live.load("sentiment", "3"), lambda: live.rollback("sentiment")):
        with pytest.raises(NotAllowed, match="local endpoint or checks CURVE keys"):
            call()
    assert not (tmp_path / "versions.json").exists()


@pytest.mark.parametrize("name, version, message", [
    ("sentiment", "3", "expert 'sentiment' has no versions on this server"),
    (3, "3", "the expert name must be a string"),
])
def test_an_expert_without_versions_is_refused_with_why(tmp_path, name, version, message):
    with pytest.raises(VersionRefused, match=message):
        controller(tmp_path).load(name, version)


def test_no_state_file_means_nothing_to_change(tmp_path):
    assert controller(tmp_path).read_state() == {}
    (tmp_path / "versions.json").write_text("{not json")
    assert controller(tmp_path).read_state() == {}
