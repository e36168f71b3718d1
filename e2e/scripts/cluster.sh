#!/usr/bin/env bash
# A one-node Kubernetes v1.20.2 cluster that runs real pods, inside a network
# namespace of its own with no route out of it.
#
#   control plane   etcd, kube-apiserver, kube-controller-manager, kube-scheduler
#                   (control-plane.sh in node mode)
#   node            containerd + runc + CNI bridge (Debian's), kubelet, kube-proxy
#
# Usage: e2e/scripts/cluster.sh start|stop|status|env|exec|load|forward [DIR]
#   start [DIR]                 bring everything up (binaries built/cached on first use)
#   stop [DIR]                  stop everything and put the machine back as it was
#   status [DIR]                one line per component; exit 0 when all run and the node is Ready
#   env [DIR]                   the env file (KUBECONFIG for the host, ...)
#   exec CMD...                 run CMD inside the namespace, KUBECONFIG set for in there
#   load IMAGE.tar              import an OCI image archive into the node's containerd
#   forward NAME HOST_PORT TARGET_HOST:PORT
#                               serve TARGET (an address inside the namespace, such as a
#                               Service's cluster IP) on 127.0.0.1:HOST_PORT of the host
# DIR (or $KUBEKMS_CLUSTER_DIR) defaults to /tmp/kubekms-cluster; every file, socket and
# mount of the cluster lives under it, logs in DIR/logs. Several clusters can run at once
# with different DIRs, KUBEKMS_NETNS names and KUBEKMS_CLUSTER_API_PORT host ports.
#
# Why a network namespace: the kubelet refuses a loopback node IP and Endpoints refuse
# 127.0.0.0/8, so the node needs a real address; inside the namespace that address (one end of a
# veth pair whose other end is in there too, 10.77.0.1), the pod network (10.88.0.0/24 on bridge cni0), the Service network
# (10.0.0.0/24) and every iptables rule of the kubelet and kube-proxy exist nowhere else, and
# no packet for them can leave: the namespace has no link to the outside. The host reaches the
# API server (and anything `forward` names) only through Unix sockets: a socat inside the
# namespace listens on DIR/run/NAME.sock, a socat on the host's loopback connects to it.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CMD="${1:-}"
[[ $# -gt 0 ]] && shift
DIR="${KUBEKMS_CLUSTER_DIR:-/tmp/kubekms-cluster}"
if [[ "$CMD" =~ ^(start|stop|status|env)$ && $# -gt 0 ]]; then
    DIR="$1"
fi
# The namespace's name. `start` takes $KUBEKMS_NETNS (default kubekms) and records it in
# DIR/run/netns before making anything; every other command reads that record, so stopping one
# cluster can never touch another's namespace, processes or cgroups.
RECORDED_NETNS=$(cat "$DIR/run/netns" 2>/dev/null || true)
if [[ "$CMD" == start ]]; then
    NETNS="${KUBEKMS_NETNS:-kubekms}"
else
    NETNS="${RECORDED_NETNS:-${KUBEKMS_NETNS:-}}"
fi
NODE_IP=10.77.0.1
NODE_NAME=kubekms-node
POD_SUBNET=10.88.0.0/24
HOST_API_PORT="${KUBEKMS_CLUSTER_API_PORT:-16444}"
PAUSE_IMAGE=localhost/kubekms-pause:3.4
START_TIMEOUT="${KUBEKMS_CLUSTER_TIMEOUT:-120}"
# Global (not per-namespace) kernel settings the kubelet rewrites; saved at start, put back
# at stop.
GLOBAL_SYSCTLS=(kernel.panic kernel.panic_on_oops vm.overcommit_memory kernel.keys.root_maxkeys kernel.keys.root_maxbytes)

log() { echo "[cluster] $*" >&2; }
die() {
    log "$*"
    exit 1
}

in_ns() { nsenter --net="/var/run/netns/$NETNS" "$@"; }
sock() { echo "$DIR/containerd/containerd.sock"; }

pid_of() {
    local f="$DIR/run/$1.pid" pid
    [[ -f "$f" ]] || return 1
    pid=$(<"$f")
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 1
    echo "$pid"
}

# launch NAME CMD...: in its own session, inside the namespace, logging to DIR/logs/NAME.log.
launch() {
    local name="$1"
    shift
    GOGC="${KUBEKMS_CP_GOGC:-400}" setsid nsenter --net="/var/run/netns/$NETNS" "$@" \
        >>"$DIR/logs/$name.log" 2>&1 </dev/null &
    echo $! >"$DIR/run/$name.pid"
}

# launch_host NAME CMD...: like launch, in the host's network namespace.
launch_host() {
    local name="$1"
    shift
    setsid "$@" >>"$DIR/logs/$name.log" 2>&1 </dev/null &
    echo $! >"$DIR/run/$name.pid"
}

stop_pid() {
    local name="$1" pid
    pid=$(pid_of "$name") || {
        rm -f "$DIR/run/$name.pid"
        return 0
    }
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$DIR/run/$name.pid"
}

wait_until() {
    local what="$1" deadline=$((SECONDS + START_TIMEOUT))
    shift
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            log "timed out after ${START_TIMEOUT}s waiting for $what"
            return 1
        fi
        sleep 0.5
    done
}

host_kubectl() { KUBECONFIG="$DIR/kubeconfig" kubectl --request-timeout=10s "$@"; }

find_tools() {
    BIN=$("$SCRIPT_DIR/build-kubernetes.sh" | tail -n1)
    local t
    for t in kubelet kube-proxy kube-scheduler pause; do
        [[ -x "$BIN/$t" ]] || die "$t not found in $BIN (run e2e/scripts/build-kubernetes.sh)"
    done
    for t in containerd containerd-shim-runc-v2 runc ctr socat nsenter iptables conntrack; do
        command -v "$t" >/dev/null || die "$t not found (run e2e/scripts/setup.sh)"
    done
    [[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/host-local && -x /usr/lib/cni/loopback ]] ||
        die "CNI plugins not found in /usr/lib/cni (apt-get install containernetworking-plugins)"
}

save_sysctls() {
    [[ -f "$DIR/run/sysctl.saved" ]] && return 0
    local k
    for k in "${GLOBAL_SYSCTLS[@]}"; do
        [[ -e "/proc/sys/${k//.//}" ]] && echo "$k=$(sysctl -n "$k")"
    done >"$DIR/run/sysctl.saved"
}

restore_sysctls() {
    [[ -f "$DIR/run/sysctl.saved" ]] || return 0
    local line k v now
    while IFS= read -r line; do
        k=${line%%=*}
        v=${line#*=}
        now=$(sysctl -n "$k" 2>/dev/null || true)
        if [[ "$now" != "$v" ]]; then
            sysctl -q -w "$k=$v" >/dev/null && log "restored $k=$v (was $now)"
        fi
    done <"$DIR/run/sysctl.saved"
    rm -f "$DIR/run/sysctl.saved"
}

make_netns() {
    if [[ ! -e "/var/run/netns/$NETNS" ]]; then
        ip netns add "$NETNS"
    fi
    ip -n "$NETNS" link set lo up
    if ! ip -n "$NETNS" link show kubekms0 >/dev/null 2>&1; then
        # A veth pair with both ends in the namespace (these kernels lack the dummy device):
        # an address for the node that is not loopback, and a default route (Go's "which
        # interface is the host's" logic wants one) into a peer that drops everything. No
        # link to the host exists, so nothing can leave.
        ip -n "$NETNS" link add kubekms0 type veth peer name kubekms1
        ip -n "$NETNS" addr add "$NODE_IP/24" dev kubekms0
        ip -n "$NETNS" link set kubekms1 up
        ip -n "$NETNS" link set kubekms0 up
        ip -n "$NETNS" route add default dev kubekms0
    fi
    in_ns sysctl -q -w net.ipv4.ip_forward=1
    # Pod → Service → pod on the same bridge needs bridged traffic to pass iptables (per
    # namespace on current kernels).
    if [[ ! -e /sys/module/br_netfilter ]] && command -v modprobe >/dev/null &&
        modprobe br_netfilter 2>/dev/null; then
        # Loading it changes how every bridge on the host filters; unloaded at stop.
        touch "$DIR/run/loaded-br_netfilter"
    fi
    if [[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]]; then
        in_ns sysctl -q -w net.bridge.bridge-nf-call-iptables=1 || true
    fi
}

write_node_config() {
    mkdir -p "$DIR/containerd" "$DIR/cni/net.d" "$DIR/cni/ipam" "$DIR/kubelet/pki"
    cat >"$DIR/containerd/config.toml" <<EOF
version = 2
root = "$DIR/containerd/root"
state = "$DIR/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "$DIR/containerd/containerd.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "$DIR/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  # containerd pulls nothing here: the sandbox image is imported at start.
  sandbox_image = "$PAUSE_IMAGE"
  # These VMs give no process CAP_SYS_RESOURCE, so runc cannot lower oom_score_adj and every
  # sandbox would fail with "can't get final child's PID from pipe: EOF".
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  # Pod network namespaces under DIR, so a stop finds and unmounts every one.
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "$DIR/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$DIR/cni/net.d"
EOF
    cat >"$DIR/cni/net.d/10-kubekms.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "kubekms",
  "plugins": [
    {
      "type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
      "ipam": {
        "type": "host-local", "dataDir": "$DIR/cni/ipam",
        "ranges": [[{"subnet": "$POD_SUBNET"}]], "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
    cat >"$DIR/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
cgroupDriver: cgroupfs
# A cgroup tree of this cluster's own: another local cluster's kubelet would otherwise take
# these pods' cgroups for orphans of its own and remove them.
cgroupRoot: /$NETNS
failSwapOn: false
protectKernelDefaults: false
serializeImagePulls: false
maxPods: 60
# Only the API server (its client certificate is signed by the cluster CA) talks to the kubelet.
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: "$DIR/cp/pki/ca.crt"}
authorization: {mode: AlwaysAllow}
# A development machine's disk may be nearly full; evict only when it really is.
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
# No resolver for pods: the host's would be outside the namespace, and there is no cluster DNS.
resolvConf: ""
EOF
}

pause_image() {
    local tar="$DIR/run/pause.tar"
    python3 "$SCRIPT_DIR/oci-image.py" --name "$PAUSE_IMAGE" --output "$tar" \
        --entrypoint /pause --user 65535:65535 "$BIN/pause:/pause:0755" >/dev/null
    ctr -a "$(sock)" -n k8s.io images import "$tar" >/dev/null
}

node_ready() {
    [[ "$(host_kubectl get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]]
}

# forward NAME HOST_PORT TARGET: two socats joined by DIR/run/NAME.sock.
start_forward() {
    local name="$1" port="$2" target="$3"
    stop_pid "fwd-$name-host"
    stop_pid "fwd-$name-ns"
    rm -f "$DIR/run/$name.sock"
    launch "fwd-$name-ns" socat "UNIX-LISTEN:$DIR/run/$name.sock,fork,mode=600" "TCP:$target"
    for _ in $(seq 50); do
        [[ -S "$DIR/run/$name.sock" ]] && break
        sleep 0.1
    done
    launch_host "fwd-$name-host" socat "TCP-LISTEN:$port,bind=127.0.0.1,fork,reuseaddr" \
        "UNIX-CONNECT:$DIR/run/$name.sock"
}

do_start() {
    [[ $(id -u) -eq 0 ]] || die "must run as root (network namespace, containerd, kubelet)"
    if [[ -f "$DIR/run/kubelet.pid" ]] && do_status >/dev/null 2>&1; then
        log "already running in $DIR"
        echo "export KUBECONFIG=$DIR/kubeconfig"
        return 0
    fi
    if [[ -n "$RECORDED_NETNS" && "$RECORDED_NETNS" != "$NETNS" ]]; then
        # What an earlier start in DIR left, under its own name.
        NETNS="$RECORDED_NETNS" do_stop quiet
    fi
    do_stop quiet
    # The kubelet of 1.20 keeps every pod's log under /var/log/pods, whatever its root
    # directory, and deletes the logs of pods it does not know: two node clusters on one machine
    # would delete each other's. One at a time.
    local other
    if other=$(pgrep -x kubelet); then
        die "another local cluster's kubelet runs (pid $(echo $other)); stop that cluster first \
(e2e/scripts/cluster.sh stop DIR): two kubelets delete each other's pod logs"
    fi
    find_tools
    mkdir -p "$DIR/logs" "$DIR/run"
    echo "$NETNS" >"$DIR/run/netns"
    # A start that fails half-way (an error, a `die`, a timeout) leaves nothing running.
    trap 'log "start failed; cleaning up"; do_stop quiet' EXIT
    save_sysctls
    make_netns

    log "starting the control plane in network namespace $NETNS ($NODE_IP)"
    in_ns env KUBEKMS_CP_NODE_IP="$NODE_IP" KUBEKMS_NODE_NAME="$NODE_NAME" KUBEKMS_K8S_BIN="$BIN" \
        "$SCRIPT_DIR/control-plane.sh" start "$DIR/cp" >/dev/null
    # shellcheck disable=SC1091
    source "$DIR/cp/env"
    start_forward apiserver "$HOST_API_PORT" "127.0.0.1:$APISERVER_PORT"
    sed "s#https://127.0.0.1:${APISERVER_PORT}#https://127.0.0.1:${HOST_API_PORT}#" \
        "$DIR/cp/kubeconfig" >"$DIR/kubeconfig"
    chmod 600 "$DIR/kubeconfig"
    cat >"$DIR/env" <<EOF
KUBECONFIG=$DIR/kubeconfig
KUBEKMS_NETNS=$NETNS
KUBEKMS_NODE_IP=$NODE_IP
KUBEKMS_CLUSTER_DIR=$DIR
KUBEKMS_INNER_KUBECONFIG=$DIR/cp/kubeconfig
EOF

    write_node_config
    log "starting containerd"
    # containerd's shims keep their sockets under /run/containerd/s whatever the config says;
    # remember whether that directory is ours to remove at stop.
    [[ -e /run/containerd ]] || touch "$DIR/run/created-run-containerd"
    # The kubelet of 1.20 writes container logs under /var/log/pods and links them from
    # /var/log/containers, wherever its root directory is.
    [[ -e /var/log/pods ]] || touch "$DIR/run/created-var-log-pods"
    [[ -e /var/log/containers ]] || touch "$DIR/run/created-var-log-containers"
    launch containerd containerd --config "$DIR/containerd/config.toml"
    wait_until "containerd" ctr -a "$(sock)" version || die "containerd did not start (see $DIR/logs/containerd.log)"
    pause_image

    # The kubelet's cgroup root must exist in every hierarchy before it starts.
    local h
    for h in /sys/fs/cgroup/*/; do
        [[ -L "${h%/}" ]] || mkdir -p "$h$NETNS" 2>/dev/null || true
    done
    log "starting kubelet ($NODE_NAME)"
    launch kubelet "$BIN/kubelet" --config "$DIR/kubelet/config.yaml" \
        --kubeconfig "$DIR/cp/kubelet.kubeconfig" \
        --container-runtime remote --container-runtime-endpoint "unix://$(sock)" \
        --root-dir "$DIR/kubelet" --cert-dir "$DIR/kubelet/pki" \
        --node-ip "$NODE_IP" --hostname-override "$NODE_NAME" \
        --pod-infra-container-image "$PAUSE_IMAGE" \
        --v "${KUBEKMS_CP_VERBOSITY:-1}"
    log "starting kube-proxy"
    # No conntrack tuning: those sysctls are global, and the node's few connections need none.
    launch kube-proxy "$BIN/kube-proxy" --kubeconfig "$DIR/cp/kube-proxy.kubeconfig" \
        --hostname-override "$NODE_NAME" --bind-address "$NODE_IP" \
        --cluster-cidr "$POD_SUBNET" --proxy-mode iptables \
        --conntrack-max-per-core 0 --conntrack-tcp-timeout-established 0 \
        --conntrack-tcp-timeout-close-wait 0 \
        --metrics-bind-address 127.0.0.1:10249 --healthz-bind-address 127.0.0.1:10256 \
        --v "${KUBEKMS_CP_VERBOSITY:-1}"
    wait_until "node $NODE_NAME Ready" node_ready ||
        die "the node did not become Ready (see $DIR/logs/kubelet.log)"
    trap - EXIT
    log "ready: node $NODE_NAME; KUBECONFIG=$DIR/kubeconfig (API server on 127.0.0.1:$HOST_API_PORT)"
    echo "export KUBECONFIG=$DIR/kubeconfig"
}

# Every mount under DIR (pod volumes, container root filesystems, pod network namespaces),
# deepest first.
unmount_all() {
    local m
    for _ in 1 2 3; do
        mapfile -t mounts < <(awk -v d="$DIR/" 'index($2, d) == 1 { print $2 }' /proc/self/mounts | sort -r)
        [[ ${#mounts[@]} -eq 0 ]] && return 0
        for m in "${mounts[@]}"; do
            umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
        done
    done
}

# The cgroups the kubelet and runc made (cgroupfs driver): empty once every pod is gone.
remove_cgroups() {
    local d
    for d in /sys/fs/cgroup/*/"$NETNS" /sys/fs/cgroup/"$NETNS"; do
        [[ -d "$d" ]] || continue
        find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true
        [[ -d "$d" ]] && log "could not remove $d (processes left in it?)"
    done
    return 0
}

# Kills whatever the node ran: containers first (through containerd while it runs), then the
# shims of this containerd and anything still in the cluster's cgroups.
stop_containers() {
    local s ids id pid
    s=$(sock)
    if [[ -S "$s" ]] && ctr -a "$s" version >/dev/null 2>&1; then
        mapfile -t ids < <(ctr -a "$s" -n k8s.io tasks list -q 2>/dev/null)
        for id in "${ids[@]}"; do
            ctr -a "$s" -n k8s.io tasks kill -a -s SIGKILL "$id" >/dev/null 2>&1 || true
        done
    fi
    # Shims started by this containerd carry its address on their command line.
    for pid in $(pgrep -f "containerd-shim-runc-v2 .*-address $s" || true); do
        kill -KILL "$pid" 2>/dev/null || true
    done
    local procs
    [[ -n "$NETNS" ]] || return 0
    for procs in /sys/fs/cgroup/pids/"$NETNS" /sys/fs/cgroup/"$NETNS"; do
        [[ -d "$procs" ]] || continue
        find "$procs" -name cgroup.procs -exec cat {} + 2>/dev/null | while read -r pid; do
            kill -KILL "$pid" 2>/dev/null || true
        done
    done
}

do_stop() {
    local quiet="${1:-}"
    [[ -d "$DIR/run" ]] || {
        [[ -n "$quiet" ]] || log "nothing to stop in $DIR"
        return 0
    }
    if [[ -z "$NETNS" ]]; then
        # No record of which namespace DIR's cluster used: stop what the pid files name, and
        # nothing by name (another cluster may run under the default one).
        log "no network namespace recorded in $DIR/run/netns; stopping by pid files only"
    fi
    local f name
    for f in "$DIR"/run/fwd-*.pid; do
        [[ -e "$f" ]] || continue
        name=$(basename "$f" .pid)
        stop_pid "$name"
    done
    rm -f "$DIR"/run/*.sock
    stop_pid kube-proxy
    stop_pid kubelet
    stop_containers
    stop_pid containerd
    stop_containers
    # By pid files: works with or without the namespace.
    if [[ -d "$DIR/cp/run" ]]; then
        "$SCRIPT_DIR/control-plane.sh" stop "$DIR/cp" >/dev/null 2>&1 || true
    fi
    unmount_all
    [[ -z "$NETNS" ]] || remove_cgroups
    if [[ -f "$DIR/run/loaded-br_netfilter" ]]; then
        modprobe -r br_netfilter 2>/dev/null || log "could not unload br_netfilter"
        rm -f "$DIR/run/loaded-br_netfilter"
    fi
    # Directories the node made outside DIR, removed when this cluster made them and no other
    # local cluster's containerd or kubelet still uses them.
    local created mark
    for created in /run/containerd /var/log/pods /var/log/containers; do
        mark="$DIR/run/created-$(echo "${created#/}" | tr / -)"
        if [[ -f "$mark" ]] && ! pgrep -x containerd >/dev/null && ! pgrep -x kubelet >/dev/null; then
            rm -rf "$created"
        fi
        rm -f "$mark"
    done
    restore_sysctls
    # Deleting the namespace removes its interfaces (dummy, bridge, veths), routes and every
    # iptables rule the kubelet and kube-proxy wrote there.
    if [[ -n "$NETNS" && -e "/var/run/netns/$NETNS" ]]; then
        ip netns delete "$NETNS"
    fi
    [[ -n "$quiet" ]] || log "stopped; nothing of the cluster runs (data kept in $DIR)"
}

do_status() {
    local rc=0 c pid
    for c in containerd kubelet kube-proxy; do
        if pid=$(pid_of "$c"); then
            echo "$c: running (pid $pid)"
        else
            echo "$c: stopped"
            rc=3
        fi
    done
    if [[ -n "$NETNS" && -e "/var/run/netns/$NETNS" && -f "$DIR/cp/env" ]]; then
        in_ns "$SCRIPT_DIR/control-plane.sh" status "$DIR/cp" | sed 's/^/control plane: /' || rc=3
    else
        echo "control plane: stopped"
        rc=3
    fi
    if [[ $rc -eq 0 ]]; then
        if node_ready; then
            echo "node $NODE_NAME: Ready (KUBECONFIG=$DIR/kubeconfig)"
        else
            echo "node $NODE_NAME: not Ready"
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
exec)
    [[ $# -gt 0 ]] || die "usage: $0 exec CMD..."
    exec nsenter --net="/var/run/netns/$NETNS" env KUBECONFIG="$DIR/cp/kubeconfig" "$@"
    ;;
load)
    [[ $# -eq 1 && -f "$1" ]] || die "usage: $0 load IMAGE.tar"
    ctr -a "$(sock)" -n k8s.io images import "$1"
    ;;
forward)
    [[ $# -eq 3 ]] || die "usage: $0 forward NAME HOST_PORT TARGET_HOST:PORT"
    start_forward "$@"
    log "$1: 127.0.0.1:$2 -> $3 (inside $NETNS)"
    ;;
*)
    sed -n '2,20p' "$0" >&2
    exit 2
    ;;
esac
