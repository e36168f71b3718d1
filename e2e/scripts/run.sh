#!/usr/bin/env bash
# `make run`: the product. The operator (which embeds the key engine and serves the KMS API)
# runs against the cluster in KUBECONFIG / ~/.kube/config when one answers, and otherwise
# against a local control plane started here (etcd + kube-apiserver + kube-controller-manager).
#
# Environment: DATA_DIR (credentials, audit log; default ~/.local/share/kubekms),
# KUBEKMS_NAMESPACE (default kubekms-system), KUBEKMS_LISTEN (default 127.0.0.1:4599),
# KUBEKMS_STANDALONE=1 to run the engine alone with its embedded store, no Kubernetes at all.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SCRIPTS="$ROOT/e2e/scripts"
TARGET="${CARGO_TARGET_DIR:-/root/.cache/kubekms-target}"
DATA_DIR="${DATA_DIR:-$HOME/.local/share/kubekms}"
NAMESPACE="${KUBEKMS_NAMESPACE:-kubekms-system}"
LISTEN="${KUBEKMS_LISTEN:-127.0.0.1:4599}"
mkdir -p "$DATA_DIR"

log() { echo "[kubekms] $*" >&2; }

if [[ "${KUBEKMS_STANDALONE:-0}" == "1" ]]; then
    exec "$TARGET/release/kubekms-engine" standalone --data-dir "$DATA_DIR" --listen "$LISTEN" "$@"
fi

cluster_answers() {
    timeout 10 kubectl version --request-timeout=5s >/dev/null 2>&1
}

if [[ -n "${KUBECONFIG:-}" || -f "$HOME/.kube/config" ]] && cluster_answers; then
    log "using the cluster of ${KUBECONFIG:-$HOME/.kube/config}"
else
    CP_DIR="${KUBEKMS_CP_DIR:-$DATA_DIR/control-plane}"
    log "no cluster configured: starting a local control plane in $CP_DIR"
    "$SCRIPTS/build-control-plane.sh" >/dev/null
    "$SCRIPTS/control-plane.sh" start "$CP_DIR"
    export KUBECONFIG="$CP_DIR/kubeconfig"
    log "local control plane up; stop it with: e2e/scripts/control-plane.sh stop $CP_DIR"
fi

kubectl apply -f "$ROOT/crds/kubekms.io.yaml" >&2
kubectl get namespace "$NAMESPACE" >/dev/null 2>&1 || kubectl create namespace "$NAMESPACE" >&2

# The operator keeps its generated KMS API credentials in DATA_DIR/credentials.json; the root
# key lives in the cluster (Secret kubekms-root-key in the namespace).
"$TARGET/release/kubekms-operator" run --namespace "$NAMESPACE" --listen "$LISTEN" \
    --kubeconfig "$KUBECONFIG" --store kubernetes --data-dir "$DATA_DIR" \
    --audit-log "$DATA_DIR/audit.log" "$@" &
operator=$!
trap 'kill -TERM "$operator" 2>/dev/null || true' INT TERM
for _ in $(seq 300); do
    [[ -f "$DATA_DIR/credentials.json" ]] && break
    kill -0 "$operator" 2>/dev/null || { wait "$operator"; exit $?; }
    sleep 0.1
done
read -r AKID SECRET < <(python3 -c 'import json,sys; c=json.load(open(sys.argv[1]))["credentials"][0]; print(c["accessKeyId"], c["secretAccessKey"])' "$DATA_DIR/credentials.json")
cat <<MSG
kubekms: KMS API on http://$LISTEN (namespace $NAMESPACE, keys kept in the cluster)
export KUBECONFIG=$KUBECONFIG AWS_ACCESS_KEY_ID=$AKID AWS_SECRET_ACCESS_KEY=$SECRET AWS_DEFAULT_REGION=us-east-1
kubectl apply -f examples/key.yaml -f examples/alias.yaml && kubectl get kmskey,kmsalias
aws kms encrypt --endpoint-url http://$LISTEN --key-id alias/default/orders --plaintext fileb://examples/key.yaml
# As a ServiceAccount (the key policy decides; the steps are in examples/keypolicy.yaml):
kubectl create serviceaccount app && kubectl apply -f examples/keypolicy.yaml
kubectl create token app --audience kubekms > /tmp/app.token
env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY AWS_ROLE_ARN=arn:aws:iam::111122223333:role/kubekms AWS_WEB_IDENTITY_TOKEN_FILE=/tmp/app.token AWS_ENDPOINT_URL=http://$LISTEN aws kms encrypt --key-id alias/default/orders --plaintext fileb://examples/key.yaml --encryption-context app=orders
MSG
wait "$operator"
