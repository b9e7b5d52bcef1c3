#!/usr/bin/env bash
# Install Debian's haproxy when it is missing (tests/test_haproxy.py and bench/scale.py run it).
# `apt-get install -y` first; if that fails (stale package lists), `apt-get update` and again.
set -euo pipefail
command -v haproxy >/dev/null 2>&1 || [[ -x /usr/sbin/haproxy ]] && exit 0
SUDO=""
[[ $(id -u) -ne 0 ]] && SUDO="sudo"
echo "deploy/install-haproxy.sh: installing haproxy from Debian"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y -qq --no-install-recommends haproxy >/dev/null 2>&1 || {
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends haproxy >/dev/null
}
