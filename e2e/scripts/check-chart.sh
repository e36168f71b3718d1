#!/usr/bin/env bash
# Checks the Helm chart charts/kubekms without a cluster (a few seconds):
#   1. its crds/kubekms.io.yaml is byte-identical to the generated crds/kubekms.io.yaml,
#   2. its appVersion is the workspace version in Cargo.toml,
#   3. `helm lint --strict` is clean, for the default Kubernetes version and for 1.20,
#   4. it renders with the default values and a few variants, and the values schema refuses
#      a bad value.
# Helm is the real Helm 4 engine from helm-python-sdk (e2e/scripts/helm.py) in the project
# venv (${KUBEKMS_VENV:-/root/.cache/kubekms-venv}; e2e/scripts/setup.sh installs it).
# Exits non-zero on the first failure.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VENV="${KUBEKMS_VENV:-/root/.cache/kubekms-venv}"
CHART="$ROOT/charts/kubekms"
HELM=("$VENV/bin/python" "$ROOT/e2e/scripts/helm.py")

log() { echo "[check-chart] $*"; }
die() {
    echo "[check-chart] FAIL: $*" >&2
    exit 1
}

if ! cmp -s "$ROOT/crds/kubekms.io.yaml" "$CHART/crds/kubekms.io.yaml"; then
    diff -u "$ROOT/crds/kubekms.io.yaml" "$CHART/crds/kubekms.io.yaml" | head -20 >&2 || true
    die "charts/kubekms/crds/kubekms.io.yaml differs from crds/kubekms.io.yaml; copy it: cp crds/kubekms.io.yaml charts/kubekms/crds/"
fi
log "CRDs identical to crds/kubekms.io.yaml"

# The first `version = "..."` after [workspace.package].
cargo_version=$(awk '/^\[workspace.package\]/{p=1;next} /^\[/{p=0} p && /^version *=/{gsub(/.*= *"|".*/,"");print;exit}' "$ROOT/Cargo.toml")
chart_app=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p' "$CHART/Chart.yaml")
[[ -n "$cargo_version" && "$cargo_version" == "$chart_app" ]] ||
    die "Chart.yaml appVersion '$chart_app' is not the workspace version '$cargo_version' (Cargo.toml)"
log "appVersion $chart_app matches Cargo.toml"

"$VENV/bin/python" -c 'import helm_python' 2>/dev/null ||
    die "helm-python-sdk is not installed in $VENV (run e2e/scripts/setup.sh)"

"${HELM[@]}" lint "$CHART" --strict >/dev/null || { "${HELM[@]}" lint "$CHART" --strict >&2; die "helm lint"; }
"${HELM[@]}" lint "$CHART" --strict --kube-version 1.20.2 >/dev/null ||
    { "${HELM[@]}" lint "$CHART" --strict --kube-version 1.20.2 >&2; die "helm lint (1.20)"; }
log "helm lint --strict clean (default and Kubernetes 1.20)"

render() { "${HELM[@]}" template kubekms "$CHART" -n kubekms-system "$@"; }
out=$(render --kube-version 1.20.2) || die "render with default values"
grep -q '^apiVersion: policy/v1beta1$' <<<"$out" || die "Kubernetes 1.20 render must use policy/v1beta1 for the PodDisruptionBudget"
out=$(render --set engine.replicas=3) || die "render with engine.replicas=3"
grep -q '^apiVersion: policy/v1$' <<<"$out" || die "a current-Kubernetes render must use policy/v1 for the PodDisruptionBudget"
grep -q '"replicas": 3' <<<"$out" || die "engine.replicas=3 not in engine.json"
out=$(render --set engine.replicas=1 --set webhook.replicas=1) || die "render with engine.replicas=1"
! grep -q 'kind: PodDisruptionBudget' <<<"$out" || die "engine.replicas=1 must not render a PodDisruptionBudget"
# The webhook: its certificate's CA is the configurations' caBundle; only labelled pods.
out=$(render) || die "render with default values"
ca=$(awk '/^  name: kubekms-webhook-tls$/{p=1} p && /^  ca.crt: /{print $2; exit}' <<<"$out")
[[ -n "$ca" ]] || die "the webhook's TLS Secret has no ca.crt"
[[ $(grep -c "caBundle: $ca" <<<"$out") -eq 3 ]] || die "every webhook (pods, keys, validation) must carry the Secret's CA as caBundle"
# The engine's TLS: a certificate for the engine Service (and the extra IPs asked for) from
# the CA the operator and the webhook are given; engine.json names the Secret.
out=$(render --set 'engine.tls.ipAddresses={127.0.0.1}') || die "render with engine.tls.ipAddresses"
engine_crt=$(awk '/^  name: kubekms-engine-tls$/{p=1} p && /^  tls.crt: /{print $2; exit}' <<<"$out")
[[ -n "$engine_crt" ]] || die "no engine TLS Secret with tls.crt"
sans=$(base64 -d <<<"$engine_crt" | openssl x509 -noout -ext subjectAltName)
for name in DNS:kubekms-engine.kubekms-system.svc "IP Address:127.0.0.1"; do
    grep -q "$name" <<<"$sans" || die "the engine's certificate does not name $name: $sans"
