#!/usr/bin/env bash
# A multi-node Ray cluster on this one machine, for developing and testing flowray's Ray
# dispatch: a head node plus N worker nodes with fake GPUs, each a separate `ray start`.
#
#   cluster/local-cluster.sh start [options]    start it; prints the lines to use it
#   cluster/local-cluster.sh status [--port P]  its nodes (`ray status`)
#   cluster/local-cluster.sh stop [--port P]    stop it: its processes only, no `ray stop`
#
# Options of `start` (defaults in brackets):
#   -w, --workers N        worker nodes [2]
#   -g, --gpus N           fake GPUs per worker node [2]
#   -c, --cpus N           CPUs per worker node [1]
#       --head-cpus N      CPUs of the head node [1]; it has no GPU
#       --resources JSON   extra custom resources of every worker node, e.g. '{"ssd": 1}'
#       --accelerator T    worker nodes also get accelerator_type:T (flowray's
#                          `resources.accelerator: T`), e.g. T4
#   -p, --port P           the head's GCS port [6379]; `--address 127.0.0.1:P`
#       --dashboard-port P the dashboard / Jobs API port [8265], bound to 127.0.0.1
#       --no-dashboard     no dashboard (saves ~10 processes; no `flowray submit`)
#       --auth MODE        disabled: no token authentication (every node started with
#                          RAY_AUTH_MODE=disabled) [default]; token: Ray 2.60's default,
#                          with a token made for this cluster in DIR/auth_token
#       --dir DIR          where the nodes keep their Ray temp dirs and this script its
#                          state [/tmp/flowray-cluster-P]; one dir per cluster
# Options of `stop`: --port P or --dir DIR (which cluster), --grace S (seconds between
# SIGTERM and SIGKILL) [5], --keep-logs (keep DIR, with every node's Ray logs).
#
# Each node runs in its own session (setsid) with its own --temp-dir under DIR, so `stop`
# finds exactly this cluster's processes (the sessions it recorded, and anything whose command
# line names DIR, with all their descendants) and never touches another Ray on the machine.
# Environment: RAY (the `ray` command) [ray].

set -euo pipefail

RAY=${RAY:-ray}
PROG=$(basename "$0")

die() { echo "$PROG: $*" >&2; exit 2; }
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit "${1:-0}"; }

cmd=${1:-}
[ -n "$cmd" ] || usage 2
shift
case "$cmd" in
    start|stop|status) ;;
    -h|--help|help) usage 0 ;;
    *) die "unknown command '$cmd' (start, stop or status)" ;;
esac

workers=2 gpus=2 cpus=1 head_cpus=1 resources="" accelerator="" port=6379
dashboard_port=8265 dashboard=1 auth=disabled dir="" grace=5 keep_logs=0
while [ $# -gt 0 ]; do
    case "$1" in
        -w|--workers) workers=${2:?}; shift ;;
        -g|--gpus) gpus=${2:?}; shift ;;
        -c|--cpus) cpus=${2:?}; shift ;;
        --head-cpus) head_cpus=${2:?}; shift ;;
        --resources) resources=${2:?}; shift ;;
        --accelerator) accelerator=${2:?}; shift ;;
        -p|--port) port=${2:?}; shift ;;
        --dashboard-port) dashboard_port=${2:?}; shift ;;
        --no-dashboard) dashboard=0 ;;
        --auth) auth=${2:?}; shift ;;
        --dir) dir=${2:?}; shift ;;
        --grace) grace=${2:?}; shift ;;
        --keep-logs) keep_logs=1 ;;
        -h|--help) usage 0 ;;
        *) die "unknown option '$1' (see $PROG --help)" ;;
    esac
    shift
done
for n in "$workers" "$gpus" "$port" "$dashboard_port" "$grace"; do
    [[ "$n" =~ ^[0-9]+$ ]] || die "'$n' is not a whole number"
done
case "$auth" in disabled|token) ;; *) die "--auth is 'disabled' or 'token', not '$auth'" ;; esac
dir=${dir:-/tmp/flowray-cluster-$port}
dir=${dir%/}
state="$dir/state"

# ----------------------------------------------------------------------------- processes

