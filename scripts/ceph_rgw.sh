#!/usr/bin/env bash
# A throw-away single-node Ceph cluster with a RADOS Gateway (S3) on 127.0.0.1, for the tests.
#
#   scripts/ceph_rgw.sh install      apt-get install radosgw ceph-mon ceph-osd (only if missing)
#   scripts/ceph_rgw.sh start DIR    start (or restart) the cluster kept in DIR; writes DIR/env
#                                    (shell variables) and DIR/s3.json (endpoint and test keys)
#   scripts/ceph_rgw.sh stop DIR     stop every daemon this script started in DIR (by PID file)
#   scripts/ceph_rgw.sh restart-gateway DIR [DOWN_SECONDS]
#                                    stop only the gateway of the running cluster, wait
#                                    DOWN_SECONDS (default 0), start it and wait until it answers
#                                    (an S3 outage for the tests; stop-gateway / start-gateway
#                                    DIR do each half)
#
# Layout: one monitor, one OSD (bluestore on an 8 GiB sparse file DIR/osd/block), one gateway.
# Everything lives under DIR (no /etc/ceph, no /var/lib/ceph); every command gets -c DIR/ceph.conf.
# Why the settings below (each one was needed on this kind of machine):
#   - cephx with a keyring made *before* the monitor's --mkfs: with auth none the OSD's mkfs fails
#     with "wrong fsid";
#   - public/cluster addr 127.0.0.1 and both networks 127.0.0.0/8: otherwise the OSD binds every
#     interface, and only loopback may be used here;
#   - pool size 1 and few PGs: one OSD, and RGW creates ~7 pools at start;
#   - plugin / class / erasure-code dirs point at the installed libraries.
# Environment: CEPH_RGW_PORT (default: a free port), CEPH_START_TIMEOUT (seconds, default 120).
set -euo pipefail

ACCESS_KEY_DEFAULT=zodi-test-access
T0=$EPOCHREALTIME
log() { awk -v a="$T0" -v b="$EPOCHREALTIME" -v m="$*" 'BEGIN { printf "[ceph_rgw %5.1fs] %s\n", b - a, m }' >&2; }
die() { echo "[ceph_rgw] ERROR: $*" >&2; exit 1; }

