#!/usr/bin/env bash
# `make image`: build the Dockerfile without a Docker daemon (Debian's buildah), then run
# the image's entry points: `faceval --version`, the model registry (every bundled model
# verified) and each stage worker's preflight (scripts/image_smoke.py).
#
# With no container registry reachable, the base image is made from Debian's packages with
# mmdebstrap (bookworm: Python 3.11, like python:3.11-slim-bookworm) and passed as
# PYTHON_IMAGE; the machine's extra CA certificates (/usr/local/share/ca-certificates) go
# into that local base so pip works behind a TLS-intercepting proxy.
#
# Exit status: 0 built and checked, or skipped because this machine cannot build images
# (the reason is printed: no buildah and no root to install it, no user namespaces for a
# rootless build, no usable storage driver); 1 a real failure (the build or a check).
# Environment: FACEVAL_IMAGE (default localhost/faceval:dev), FACEVAL_BASE_IMAGE (skip
# making a base), FACEVAL_IMAGE_TARGET (default runtime), FACEVAL_IMAGE_PULL_BASE=1 (try
# python:3.11-slim-bookworm from a registry first).
set -euo pipefail

cd "$(dirname "$0")/.."
IMAGE=${FACEVAL_IMAGE:-localhost/faceval:dev}
TARGET=${FACEVAL_IMAGE_TARGET:-runtime}
LOCAL_BASE=localhost/faceval-base:bookworm
WORK=${FACEVAL_IMAGE_WORK:-/var/tmp/faceval-image}
# No OCI runtime needed: crun/runc fail where the cgroup layout is hybrid (this sandbox);
# chroot isolation runs RUN steps and the checks with the host's network.
export BUILDAH_ISOLATION=${BUILDAH_ISOLATION:-chroot}

cannot() {
  echo "make image: SKIPPED, this machine cannot build images: $*" >&2
  exit 0
}
fail() {
  echo "make image: FAILED: $*" >&2
  exit 1
}
have() { command -v "$1" >/dev/null 2>&1; }

# --- 1. buildah (and mmdebstrap for the base) -----------------------------------------------
need=()
have buildah || need+=(buildah)
have mmdebstrap || need+=(mmdebstrap)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ] || ! have apt-get; then
    cannot "${need[*]} missing and cannot be installed here (not root, or no apt-get):" \
      "sudo apt-get install -y ${need[*]}"
  fi
  echo "installing ${need[*]} with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  timeout 300 apt-get update -qq >/dev/null || true
  timeout 900 apt-get install -y -qq --no-install-recommends "${need[@]}" uidmap >/dev/null \
    || fail "apt-get install ${need[*]} failed"
fi

# --- 2. can this machine hold containers at all? --------------------------------------------
if [ "$(id -u)" -ne 0 ]; then
  userns=$(cat /proc/sys/user/max_user_namespaces 2>/dev/null || echo 0)
  [ "$userns" -gt 0 ] || cannot "user namespaces are disabled (user.max_user_namespaces=0)" \
    "and a rootless build needs them; run as root or enable them"
  grep -q "^$(id -un):" /etc/subuid 2>/dev/null \
    || cannot "no subordinate uids for $(id -un) in /etc/subuid (rootless buildah needs them)"
  buildah unshare true 2>/dev/null || cannot "buildah unshare fails: no usable user namespace"
fi
if ! probe=$(buildah from scratch 2>/tmp/faceval-buildah-probe.log); then
  export STORAGE_DRIVER=vfs
  probe=$(buildah from scratch 2>>/tmp/faceval-buildah-probe.log) \
    || cannot "no storage driver works (overlay and vfs): $(tail -1 /tmp/faceval-buildah-probe.log)"
  echo "overlay storage unusable here; using vfs (slower, more disk)"
fi
buildah rm "$probe" >/dev/null