done
grep -q '"secretName": "kubekms-engine-tls"' <<<"$out" || die "engine.json must name the engine's TLS Secret"
[[ $(grep -c -- '- --engine-ca-file' <<<"$out") -eq 2 ]] || die "the operator and the webhook must be given the engine's CA"
out=$(render --set engine.tls.enabled=false) || die "render with engine.tls.enabled=false"
! grep -q -- '--engine-ca-file\|kubekms-engine-tls' <<<"$out" || die "engine.tls.enabled=false still renders TLS"
log "engine TLS: certificate for the Service from the chart's CA, given to the operator and the webhook"
# With cert-manager: its Certificate for the Service names the Secret the engine mounts; no
# generated Secret or CA ConfigMap; the operator and webhook project the Secret's ca.crt alone.
# doc KIND NAME: the rendered document of that kind and name (empty if none).
doc() { awk -v kind="kind: $1" -v name="  name: $2" '
    /^---/ { if (k && n) printf "%s", d; d = ""; k = 0; n = 0; next }
    { d = d $0 "\n" } $0 == kind { k = 1 } $0 == name { n = 1 }
    END { if (k && n) printf "%s", d }' <<<"$out"; }
out=$(render --set engine.tls.certManager.enabled=true --set 'engine.tls.ipAddresses={127.0.0.1}') ||
    die "render with engine.tls.certManager.enabled"
cert=$(doc Certificate kubekms-engine-tls)
grep -q 'secretName: kubekms-engine-tls$' <<<"$cert" || die "cert-manager mode: no Certificate for the engine's Secret"
for name in "- kubekms-engine.kubekms-system.svc$" "- 127.0.0.1$" "rotationPolicy: Always"; do
    grep -q -- "$name" <<<"$cert" || die "cert-manager mode: the engine's Certificate lacks '$name'"
done
[[ -z $(doc Secret kubekms-engine-tls) && -z $(doc ConfigMap kubekms-engine-tls-ca) ]] ||
    die "cert-manager mode still renders the generated Secret or the CA ConfigMap"
[[ $(grep -A1 -- '- secret:' <<<"$out" | grep -c 'name: kubekms-engine-tls$') -eq 2 ]] ||
    die "cert-manager mode: the operator and the webhook must project the engine Secret's ca.crt"
if render --set engine.tls.certManager.duration=90days >/dev/null 2>&1; then
    die "the schema accepted engine.tls.certManager.duration=90days"
fi
log "engine TLS with cert-manager: a Certificate for the Service; the operator and webhook trust its CA"
grep -q 'kubekms.io/inject: "true"' <<<"$out" || die "the mutating webhook must select opted-in pods only"
grep -q 'timeoutSeconds: 5' <<<"$out" || die "the webhook's timeout must default to 5 s"
grep -q '"webhookServiceAccount": "kubekms-webhook"' <<<"$out" || die "engine.json must name the webhook's ServiceAccount"
out=$(render --set webhook.enabled=false) || die "render without the webhook"
! grep -q 'kind: MutatingWebhookConfiguration' <<<"$out" || die "webhook.enabled=false must not render the webhook"
render --set webhook.certManager.enabled=true | grep -q 'cert-manager.io/inject-ca-from' || die "cert-manager mode must annotate the configurations"
if render --set webhook.timeoutSeconds=10 >/dev/null 2>&1; then die "the schema accepted webhook.timeoutSeconds=10"; fi
render --set serviceMonitor.enabled=true --set serviceAccount.create=false \
    --set 'operator.importNamespaces={payments}' >/dev/null || die "render with serviceMonitor, existing ServiceAccounts and importNamespaces"
if render --set engine.replicas=0 >/dev/null 2>&1; then die "the schema accepted engine.replicas=0"; fi
if render --set 'operator.importNamespaces={kubekms-system}' >/dev/null 2>&1; then
    die "importNamespaces accepted the release namespace"
fi
log "renders default and variants; refuses bad values"
log "ok"
