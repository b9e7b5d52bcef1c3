#!/usr/bin/env bash
# Build the expertd server image from Debian packages and this checkout, reusing
# whatever an earlier build on this machine made with the same inputs:
#   1. debootstrap: a Debian 12 root filesystem (minbase + python3, python3-venv), kept
#      as a tarball in the cache, keyed by a hash of its inputs (suite, mirror, package
#      list, RECIPE below); reused while the key matches;
#   2. import: that root as the base image localhost/expertd-base:KEY (podman import);
#   3. wheels: every dependency's wheel at the versions of constraints.txt (pip wheel on
#      the host), kept in the cache, keyed by a hash of constraints.txt and the wheel's
#      requirements: a commit that changes only expertd's code reuses them;
#   4. context: this checkout's wheel (reproducible: its timestamps are the last
#      commit's), the models (`make models` first), deploy/systemd/experts.yaml;
#   5. build: deploy/image/Containerfile on the base, tagged $IMAGE. Its layers go from
#      the slowest-changing (the user, the dependencies' venv, the models) to the
#      fastest (expertd's wheel), so podman's layer cache rebuilds only what changed.
# Then prune: cache entries, base images and dangling images of other keys are removed,
# so the cache holds one of each.
#
# Usage: deploy/image/build.sh [base]     (as root: debootstrap and podman need it here;
#        `base` stops after step 2)
# Environment: IMAGE (localhost/expertd:0.1.0), CACHE (EXPERTD_IMAGE_CACHE, else
# /var/cache/expertd-image as root, else $XDG_CACHE_HOME/expertd-image), WORK (the
# build context, build/image), PODMAN (podman; e.g. "podman --root DIR --runtime runc"),
# BUILD_OPTS (more `podman build` options, e.g. "--ulimit nofile=4096:4096" where the
# default limits are refused), DEBIAN_MIRROR, PYTHON (.venv/bin/python), SOURCE (the tree
# the wheel is built from, this checkout).
# Prints "step NAME: SECONDS s" for each step that ran and "step NAME: reused (WHAT)"
# for each step whose result came from the cache (tests/e2e/test_deploy_image.py and
# bench/image_cache.py read them).
set -euo pipefail

# Bump when a change to this script changes the root filesystem it makes.
RECIPE=1
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SOURCE=${SOURCE:-$ROOT}
WORK=${WORK:-$ROOT/build/image}
IMAGE=${IMAGE:-localhost/expertd:0.1.0}
if [[ -n ${EXPERTD_IMAGE_CACHE:-} ]]; then
  CACHE=$EXPERTD_IMAGE_CACHE
elif [[ $(id -u) == 0 ]]; then
  CACHE=/var/cache/expertd-image
else
  CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/expertd-image
fi
SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PACKAGES=python3,python3-venv,ca-certificates,passwd
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}  # has setuptools: the wheel builds offline
read -r -a PODMAN <<< "${PODMAN:-podman}"
read -r -a BUILD_OPTS <<< "${BUILD_OPTS:-}"

step_began=0
begin() { printf '==> %s\n' "$1"; step_name=$2; step_began=$(date +%s%N); }
done_step() {
  local ns=$(( $(date +%s%N) - step_began ))
  printf 'step %s: %d.%d s\n' "$step_name" $(( ns / 1000000000 )) $(( ns / 100000000 % 10 ))
}
reused() { printf 'step %s: reused (%s)\n' "$1" "$2"; }
key_of() { sha256sum | cut -c1-16; }

ONLY_BASE=false
[[ ${1:-} == base ]] && ONLY_BASE=true
for model in sentiment genre; do
  if [[ ! -f $ROOT/models/$model/model.keras ]]; then
    echo "build.sh: models/$model/model.keras is missing: run \`make models\` first" >&2
    exit 1
  fi
done
mkdir -p "$WORK" "$CACHE"
# One build at a time per cache (two clones testing at once share it).
exec 9> "$CACHE/lock"
flock 9

ROOTFS_KEY=$(printf 'recipe %s\nsuite %s\nmirror %s\nvariant minbase\ninclude %s\n' \
  "$RECIPE" "$SUITE" "$MIRROR" "$PACKAGES" | key_of)
ROOTFS_TAR=$CACHE/rootfs-$SUITE-$ROOTFS_KEY.tar
BASE=localhost/expertd-base:$SUITE-$ROOTFS_KEY
if [[ -f $ROOTFS_TAR ]]; then
  reused debootstrap "$ROOTFS_TAR"
else
  begin "debootstrap: a Debian $SUITE root filesystem (minbase + python3)" debootstrap
  rm -rf "$CACHE/rootfs"
  debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$CACHE/rootfs" "$MIRROR"
  chroot "$CACHE/rootfs" apt-get clean
  rm -rf "$CACHE/rootfs/var/lib/apt/lists/"*
  tar -C "$CACHE/rootfs" -cf "$ROOTFS_TAR.partial" .
  mv "$ROOTFS_TAR.partial" "$ROOTFS_TAR"
  rm -rf "$CACHE/rootfs"
  done_step
fi

if "${PODMAN[@]}" image exists "$BASE"; then
  reused import "$BASE"
else
  begin "base image: $BASE from the root filesystem (podman import)" import
  "${PODMAN[@]}" import --change 'CMD ["/bin/bash"]' "$ROOTFS_TAR" "$BASE" >/dev/null
  done_step
