#!/usr/bin/env bash
# A real, node-less Kubernetes control plane on loopback for end-to-end tests:
# etcd (Debian's etcd-server) + kube-apiserver + kube-controller-manager
# v1.20.2 (built by build-kubernetes.sh).
#
# Usage: e2e/scripts/control-plane.sh start|stop|status|env [DIR]
#   DIR defaults to $KUBEKMS_CP_DIR or /tmp/kubekms-cp.
#
# After `start`:
#   DIR/kubeconfig   admin kubeconfig (bearer token in group system:masters)
#   DIR/env          KUBECONFIG=..., KUBEKMS_APISERVER=..., ports; `source` it
#   DIR/pki/ca.crt   CA that signed the API server's serving certificate
#   DIR/logs/*.log   etcd, kube-apiserver, kube-controller-manager logs
#
# Ports: preferred fixed ones (etcd 23790/23800, apiserver 16443), each
# checked free first; a busy one is replaced by a free port from the kernel.
# Override with KUBEKMS_ETCD_PORT, KUBEKMS_ETCD_PEER_PORT, KUBEKMS_APISERVER_PORT.
#
# Node mode (used by cluster.sh, which runs this script inside its network
# namespace): KUBEKMS_CP_NODE_IP=<address> makes the API server listen on every
# address of that namespace and advertise <address> (Endpoints refuse
# loopback), adds kube-scheduler, and writes credentials for a kubelet
# (system:node:$KUBEKMS_NODE_NAME) and kube-proxy.
#
# Tuning: KUBEKMS_CP_GOGC (default 400) for etcd and the Kubernetes components,
# KUBEKMS_CP_PROFILING=true for the API server's /debug/pprof,
# KUBEKMS_CP_VERBOSITY (default 1) for their logs.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CMD="${1:-}"
DIR="${2:-${KUBEKMS_CP_DIR:-/tmp/kubekms-cp}}"
START_TIMEOUT="${KUBEKMS_CP_TIMEOUT:-120}"

log() { echo "[control-plane] $*" >&2; }
die() {
    log "$*"
    exit 1
}

usage() {
    echo "usage: $0 start|stop|status|env [DIR]" >&2
    exit 2
}

# Components in start order; stopped in reverse.
COMPONENTS=(etcd kube-apiserver kube-controller-manager)
NODE_IP="${KUBEKMS_CP_NODE_IP:-}"
NODE_NAME="${KUBEKMS_NODE_NAME:-kubekms-node}"
if [[ -n "$NODE_IP" ]]; then
    COMPONENTS+=(kube-scheduler)
fi

pid_of() {
    local f="$DIR/run/$1.pid"
    [[ -f "$f" ]] || return 1
    local pid
    pid=$(<"$f")
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 1
    # A stale pid file may name a pid the kernel has since reused.
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$1" || return 1
    echo "$pid"
}

port_is_free() {
    python3 - "$1" <<'EOF'
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
# Like the servers themselves (Go and etcd set SO_REUSEADDR): connections in
# TIME_WAIT from a previous run do not make the port busy, a listener does.
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
finally:
    s.close()
EOF
}

kernel_free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

pick_port() {
    local want="$1"
    if port_is_free "$want"; then
        echo "$want"
    else
        local p
        p=$(kernel_free_port)
        log "port $want is busy; using $p"
        echo "$p"
    fi
}