# --- 3. the base image ------------------------------------------------------------------------
base=${FACEVAL_BASE_IMAGE:-}
if [ -z "$base" ] && [ "${FACEVAL_IMAGE_PULL_BASE:-0}" = 1 ] \
  && timeout 120 buildah pull -q docker.io/library/python:3.11-slim-bookworm >/dev/null 2>&1; then
  base=docker.io/library/python:3.11-slim-bookworm
fi
if [ -z "$base" ]; then
  base=$LOCAL_BASE
  if ! buildah inspect --type image "$base" >/dev/null 2>&1; then
    echo "making $base with mmdebstrap (Debian bookworm, python3.11)"
    mkdir -p "$WORK"
    hooks=()
    if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
      hooks+=(--customize-hook='cp /usr/local/share/ca-certificates/*.crt "$1/usr/local/share/ca-certificates/"'
              --customize-hook='chroot "$1" update-ca-certificates >/dev/null'
              --customize-hook='printf "[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n" >"$1/etc/pip.conf"')
    fi
    timeout 1200 mmdebstrap --quiet --variant=minbase \
      --include=python3,python3-venv,python-is-python3,ca-certificates \
      --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
      "${hooks[@]}" bookworm "$WORK/base.tar" \
      || fail "mmdebstrap could not make the base image (see its output above)"
    ctr=$(buildah from scratch)
    buildah add --quiet "$ctr" "$WORK/base.tar" / >/dev/null
    buildah config --env LANG=C.UTF-8 --cmd '["python3"]' "$ctr"
    buildah commit --quiet "$ctr" "$base" >/dev/null
    buildah rm "$ctr" >/dev/null
    rm -f "$WORK/base.tar"
  fi
fi

# --- 4. upstream files of `convert` models, into the build context (never committed) -------
sources=${FACEVAL_MODEL_SOURCE_DIR:-"$PWD/../shared/models"}
staged=$(python3 - "$sources" <<'PY'
import shutil, sys, tomllib
from pathlib import Path

sources, target = Path(sys.argv[1]), Path("model-sources")
manifest = tomllib.loads(Path("models/manifest.toml").read_text())
count = 0
for entry in manifest.get("model", []):
    origin = entry.get("source", {}).get("origin")
    if entry.get("source", {}).get("kind") == "convert" and origin and (sources / origin).is_file():
        (target / origin).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sources / origin, target / origin)
        count += 1
print(count)
PY
)
echo "staged $staged upstream model file(s) from $sources into model-sources/"

# --- 5. build -------------------------------------------------------------------------------
echo "building $IMAGE (target $TARGET) on $base"
start=$(date +%s)
buildah bud --layers --format docker --build-arg "PYTHON_IMAGE=$base" \
  --target "$TARGET" --tag "$IMAGE" --file Dockerfile . \
  || fail "buildah bud failed (output above)"
echo "built $IMAGE in $(($(date +%s) - start)) s"

# --- 6. run the entry points ----------------------------------------------------------------
ctr=$(buildah from "$IMAGE")
trap 'buildah rm "$ctr" >/dev/null 2>&1 || true' EXIT
run() { buildah run --user 10001:10001 --volume "$PWD/scripts:/opt/faceval-checks:ro" "$ctr" -- "$@"; }
failed=()
run faceval --version || failed+=("faceval --version")
if [ "$TARGET" = etl ]; then
  # The ETL image runs no model: its own command and its dependency set.
  run faceval etl run --help >/dev/null || failed+=("faceval etl run --help")
  run python /opt/faceval-checks/check_image_deps.py etl || failed+=("check_image_deps.py etl")
else
  run faceval models list || failed+=("faceval models list")
  run python /opt/faceval-checks/image_smoke.py || failed+=("scripts/image_smoke.py")
fi
[ ${#failed[@]} -eq 0 ] || fail "in the image: ${failed[*]} (output above)"
echo "make image: OK, $IMAGE builds and its entry points run"