usage() {
  sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

need_bins=(ceph-mon ceph-osd radosgw radosgw-admin ceph-authtool monmaptool ceph)

cmd_install() {
  local missing=()
  for b in "${need_bins[@]}"; do command -v "$b" >/dev/null || missing+=("$b"); done
  if [ ${#missing[@]} -eq 0 ]; then
    return 0
  fi
  log "installing radosgw ceph-mon ceph-osd (missing: ${missing[*]})"
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -q >&2
  "${sudo[@]}" apt-get install -y -q --no-install-recommends radosgw ceph-mon ceph-osd >&2
  for b in "${need_bins[@]}"; do command -v "$b" >/dev/null || die "$b still missing after apt-get install"; done
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Directory of a library shipped by a package, e.g. the OSD's object classes.
lib_dir() {
  local pattern=$1 fallback=$2 hit
  hit=$(dpkg -L ceph-osd ceph-base librados2 ceph-common 2>/dev/null | grep -m1 -E "$pattern" || true)
  if [ -n "$hit" ]; then dirname "$hit"; else echo "$fallback"; fi
}

write_conf() {
  local dir=$1 fsid=$2 mon_port=$3 rgw_port=$4
  local arch_lib=/usr/lib/$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)
  local cls_dir ec_dir
  cls_dir=$(lib_dir '/rados-classes/libcls_rgw\.so' "$arch_lib/rados-classes")
  ec_dir=$(lib_dir '/erasure-code/libec_jerasure\.so' "$arch_lib/ceph/erasure-code")
  cat > "$dir/ceph.conf" <<EOF
[global]
fsid = $fsid
mon host = v2:127.0.0.1:$mon_port
ms bind msgr1 = false
ms bind ipv6 = false
public addr = 127.0.0.1
cluster addr = 127.0.0.1
public network = 127.0.0.0/8
cluster network = 127.0.0.0/8
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
keyring = $dir/keyring
run dir = $dir/run
admin socket = $dir/run/\$name.asok
log file = $dir/log/\$name.log
mon cluster log file = default=$dir/log/\$channel.log cluster=$dir/log/cluster.log
pid file = $dir/run/\$name.pidfile
plugin dir = $arch_lib/ceph
erasure code dir = $ec_dir
osd class dir = $cls_dir
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon max pg per osd = 1000
mon data avail warn = 1
mon data avail crit = 0
mon osd full ratio = 0.99
mon osd backfillfull ratio = 0.99
mon osd nearfull ratio = 0.99
osd failsafe full ratio = 0.999

[mon.a]
mon data = $dir/mon

[osd.0]
osd data = $dir/osd
osd objectstore = bluestore
bluestore block create = true
bluestore block size = 8589934592
bluestore cache autotune = false
bluestore cache size = 67108864
osd memory target = 939524096

[client.rgw.a]
rgw frontends = beast endpoint=127.0.0.1:$rgw_port
rgw data = $dir/rgw
rgw dns name = 127.0.0.1
rgw enable usage log = false
rgw thread pool size = 32
EOF
}

# Launch a daemon in the foreground under nohup; remember its PID in DIR/run/NAME.pid.
launch() {
  local dir=$1 name=$2
  shift 2
  nohup "$@" -f < /dev/null >> "$dir/log/$name.out" 2>&1 &
  echo $! > "$dir/run/$name.pid"
}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

log_tail() {
  local dir=$1 f
  for f in "$dir"/log/*; do
    [ -s "$f" ] || continue
    echo "---- $f (last 15 lines)" >&2
    tail -n 15 "$f" >&2
  done
}

fail_start() {
  local dir=$1
  shift
  echo "[ceph_rgw] ERROR: $*" >&2
  log_tail "$dir"
  cmd_stop "$dir" >/dev/null 2>&1 || true
  exit 1
}

# Poll "$@" until it succeeds or the deadline passes.
wait_for() {
  local dir=$1 what=$2 deadline=$3
  shift 3
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || fail_start "$dir" "timed out waiting for $what"
    for p in "$dir"/run/*.pid; do
      [ -f "$p" ] && ! alive "$p" && fail_start "$dir" "$(basename "$p" .pid) exited while waiting for $what"
    done
    sleep 0.5
  done
}

cmd_start() {
  local dir=${1:?usage: ceph_rgw.sh start DIR}
  for b in "${need_bins[@]}"; do
    command -v "$b" >/dev/null || die "$b not found: run 'scripts/ceph_rgw.sh install' first"
  done
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  mkdir -p "$dir"/{mon,osd,rgw,run,log}
  local t0 deadline ceph
  t0=$(date +%s)
  deadline=$((t0 + ${CEPH_START_TIMEOUT:-120}))
  ceph=(ceph -c "$dir/ceph.conf" --connect-timeout 10)

  for p in "$dir"/run/*.pid; do
    alive "$p" 2>/dev/null && die "$(basename "$p" .pid) already running from $dir: run 'stop $dir' first"
  done

  local fresh=0
  if [ ! -f "$dir/mon/done" ]; then
    fresh=1
    rm -rf "${dir:?}"/mon/* "${dir:?}"/osd/* "${dir:?}"/rgw/* "$dir/keyring" "$dir/monmap"
    local fsid osd_uuid mon_port rgw_port
    fsid=$(uuidgen)
    osd_uuid=$(uuidgen)
    mon_port=$(free_port)
    rgw_port=${CEPH_RGW_PORT:-$(free_port)}
    echo "$rgw_port" > "$dir/rgw_port"
    write_conf "$dir" "$fsid" "$mon_port" "$rgw_port"

    # cephx keys before the monitor's mkfs: the monitor imports every key of this keyring.
    ceph-authtool "$dir/keyring" --create-keyring --gen-key -n mon. --cap mon 'allow *' >/dev/null
    ceph-authtool "$dir/keyring" --gen-key -n client.admin \
      --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' --cap mds 'allow *' >/dev/null
    ceph-authtool "$dir/keyring" --gen-key -n osd.0 \
      --cap mon 'allow profile osd' --cap mgr 'allow profile osd' --cap osd 'allow *' >/dev/null
    ceph-authtool "$dir/keyring" --gen-key -n client.rgw.a \
      --cap mon 'allow rw' --cap osd 'allow rwx' --cap mgr 'allow rw' >/dev/null
    chmod 600 "$dir/keyring"
    monmaptool --create --addv a "[v2:127.0.0.1:$mon_port]" --fsid "$fsid" "$dir/monmap" >/dev/null
    ceph-mon -c "$dir/ceph.conf" -i a --mkfs --monmap "$dir/monmap" --keyring "$dir/keyring" \
      >> "$dir/log/mkfs.out" 2>&1 || fail_start "$dir" "ceph-mon --mkfs failed"
    touch "$dir/mon/done"
    echo "$osd_uuid" > "$dir/osd_uuid"
  fi
  local rgw_port
  rgw_port=$(cat "$dir/rgw_port")

  log "starting monitor"
  launch "$dir" mon.a ceph-mon -c "$dir/ceph.conf" -i a
  wait_for "$dir" "the monitor" "$deadline" "${ceph[@]}" mon stat

  if [ ! -f "$dir/osd/done" ]; then
    log "creating OSD 0 (bluestore on a sparse 8 GiB file)"
    local osd_uuid
    osd_uuid=$(cat "$dir/osd_uuid")
    "${ceph[@]}" osd new "$osd_uuid" 0 >> "$dir/log/mkfs.out" 2>&1 \
      || fail_start "$dir" "ceph osd new failed"
    ceph-osd -c "$dir/ceph.conf" -i 0 --mkfs --osd-uuid "$osd_uuid" \
      >> "$dir/log/mkfs.out" 2>&1 || fail_start "$dir" "ceph-osd --mkfs failed"
    touch "$dir/osd/done"
  fi
  log "starting OSD"
  launch "$dir" osd.0 ceph-osd -c "$dir/ceph.conf" -i 0
  osd_up() { "${ceph[@]}" osd dump 2>/dev/null | grep -q '^osd\.0 up'; }
  wait_for "$dir" "the OSD to come up" "$deadline" osd_up

  log "starting gateway on 127.0.0.1:$rgw_port"
  launch "$dir" rgw.a radosgw -c "$dir/ceph.conf" -n client.rgw.a
  wait_for "$dir" "the gateway on 127.0.0.1:$rgw_port" "$deadline" \
    curl -sf -o /dev/null --max-time 2 "http://127.0.0.1:$rgw_port/"

  if [ ! -f "$dir/s3.json" ]; then
    local secret
    secret=$(python3 -c 'import secrets; print(secrets.token_hex(20))')
    radosgw-admin -c "$dir/ceph.conf" -n client.admin user create --uid zodi-test \
      --display-name "zodi test" --access-key "$ACCESS_KEY_DEFAULT" --secret-key "$secret" \
      >> "$dir/log/user.out" 2>&1 || fail_start "$dir" "radosgw-admin user create failed"
    umask 077
    cat > "$dir/env" <<EOF
CEPH_S3_ENDPOINT_URL=http://127.0.0.1:$rgw_port
CEPH_S3_ACCESS_KEY=$ACCESS_KEY_DEFAULT
CEPH_S3_SECRET_KEY=$secret
# For the aws CLI / boto3 after "set -a; . $dir/env":
AWS_ENDPOINT_URL=http://127.0.0.1:$rgw_port
AWS_ACCESS_KEY_ID=$ACCESS_KEY_DEFAULT
AWS_SECRET_ACCESS_KEY=$secret
AWS_DEFAULT_REGION=us-east-1
EOF
    python3 - "$dir" "$rgw_port" "$ACCESS_KEY_DEFAULT" "$secret" <<'EOF'
import json, sys
d, port, ak, sk = sys.argv[1:]
with open(f"{d}/s3.json", "w") as f:
    json.dump({"endpoint_url": f"http://127.0.0.1:{port}", "access_key": ak, "secret_key": sk}, f)
EOF
  fi
  local rss=0 p
  for p in "$dir"/run/*.pid; do
    rss=$((rss + $(awk '/^VmRSS/ {print $2}' "/proc/$(cat "$p")/status" 2>/dev/null || echo 0)))
  done
  log "ready in $(( $(date +%s) - t0 )) s ($([ $fresh = 1 ] && echo fresh || echo restart)), RSS $((rss / 1024)) MB; endpoint http://127.0.0.1:$rgw_port (keys in $dir/env)"
  echo "$dir/env"
}

# Stop the daemon of PID file $2 if it is the one we started in $1; return 0 if it was running.
stop_daemon() {
  local dir=$1 p=$2 pid rc=1
  [ -f "$p" ] || return 1
  pid=$(cat "$p")
  # Only signal the process we started: its command line names this cluster's ceph.conf.
  if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' < "/proc/$pid/cmdline" | grep -qF "$dir/ceph.conf"; then
    kill -TERM "$pid" 2>/dev/null || true
    # The gateway keeps no state of its own but lingers ~5 s after TERM: give it 1 s.
    local grace=50
    [[ $p == */rgw.a.pid ]] && grace=10
    for _ in $(seq 1 "$grace"); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    rc=0
  fi
  rm -f "$p"
  return $rc
}

cmd_stop() {
  local dir=${1:?usage: ceph_rgw.sh stop DIR}
  [ -d "$dir/run" ] || return 0
  local p n=0
  # Gateway first, monitor last: each daemon says goodbye to a monitor that is still there
  # (an OSD whose monitor is gone waits seconds before giving up).
  for p in "$dir/run/rgw.a.pid" "$dir/run/osd.0.pid" "$dir/run/mon.a.pid"; do
    stop_daemon "$dir" "$p" && n=$((n + 1))
  done
  log "stopped $n daemon(s) of $dir"
}

cluster_dir() {
  local dir=${1:?usage: ceph_rgw.sh $2 DIR}
  [ -f "$dir/ceph.conf" ] && [ -f "$dir/rgw_port" ] || die "$dir: no cluster there (run 'start $dir')"
  (cd "$dir" && pwd)
}

cmd_stop_gateway() {
  local dir
  dir=$(cluster_dir "${1:-}" stop-gateway)
  if stop_daemon "$dir" "$dir/run/rgw.a.pid"; then log "gateway of $dir stopped"; else log "gateway of $dir was not running"; fi
}

# Start only the gateway (monitor and OSD must be up); wait until it answers HTTP.
cmd_start_gateway() {
  local dir port deadline
  dir=$(cluster_dir "${1:-}" start-gateway)
  port=$(cat "$dir/rgw_port")
  alive "$dir/run/rgw.a.pid" && die "gateway already running from $dir"
  for p in "$dir/run/mon.a.pid" "$dir/run/osd.0.pid"; do
    alive "$p" || die "$(basename "$p" .pid) is not running: run 'start $dir' instead"
  done
  deadline=$(($(date +%s) + ${CEPH_START_TIMEOUT:-120}))
  launch "$dir" rgw.a radosgw -c "$dir/ceph.conf" -n client.rgw.a
  until curl -sf -o /dev/null --max-time 2 "http://127.0.0.1:$port/"; do
    alive "$dir/run/rgw.a.pid" || { log_tail "$dir"; die "the gateway exited while starting"; }
    [ "$(date +%s)" -lt "$deadline" ] || { log_tail "$dir"; die "the gateway did not answer in time"; }
    sleep 0.2
  done
  log "gateway of $dir answers on 127.0.0.1:$port"
}

cmd_restart_gateway() {
  local dir=${1:-} down=${2:-0}
  cmd_stop_gateway "$dir"
  sleep "$down"
  cmd_start_gateway "$dir"
}

case "${1:-}" in
  install) cmd_install ;;
  start) shift; cmd_start "$@" ;;
  stop) shift; cmd_stop "$@" ;;
  stop-gateway) shift; cmd_stop_gateway "$@" ;;
  start-gateway) shift; cmd_start_gateway "$@" ;;
  restart-gateway) shift; cmd_restart_gateway "$@" ;;
  *) usage ;;
esac