fi

# Keep one root filesystem and one base image: those of this key.
find "$CACHE" -maxdepth 1 -name 'rootfs-*.tar*' ! -name "${ROOTFS_TAR##*/}" -delete
"${PODMAN[@]}" images --format '{{.Repository}}:{{.Tag}}' localhost/expertd-base \
  | { grep -vxF "$BASE" || true; } | while read -r old; do "${PODMAN[@]}" rmi "$old" >/dev/null || true; done

echo "base $BASE"
if $ONLY_BASE; then
  exit 0
fi

CONTEXT=$WORK/context
rm -rf "$CONTEXT"
mkdir -p "$CONTEXT/dist" "$CONTEXT/models"

# expertd's wheel first (seconds): its requirements are part of the wheels' key. Built
# from a copy of the sources (the build leaves nothing, build/ or egg-info, in the
# checkout), with the last commit's time as every timestamp, so that the same code
# gives the same wheel and podman reuses the layer that installs it.
begin "expertd's wheel from $SOURCE" wheel
EPOCH=$(git -C "$SOURCE" log -1 --format=%ct 2>/dev/null || echo 315532800)
rm -rf "$WORK/source"
mkdir -p "$WORK/source"
tar -C "$SOURCE" --exclude=./.git --exclude='./.venv*' --exclude=./build --exclude=./models \
  --exclude=./data --exclude=./site --exclude=node_modules --exclude='*.egg-info' \
  --exclude=__pycache__ -cf - . | tar -C "$WORK/source" -xf -
SOURCE_DATE_EPOCH=$EPOCH "$PYTHON" -m pip wheel --quiet --no-deps --no-build-isolation \
  --disable-pip-version-check -w "$CONTEXT/dist" "$WORK/source"
rm -rf "$WORK/source"
WHEEL=$(ls "$CONTEXT"/dist/expertd-*.whl)
touch -d "@$EPOCH" "$WHEEL"
done_step

REQUIRES=$("$PYTHON" - "$WHEEL" <<'EOF'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel:
    name = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    lines = wheel.read(name).decode().splitlines()
print("\n".join(sorted(line for line in lines if line.startswith("Requires-Dist:"))))
EOF
)
WHEELS_KEY=$( { "$PYTHON" -c 'import sys; print(sys.implementation.cache_tag)'; echo "$REQUIRES";
  cat "$ROOT/constraints.txt"; } | key_of)
WHEELS=$CACHE/wheels-$WHEELS_KEY
if [[ -d $WHEELS ]]; then
  reused wheels "$WHEELS"
else
  # Fetched by the host's pip (its index, proxy and certificates) at the versions of
  # constraints.txt: the image build needs no network.
  begin "the dependencies' wheels at the versions of constraints.txt (pip wheel)" wheels
  rm -rf "$WHEELS.partial"
  "$PYTHON" -m pip wheel --quiet --disable-pip-version-check -c "$ROOT/constraints.txt" \
    -w "$WHEELS.partial" "$WHEEL[models]"
  rm -f "$WHEELS.partial"/expertd-*.whl
  mv "$WHEELS.partial" "$WHEELS"
  done_step
fi
find "$CACHE" -maxdepth 1 -name 'wheels-*' ! -name "${WHEELS##*/}" -exec rm -rf {} +

# The context: the wheels linked from the cache with their list, the models and the
# experts file with their times kept.
cp -al "$WHEELS" "$CONTEXT/wheels" 2>/dev/null || cp -a "$WHEELS" "$CONTEXT/wheels"
# Their names and sha256. The Containerfile mounts the wheels into the step that installs
# them and copies only this list just before it: podman keys that step by its text and the
# layers before it, not by what it mounts, so the list's content is what rebuilds the venv
# exactly when the wheels change. (Its time is the cache entry's, for builders that also
# hash times.)
(cd "$CONTEXT/wheels" && sha256sum -- *.whl) > "$CONTEXT/wheels.sha256"
touch -r "$WHEELS" "$CONTEXT/wheels.sha256"
cp -p "$ROOT/deploy/systemd/experts.yaml" "$CONTEXT/"
for model in sentiment genre consensus; do
  [[ -d $ROOT/models/$model ]] && cp -a "$ROOT/models/$model" "$CONTEXT/models/"
done

begin "image: $IMAGE (podman build of deploy/image/Containerfile, layers reused when unchanged)" build
# --format docker keeps HEALTHCHECK (the OCI format has no field for it);
# --network none: everything it installs is in the context.
"${PODMAN[@]}" build --layers --format docker --network none "${BUILD_OPTS[@]}" \
  --build-arg "BASE=$BASE" -f "$ROOT/deploy/image/Containerfile" -t "$IMAGE" "$CONTEXT" \
  | tee "$WORK/build.log"
done_step
# Which layers podman built and which it reused.
printf 'layers: %d of %d steps reused from podman'"'"'s cache\n' \
  "$(grep -c -- '--> Using cache' "$WORK/build.log" || true)" \
  "$(grep -E '^STEP [0-9]+/[0-9]+: ' "$WORK/build.log" | grep -cv ': FROM ' || true)"

# The image this build replaced, and the layers only it used, are dangling now.
"${PODMAN[@]}" image prune --force >/dev/null
"${PODMAN[@]}" image inspect --format 'image {{.Id}}: {{.Size}} bytes' "$IMAGE"
