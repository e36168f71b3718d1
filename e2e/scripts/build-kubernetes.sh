#!/usr/bin/env bash
# Builds (or reuses from the cache) the Kubernetes v1.20.2 binaries from Debian
# bookworm's `kubernetes` source package: the control plane (kube-apiserver,
# kube-controller-manager, kube-scheduler) and the node (kubelet, kube-proxy,
# and the sandbox's `pause` binary, compiled statically from the tree's
# build/pause/linux/pause.c).
#
# No container runtime and no upstream release downloads are available on the
# machines this project runs on, so the control plane is compiled from the
# Debian source package. The result lives outside the repository so a second
# run is instant:
#
#   ${KUBEKMS_K8S_CACHE:-/root/.cache/kubekms/k8s-v1.20.2}/bin/{kube-apiserver,...,pause}
#
# Usage: e2e/scripts/build-kubernetes.sh [--force]
# Only the binaries missing from the cache are built (kubelet alone takes about
# six minutes on two cores).
# Prints the bin directory on its last line of stdout.
set -euo pipefail

K8S_VERSION=1.20.2
CACHE_DIR="${KUBEKMS_K8S_CACHE:-/root/.cache/kubekms/k8s-v${K8S_VERSION}}"
BIN_DIR="$CACHE_DIR/bin"
SRC_PARENT="$CACHE_DIR/src"
FORCE=0
[[ "${1:-}" == "--force" ]] && FORCE=1

log() { echo "[build-kubernetes] $*" >&2; }

COMPONENTS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)

# The components not yet in the cache (all of them with --force).
missing_components() {
    local c
    for c in "${COMPONENTS[@]}"; do
        if [[ $FORCE -eq 1 || ! -x "$BIN_DIR/$c" ]] ||
            ! "$BIN_DIR/$c" --version 2>/dev/null | grep -q "v${K8S_VERSION}"; then
            echo "$c"
        fi
    done
}

have_binaries() {
    [[ -z "$(missing_components)" && -x "$BIN_DIR/pause" ]]
}

if [[ $FORCE -eq 0 ]] && have_binaries; then
    log "cached binaries present in $BIN_DIR"
    echo "$BIN_DIR"
    exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
    log "must run as root (installs Debian packages)"
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive

# `apt-get source` needs a deb-src entry; the stock image only has binary ones.
ensure_deb_src() {
    if apt-cache showsrc kubernetes 2>/dev/null | grep -q "^Version: .*${K8S_VERSION}"; then
        return 0
    fi
    log "adding a deb-src entry for bookworm"
    cat >/etc/apt/sources.list.d/kubekms-deb-src.sources <<'EOF'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    apt-get update -q >&2
}

PKGS=(golang-go rsync make gcc dpkg-dev etcd-server
    golang-github-modern-go-reflect2-dev golang-github-json-iterator-go-dev)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [[ ${#missing[@]} -gt 0 ]]; then
    log "installing: ${missing[*]}"
    apt-get update -q >&2
    apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi
ensure_deb_src

mkdir -p "$SRC_PARENT" "$BIN_DIR"
SRC_DIR=$(find "$SRC_PARENT" -maxdepth 1 -type d -name "kubernetes-*${K8S_VERSION}" | head -n1)
if [[ -z "$SRC_DIR" || ! -f "$SRC_DIR/Makefile" ]]; then
    log "fetching the kubernetes source package into $SRC_PARENT"
    rm -rf "${SRC_PARENT:?}"/*
    (cd "$SRC_PARENT" && apt-get source -q kubernetes >&2)
    SRC_DIR=$(find "$SRC_PARENT" -maxdepth 1 -type d -name "kubernetes-*${K8S_VERSION}" | head -n1)
fi
if [[ -z "$SRC_DIR" ]]; then
    log "kubernetes ${K8S_VERSION} source not found after apt-get source"
    exit 1
fi

# The vendored reflect2 v1.0.1 makes the API server die with SIGSEGV in
# mapiterinit under Go >= 1.18 the first time it serves a custom resource;
# Debian's newer reflect2/json-iterator are drop-in replacements.
for dep in github.com/modern-go/reflect2 github.com/json-iterator/go; do
    src="/usr/share/gocode/src/$dep"
    dst="$SRC_DIR/vendor/$dep"
    if [[ ! -d "$src" ]]; then
        log "missing $src"
        exit 1
    fi
    rm -rf "$dst"
    mkdir -p "$dst"
    cp -a "$src/." "$dst/"
done

mapfile -t build < <(missing_components)
start=$(date +%s)
if [[ ${#build[@]} -gt 0 ]]; then
    log "building ${build[*]} with $(go version) (takes minutes)"
    (
        cd "$SRC_DIR"
        # Everything comes from vendor/; never reach for a module proxy.
        export GOPROXY=off
        make WHAT="${build[*]/#/cmd/}" >&2
    )
fi
# The sandbox ("pause") container's only process. containerd takes it from the
# image named by its CRI config's sandbox_image, which the node scripts build
# from this binary; without it containerd would try to pull one from a registry.
if [[ $FORCE -eq 1 || ! -x "$BIN_DIR/pause" ]]; then
    log "building pause (gcc -static)"
    gcc -Os -static -Wall -DVERSION="v${K8S_VERSION}-kubekms" \
        -o "$BIN_DIR/pause" "$SRC_DIR/build/pause/linux/pause.c" >&2
    strip "$BIN_DIR/pause"
fi
end=$(date +%s)
for b in "${build[@]}"; do
    out=$(find "$SRC_DIR/_output" -type f -name "$b" -perm -u+x | head -n1)
    if [[ -z "$out" ]]; then
        log "build produced no $b"
        exit 1
    fi
    install -m 0755 "$out" "$BIN_DIR/$b"
done
log "built in $((end - start)) s; binaries in $BIN_DIR"
"$BIN_DIR/kube-apiserver" --version >&2
echo "$BIN_DIR"
