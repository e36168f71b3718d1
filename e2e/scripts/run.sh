#!/usr/bin/env bash
# `make run`: the product. The Helm chart charts/kubekms installed with the real Helm engine
# (e2e/scripts/helm.py), the operator and the key engine running as pods:
#   - on the cluster in KUBECONFIG / ~/.kube/config when one answers (the image must then come
#     from a registry: KUBEKMS_IMAGE_REPOSITORY=registry.example.com/kubekms, pushed by you);
#   - otherwise on a local one-node cluster started here (e2e/scripts/cluster.sh) with the image
#     built by `make image` loaded into its node.
# Then examples/ applied, the KMS API forwarded to the host, and what to try printed.
#
# Environment: DATA_DIR (default ~/.local/share/kubekms; the local cluster lives in
# DATA_DIR/cluster), KUBEKMS_NAMESPACE (default kubekms-system), KUBEKMS_KMS_PORT (default
# 4599: the host port of the KMS API), KUBEKMS_STANDALONE=1 to run the engine alone with its
# embedded store, no Kubernetes at all. Extra arguments go to `helm upgrade --install`.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SCRIPTS="$ROOT/e2e/scripts"
TARGET="${CARGO_TARGET_DIR:-/root/.cache/kubekms-target}"
VENV="${KUBEKMS_VENV:-/root/.cache/kubekms-venv}"
DATA_DIR="${DATA_DIR:-$HOME/.local/share/kubekms}"
NAMESPACE="${KUBEKMS_NAMESPACE:-kubekms-system}"
KMS_PORT="${KUBEKMS_KMS_PORT:-4599}"
RELEASE=kubekms
mkdir -p "$DATA_DIR"

log() { echo "[kubekms] $*" >&2; }
die() {
    log "$*"
    exit 1
}

if [[ "${KUBEKMS_STANDALONE:-0}" == "1" ]]; then
    cargo build --release -p kubekms-engine --bin kubekms-engine >&2
    exec "$TARGET/release/kubekms-engine" standalone --data-dir "$DATA_DIR" \
        --listen "127.0.0.1:$KMS_PORT" "$@"
fi

helm() { "$VENV/bin/python" "$SCRIPTS/helm.py" "$@"; }

cluster_answers() {
    timeout 10 kubectl version --request-timeout=5s >/dev/null 2>&1
}

chart_args=()
LOCAL=0
if [[ -n "${KUBECONFIG:-}" || -f "$HOME/.kube/config" ]] && cluster_answers; then
    log "using the cluster of ${KUBECONFIG:-$HOME/.kube/config}"
    [[ -n "${KUBEKMS_IMAGE_REPOSITORY:-}" ]] ||
        die "set KUBEKMS_IMAGE_REPOSITORY to where you pushed the image (docker build -t REPO:TAG . && docker push REPO:TAG)"
    chart_args+=(--set "image.repository=$KUBEKMS_IMAGE_REPOSITORY")
else
    LOCAL=1
    CLUSTER_DIR="$DATA_DIR/cluster"
    log "no cluster configured: starting a one-node cluster in $CLUSTER_DIR"
    "$SCRIPTS/cluster.sh" start "$CLUSTER_DIR" >/dev/null
    export KUBECONFIG="$CLUSTER_DIR/kubeconfig"
    log "loading the image into the node"
    export KUBEKMS_CLUSTER_DIR="$CLUSTER_DIR"
    "$SCRIPTS/cluster.sh" load "$TARGET/kubekms-image.tar" >/dev/null
fi

# Helm installs the chart's CRDs on the first install only: an upgrade brings new or changed
# ones (DataKey, for one) this way.
upgrade=0
kubectl get namespace "$NAMESPACE" >/dev/null 2>&1 &&
    kubectl -n "$NAMESPACE" get deployment kubekms-operator >/dev/null 2>&1 && upgrade=1
if [[ $upgrade -eq 1 ]]; then
    log "upgrading: applying the chart's CRDs"
    kubectl apply -f "$ROOT/charts/kubekms/crds/" >&2
fi
log "helm upgrade --install $RELEASE charts/kubekms -n $NAMESPACE"
helm upgrade --install "$RELEASE" "$ROOT/charts/kubekms" -n "$NAMESPACE" --create-namespace \
    --set 'operator.importNamespaces={default}' --set 'engine.tls.ipAddresses={127.0.0.1}' \
    "${chart_args[@]}" "$@" \
    --wait --timeout 300s >/dev/null
if [[ $upgrade -eq 1 && $LOCAL -eq 1 ]]; then
    # The local image keeps its tag across builds: restart the pods so they run the one just
    # loaded (the operator then rolls the engine if its configuration changed).
    kubectl -n "$NAMESPACE" rollout restart deployment/kubekms-operator deployment/kubekms-webhook >&2
    kubectl -n "$NAMESPACE" rollout status deployment/kubekms-operator --timeout=180s >&2
    kubectl -n "$NAMESPACE" rollout status deployment/kubekms-webhook --timeout=180s >&2
fi
log "waiting for the engine pods (the operator creates them)"
for _ in $(seq 120); do
    kubectl -n "$NAMESPACE" get deployment kubekms-engine >/dev/null 2>&1 && break
    sleep 1
done
kubectl -n "$NAMESPACE" rollout status deployment/kubekms-engine --timeout=180s >&2
kubectl -n "$NAMESPACE" get pods -o wide >&2