gen_pki() {
    local pki="$DIR/pki"
    mkdir -p "$pki"
    chmod 700 "$pki"
    if [[ -f "$pki/ca.crt" && -f "$pki/apiserver.crt" && -f "$pki/sa.key" && -f "$pki/tokens.csv" ]]; then
        return 0
    fi
    local node_san=""
    [[ -z "$NODE_IP" ]] || node_san=",IP:${NODE_IP}"
    log "generating CA, serving certificate, service-account key and admin token in $pki"
    (
        cd "$pki"
        umask 077
        openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -sha256 \
            -keyout ca.key -out ca.crt -subj "/CN=kubekms-local-ca" \
            -addext "basicConstraints=critical,CA:TRUE" \
            -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
        cat >apiserver.ext <<EOF
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:10.0.0.1${node_san},DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
EOF
        openssl req -newkey rsa:2048 -nodes -sha256 -keyout apiserver.key -out apiserver.csr \
            -subj "/CN=kube-apiserver" 2>/dev/null
        openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
            -days 3650 -sha256 -extfile apiserver.ext -out apiserver.crt 2>/dev/null
        openssl genrsa -out sa.key 2048 2>/dev/null
        openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
        token=$(openssl rand -hex 32)
        echo "$token" >admin.token
        # token,user,uid,"groups"
        echo "${token},kubekms-admin,kubekms-admin,\"system:masters\"" >tokens.csv
        if [[ -n "$NODE_IP" ]]; then
            # The kubelet must be system:node:<name> in system:nodes for the Node
            # authorizer; kube-proxy and the scheduler have bootstrap roles of their own.
            openssl rand -hex 32 >kubelet.token
            echo "$(<kubelet.token),system:node:${NODE_NAME},kubelet,\"system:nodes\"" >>tokens.csv
            openssl rand -hex 32 >kube-proxy.token
            echo "$(<kube-proxy.token),system:kube-proxy,kube-proxy" >>tokens.csv
            openssl rand -hex 32 >kube-scheduler.token
            echo "$(<kube-scheduler.token),system:kube-scheduler,kube-scheduler" >>tokens.csv
            # The API server's client certificate for the kubelet (logs, exec, port-forward):
            # the kubelet trusts only certificates of this CA.
            openssl req -newkey rsa:2048 -nodes -sha256 -keyout kubelet-client.key -out kubelet-client.csr \
                -subj "/O=system:masters/CN=kube-apiserver-kubelet-client" 2>/dev/null
            printf 'extendedKeyUsage=clientAuth\n' >kubelet-client.ext
            openssl x509 -req -in kubelet-client.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
                -days 3650 -sha256 -extfile kubelet-client.ext -out kubelet-client.crt 2>/dev/null
        fi
        chmod 644 ca.crt
    )
}

# write_kubeconfig SERVER [TOKEN_FILE OUT USER]
write_kubeconfig() {
    local server="$1" token_file="${2:-$DIR/pki/admin.token}" out="${3:-$DIR/kubeconfig}" user="${4:-kubekms-admin}" token
    token=$(<"$token_file")
    local ca_b64
    ca_b64=$(base64 -w0 <"$DIR/pki/ca.crt")
    umask 077
    cat >"$out" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: kubekms-local
  cluster:
    server: ${server}
    certificate-authority-data: ${ca_b64}
users:
- name: ${user}
  user:
    token: ${token}
contexts:
- name: kubekms-local
  context:
    cluster: kubekms-local
    user: ${user}
    namespace: default
current-context: kubekms-local
EOF
}

find_binaries() {
    if [[ -n "${KUBEKMS_K8S_BIN:-}" ]]; then
        BIN="$KUBEKMS_K8S_BIN"
    else
        BIN=$("$SCRIPT_DIR/build-kubernetes.sh" | tail -n1)
    fi
    local c
    for c in "${COMPONENTS[@]}"; do
        [[ "$c" == etcd || -x "$BIN/$c" ]] || die "$c not found in $BIN"
    done
    ETCD=$(command -v etcd || true)
    [[ -n "$ETCD" ]] || die "etcd not found (apt-get install etcd-server, or run e2e/scripts/setup.sh)"
    command -v kubectl >/dev/null || die "kubectl not found (run e2e/scripts/setup.sh)"
}

launch() {
    local name="$1"
    shift
    # setsid: own process group, so a Ctrl-C in the caller's terminal does not
    # take the control plane down half-way and `stop` can kill the group.
    # GOGC=400 unless KUBEKMS_CP_GOGC says otherwise: etcd and the Kubernetes
    # components share two cores with the operator and the tests while memory is
    # plentiful, and at Go's default (100) the API server spent about a sixth of
    # its CPU collecting garbage under a wave of writes (BENCHMARKS.md).
    GOGC="${KUBEKMS_CP_GOGC:-400}" setsid "$@" >>"$DIR/logs/$name.log" 2>&1 </dev/null &
    echo $! >"$DIR/run/$name.pid"
}

wait_until() {
    local what="$1" deadline=$((SECONDS + START_TIMEOUT))
    shift
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            log "timed out after ${START_TIMEOUT}s waiting for $what"
            return 1
        fi
        for c in "${COMPONENTS[@]}"; do
            if [[ -f "$DIR/run/$c.pid" ]] && ! pid_of "$c" >/dev/null; then
                log "$c exited; last log lines:"
                tail -n 20 "$DIR/logs/$c.log" >&2 || true
                return 1
            fi
        done
        sleep 0.5
    done
}

readyz() {
    curl -fsS --max-time 5 --cacert "$DIR/pki/ca.crt" \
        -H "Authorization: Bearer $(<"$DIR/pki/admin.token")" \
        "https://127.0.0.1:${APISERVER_PORT}/readyz" | grep -q '^ok$'
}

etcd_healthy() {
    curl -fsS --max-time 5 "http://127.0.0.1:${ETCD_PORT}/health" | grep -q '"health":"true"'
}