# The pids of this cluster: every process in a session recorded at start, every process whose
# command line names $dir, and all their descendants. Never this shell's own session.
cluster_pids() {
    local sids="" own_sid
    own_sid=$(ps -o sid= -p $$ | tr -d ' ')
    [ -f "$state" ] && sids=$(sed -n 's/^SIDS="\(.*\)"$/\1/p' "$state")
    python3 - "$dir/" "$own_sid" $sids <<'EOF'
import os, sys
mark, own_sid, sids = sys.argv[1], int(sys.argv[2]), {int(s) for s in sys.argv[3:]}
procs = {}  # pid -> (ppid, sid, cmdline, state)
for name in os.listdir("/proc"):
    if not name.isdigit():
        continue
    try:
        with open(f"/proc/{name}/stat") as f:
            stat = f.read()
        with open(f"/proc/{name}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        continue
    fields = stat[stat.rindex(")") + 2:].split()
    procs[int(name)] = (int(fields[1]), int(fields[3]), cmd, fields[0])
# A recorded session counts while a Ray process lives in it (a session id can be reused).
sids = {sid for sid in sids if sid != own_sid
        and any(s == sid and "ray" in cmd for _, s, cmd, _ in procs.values())}
# Ray's daemons (gcs_server, raylet, dashboard, monitors) name the node's temp dir and live
# under .../ray/; matching both leaves alone, e.g., a `tail -f` of a log in $dir.
mine = {p for p, (_, sid, cmd, st) in procs.items()
        if st != "Z" and (sid in sids or (mark in cmd and "/ray/" in cmd))}
children = {}
for p, (ppid, *_rest) in procs.items():
    children.setdefault(ppid, []).append(p)
todo = list(mine)
while todo:
    for c in children.get(todo.pop(), []):
        if c not in mine and procs[c][3] != "Z":
            mine.add(c)
            todo.append(c)
p = os.getpid()  # neither this process nor the script that asks (nor its callers)
while p > 1:
    mine.discard(p)
    p = procs[p][0] if p in procs else 1
print(" ".join(str(p) for p in sorted(mine)))
EOF
}

stop_cluster() {
    [ -d "$dir" ] || { echo "no cluster state in $dir (nothing to stop)"; return 0; }
    local pids left i
    pids=$(cluster_pids)
    if [ -z "$pids" ]; then
        echo "no process of the cluster in $dir is running"
    else
        echo "stopping $(wc -w <<<"$pids") processes of the cluster in $dir (SIGTERM)"
        # shellcheck disable=SC2086
        kill -TERM $pids 2>/dev/null || true
        for ((i = 0; i < grace * 2; i++)); do
            left=$(cluster_pids)
            [ -z "$left" ] && break
            sleep 0.5
        done
        left=$(cluster_pids)
        if [ -n "$left" ]; then
            echo "SIGKILL to $(wc -w <<<"$left") left after ${grace}s"
            # shellcheck disable=SC2086
            kill -KILL $left 2>/dev/null || true
            sleep 0.5
        fi
        left=$(cluster_pids)
        [ -z "$left" ] || { echo "$PROG: still running: $left" >&2; return 1; }
    fi
    if [ "$keep_logs" = 1 ]; then
        rm -f "$state"
        echo "stopped; Ray logs kept in $dir/*/session_*/logs"
    else
        rm -rf "$dir"
        echo "stopped; removed $dir"
    fi
}

# Free TCP ports, so the nodes' agents and the head's Ray Client server never collide with
# each other or with another Ray on this machine (their defaults are fixed numbers).
free_ports() {
    python3 -c '
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
' "$1"
}

# ----------------------------------------------------------------------------- commands

case "$cmd" in
stop)
    stop_cluster
    exit $?
    ;;
status)
    [ -f "$state" ] || die "no cluster started by $PROG in $dir"
    # shellcheck disable=SC1090
    . "$state"
    if [ "$AUTH" = token ]; then
        export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH="$dir/auth_token"
    else
        export RAY_AUTH_MODE=disabled
    fi
    exec "$RAY" status --address "127.0.0.1:$PORT"
    ;;
esac

# start
command -v "$RAY" >/dev/null || die "'$RAY' not found: pip install 'flowray[ray]'"
if [ -n "$(cluster_pids)" ]; then
    die "a cluster from $dir is already running: $PROG stop --dir $dir"
fi
if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    die "port $port is in use (another Ray?): choose another with --port"
fi
if [ "$dashboard" = 1 ] && (exec 3<>"/dev/tcp/127.0.0.1/$dashboard_port") 2>/dev/null; then
    die "dashboard port $dashboard_port is in use: choose another with --dashboard-port"
fi
rm -rf "$dir"
mkdir -p "$dir"

export RAY_USAGE_STATS_ENABLED=0
if [ "$auth" = token ]; then
    # A token of this cluster's own, not ~/.ray/auth_token (which other clusters on the
    # machine may use): every node and every client reads it through RAY_AUTH_TOKEN_PATH.
    python3 -c 'import secrets; print(secrets.token_hex(32))' >"$dir/auth_token"
    chmod 600 "$dir/auth_token"
    export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH="$dir/auth_token"
else
    export RAY_AUTH_MODE=disabled
fi
unset RAY_ADDRESS CUDA_VISIBLE_DEVICES

