#!/usr/bin/env bash
# Build the expertd server image from Debian packages and this checkout:
#   1. a Debian 12 root filesystem by debootstrap (minbase + python3, python3-venv),
#      kept as a tarball in the work directory (made once);
#   2. that root imported as the base image localhost/expertd-base:bookworm;
#   3. the build context: the project's wheel and its dependencies' wheels (pip wheel
#      on the host, at the versions of constraints.txt), the default
#      models (`make models` first) and deploy/systemd/experts.yaml;
#   4. deploy/image/Containerfile built on the base (the wheel installed with the
#      pinned dependencies, a non-root user, the health check), tagged $IMAGE.
#
# Usage: deploy/image/build.sh [base]     (as root: debootstrap and podman need it here;
#        `base` stops after step 2)
# Environment: IMAGE (localhost/expertd:0.1.0), WORK (build/image), PODMAN (podman;
# e.g. "podman --root DIR --runtime runc"), BUILD_OPTS (more `podman build` options, e.g.
# "--ulimit nofile=4096:4096" where the default limits are refused), DEBIAN_MIRROR,
# PYTHON (.venv/bin/python).
# Prints "step NAME: SECONDS s" for each step (tests/e2e/test_deploy_image.py reads them).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=${WORK:-$ROOT/build/image}
IMAGE=${IMAGE:-localhost/expertd:0.1.0}
SUITE=bookworm
BASE=localhost/expertd-base:$SUITE
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}  # has setuptools: the wheel builds offline
read -r -a PODMAN <<< "${PODMAN:-podman}"
read -r -a BUILD_OPTS <<< "${BUILD_OPTS:-}"

step_began=0
begin() { printf '==> %s\n' "$1"; step_name=$2; step_began=$(date +%s.%N); }
done_step() { printf 'step %s: %.1f s\n' "$step_name" "$(echo "$(date +%s.%N) - $step_began" | bc)"; }

ONLY_BASE=false
[[ ${1:-} == base ]] && ONLY_BASE=true
for model in sentiment genre; do
  if [[ ! -f $ROOT/models/$model/model.keras ]]; then
    echo "build.sh: models/$model/model.keras is missing: run \`make models\` first" >&2
    exit 1
  fi
done
mkdir -p "$WORK"

ROOTFS_TAR=$WORK/rootfs-$SUITE.tar
if [[ ! -f $ROOTFS_TAR ]]; then
  begin "debootstrap: a Debian $SUITE root filesystem (minbase + python3)" debootstrap
  rm -rf "$WORK/rootfs"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,passwd \
    "$SUITE" "$WORK/rootfs" "$MIRROR"
  chroot "$WORK/rootfs" apt-get clean
  rm -rf "$WORK/rootfs/var/lib/apt/lists/"*
  tar -C "$WORK/rootfs" -cf "$ROOTFS_TAR.partial" .
  mv "$ROOTFS_TAR.partial" "$ROOTFS_TAR"
  rm -rf "$WORK/rootfs"
  done_step
fi

if ! "${PODMAN[@]}" image exists "$BASE"; then
  begin "base image: $BASE from the root filesystem (podman import)" import
  "${PODMAN[@]}" import --change 'CMD ["/bin/bash"]' "$ROOTFS_TAR" "$BASE" >/dev/null
  done_step
fi

if $ONLY_BASE; then
  exit 0
fi

begin "build context: the wheel and its dependencies' wheels, the models, experts.yaml" context
CONTEXT=$WORK/context
rm -rf "$CONTEXT"
mkdir -p "$CONTEXT/dist" "$CONTEXT/wheels" "$CONTEXT/models"
# From a copy of the sources: the build leaves nothing (build/, egg-info) in the checkout.
mkdir -p "$WORK/source"
tar -C "$ROOT" --exclude=./.git --exclude='./.venv*' --exclude=./build --exclude=./models \
  --exclude=./data --exclude=./site --exclude=node_modules --exclude='*.egg-info' \
  --exclude=__pycache__ -cf - . | tar -C "$WORK/source" -xf -
"$PYTHON" -m pip wheel --quiet --no-deps --no-build-isolation --disable-pip-version-check \
  -w "$CONTEXT/dist" "$WORK/source"
rm -rf "$WORK/source"
# Every dependency as a wheel, fetched by the host's pip (its index, proxy and
# certificates) at the versions of constraints.txt: the image build needs no network.
"$PYTHON" -m pip wheel --quiet --disable-pip-version-check -c "$ROOT/constraints.txt" \
  -w "$CONTEXT/wheels" "$(ls "$CONTEXT"/dist/expertd-*.whl)[models]"
rm -f "$CONTEXT"/wheels/expertd-*.whl
cp "$ROOT/deploy/systemd/experts.yaml" "$CONTEXT/"
for model in sentiment genre consensus; do
  [[ -d $ROOT/models/$model ]] && cp -r "$ROOT/models/$model" "$CONTEXT/models/"
done
done_step

begin "image: $IMAGE (podman build of deploy/image/Containerfile)" build
# --format docker keeps HEALTHCHECK (the OCI format has no field for it);
# --network none: everything it installs is in the context.
"${PODMAN[@]}" build --format docker --network none "${BUILD_OPTS[@]}" --build-arg "BASE=$BASE" \
  -f "$ROOT/deploy/image/Containerfile" -t "$IMAGE" "$CONTEXT"
done_step
"${PODMAN[@]}" image inspect --format 'image {{.Id}}: {{.Size}} bytes' "$IMAGE"