# The token controller of kube-controller-manager creates the default
# ServiceAccount's token secret; seeing one proves the controller manager runs
# and holds the signing key.
default_sa_token_ready() {
    KUBECONFIG="$DIR/kubeconfig" kubectl get secrets -n default \
        --field-selector type=kubernetes.io/service-account-token -o name 2>/dev/null | grep -q 'default-token-'
}

do_start() {
    if pid_of kube-apiserver >/dev/null && pid_of etcd >/dev/null && pid_of kube-controller-manager >/dev/null; then
        log "already running in $DIR"
        # shellcheck disable=SC1091
        source "$DIR/env"
        readyz || die "running but /readyz is not ok"
        echo "export KUBECONFIG=$DIR/kubeconfig"
        return 0
    fi
    # Leftovers of a half-started or crashed run.
    do_stop quiet
    find_binaries
    mkdir -p "$DIR/logs" "$DIR/run" "$DIR/etcd"
    chmod 700 "$DIR/etcd"
    gen_pki

    # A restart prefers the previous ports: etcd's data dir remembers its peer
    # URL and clients may hold the old kubeconfig.
    local prev_etcd="" prev_peer="" prev_api=""
    if [[ -f "$DIR/env" ]]; then
        prev_etcd=$(sed -n 's/^ETCD_PORT=//p' "$DIR/env")
        prev_peer=$(sed -n 's/^ETCD_PEER_PORT=//p' "$DIR/env")
        prev_api=$(sed -n 's/^APISERVER_PORT=//p' "$DIR/env")
    fi
    ETCD_PORT=$(pick_port "${KUBEKMS_ETCD_PORT:-${prev_etcd:-23790}}")
    ETCD_PEER_PORT=$(pick_port "${KUBEKMS_ETCD_PEER_PORT:-${prev_peer:-23800}}")
    APISERVER_PORT=$(pick_port "${KUBEKMS_APISERVER_PORT:-${prev_api:-16443}}")
    local server="https://127.0.0.1:${APISERVER_PORT}"
    write_kubeconfig "$server"
    if [[ -n "$NODE_IP" ]]; then
        local c
        for c in kubelet kube-proxy kube-scheduler; do
            write_kubeconfig "https://${NODE_IP}:${APISERVER_PORT}" "$DIR/pki/$c.token" "$DIR/$c.kubeconfig" "$c"
        done
    fi
    cat >"$DIR/env" <<EOF
KUBECONFIG=$DIR/kubeconfig
KUBEKMS_APISERVER=$server
KUBEKMS_CA_FILE=$DIR/pki/ca.crt
KUBEKMS_ADMIN_TOKEN_FILE=$DIR/pki/admin.token
ETCD_PORT=$ETCD_PORT
ETCD_PEER_PORT=$ETCD_PEER_PORT
APISERVER_PORT=$APISERVER_PORT
EOF

    log "starting etcd on 127.0.0.1:$ETCD_PORT"
    launch etcd "$ETCD" --name kubekms --data-dir "$DIR/etcd" \
        --listen-client-urls "http://127.0.0.1:${ETCD_PORT}" \
        --advertise-client-urls "http://127.0.0.1:${ETCD_PORT}" \
        --listen-peer-urls "http://127.0.0.1:${ETCD_PEER_PORT}" \
        --initial-advertise-peer-urls "http://127.0.0.1:${ETCD_PEER_PORT}" \
        --initial-cluster "kubekms=http://127.0.0.1:${ETCD_PEER_PORT}" \
        --initial-cluster-state new --logger zap --log-level warn
    wait_until "etcd health" etcd_healthy || die "etcd did not start (see $DIR/logs/etcd.log)"

    log "starting kube-apiserver on $server"
    local pki="$DIR/pki" bind=127.0.0.1 advertise=127.0.0.1 node_flags=()
    if [[ -n "$NODE_IP" ]]; then
        # Inside cluster.sh's network namespace: every address there is private to it.
        bind=0.0.0.0
        advertise="$NODE_IP"
        # TaintNodesByCondition adds node.kubernetes.io/not-ready to a new node and only the
        # nodelifecycle controller (off here: it empties Endpoints whenever the API server
        # restarts) would remove it, so pods would stay Pending. Aggregator routing makes the
        # API server dial a webhook Service's endpoints itself (no kube-proxy on its path).
        node_flags=(--disable-admission-plugins TaintNodesByCondition --enable-aggregator-routing=true
            --kubelet-client-certificate "$pki/kubelet-client.crt" --kubelet-client-key "$pki/kubelet-client.key"
            # Reach the kubelet (logs, exec) at the node's address: looking its name up would
            # ask the host's resolver, outside the namespace.
            --kubelet-preferred-address-types InternalIP)
    fi
    # Admission: the defaults of 1.20 are fine without nodes; the ServiceAccount
    # plug-in only matters for pods, which never run here.
    launch kube-apiserver "$BIN/kube-apiserver" \
        --etcd-servers "http://127.0.0.1:${ETCD_PORT}" \
        --bind-address "$bind" --advertise-address "$advertise" \
        --secure-port "$APISERVER_PORT" --insecure-port 0 \
        --cert-dir "$pki" \
        --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
        --client-ca-file "$pki/ca.crt" \
        --token-auth-file "$pki/tokens.csv" \
        --service-account-key-file "$pki/sa.pub" \
        --service-account-signing-key-file "$pki/sa.key" \
        --service-account-issuer "https://kubernetes.default.svc.cluster.local" \
        --api-audiences "https://kubernetes.default.svc.cluster.local" \
        --service-cluster-ip-range 10.0.0.0/24 \
        --authorization-mode Node,RBAC \
        --enable-admission-plugins NamespaceLifecycle,ServiceAccount,ResourceQuota,MutatingAdmissionWebhook,ValidatingAdmissionWebhook \
        --allow-privileged=false --profiling="${KUBEKMS_CP_PROFILING:-false}" \
        "${node_flags[@]}" \
        --v "${KUBEKMS_CP_VERBOSITY:-1}"
    wait_until "kube-apiserver /readyz" readyz || die "kube-apiserver did not become ready (see $DIR/logs/kube-apiserver.log)"

    log "starting kube-controller-manager"
    launch kube-controller-manager "$BIN/kube-controller-manager" \
        --kubeconfig "$DIR/kubeconfig" \
        --controllers '*,-nodeipam,-nodelifecycle,-service,-route,-cloud-node-lifecycle' \
        --service-account-private-key-file "$pki/sa.key" \
        --root-ca-file "$pki/ca.crt" \
        --cluster-signing-cert-file "$pki/ca.crt" --cluster-signing-key-file "$pki/ca.key" \
        --use-service-account-credentials=false \
        --leader-elect=false --port 0 --secure-port 0 --profiling=false \
        --v "${KUBEKMS_CP_VERBOSITY:-1}"

    if [[ -n "$NODE_IP" ]]; then
        log "starting kube-scheduler"
        launch kube-scheduler "$BIN/kube-scheduler" \
            --kubeconfig "$DIR/kube-scheduler.kubeconfig" \
            --leader-elect=false --port 0 --secure-port 0 --profiling=false \
            --v "${KUBEKMS_CP_VERBOSITY:-1}"
    fi

    wait_until "kubectl get ns" env KUBECONFIG="$DIR/kubeconfig" kubectl get ns ||
        die "kubectl get ns failed"
    wait_until "default ServiceAccount token (controller manager)" default_sa_token_ready ||
        die "kube-controller-manager did not create the default SA token (see $DIR/logs/kube-controller-manager.log)"
    log "ready: $server (kubeconfig $DIR/kubeconfig)"
    echo "export KUBECONFIG=$DIR/kubeconfig"
}

