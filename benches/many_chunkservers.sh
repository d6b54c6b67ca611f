#!/usr/bin/env bash
# Starts one master and N chunkservers, each a process of its own, on 127.0.0.1,
# and reports:
# - how long registration took;
# - how evenly puts were spread;
# - the master's CPU and RSS while idle and while under puts;
# - its upkeep work (chunks assessed per round);
# - with KILL=1, 16 chunkservers killed (SIGKILL) two at a time, each pair
#   re-replicated before the next, and then 16 at once: which files fsck says are
#   missing, against the files whose every replica was on a killed server; then
#   those 16 restarted and every file read back whole;
# - with BALANCE=1 (instead), 16 chunkservers lose their disks: killed, their
#   chunks re-replicated, their data dirs wiped, started again empty; then how the
#   balancer fills them (spread of disk use over time, moves, their chunks). The
#   chunkservers then have 4 MiB each (CAPACITY) and chunks are 1 MiB, so that
#   100 KB files make a difference to disk use.
#
# Usage: benches/many_chunkservers.sh [N] [FILES]
# (default 300 and 600). Needs a built `dfs` (DFS_BIN, else target/release/dfs).
# Everything lives in a temp dir that is removed at the end, with every process.
set -euo pipefail
N=${1:-300}
FILES=${2:-600}
BIN=${DFS_BIN:-$(dirname "$0")/../target/release/dfs}
[ -x "$BIN" ] || { echo "no dfs binary at $BIN: cargo build --release -p dfs-cli, or set DFS_BIN" >&2; exit 1; }
BIN=$(realpath "$BIN")
DIR=$(mktemp -d /tmp/dfs-many.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT

# N + 2 distinct free ports, found at once (each bound until all are found).
read -r -a PORTS <<<"$(python3 -c '
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))' $((N + 2)))"
MPORT=${PORTS[0]}; HPORT=${PORTS[1]}
MASTER=127.0.0.1:$MPORT
CAPACITY=${CAPACITY:-$([ "${BALANCE:-0}" = 1 ] && echo 4MiB || echo 1GiB)}
CHUNK=${CHUNK:-$([ "${BALANCE:-0}" = 1 ] && echo 1MiB || echo 64MiB)}
"$BIN" master --listen "$MASTER" --data "$DIR/master" --http 127.0.0.1:$HPORT --safe-start 1s \
  --chunk-size "$CHUNK" \
  --dead-after "${DEAD_AFTER:-3s}" >"$DIR/master.log" 2>&1 &
MPID=$!; PIDS+=("$MPID")
for _ in $(seq 100); do [ -s "$DIR/master/cluster.secret" ] && break; sleep 0.1; done
SECRET="$DIR/master/cluster.secret"

ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
rss_kib() { awk '/VmRSS/{print $2}' "/proc/$1/status"; }
# A metric's value; 0 from a master too old to have it.
metric() { curl -s "http://127.0.0.1:$HPORT/metrics" | awk -v m="$1" '$1==m{v=$2} END{print v+0}'; }
alive() { DFS_SECRET=$(cat "$SECRET") "$BIN" status --master "$MASTER" --json 2>/dev/null |
  python3 -c 'import json,sys; print(sum(1 for s in json.load(sys.stdin)["chunkservers"] if s["alive"]))' 2>/dev/null || echo 0; }

declare -A CS_PID
start_cs() {
  local i=$1 P=${PORTS[$(($1 + 1))]}
  mkdir -p "$DIR/cs$i"
  "$BIN" chunkserver --listen 127.0.0.1:$P --master "$MASTER" --data "$DIR/cs$i" \
    --secret-file "$SECRET" --capacity "$CAPACITY" --scrub-rate 0 >>"$DIR/cs$i.log" 2>&1 &
  CS_PID[$i]=$!
  PIDS+=("$!")
  # Killed on purpose below: no job-control notice for each.
  disown "$!"
}
START=$(date +%s.%N)
for i in $(seq 1 "$N"); do start_cs "$i"; done
for _ in $(seq 600); do [ "$(alive)" -ge "$N" ] && break; sleep 0.5; done
END=$(date +%s.%N)
echo "chunkservers: $N started and registered in $(python3 -c "print(round($END-$START,1))") s (all alive: $(alive))"

