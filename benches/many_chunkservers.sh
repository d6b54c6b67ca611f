#!/usr/bin/env bash
# Starts one master and N chunkservers, each a process of its own, on 127.0.0.1,
# and reports:
# - how long registration took;
# - how evenly puts were spread;
# - the master's CPU and RSS while idle and while under puts;
# - its upkeep work (chunks assessed per round).
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
"$BIN" master --listen "$MASTER" --data "$DIR/master" --http 127.0.0.1:$HPORT --safe-start 1s >"$DIR/master.log" 2>&1 &
MPID=$!; PIDS+=("$MPID")
for _ in $(seq 100); do [ -s "$DIR/master/cluster.secret" ] && break; sleep 0.1; done
SECRET="$DIR/master/cluster.secret"

ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
rss_kib() { awk '/VmRSS/{print $2}' "/proc/$1/status"; }
# A metric's value; 0 from a master too old to have it.
metric() { curl -s "http://127.0.0.1:$HPORT/metrics" | awk -v m="$1" '$1==m{v=$2} END{print v+0}'; }
alive() { DFS_SECRET=$(cat "$SECRET") "$BIN" status --master "$MASTER" --json 2>/dev/null |
  python3 -c 'import json,sys; print(sum(1 for s in json.load(sys.stdin)["chunkservers"] if s["alive"]))' 2>/dev/null || echo 0; }

START=$(date +%s.%N)
for i in $(seq 1 "$N"); do
  P=${PORTS[$((i + 1))]}
  mkdir -p "$DIR/cs$i"
  "$BIN" chunkserver --listen 127.0.0.1:$P --master "$MASTER" --data "$DIR/cs$i" \
    --secret-file "$SECRET" --capacity 1GiB --scrub-rate 0 >"$DIR/cs$i.log" 2>&1 &
  PIDS+=("$!")
done
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
