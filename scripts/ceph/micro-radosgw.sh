#!/usr/bin/env bash
# micro-radosgw.sh: a throwaway single-node Ceph (one mon, one OSD, one radosgw) that serves S3 on
# 127.0.0.1, for the compatibility tests. Ceph radosgw is the only S3 server we can install here that
# checks SigV4 signatures and answers with real error codes, ranges and multipart behaviour.
#
# usage: micro-radosgw.sh install      apt-get the Debian packages (skipped when already installed)
#        micro-radosgw.sh start        (re)create the cluster from nothing; prints endpoint/keys, writes $DIR/env
#        micro-radosgw.sh stop         stop every daemon this data dir started (by PID file) and wait
#        micro-radosgw.sh stop-rgw     stop only radosgw: the S3 port refuses connections, data stays
#        micro-radosgw.sh start-rgw    start radosgw again on the same port and wait until it answers
#
# Settings (environment):
#   MICRO_RGW_DIR         data, logs, PID files, env file   (default ${TMPDIR:-/tmp}/nx-s3-sidecar-ceph)
#   MICRO_RGW_PORT        S3 port on 127.0.0.1              (default 7480)
#   MICRO_RGW_MON_PORT    monitor port (msgr2) on 127.0.0.1 (default 3300)
#   MICRO_RGW_STORE       memstore | bluestore             (default memstore: see write_conf)
#   MICRO_RGW_ACCESS_KEY / MICRO_RGW_SECRET_KEY / MICRO_RGW_REGION   the S3 user's fixed test credentials
#   MICRO_RGW_TIMEOUT_S   how long each wait may take       (default 120)
# Everything is loopback-only, runs without systemd and without root (except `install`), and leaves
# nothing outside MICRO_RGW_DIR. The OSD also listens on a few ports it picks itself from Ceph's
# 6800-7300 range, so several clusters can run side by side.
set -euo pipefail

PACKAGES=(radosgw ceph-mon ceph-osd ceph-common)
DIR=${MICRO_RGW_DIR:-${TMPDIR:-/tmp}/nx-s3-sidecar-ceph}
RGW_PORT=${MICRO_RGW_PORT:-7480}
MON_PORT=${MICRO_RGW_MON_PORT:-3300}
STORE=${MICRO_RGW_STORE:-memstore}
ACCESS_KEY=${MICRO_RGW_ACCESS_KEY:-NXS3SIDECARTESTKEY01}
SECRET_KEY=${MICRO_RGW_SECRET_KEY:-nxS3SidecarTestSecretKeyNotASecret000001}
REGION=${MICRO_RGW_REGION:-us-east-1}
TIMEOUT_S=${MICRO_RGW_TIMEOUT_S:-120}
CONF=$DIR/ceph.conf
# Written into the data dir so that `start` only ever wipes a directory this script created.
MARKER=$DIR/.micro-radosgw

log() { echo "micro-radosgw: $*" >&2; }
die() { log "error: $*"; exit 1; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }

# The ceph CLI and radosgw-admin must read our config only, never /etc/ceph or a caller's CEPH_ARGS.
unset CEPH_ARGS
ceph_cli() { ceph -c "$CONF" --connect-timeout "$TIMEOUT_S" "$@"; }