idle() {
  local t0 a0 r0; t0=$(ticks "$MPID"); a0=$(metric dfs_master_upkeep_chunks_assessed_total); r0=$(metric dfs_master_upkeep_rounds_total)
  sleep 20
  local t1 a1 r1; t1=$(ticks "$MPID"); a1=$(metric dfs_master_upkeep_chunks_assessed_total); r1=$(metric dfs_master_upkeep_rounds_total)
  echo "master idle ($1): $(python3 -c "print(round(($t1-$t0)/100/20*100,1))")% of a core, RSS $(rss_kib "$MPID") KiB, $(python3 -c "print(round(($a1-$a0)/max($r1-$r0,1),1))") chunks assessed per upkeep round"
}
idle "no files"

head -c 100000 /dev/urandom >"$DIR/small.bin"
t0=$(ticks "$MPID"); s0=$(date +%s.%N)
for i in $(seq 1 "$FILES"); do echo "put $DIR/small.bin /f$i"; done |
  DFS_SECRET=$(cat "$SECRET") "$BIN" shell --master "$MASTER" >/dev/null
t1=$(ticks "$MPID"); s1=$(date +%s.%N)
echo "puts: $FILES files of 100 KB from one shell in $(python3 -c "print(round($s1-$s0,1))") s; master CPU $(python3 -c "print(round(($t1-$t0)/100/($s1-$s0)*100,1))")% of a core"
DFS_SECRET=$(cat "$SECRET") "$BIN" status --master "$MASTER" --json | python3 -c '
import json,sys
s=json.load(sys.stdin); c=sorted(x["chunks"] for x in s["chunkservers"])
n=len(c); mean=sum(c)/n
print("spread of replicas: %d servers, min %d, median %d, max %d, mean %.1f (%d chunks x replication)" % (n, c[0], c[n//2], c[-1], mean, s["chunks"]))'
idle "$FILES files"

dfs_() { DFS_SECRET=$(cat "$SECRET") "$BIN" "$@" --master "$MASTER"; }
fsck_json() { dfs_ fsck / --json 2>/dev/null || true; }
healthy() { fsck_json | python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["missing"]+r["under_replicated"])' 2>/dev/null || echo 1; }
wait_healthy() { for _ in $(seq 600); do [ "$(healthy)" = 0 ] && return 0; sleep 0.5; done; return 1; }

if [ "${BALANCE:-0}" = 1 ]; then
  # Sixteen disks lost: the servers die, their chunks are copied elsewhere, and they
  # come back empty, as new servers (their identity was on the disk too).
  dfs_ balance --threshold "${THRESHOLD:-5}" >/dev/null
  LOST=($(seq 2 "$N" | shuf -n 16))
  for v in "${LOST[@]}"; do kill -9 "${CS_PID[$v]}"; done
  for _ in $(seq 600); do [ "$(alive)" -le $((N - 16)) ] && break; sleep 0.2; done
  t0=$(date +%s.%N)
  wait_healthy || { echo "not healthy 300 s after 16 disks were lost"; exit 1; }
  echo "16 disks lost: every chunk back at 3 live replicas $(python3 -c "print(round($(date +%s.%N)-$t0,1))") s after they were declared dead"
  for v in "${LOST[@]}"; do rm -rf "$DIR/cs$v"; start_cs "$v"; done
  t0=$(date +%s.%N)
  report() { dfs_ balance --json | python3 -c '
import json, sys
b = json.load(sys.stdin)
print("%.1f %.1f %d" % (100 * b["spread"], 100 * b["threshold"], b["moving"]))'; }
  last=""
  for _ in $(seq 300); do
    read -r spread threshold moving <<<"$(report)"
    at=$(python3 -c "print(round($(date +%s.%N)-$t0))")
    line="spread ${spread} points (threshold ${threshold}), ${moving} moves under way"
    [ "$line" != "$last" ] && echo "  ${at} s: $line"
    last=$line
    if python3 -c "import sys; sys.exit(0 if $spread <= $threshold and $moving == 0 else 1)"; then break; fi
    sleep 2
  done
  dfs_ status --json | python3 -c '
import json, sys
lost = set(sys.argv[1:])
s = json.load(sys.stdin)
c = sorted(x["chunks"] for x in s["chunkservers"] if x["alive"] and x["addr"] in lost)
print("the 16 that came back empty hold %s chunks each (min %d, max %d); %d under-replicated, %d over" % (
    "%.1f" % (sum(c) / max(len(c), 1)), c[0], c[-1], s["under_replicated"], s["over_replicated"]))' \
    $(for v in "${LOST[@]}"; do echo "127.0.0.1:${PORTS[$((v + 1))]}"; done)
  echo "balanced $(python3 -c "print(round($(date +%s.%N)-$t0,1))") s after they came back"
  exit 0
fi
[ "${KILL:-0}" = 1 ] || exit 0
# Address -> chunkserver number, and each file's replica addresses.
declare -A NUM
for i in $(seq 1 "$N"); do NUM["127.0.0.1:${PORTS[$((i + 1))]}"]=$i; done
# Each file and the addresses of its replicas, one line each.
placement() {
for i in $(seq 1 "$FILES"); do echo "stat --json /f$i"; done | dfs_ shell 2>/dev/null |
  python3 -c '
import json, sys
dec = json.JSONDecoder(); text = sys.stdin.read(); at = 0
while True:
    while at < len(text) and text[at].isspace(): at += 1
    if at >= len(text): break
    obj, at = dec.raw_decode(text, at)
    print(obj["path"], " ".join(r for c in obj["chunks"] for r in c["replicas"]))' 
}
# (fsck exits non-zero while the cluster is unhealthy: its JSON says how.)

# Two at a time: replication 3 survives any two.
VICTIMS=($(seq 2 "$N" | shuf -n 16))
for k in 0 2 4 6 8 10 12 14; do
  a=${VICTIMS[$k]}; b=${VICTIMS[$((k + 1))]}
  kill -9 "${CS_PID[$a]}" "${CS_PID[$b]}"
  t0=$(date +%s.%N)
  # The master notices after --dead-after; only then is anything under-replicated.
  for _ in $(seq 600); do [ "$(alive)" -le $((N - k - 2)) ] && break; sleep 0.2; done
  wait_healthy || { echo "pair $a $b: not healthy after 300 s"; exit 1; }
  echo "killed chunkservers $a and $b: every chunk back at 3 live replicas $(python3 -c "print(round($(date +%s.%N)-$t0,1))") s later"
done
for v in "${VICTIMS[@]}"; do start_cs "$v"; done
for _ in $(seq 600); do [ "$(alive)" -ge "$N" ] && break; sleep 0.5; done
echo "the 16 restarted: $(alive) alive"
# They came back with replicas that were copied elsewhere meanwhile: wait for the
# extras to be trimmed, so that the placement read next is the one that stays.
settled() { fsck_json | python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["missing"]+r["under_replicated"]+r["over_replicated"])' 2>/dev/null || echo 1; }
t0=$(date +%s.%N)
for _ in $(seq 600); do [ "$(settled)" = 0 ] && break; sleep 0.5; done
echo "their extra replicas trimmed, every chunk at exactly 3, $(python3 -c "print(round($(date +%s.%N)-$t0,1))") s later"

# Sixteen at once (others): only files whose every replica was on them may go missing.
KILLED=($(seq 2 "$N" | shuf -n 16))
declare -A DOWN
for v in "${KILLED[@]}"; do DOWN[$v]=1; kill -9 "${CS_PID[$v]}"; done
# Placement as it is now (the repairs above moved replicas).
placement >"$DIR/placement2"
EXPECT=$(while read -r path reps; do
  all=1; for r in $reps; do [ -n "${DOWN[${NUM[$r]:-0}]:-}" ] || all=0; done
  if [ "$all" = 1 ]; then echo "$path"; fi; done <"$DIR/placement2" | sort | tr '\n' ' ')
for _ in $(seq 600); do [ "$(alive)" -le $((N - 16)) ] && break; sleep 0.5; done
wait_healthy_or_missing() { for _ in $(seq 600); do
  n=$(fsck_json | python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["under_replicated"])' 2>/dev/null || echo 1)
  [ "$n" = 0 ] && return 0; sleep 0.5; done; return 1; }
t0=$(date +%s.%N)
wait_healthy_or_missing || { echo "16 at once: still under-replicated after 300 s"; exit 1; }
GOT=$(fsck_json | python3 -c 'import json,sys; print(" ".join(sorted(p["path"] for p in json.load(sys.stdin)["problems"] if p["missing"])))')
echo "killed 16 at once: re-replicated in $(python3 -c "print(round($(date +%s.%N)-$t0,1))") s; fsck names missing: [${GOT}]; every replica was on the 16 for: [${EXPECT% }]"
[ "${GOT}" = "${EXPECT% }" ] || { echo "fsck's missing files differ from the expected"; exit 1; }
for v in "${KILLED[@]}"; do start_cs "$v"; done
wait_healthy || { echo "not healthy after the 16 returned"; exit 1; }
bad=0
for i in $(seq 1 "$FILES"); do
  if dfs_ get "/f$i" "$DIR/back" >/dev/null 2>&1 && cmp -s "$DIR/back" "$DIR/small.bin"; then :; else bad=$((bad + 1)); fi
  rm -f "$DIR/back"
done
echo "the 16 returned: fsck healthy, $((FILES - bad)) of $FILES files read back whole"
