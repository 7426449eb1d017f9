#!/usr/bin/env bash
# S9 (idle footprint) peer: Syncthing.
#
# Starts 4 loopback-only Syncthing instances (instance 0 = "home node",
# 1..3 = peers), waits until instance 0 has all 3 peers connected and the
# shared folder is in sync, idles, then measures instance 0's resident set
# size and prints exactly one JSON line on stdout. Everything else goes to
# stderr. See README.md next to this file.
#
# Usage: syncthing-idle.sh [--quick] [--idle N] [--timeout N]
#   --quick      idle 5 s instead of 60 s
#   --idle N     idle N seconds (overrides --quick)
#   --timeout N  readiness timeout in seconds (default 120)
#
# Syncthing is run as its systemd unit runs it (serve --no-browser
# --no-restart). Syncthing 1.x still forks a small monitor parent that
# execs the serving child; rss_kib is the serving child, and when a monitor
# exists its RSS is added as "monitor_rss_kib".
set -euo pipefail

IDLE=60
TIMEOUT=120
NPEERS=3                  # instances 1..NPEERS, instance 0 is the home node
NFILES=4                  # small files in the shared folder
API_KEY="membrane-bench-s9-apikey"
FOLDER_ID="s9bench"

log() { printf '[syncthing-idle] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

usage() { sed -n '10,18p' "$0" >&2; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) QUICK=1; shift ;;
    --idle) [[ $# -ge 2 ]] || die "--idle needs a value"; IDLE_OVERRIDE="$2"; shift 2 ;;
    --idle=*) IDLE_OVERRIDE="${1#*=}"; shift ;;
    --timeout) [[ $# -ge 2 ]] || die "--timeout needs a value"; TIMEOUT="$2"; shift 2 ;;
    --timeout=*) TIMEOUT="${1#*=}"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage; die "unknown argument: $1" ;;
  esac
done
if [[ -n "${IDLE_OVERRIDE:-}" ]]; then
  IDLE="$IDLE_OVERRIDE"
elif [[ -n "${QUICK:-}" ]]; then
  IDLE=5
fi
[[ "$IDLE" =~ ^[0-9]+$ ]] || die "--idle must be a non-negative integer, got '$IDLE'"
[[ "$TIMEOUT" =~ ^[0-9]+$ ]] || die "--timeout must be a non-negative integer, got '$TIMEOUT'"

# --------------------------------------------------------------------------
# 1. Tools (installed from Debian's registry when missing; output to stderr)
# --------------------------------------------------------------------------
APT_UPDATED=0
apt_install() {
  command -v apt-get >/dev/null 2>&1 || die "'$1' is missing and apt-get is not available"
  local t0=$SECONDS
  if [[ $APT_UPDATED -eq 0 ]]; then
    log "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update >&2
    APT_UPDATED=1
  fi
  log "apt-get install -y $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >&2
  log "installed $* in $((SECONDS - t0)) s"
}
for tool in syncthing curl jq; do
  command -v "$tool" >/dev/null 2>&1 || apt_install "$tool"
done

ST_BIN="$(readlink -f "$(command -v syncthing)")"
BINARY_BYTES="$(stat -c %s "$ST_BIN")"
ST_VERSION="$("$ST_BIN" --version 2>/dev/null | awk '{print $2; exit}')" || true
[[ -n "$ST_VERSION" ]] || ST_VERSION="unknown"
ST_VERSION="${ST_VERSION#v}"
log "syncthing $ST_VERSION at $ST_BIN ($BINARY_BYTES bytes)"

# Newer Syncthing (>= 1.13 or so) has subcommands ("syncthing serve",
# "syncthing generate"); older ones use single-dash flags ("-generate=DIR").
ST_HELP="$("$ST_BIN" --help 2>&1 || true)"
if grep -qE '^[[:space:]]+serve([[:space:]]|$)' <<<"$ST_HELP" \
   && grep -qE '^[[:space:]]+generate([[:space:]]|$)' <<<"$ST_HELP"; then
  CLI=new
elif grep -qE -- '-generate' <<<"$ST_HELP"; then
  CLI=old
else
  die "cannot tell how to drive this syncthing ($ST_VERSION); --help said: $ST_HELP"
fi
log "CLI style: $CLI"

# --------------------------------------------------------------------------
# 2. Temp dir and cleanup
# --------------------------------------------------------------------------
WORK="$(mktemp -d "${TMPDIR:-/tmp}/syncthing-idle.XXXXXX")"
declare -a PIDS=()

cleanup() {
  local rc=$?
  set +e
  local pid i
  [[ -n "${SLEEP_PID:-}" ]] && kill "$SLEEP_PID" 2>/dev/null
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null
  done
  for pid in "${PIDS[@]}"; do
    for ((i = 0; i < 100; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "pid $pid did not stop on SIGTERM, sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null
  done
  if [[ $rc -ne 0 && -d "$WORK" ]]; then
    local f
    for f in "$WORK"/st*.log; do
      [[ -f "$f" ]] || continue
      log "---- last lines of $(basename "$f") ----"
      tail -n 20 "$f" >&2
    done
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --------------------------------------------------------------------------
# 3. Free loopback ports
# --------------------------------------------------------------------------
declare -a USED_PORTS=()
PICKED=""
port_in_use() {
  local p=$1 hex
  hex="$(printf '%04X' "$p")"
  # Any socket (any state) with this local or remote port.
  if grep -qiE ":${hex}[[:space:]]" /proc/net/tcp /proc/net/tcp6 /proc/net/udp /proc/net/udp6 2>/dev/null; then
    return 0
  fi
  # Something accepting connections on it.
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    return 0
  fi
  return 1
}
pick_port() {
  local p tries=0
  while :; do
    tries=$((tries + 1))
    [[ $tries -le 1000 ]] || die "could not find a free port"
    p=$((20000 + RANDOM % 40000))
    [[ " ${USED_PORTS[*]} " == *" $p "* ]] && continue
    port_in_use "$p" && continue
    USED_PORTS+=("$p")
    PICKED="$p"
    return 0
  done
}

N=$((NPEERS + 1))
declare -a HOMES=() GUI_PORTS=() SYNC_PORTS=() IDS=() FOLDERS=()
for ((i = 0; i < N; i++)); do
  HOMES[i]="$WORK/st$i"
  FOLDERS[i]="$WORK/data$i/$FOLDER_ID"
  pick_port; GUI_PORTS[i]="$PICKED"
  pick_port; SYNC_PORTS[i]="$PICKED"
done

# Environment for every syncthing invocation: no upgrades, no default folder,
# a private $HOME, no inherited debug/tracing settings.
# Used as: env "${ST_ENV[@]}" HOME=DIR [VAR=...] syncthing ...  (env execs, so
# a backgrounded "env ... &" has the syncthing process's own pid in $!).
ST_ENV=(-u STTRACE -u STGUIADDRESS -u STGUIAPIKEY -u STHOMEDIR -u STCONFDIR -u STDATADIR
  -u STNORESTART -u STMONITORED STNOUPGRADE=1 STNODEFAULTFOLDER=1)

# --------------------------------------------------------------------------
# 4. Keys and device IDs
# --------------------------------------------------------------------------
DEVID_RE='[A-Z0-9]{7}(-[A-Z0-9]{7}){7}'
for ((i = 0; i < N; i++)); do
  home="${HOMES[i]}"
  mkdir -p "$home"
  if [[ $CLI == new ]]; then
    out="$(env "${ST_ENV[@]}" HOME="$home" "$ST_BIN" generate --home "$home" 2>&1)" || die "syncthing generate failed: $out"
  else
    out="$(env "${ST_ENV[@]}" HOME="$home" "$ST_BIN" -generate="$home" 2>&1)" || die "syncthing -generate failed: $out"
  fi
  id="$(grep -oE "$DEVID_RE" <<<"$out" | head -n 1 || true)"
  if [[ -z "$id" ]]; then
    if [[ $CLI == new ]]; then
      id="$(env "${ST_ENV[@]}" HOME="$home" "$ST_BIN" serve --home "$home" --device-id 2>/dev/null | grep -oE "$DEVID_RE" | head -n 1 || true)"
    else
      id="$(env "${ST_ENV[@]}" HOME="$home" "$ST_BIN" -home="$home" -device-id 2>/dev/null | grep -oE "$DEVID_RE" | head -n 1 || true)"
    fi
  fi
  [[ -n "$id" ]] || die "could not determine device ID of instance $i (generate said: $out)"
  [[ -f "$home/cert.pem" && -f "$home/key.pem" ]] || die "no cert.pem/key.pem in $home"
  IDS[i]="$id"
  log "instance $i: id=${id:0:7} gui=127.0.0.1:${GUI_PORTS[i]} sync=tcp://127.0.0.1:${SYNC_PORTS[i]}"
done

# --------------------------------------------------------------------------
# 5. Config: rewrite config.xml (keeping the generated schema version).
#    Options that are not written keep Syncthing's built-in defaults.
# --------------------------------------------------------------------------
device_xml() {
  local idx=$1 addr=$2
  cat <<EOF
    <device id="${IDS[idx]}" name="st$idx" compression="metadata" introducer="false" skipIntroductionRemovals="false" introducedBy="">
        <address>$addr</address>
        <paused>false</paused>
        <autoAcceptFolders>false</autoAcceptFolders>
    </device>
EOF
}

write_config() {
  local i=$1 cfg="${HOMES[$1]}/config.xml" version peers=() p
  version="$(grep -oE '<configuration version="[0-9]+"' "$cfg" | grep -oE '[0-9]+' || true)"
  [[ -n "$version" ]] || die "no configuration version in generated $cfg"
  if [[ $i -eq 0 ]]; then
    for ((p = 1; p < N; p++)); do peers+=("$p"); done
  else
    peers=(0)
  fi
  {
    echo "<configuration version=\"$version\">"
    echo "    <folder id=\"$FOLDER_ID\" label=\"$FOLDER_ID\" path=\"${FOLDERS[i]}\" type=\"sendreceive\" rescanIntervalS=\"3600\" fsWatcherEnabled=\"true\" fsWatcherDelayS=\"10\" ignorePerms=\"false\" autoNormalize=\"true\">"
    echo "        <filesystemType>basic</filesystemType>"
    echo "        <device id=\"${IDS[i]}\" introducedBy=\"\"></device>"
    for p in "${peers[@]}"; do
      echo "        <device id=\"${IDS[p]}\" introducedBy=\"\"></device>"
    done
    echo "    </folder>"
    device_xml "$i" "dynamic"
    for p in "${peers[@]}"; do
      device_xml "$p" "tcp://127.0.0.1:${SYNC_PORTS[p]}"
    done
    cat <<EOF
    <gui enabled="true" tls="false" debugging="false">
        <address>127.0.0.1:${GUI_PORTS[i]}</address>
        <apikey>$API_KEY</apikey>
        <theme>default</theme>
    </gui>
    <options>
        <listenAddress>tcp://127.0.0.1:${SYNC_PORTS[i]}</listenAddress>
        <globalAnnounceEnabled>false</globalAnnounceEnabled>
        <localAnnounceEnabled>false</localAnnounceEnabled>
        <relaysEnabled>false</relaysEnabled>
        <natEnabled>false</natEnabled>
        <announceLANAddresses>false</announceLANAddresses>
        <stunKeepaliveStartS>0</stunKeepaliveStartS>
        <stunKeepaliveMinS>0</stunKeepaliveMinS>
        <urAccepted>-1</urAccepted>
        <urSeen>3</urSeen>
        <crashReportingEnabled>false</crashReportingEnabled>
        <autoUpgradeIntervalH>0</autoUpgradeIntervalH>
        <upgradeToPreReleases>false</upgradeToPreReleases>
        <startBrowser>false</startBrowser>
        <restartOnWakeup>false</restartOnWakeup>
    </options>
</configuration>
EOF
  } >"$cfg.new"
  mv "$cfg.new" "$cfg"
  # Folder roots with their marker; only the home node starts with data.
  mkdir -p "${FOLDERS[i]}/.stfolder"
  if [[ $i -eq 0 ]]; then
    local f
    for ((f = 1; f <= NFILES; f++)); do
      head -c $((f * 1024)) /dev/urandom >"${FOLDERS[i]}/file$f.bin"
    done
  fi
}
for ((i = 0; i < N; i++)); do write_config "$i"; done

# --------------------------------------------------------------------------
# 6. Start
# --------------------------------------------------------------------------
for ((i = 0; i < N; i++)); do
  home="${HOMES[i]}"
  if [[ $CLI == new ]]; then
    args=(serve --home "$home" --no-browser --no-restart --no-default-folder --logflags=3)
  else
    args=(-home="$home" -no-browser -no-restart -logflags=3)
  fi
  env "${ST_ENV[@]}" HOME="$home" STNORESTART=1 "$ST_BIN" "${args[@]}" >"$WORK/st$i.log" 2>&1 </dev/null &
  PIDS[i]=$!
  log "started instance $i (pid ${PIDS[i]})"
done

api() { # api INSTANCE PATH  -> JSON on stdout, non-zero on failure
  curl -fsS --max-time 3 -H "X-API-Key: $API_KEY" "http://127.0.0.1:${GUI_PORTS[$1]}$2" 2>/dev/null
}
check_alive() {
  local i
  for ((i = 0; i < N; i++)); do
    kill -0 "${PIDS[i]}" 2>/dev/null || die "instance $i (pid ${PIDS[i]}) exited early"
  done
}

# --------------------------------------------------------------------------
# 7. Wait for readiness: all peers connected to instance 0, folder in sync
# --------------------------------------------------------------------------
t_start=$SECONDS
deadline=$((SECONDS + TIMEOUT))
peer_ids_json="$(printf '%s\n' "${IDS[@]:1}" | jq -R . | jq -sc .)"
connected=0
while :; do
  check_alive
  if conns="$(api 0 /rest/system/connections)"; then
    connected="$(jq --argjson ids "$peer_ids_json" \
      '[ $ids[] as $id | .connections[$id].connected // false | select(.) ] | length' <<<"$conns" 2>/dev/null || echo 0)"
    [[ "$connected" -eq "$NPEERS" ]] && break
  fi
  [[ $SECONDS -lt $deadline ]] || die "timeout after ${TIMEOUT}s: instance 0 has $connected/$NPEERS peers connected"
  sleep 0.5
done
log "instance 0 has all $NPEERS peers connected after $((SECONDS - t_start)) s"

# Folder in sync everywhere (state idle, nothing needed, all files known).
declare -a SYNCED=()
while :; do
  check_alive
  done_count=0
  for ((i = 0; i < N; i++)); do
    if [[ "${SYNCED[i]:-0}" -eq 0 ]] && st="$(api "$i" "/rest/db/status?folder=$FOLDER_ID")"; then
      if jq -e --argjson n "$NFILES" \
          '.state == "idle" and .needTotalItems == 0 and .globalFiles == $n and .localFiles == $n' \
          <<<"$st" >/dev/null 2>&1; then
        SYNCED[i]=1
      fi
    fi
    [[ "${SYNCED[i]:-0}" -eq 1 ]] && done_count=$((done_count + 1))
  done
  [[ $done_count -eq $N ]] && break
  [[ $SECONDS -lt $deadline ]] || die "timeout after ${TIMEOUT}s: folder in sync on $done_count/$N instances"
  sleep 0.5
done
log "shared folder ($NFILES files) in sync on all $N instances after $((SECONDS - t_start)) s"

# --------------------------------------------------------------------------
# 8. Idle, then measure
# --------------------------------------------------------------------------
log "idling ${IDLE}s"
# Background sleep + wait so that INT/TERM interrupt the idle period at once.
sleep "$IDLE" &
SLEEP_PID=$!
wait "$SLEEP_PID"
SLEEP_PID=""
check_alive

# Still connected after the idle period?
conns="$(api 0 /rest/system/connections)" || die "instance 0 REST API not answering after idle"
connected="$(jq --argjson ids "$peer_ids_json" \
  '[ $ids[] as $id | .connections[$id].connected // false | select(.) ] | length' <<<"$conns")"
[[ "$connected" -eq "$NPEERS" ]] || die "only $connected/$NPEERS peers connected after idle"

rss_of() { awk '/^VmRSS:/ {print $2; exit}' "/proc/$1/status"; }
children_of() { # direct children of pid $1
  local c
  for c in /proc/[0-9]*; do
    [[ -r "$c/stat" ]] || continue
    # field 4 of /proc/PID/stat is the ppid; comm (field 2) may contain spaces
    awk -v pp="$1" '{ sub(/^.*\) /, ""); if ($2 == pp) { n = split(FILENAME, a, "/"); print a[n-1] } }' "$c/stat" 2>/dev/null || true
  done
}

top_pid="${PIDS[0]}"
serve_pid="$top_pid"
monitor_pid=""
child="$(children_of "$top_pid" | head -n 1)"
if [[ -n "$child" ]]; then
  # Monitor mode: the launched process is the monitor, its child serves.
  monitor_pid="$top_pid"
  serve_pid="$child"
fi
# Cross-check with what the serving process says about itself.
if sys="$(api 0 /rest/system/status)"; then
  api_pid="$(jq -r '.pid // empty' <<<"$sys" 2>/dev/null || true)"
  if [[ -n "$api_pid" && "$api_pid" != "$serve_pid" ]]; then
    log "note: REST API reports pid $api_pid, process tree suggested $serve_pid; using $api_pid"
    serve_pid="$api_pid"
  fi
fi
RSS="$(rss_of "$serve_pid")"
[[ "$RSS" =~ ^[0-9]+$ ]] || die "could not read VmRSS of pid $serve_pid"
log "serving process pid $serve_pid: VmRSS ${RSS} KiB"

if command -v ss >/dev/null 2>&1; then
  log "sockets of instance 0:"
  ss -tulnp 2>/dev/null | grep -E "pid=${serve_pid}," >&2 || true
fi

if [[ -n "$monitor_pid" ]]; then
  MON_RSS="$(rss_of "$monitor_pid")"
  log "monitor process pid $monitor_pid: VmRSS ${MON_RSS} KiB"
  printf '{"scenario":"S9","system":"syncthing","case":"idle-3-peers","rss_kib":%d,"monitor_rss_kib":%d,"version":"%s","idle_s":%d,"binary_bytes":%d}\n' \
    "$RSS" "$MON_RSS" "$ST_VERSION" "$IDLE" "$BINARY_BYTES"
else
  printf '{"scenario":"S9","system":"syncthing","case":"idle-3-peers","rss_kib":%d,"version":"%s","idle_s":%d,"binary_bytes":%d}\n' \
    "$RSS" "$ST_VERSION" "$IDLE" "$BINARY_BYTES"
fi