cmd_install() {
  local missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  command -v curl >/dev/null || missing+=(curl) # start waits on the S3 port with it
  if [ ${#missing[@]} -eq 0 ]; then
    log "install: already installed ($(ceph --version | cut -d' ' -f1-3))"
    return
  fi
  [ "$(id -u)" -eq 0 ] || die "install needs root (apt-get); missing: ${missing[*]}"
  local t0; t0=$(now_ms)
  export DEBIAN_FRONTEND=noninteractive
  # --no-install-recommends: the recommends pull in the mgr dashboard, Python web stacks, smartmontools...
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" curl
  log "install: done in $(($(now_ms) - t0)) ms ($(ceph --version | cut -d' ' -f1-3))"
}

require_binaries() {
  for b in ceph-mon ceph-osd radosgw radosgw-admin ceph curl; do
    command -v "$b" >/dev/null || die "$b not found: run '$0 install' first (Debian packages ${PACKAGES[*]})"
  done
}

# --- processes -------------------------------------------------------------------------------------

# Starts a daemon in the foreground mode (-f: no fork, so $! is its PID), in a session of its own so a
# terminal's Ctrl-C or the caller's exit does not take it down half-way; `stop` ends it by PID.
spawn() { # name, command...
  local name=$1; shift
  setsid "$@" </dev/null >>"$DIR/log/$name.out" 2>&1 &
  echo $! >"$DIR/pids/$name.pid"
}

# The PID from a PID file, only if that process is still ours (PIDs get reused): its command line
# names our config file.
our_pid() { # name
  local f=$DIR/pids/$1.pid p
  [ -f "$f" ] || return 1
  p=$(cat "$f")
  [ -n "$p" ] && [ -r "/proc/$p/cmdline" ] || return 1
  tr '\0' ' ' <"/proc/$p/cmdline" | grep -qF -- "$CONF" || return 1
  echo "$p"
}

# Alive means running: an exited daemon stays a zombie until PID 1 reaps it (it was re-parented
# there when this script exited), which takes up to ~1.5 s here, but it holds no port or file.
alive() { # pid
  local state
  state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
  [ -n "$state" ] && [ "$state" != Z ]
}

# Sends the signal to the named daemons at once, waits until all are gone (their ports and files are
# free again), and SIGKILLs any that linger past the grace period.
stop_daemons() { # signal, grace seconds, names...
  local sig=$1 grace=$2 name p i; shift 2
  local pids=()
  for name in "$@"; do
    if p=$(our_pid "$name"); then kill "-$sig" "$p" 2>/dev/null || true; pids+=("$p"); fi
    rm -f "$DIR/pids/$name.pid"
  done
  for p in "${pids[@]}"; do
    for ((i = 0; i < grace * 50; i++)); do alive "$p" || break; sleep 0.02; done
    if alive "$p"; then
      log "PID $p ignored SIG$sig for ${grace}s: SIGKILL"
      kill -KILL "$p" 2>/dev/null || true
      for ((i = 0; i < 250; i++)); do alive "$p" || break; sleep 0.02; done
    fi
  done
}

# Waits until the mon accepts connections, so a mon that could not start fails here, with its log,
# instead of the next ceph command waiting out its whole connect timeout.
wait_for_mon() {
  local deadline=$(($(now_ms) + TIMEOUT_S * 1000))
  until port_in_use "$MON_PORT"; do
    our_pid mon >/dev/null || fail_with_log mon "ceph-mon exited before listening on port $MON_PORT"
    [ "$(now_ms)" -lt "$deadline" ] || fail_with_log mon "ceph-mon did not listen on port $MON_PORT within ${TIMEOUT_S}s"
    sleep 0.05
  done
}

# Waits until the S3 port answers HTTP (any status) or the daemon dies or time runs out.
wait_for_rgw() {
  local deadline=$(($(now_ms) + TIMEOUT_S * 1000))
  until curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$RGW_PORT/"; do
    our_pid rgw >/dev/null || fail_with_log rgw "radosgw exited before answering on port $RGW_PORT"
    [ "$(now_ms)" -lt "$deadline" ] || fail_with_log rgw "radosgw did not answer on port $RGW_PORT within ${TIMEOUT_S}s"
    sleep 0.1
  done
}

# True when something accepts TCP connections on 127.0.0.1:$1 (bash's /dev/tcp: no extra tool).
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A daemon that cannot bind its port exits, but a stranger on that port would answer our waits and
# make a broken cluster look healthy, so refuse up front.
require_free_port() { # port, what
  ! port_in_use "$1" || die "port $1 ($2) is already in use on 127.0.0.1: stop that server or choose another port"
}

# The S3 port recorded in the config at start, so stop-rgw/start-rgw act on the same port even when
# MICRO_RGW_PORT is not set again.
conf_rgw_port() { sed -n 's/^rgw frontends = beast endpoint=127\.0\.0\.1:\([0-9]*\)$/\1/p' "$CONF"; }

fail_with_log() { # daemon name, message
  log "error: $2; last lines of $DIR/log/$1.out and its Ceph log:"
  tail -n 15 "$DIR/log/$1.out" "$DIR"/log/*"$1"*.log 2>/dev/null >&2 || true
  exit 1
}

# --- configuration ---------------------------------------------------------------------------------

write_conf() {
  local fsid store_conf
  fsid=$(cat /proc/sys/kernel/random/uuid)
  # memstore is the default: measured here, a start takes ~2 s with it and ~6-8 s with bluestore
  # (whose mkfs alone takes ~2.3 s), and it works the same for S3. Its cost is memory: the OSD holds
  # every stored object (~55 MB idle, ~350 MB after 200 MiB of objects; bluestore stays ~100 MB).
  case $STORE in
    memstore)
      # Objects live in the OSD's memory; nothing touches the disk. The device size is only the
      # capacity the OSD reports (it bounds what the tests may store), not memory allocated up front.
      store_conf="osd objectstore = memstore
memstore device bytes = 4294967296" ;;
    bluestore)
      # A sparse 10 GiB file as the block device; only written blocks use disk. The caches are
      # pinned small: autotune would size them for a production box.
      store_conf="osd objectstore = bluestore
bluestore block path = $DIR/osd/block.img
bluestore block create = true
bluestore block size = 10737418240
bluestore block db create = false
bluestore block wal create = false
bluestore fsck on mount = false
bluestore cache autotune = false
bluestore cache size = 134217728
osd memory target = 939524096" ;;
  esac
  cat >"$CONF" <<EOF
# Written by scripts/ceph/micro-radosgw.sh; recreated by every 'start'.
[global]
fsid = $fsid
# msgr2 only, so the mon needs a single port; everything binds to loopback, IPv4.
mon host = v2:127.0.0.1:$MON_PORT
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind msgr1 = false
ms bind ipv6 = false
# No cephx: nothing but loopback can reach it, and keyrings would add steps. radosgw's default
# mon client mode 'secure' cannot work without cephx, so ask for plain crc.
auth cluster required = none
auth service required = none
auth client required = none
ms mon client mode = crc
keyring = /dev/null
run dir = $DIR/run
# One OSD: pools of size 1, placement across OSDs rather than hosts, no warnings about it.
osd pool default size = 1
osd pool default min size = 1
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon warn on pool no redundancy = false
mon allow pool delete = true
# The mon shuts itself down when its disk has < 5 % free; a throwaway cluster should not.
mon data avail crit = 0
mon data avail warn = 0
# The mon batches map changes for up to 1 s (paxos propose interval); radosgw's first start makes
# a dozen such changes one after another (each pool and its application tag), which made the
# start-up take ~16 s instead of ~2 s. A single mon has no one to wait for.
paxos propose interval = 0.01
paxos min wait = 0.001
# Should radosgw die without unwatching (SIGKILL after the stop grace period), its stale watches on
# the control objects stall every metadata change until they expire: after 10 s instead of 30 s.
# (The OSD applies its own value when the client asks for none, as radosgw does.)
osd client watch timeout = 10
[client]
# A client's request for a placement group that has no OSD yet (radosgw creates its pools while the
# OSD is still booting) is retried on the objecter's tick, 5 s by default.
objecter tick interval = 0.1
[mon]
mon data = $DIR/mon
admin socket = $DIR/run/\$name.asok
log file = $DIR/log/\$name.log
[mon.a]
# Without this the mon binds the default port and then finds itself missing from "mon host".
public addrv = v2:127.0.0.1:$MON_PORT
[osd]
osd data = $DIR/osd
admin socket = $DIR/run/\$name.asok
log file = $DIR/log/\$name.log
$store_conf
[client.rgw.micro]
rgw data = $DIR/rgw
admin socket = $DIR/run/\$name.asok
log file = $DIR/log/\$name.log
rgw frontends = beast endpoint=127.0.0.1:$RGW_PORT
# Path-style requests only (no DNS names for buckets).
rgw dns name = localhost
# SIGTERM waits for requests in flight; a test's stalled upload must not hold up an outage for the
# default 120 s.
rgw exit timeout secs = 5
EOF
}

# Creates the tests' S3 user. radosgw-admin (Ceph 16.2.15) once died of SIGSEGV here in CI, leaving
# no message, and did not do so in 60 creates nor in 30 starts under load here, so a failed create is
# tried again; a create that crashed after writing the user leaves it behind, which 'user info' shows.
create_s3_user() {
  local uid=nx-s3-sidecar-test attempt rc
  for attempt in 1 2 3; do
    radosgw-admin -c "$CONF" user create --uid="$uid" --display-name="nx-s3-sidecar tests" \
      --access-key="$ACCESS_KEY" --secret-key="$SECRET_KEY" >"$DIR/log/user.json" 2>>"$DIR/log/user.out" && return 0
    rc=$?
    if radosgw-admin -c "$CONF" user info --uid="$uid" >"$DIR/log/user.json" 2>>"$DIR/log/user.out" &&
      grep -qF "\"$ACCESS_KEY\"" "$DIR/log/user.json"; then
      log "radosgw-admin user create exited $rc, but the user exists with its key"
      return 0
    fi
    [ "$attempt" -lt 3 ] || break
    log "radosgw-admin user create exited $rc (attempt $attempt of 3); trying again"
    sleep 0.5
  done
  fail_with_log user "radosgw-admin user create failed 3 times (last exit $rc)"
}

# --- subcommands -----------------------------------------------------------------------------------

cmd_stop() {
  [ -d "$DIR/pids" ] || return 0
  # One after another, clients first: a radosgw on SIGTERM still talks to the OSD (and hangs if the
  # OSD is already gone), and the OSD says goodbye to the mon (waiting ~5 s for an answer if the
  # mon is gone). In this order each takes ~0.2 s.
  stop_daemons TERM 10 rgw
  stop_daemons TERM 10 osd
  stop_daemons TERM 10 mon
  log "stopped (data and logs stay in $DIR)"
}

cmd_start() {
  require_binaries
  [[ $STORE == memstore || $STORE == bluestore ]] || die "MICRO_RGW_STORE must be memstore or bluestore, not '$STORE'"
  local t0 t; t0=$(now_ms); t=$t0
  phase() { local n; n=$(now_ms); log "$(printf '%-28s %6d ms (total %6d ms)' "$1" $((n - t)) $((n - t0)))"; t=$n; }

  # Re-runnable: stop whatever a previous start left in this dir, then begin from nothing.
  if [ -e "$DIR" ]; then
    [ -e "$MARKER" ] || [ -z "$(ls -A "$DIR")" ] ||
      die "$DIR exists and was not made by this script; refusing to delete it (set MICRO_RGW_DIR)"
    cmd_stop 2>/dev/null
    rm -rf "$DIR"
  fi
  require_free_port "$MON_PORT" "MICRO_RGW_MON_PORT"
  require_free_port "$RGW_PORT" "MICRO_RGW_PORT"
  mkdir -p "$DIR"/{mon,osd,rgw,log,run,pids}
  touch "$MARKER"
  write_conf
  phase "cleanup + config"

  ceph-mon -c "$CONF" -i a --mkfs >"$DIR/log/mon-mkfs.out" 2>&1 || fail_with_log mon-mkfs "ceph-mon --mkfs failed"
  spawn mon ceph-mon -c "$CONF" -i a -f
  wait_for_mon
  local osd_uuid osd_id
  osd_uuid=$(cat /proc/sys/kernel/random/uuid)
  osd_id=$(ceph_cli osd new "$osd_uuid" 2>>"$DIR/log/ceph-cli.out") || fail_with_log mon "mon did not register the OSD"
  phase "mon up, osd.$osd_id registered"

  ceph-osd -c "$CONF" -i "$osd_id" --mkfs --osd-uuid "$osd_uuid" >"$DIR/log/osd-mkfs.out" 2>&1 ||
    fail_with_log osd-mkfs "ceph-osd --mkfs failed"
  phase "osd mkfs ($STORE)"
  # The OSD puts itself into the CRUSH map when it boots (osd crush update on start), and radosgw
  # simply waits for the OSD, so both can start at once.
  spawn osd ceph-osd -c "$CONF" -i "$osd_id" -f
  spawn rgw radosgw -c "$CONF" -n client.rgw.micro -f
  wait_for_rgw
  phase "osd + rgw up (S3 answers)"

  # The zone exists now (radosgw made it), so the user lands in it.
  create_s3_user
  phase "S3 user created"

  {
    echo "endpoint=http://127.0.0.1:$RGW_PORT"
    echo "access_key=$ACCESS_KEY"
    echo "secret_key=$SECRET_KEY"
    echo "region=$REGION"
  } >"$DIR/env"
  cat "$DIR/env"
}

cmd_stop_rgw() {
  our_pid rgw >/dev/null || die "radosgw is not running (from $DIR)"
  local t0; t0=$(now_ms)
  RGW_PORT=$(conf_rgw_port)
  # SIGTERM, not SIGKILL, although an outage gives no notice: a killed radosgw leaves its watches on
  # the control objects behind, and the next bucket creation (any metadata change) then waits ~30 s
  # for them to time out. A graceful stop takes ~0.2-0.5 s ('rgw exit timeout secs' bounds the drain).
  stop_daemons TERM 10 rgw
  log "radosgw stopped in $(($(now_ms) - t0)) ms; port $RGW_PORT refuses connections"
}

cmd_start_rgw() {
  require_binaries
  [ -f "$CONF" ] || die "no cluster in $DIR: run '$0 start' first"
  our_pid mon >/dev/null && our_pid osd >/dev/null || die "mon or OSD is not running (from $DIR): run '$0 start'"
  if our_pid rgw >/dev/null; then log "radosgw already running"; return; fi
  local t0; t0=$(now_ms)
  RGW_PORT=$(conf_rgw_port)
  require_free_port "$RGW_PORT" "radosgw's port"
  spawn rgw radosgw -c "$CONF" -n client.rgw.micro -f
  wait_for_rgw
  log "radosgw answers again on port $RGW_PORT after $(($(now_ms) - t0)) ms"
}

case ${1:-} in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  stop-rgw) cmd_stop_rgw ;;
  start-rgw) cmd_start_rgw ;;
  *) echo "usage: $0 install|start|stop|stop-rgw|start-rgw   (settings: see the top of this file)" >&2; exit 2 ;;
esac
