#!/usr/bin/env bash
# Builds the kubekms container image without Docker or a registry: every binary of the
# project, linked statically (glibc, `+crt-static`), in one layer of an OCI image archive
# that `ctr images import` (cluster.sh load), `docker load` and `podman load` read.
# The Dockerfile at the repository's root builds the same image for users with Docker;
# `--check-dockerfile` proves the two agree (binaries, entrypoint, user).
#
# Usage: e2e/scripts/build-image.sh [--check-dockerfile] [OUTPUT.tar]
#   OUTPUT defaults to $CARGO_TARGET_DIR/kubekms-image.tar; the image is named
#   $KUBEKMS_IMAGE or localhost/kubekms:<workspace version>. Prints the image name last.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TARGET_DIR="${CARGO_TARGET_DIR:-/root/.cache/kubekms-target}"
TRIPLE=x86_64-unknown-linux-gnu
VERSION=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$ROOT/Cargo.toml")
IMAGE="${KUBEKMS_IMAGE:-localhost/kubekms:$VERSION}"
# What the image holds; the Dockerfile must say the same.
BINARIES=(kubekms-engine kubekms-operator kubekms-agent kubekms-webhook)
IMAGE_USER=65532:65532
ENTRYPOINT=/usr/local/bin/kubekms-operator

log() { echo "[build-image] $*" >&2; }

check_dockerfile() {
    local df="$ROOT/Dockerfile" bad=0 b
    for b in "${BINARIES[@]}"; do
        grep -q "^COPY --from=build .*/$b /usr/local/bin/$b\$" "$df" || {
            log "Dockerfile does not copy $b to /usr/local/bin/$b"
            bad=1
        }
    done
    grep -q "^USER $IMAGE_USER\$" "$df" || {
        log "Dockerfile's USER is not $IMAGE_USER"
        bad=1
    }
    grep -q "^ENTRYPOINT \[\"$ENTRYPOINT\"\]\$" "$df" || {
        log "Dockerfile's ENTRYPOINT is not [\"$ENTRYPOINT\"]"
        bad=1
    }
    grep -q -- "--target $TRIPLE" "$df" && grep -q "crt-static" "$df" || {
        log "Dockerfile does not build for $TRIPLE with +crt-static"
        bad=1
    }
    [[ $bad -eq 0 ]] && log "Dockerfile agrees with build-image.sh"
    return $bad
}

if [[ "${1:-}" == "--check-dockerfile" ]]; then
    check_dockerfile
    exit $?
fi
OUTPUT="${1:-$TARGET_DIR/kubekms-image.tar}"

packages=()
for b in "${BINARIES[@]}"; do
    packages+=(--bin "$b")
done
log "building ${BINARIES[*]} (release, static, $TRIPLE)"
# --target keeps RUSTFLAGS off build scripts and proc macros, which run on this machine.
RUSTFLAGS="-C target-feature=+crt-static" CARGO_TARGET_DIR="$TARGET_DIR" \
    cargo build --release --target "$TRIPLE" "${packages[@]}" >&2

# The release profile keeps line tables for profiling; the image does not need them.
stage="$TARGET_DIR/image-stage"
mkdir -p "$stage"
files=()
for b in "${BINARIES[@]}"; do
    strip -o "$stage/$b" "$TARGET_DIR/$TRIPLE/release/$b"
    files+=("$stage/$b:/usr/local/bin/$b:0755")
done
python3 "$ROOT/e2e/scripts/oci-image.py" --name "$IMAGE" --output "$OUTPUT" \
    --user "$IMAGE_USER" --entrypoint "$ENTRYPOINT" --dir tmp \
    --label "org.opencontainers.image.title=kubekms" \
    --label "org.opencontainers.image.version=$VERSION" \
    "${files[@]}" >&2
log "wrote $OUTPUT"
echo "$IMAGE"
