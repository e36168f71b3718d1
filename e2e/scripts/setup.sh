#!/usr/bin/env bash
# Installs what the tests need on a Debian bookworm machine (run as root).
# Idempotent and quick when everything is already present: `apt-get update`
# and pip run only when something is missing.
#
#   Debian packages: wrk etcd-server golang-go rsync openssl curl make gcc
#                    dpkg-dev, reflect2/json-iterator sources (k8s build),
#                    the node of the local cluster: containerd runc
#                    containernetworking-plugins iptables conntrack socat iproute2,
#                    kubectl (Debian's kubernetes-client if none is installed)
#   Python venv:     ${KUBEKMS_VENV:-/root/.cache/kubekms-venv} with boto3
#                    awscli aws-encryption-sdk moto[server] cryptography pytest
#                    helm-python-sdk (Helm 4 as a library, for e2e/scripts/helm.py)
#
# Set KUBEKMS_SKIP_APT=1 to skip the Debian part (e.g. when not root).
set -euo pipefail

VENV="${KUBEKMS_VENV:-/root/.cache/kubekms-venv}"
export DEBIAN_FRONTEND=noninteractive

log() { echo "[setup] $*"; }

apt_updated=0
apt_update_once() {
    if [[ $apt_updated -eq 0 ]]; then
        log "apt-get update"
        apt-get update -q >/dev/null
        apt_updated=1
    fi
}

is_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

apt_ensure() {
    local missing=() p
    for p in "$@"; do
        is_installed "$p" || missing+=("$p")
    done
    if [[ ${#missing[@]} -eq 0 ]]; then
        return 0
    fi
    apt_update_once
    log "apt-get install ${missing[*]}"
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

if [[ "${KUBEKMS_SKIP_APT:-0}" != "1" ]]; then
    if [[ $(id -u) -ne 0 ]]; then
        log "not root: skipping Debian packages (set KUBEKMS_SKIP_APT=1 to silence)"
    else
        apt_ensure wrk etcd-server golang-go rsync openssl curl ca-certificates make gcc cmake xxd dpkg-dev \
            golang-github-modern-go-reflect2-dev golang-github-json-iterator-go-dev \
            python3 python3-venv \
            containerd runc containernetworking-plugins iptables conntrack socat iproute2 util-linux
        if ! command -v kubectl >/dev/null 2>&1; then
            # Debian's client matches the control plane we build (1.20.2).
            apt_ensure kubernetes-client
        fi
        log "Debian packages present"
    fi
fi

# Pick an interpreter that can make venvs: prefer whatever `python3` is on
# PATH (pyenv on the dev image), fall back to Debian's.
PY=""
for cand in python3 /usr/bin/python3; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import venv, ensurepip' >/dev/null 2>&1; then
        PY=$(command -v "$cand")
        break
    fi
done

if [[ ! -x "$VENV/bin/python" ]] || ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    if [[ -z "$PY" ]]; then
        log "no python3 with venv/ensurepip found"
        exit 1
    fi
    log "creating venv $VENV with $PY"
    rm -rf "$VENV"
    mkdir -p "$(dirname "$VENV")"
    "$PY" -m venv "$VENV"
fi

# Each requirement with the import that proves it is usable.
declare -A REQS=(
    [boto3]="boto3"
    [awscli]="awscli"
    [aws-encryption-sdk]="aws_encryption_sdk"
    ["moto[server]"]="moto, moto.server, flask, flask_cors"
    [cryptography]="cryptography"
    [pytest]="pytest"
    ["helm-python-sdk>=0.2.2,<0.3"]="helm_python"
)
need=()
for req in "${!REQS[@]}"; do
    if ! "$VENV/bin/python" -c "import ${REQS[$req]}" >/dev/null 2>&1; then
        need+=("$req")
    fi
done
# awscli ships the `aws` entry point; check it separately from the import.
if [[ ! -x "$VENV/bin/aws" ]] && [[ ! " ${need[*]-} " =~ " awscli " ]]; then
    need+=(awscli)
fi

if [[ ${#need[@]} -gt 0 ]]; then
    log "pip install ${need[*]} into $VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${need[@]}"
else
    log "venv $VENV has boto3 awscli aws-encryption-sdk moto[server] cryptography pytest helm-python-sdk"
fi
# The build cache outside the clone grows with every build (cargo keeps every old test binary
# and its incremental state); a full disk makes the local cluster's kubelet evict every pod.
# Below 20 GiB free, drop what cargo rebuilds on its own: incremental state, and workspace
# artifacts not touched for a day.
if [[ -n "${CARGO_TARGET_DIR:-}" && -d "$CARGO_TARGET_DIR" ]]; then
    free_kib=$(df -Pk "$CARGO_TARGET_DIR" | awk 'NR == 2 { print $4 }')
    if (( ${free_kib:-0} < 20 * 1024 * 1024 )); then
        log "less than 20 GiB free: trimming the build cache in $CARGO_TARGET_DIR"
        rm -rf "$CARGO_TARGET_DIR"/*/incremental "$CARGO_TARGET_DIR"/*/*/incremental
        find "$CARGO_TARGET_DIR"/*/deps -maxdepth 1 -mtime +0 \
            \( -name 'kubekms_*' -o -name 'libkubekms_*' \) -delete 2>/dev/null || true
    fi
fi
log "done"
