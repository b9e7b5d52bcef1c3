#!/usr/bin/env bash
# Set up what `python -m bench.run` needs; safe to run again (does nothing when all is there).
#  - wrk (HTTP load generator), libev-dev (bjoern builds against it) and GNU time
#    (peak memory of a stage), from Debian, installed only when missing (`apt-get update` once, then `apt-get install -y`);
#  - the `bench` extras of pyproject.toml (falcon, bjoern, gunicorn, matplotlib) into .venv,
#    constrained by constraints.txt like every other install of the project.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PIP="$VENV/bin/pip"

missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
dpkg-query -W -f='${Status}' libev-dev 2>/dev/null | grep -q "install ok installed" \
    || missing+=(libev-dev)
command -v cc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
[[ -x /usr/bin/time ]] || missing+=(time)
if ((${#missing[@]})); then
    SUDO=""
    if [[ $(id -u) -ne 0 ]]; then
        SUDO="sudo"
    fi
    echo "bench/setup.sh: installing ${missing[*]} from Debian"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
fi

if ! "$VENV/bin/python" - <<'EOF' 2>/dev/null
import importlib.metadata as m, sys
want = {"falcon": "4.4.0", "bjoern": "3.2.2", "gunicorn": "27.0.1", "matplotlib": "3.11.2"}
sys.exit(any(m.version(name) != version for name, version in want.items()))
EOF
then
    echo "bench/setup.sh: installing the bench extras (falcon, bjoern, gunicorn) into $VENV"
    "$PIP" install --quiet --disable-pip-version-check -c constraints.txt --config-settings editable_mode=compat -e '.[bench]'
fi