do_stop() {
    local quiet="${1:-}" i c pid
    # Every component that may have run, node mode or not, in reverse start order.
    local all=(etcd kube-apiserver kube-controller-manager kube-scheduler)
    for ((i = ${#all[@]} - 1; i >= 0; i--)); do
        c="${all[$i]}"
        if pid=$(pid_of "$c"); then
            [[ -n "$quiet" ]] || log "stopping $c (pid $pid)"
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 1 100); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
            if kill -0 "$pid" 2>/dev/null; then
                log "$c did not exit on TERM; killing"
                kill -KILL "$pid" 2>/dev/null || true
            fi
        fi
        rm -f "$DIR/run/$c.pid"
    done
    [[ -n "$quiet" ]] || log "stopped"
}

do_status() {
    local rc=0 c pid
    for c in "${COMPONENTS[@]}"; do
        if pid=$(pid_of "$c"); then
            echo "$c: running (pid $pid)"
        else
            echo "$c: stopped"
            rc=3
        fi
    done
    if [[ $rc -eq 0 ]]; then
        # shellcheck disable=SC1091
        source "$DIR/env"
        if readyz; then
            echo "kube-apiserver: ready at https://127.0.0.1:${APISERVER_PORT} (KUBECONFIG=$DIR/kubeconfig)"
        else
            echo "kube-apiserver: not ready"
            rc=1
        fi
    fi
    return $rc
}

case "$CMD" in
start) do_start ;;
stop) do_stop ;;
status) do_status ;;
env) cat "$DIR/env" ;;
*) usage ;;
esac
