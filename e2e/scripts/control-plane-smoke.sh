#!/usr/bin/env bash
# Self-check of the local control plane: start it, create a CRD and a custom
# resource and read it back, mint a ServiceAccount token through the
# TokenRequest API and authenticate with it, then stop. Exits non-zero on the
# first failure.
#
# Usage: e2e/scripts/control-plane-smoke.sh [DIR]
#   DIR defaults to a fresh temporary directory, removed afterwards.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CP="$SCRIPT_DIR/control-plane.sh"
if [[ -n "${1:-}" ]]; then
    DIR="$1"
    OWN_DIR=0
else
    DIR=$(mktemp -d /tmp/kubekms-cp-smoke.XXXXXX)
    OWN_DIR=1
fi

passed=0
failed=0
ok() {
    passed=$((passed + 1))
    echo "[smoke] ok: $*"
}
fail() {
    failed=$((failed + 1))
    echo "[smoke] FAIL: $*" >&2
    exit 1
}

cleanup() {
    local rc=$?
    "$CP" stop "$DIR" || true
    if [[ $rc -ne 0 ]]; then
        for f in "$DIR"/logs/*.log; do
            [[ -f "$f" ]] || continue
            echo "---- last lines of $f" >&2
            tail -n 15 "$f" >&2
        done
    fi
    if [[ $OWN_DIR -eq 1 ]]; then
        rm -rf "$DIR"
    fi
    echo "smoke: ${passed} passed, $((failed + (rc != 0 && failed == 0 ? 1 : 0))) failed"
    exit $rc
}
trap cleanup EXIT

started=$SECONDS
"$CP" start "$DIR" >/dev/null
export KUBECONFIG="$DIR/kubeconfig"
ok "control plane started in $((SECONDS - started)) s ($(kubectl version -o json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])'))"

kubectl get ns default -o name | grep -qx 'namespace/default' || fail "kubectl get ns default"
ok "kubectl get ns"

kubectl apply -f - >/dev/null <<'EOF'
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.smoke.kubekms.test
spec:
  group: smoke.kubekms.test
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [size]
            properties:
              size: {type: integer, minimum: 1}
              labels: {type: object, additionalProperties: {type: string}}
          status:
            type: object
            properties:
              phase: {type: string}
EOF
kubectl wait --for condition=Established --timeout 60s crd/widgets.smoke.kubekms.test >/dev/null ||
    fail "CRD not established"
ok "CRD established"

# Discovery of a brand-new group can lag behind Established by a moment.
for _ in $(seq 1 40); do
    kubectl get widgets >/dev/null 2>&1 && break
    sleep 0.5
done

size=$((RANDOM % 1000 + 1))
kubectl apply -f - >/dev/null <<EOF
apiVersion: smoke.kubekms.test/v1
kind: Widget
metadata:
  name: w1
  namespace: default
spec:
  size: ${size}
  labels: {purpose: smoke}
EOF
got=$(kubectl get widget w1 -o jsonpath='{.spec.size}/{.spec.labels.purpose}')
[[ "$got" == "${size}/smoke" ]] || fail "custom resource read back '$got', want '${size}/smoke'"
# The schema is enforced: a size below the minimum must be refused.
if kubectl apply -f - >/dev/null 2>&1 <<'EOF'; then
apiVersion: smoke.kubekms.test/v1
kind: Widget
metadata: {name: w-bad, namespace: default}
spec: {size: 0}
EOF
    fail "invalid custom resource was accepted"
fi
# The status subresource is served (the operator writes status through it).
kubectl patch widget w1 --subresource=status --type merge -p '{"status":{"phase":"Ready"}}' >/dev/null ||
    fail "status subresource patch refused"
phase=$(kubectl get widget w1 -o jsonpath='{.status.phase}')
[[ "$phase" == "Ready" ]] || fail "status subresource patch did not stick (phase '$phase')"
ok "custom resource created, validated and read back (size ${size}, status ${phase})"

kubectl create serviceaccount smoke-sa >/dev/null
token=""
if token=$(kubectl create token smoke-sa --duration 10m 2>/dev/null) && [[ -n "$token" ]]; then
    how="kubectl create token"
else
    how="raw TokenRequest"
    token=$(echo '{"apiVersion":"authentication.k8s.io/v1","kind":"TokenRequest","spec":{"expirationSeconds":600}}' |
        kubectl create --raw /api/v1/namespaces/default/serviceaccounts/smoke-sa/token -f - |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["status"]["token"])') ||
        fail "TokenRequest failed"
fi
[[ "$token" =~ ^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$ ]] || fail "token is not a JWT"
sub=$(python3 - "$token" <<'EOF'
import base64, json, sys
p = sys.argv[1].split(".")[1]
print(json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))["sub"])
EOF
)
[[ "$sub" == "system:serviceaccount:default:smoke-sa" ]] || fail "token subject is '$sub'"
ok "ServiceAccount token minted via $how"

# The API server must accept the token as that ServiceAccount: discovery is
# allowed to any authenticated user, reading secrets is not (no RBAC grant).
sa_kubectl() {
    kubectl --kubeconfig /dev/null --server "$(sed -n 's/^KUBEKMS_APISERVER=//p' "$DIR/env")" \
        --certificate-authority "$DIR/pki/ca.crt" --token "$token" "$@"
}
sa_kubectl get --raw /apis >/dev/null || fail "SA token rejected for discovery"
denied=$(sa_kubectl get secrets -n default 2>&1 || true)
[[ "$denied" == *'"system:serviceaccount:default:smoke-sa" cannot list'* ]] ||
    fail "expected RBAC denial naming the ServiceAccount, got: $denied"
ok "API server authenticates the token as system:serviceaccount:default:smoke-sa and RBAC applies"

"$CP" stop "$DIR"
for c in etcd kube-apiserver kube-controller-manager; do
    [[ ! -f "$DIR/run/$c.pid" ]] || fail "$c pid file left after stop"
done
if "$CP" status "$DIR" >/dev/null 2>&1; then
    fail "status reports running after stop"
fi
ok "control plane stopped"