kubectl get serviceaccount app -n default >/dev/null 2>&1 ||
    kubectl create serviceaccount app -n default >/dev/null
kubectl apply -n default -f "$ROOT/examples/key.yaml" -f "$ROOT/examples/alias.yaml" \
    -f "$ROOT/examples/keypolicy.yaml" -f "$ROOT/examples/sign-key.yaml" >&2
kubectl -n default wait --for=condition=Ready kmskey/orders kmskey/release-signing --timeout=120s >&2
# A workload the webhook injects (its identity and a data key), once its Key is Ready.
kubectl apply -n default -f "$ROOT/examples/injected-app.yaml" >&2
if [[ $upgrade -eq 1 ]]; then
    # Pods keep what the webhook gave them at admission (the engine's URL, its CA): new ones
    # get what this release serves.
    kubectl -n default rollout restart deployment/injected-example >&2
fi
kubectl -n default rollout status deployment/injected-example --timeout=180s >&2

# The engine serves TLS with a certificate from the chart's CA (unless engine.tls.enabled=false):
# the host's clients trust that CA (AWS_CA_BUNDLE); the certificate names 127.0.0.1 for the
# forwarded port.
CA_FILE="$DATA_DIR/engine-ca.crt"
ca=$(kubectl -n "$NAMESPACE" get configmap kubekms-engine-tls-ca --ignore-not-found \
    -o jsonpath='{.data.ca\.crt}')
if [[ -n "$ca" ]]; then
    printf '%s\n' "$ca" >"$CA_FILE"
    ENDPOINT="https://127.0.0.1:$KMS_PORT"
    CA_ENV="AWS_CA_BUNDLE=$CA_FILE "
else
    rm -f "$CA_FILE"
    ENDPOINT="http://127.0.0.1:$KMS_PORT"
    CA_ENV=""
fi
if [[ $LOCAL -eq 1 ]]; then
    ip=$(kubectl -n "$NAMESPACE" get service kubekms-engine -o jsonpath='{.spec.clusterIP}')
    "$SCRIPTS/cluster.sh" forward kms "$KMS_PORT" "$ip:4599" 2>/dev/null
fi

# An administrator's access key for the host (the engine reads access-key Secrets of its
# namespace; whoever may write Secrets there may mint identities). Made once, kept in DATA_DIR.
creds="$DATA_DIR/admin-access-key"
if ! kubectl -n "$NAMESPACE" get secret make-run-admin >/dev/null 2>&1 || [[ ! -f "$creds" ]]; then
    akid="AKIA$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n' | tr a-f A-F | head -c 16)"
    secret=$(head -c 30 /dev/urandom | base64 | tr -d '/+=' | head -c 40)
    kubectl -n "$NAMESPACE" delete secret make-run-admin --ignore-not-found >/dev/null
    kubectl -n "$NAMESPACE" create secret generic make-run-admin --type kubekms.io/access-key \
        --from-literal accessKeyId="$akid" --from-literal secretAccessKey="$secret" \
        --from-literal user=make-run-admin --from-literal groups=system:masters >/dev/null
    (umask 077 && printf '%s %s\n' "$akid" "$secret" >"$creds")
fi
read -r AKID SECRET <"$creds"

token="$DATA_DIR/app.token"
kubectl create token app -n default --audience kubekms --duration 1h >"$token"
cat <<MSG

kubekms is running: operator, key engine and webhook pods in namespace $NAMESPACE, and an
injected example workload (examples/injected-app.yaml) in default.
$(if [[ $LOCAL -eq 1 ]]; then
    echo "KMS API (the engine Service, forwarded): $ENDPOINT"
    echo "Stop everything with: e2e/scripts/cluster.sh stop $CLUSTER_DIR"
else
    echo "KMS API: kubectl -n $NAMESPACE port-forward svc/kubekms-engine $KMS_PORT:4599, then $ENDPOINT"
fi)

Try:
  export KUBECONFIG=$KUBECONFIG
  kubectl get pods -n $NAMESPACE; kubectl get kmskey,kmsalias,kmsdatakey -A
  # What the webhook gave the example's pods (identity env, the data key's file, the agent):
  kubectl get pod -n default -l app=injected-example -o yaml | grep -E -A1 'name: (AWS_|KUBEKMS_)'
  kubectl logs -n default -l app=injected-example -c kubekms-agent-init
  # As an administrator (the access key in Secret $NAMESPACE/make-run-admin):
  ${CA_ENV}AWS_ACCESS_KEY_ID=$AKID AWS_SECRET_ACCESS_KEY=$SECRET AWS_DEFAULT_REGION=us-east-1 \\
      $VENV/bin/aws kms list-keys --endpoint-url $ENDPOINT
  # As the ServiceAccount default/app (examples/keypolicy.yaml lets it use the key with app=orders):
  export ${CA_ENV}AWS_ROLE_ARN=arn:aws:iam::111122223333:role/kubekms AWS_WEB_IDENTITY_TOKEN_FILE=$token \\
         AWS_ENDPOINT_URL=$ENDPOINT AWS_DEFAULT_REGION=us-east-1
  $VENV/bin/aws kms encrypt --key-id alias/default/orders --plaintext fileb://examples/key.yaml \\
      --encryption-context app=orders --query CiphertextBlob --output text
  $VENV/bin/aws sts get-caller-identity
MSG