{ echo "PORT=$port"; echo "DASHBOARD_PORT=$dashboard_port"; echo "DASHBOARD=$dashboard"
  echo "AUTH=$auth"; echo "WORKERS=$workers"; } >"$state"

worker_resources=$(python3 - "$resources" "$accelerator" <<'EOF'
import json, sys
res = json.loads(sys.argv[1]) if sys.argv[1] else {}
if not isinstance(res, dict):
    sys.exit("--resources must be a JSON object, e.g. '{\"ssd\": 1}'")
if sys.argv[2]:
    res["accelerator_type:" + sys.argv[2]] = 1
print(json.dumps(res))
EOF
) || die "bad --resources '$resources'"

# Record the sessions of the nodes started so far (also on failure, so `stop` finds them).
record_sessions() {
    local sids
    sids=$(python3 - "$dir/" "$(ps -o sid= -p $$ | tr -d ' ')" <<'EOF'
import os, sys
mark, own = sys.argv[1], int(sys.argv[2])
sids = set()
for name in os.listdir("/proc"):
    if name.isdigit():
        try:
            cmd = open(f"/proc/{name}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
            stat = open(f"/proc/{name}/stat").read()
        except OSError:
            continue
        sid = int(stat[stat.rindex(")") + 2:].split()[3])
        if mark in cmd and "/ray/" in cmd and sid != own:
            sids.add(sid)
print(" ".join(map(str, sorted(sids))))
EOF
)
    sed -i '/^SIDS=/d' "$state"
    echo "SIDS=\"$sids\"" >>"$state"
}

fail_start() {
    record_sessions
    echo "$PROG: $1; see $2" >&2
    tail -n 15 "$2" >&2 || true
    echo "$PROG: stopping what started" >&2
    stop_cluster >&2 || true
    exit 1
}

read -r client_port head_agent_port <<<"$(free_ports 2)"
head_args=(--head --node-ip-address 127.0.0.1 --port "$port" --num-cpus "$head_cpus"
           --num-gpus 0 --temp-dir "$dir/head" --ray-client-server-port "$client_port"
           --dashboard-agent-listen-port "$head_agent_port" --disable-usage-stats)
if [ "$dashboard" = 1 ]; then
    head_args+=(--include-dashboard true --dashboard-host 127.0.0.1
                --dashboard-port "$dashboard_port")
else
    head_args+=(--include-dashboard false)
fi
echo "starting the head node (127.0.0.1:$port, $head_cpus CPUs, auth $auth) ..."
setsid -w "$RAY" start "${head_args[@]}" </dev/null >"$dir/head.out" 2>&1 ||
    fail_start "the head node did not start" "$dir/head.out"
record_sessions

# Worker nodes, started side by side (each `ray start` takes seconds).
pids=()
for ((i = 1; i <= workers; i++)); do
    agent_port=$(free_ports 1)
    args=(--address "127.0.0.1:$port" --node-ip-address 127.0.0.1 --num-cpus "$cpus"
          --num-gpus "$gpus" --temp-dir "$dir/w$i" --dashboard-agent-listen-port "$agent_port"
          --disable-usage-stats)
    [ "$worker_resources" = "{}" ] || args+=(--resources "$worker_resources")
    echo "starting worker node w$i ($cpus CPUs, $gpus fake GPUs${resources:+, $resources}${accelerator:+, accelerator $accelerator}) ..."
    setsid -w "$RAY" start "${args[@]}" </dev/null >"$dir/w$i.out" 2>&1 &
    pids+=($!)
done
for ((i = 1; i <= workers; i++)); do
    wait "${pids[$((i - 1))]}" || fail_start "worker node w$i did not start" "$dir/w$i.out"
done
record_sessions

total_cpus=$((head_cpus + workers * cpus))
total_gpus=$((workers * gpus))
echo
echo "Ray cluster at 127.0.0.1:$port: $((workers + 1)) nodes, $total_cpus CPUs, $total_gpus (fake) GPUs; state and logs in $dir"
echo "Ray uses this machine's address for 127.0.0.1 (its nodes report $(sed 's/\x1b\[[0-9;]*m//g' "$dir/head.out" | sed -n 's/.*Local node IP: *\([0-9a-f.:]*\).*/\1/p' | head -n 1))."
echo
if [ "$auth" = token ]; then
    echo "  export RAY_AUTH_TOKEN_PATH=$dir/auth_token   # this cluster's token"
else
    echo "  export RAY_AUTH_MODE=disabled   # optional: the cluster asks for no token"
fi
echo "  flowray run FLOW --address 127.0.0.1:$port"
if [ "$dashboard" = 1 ]; then
    echo "  flowray submit FLOW --address http://127.0.0.1:$dashboard_port"
fi
echo "  $0 stop --dir $dir"
