#!/usr/bin/env bash
# Runs the Python end-to-end tests (e2e/python) against the real engine binary: builds
# `kubekms-engine` (debug), then runs pytest from the project venv. Extra arguments go to
# pytest, e.g. `e2e/scripts/python-tests.sh -k import -x`.
#
#   KUBEKMS_VENV       venv with boto3 awscli aws-encryption-sdk cryptography pytest
#                      (default /root/.cache/kubekms-venv; e2e/scripts/setup.sh makes it)
#   CARGO_TARGET_DIR   shared build cache (default /root/.cache/kubekms-target)
#   KUBEKMS_ENGINE_BIN use this engine binary instead of building one
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VENV="${KUBEKMS_VENV:-/root/.cache/kubekms-venv}"
TESTS="$ROOT/e2e/python"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/root/.cache/kubekms-target}"

log() { echo "[python-tests] $*"; }

if [[ ! -x "$VENV/bin/python" ]]; then
    log "venv $VENV missing: run e2e/scripts/setup.sh" >&2
    exit 1
fi
if ! "$VENV/bin/python" -c 'import pytest' >/dev/null 2>&1; then
    log "installing pytest into $VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check pytest
fi

cd "$ROOT"
if [[ -z "${KUBEKMS_ENGINE_BIN:-}" ]]; then
    log "cargo build -p kubekms-engine --bin kubekms-engine"
    cargo build -q -p kubekms-engine --bin kubekms-engine
    export KUBEKMS_ENGINE_BIN="$CARGO_TARGET_DIR/debug/kubekms-engine"
fi
if [[ ! -x "$KUBEKMS_ENGINE_BIN" ]]; then
    log "engine binary $KUBEKMS_ENGINE_BIN is missing" >&2
    exit 1
fi
log "engine: $KUBEKMS_ENGINE_BIN"

# The tests talk to the engine only; keep the developer's AWS settings out of them.
unset AWS_PROFILE AWS_ENDPOINT_URL AWS_ENDPOINT_URL_KMS AWS_SESSION_TOKEN
export PYTHONDONTWRITEBYTECODE=1

set +e
"$VENV/bin/python" -m pytest -q -p no:cacheprovider "$TESTS" "$@"
rc=$?
set -e
# 5 is "no tests collected", e.g. a -k that selects nothing.
if [[ $rc -eq 5 ]]; then
    log "pytest collected no tests"
    exit 0
fi
exit $rc
