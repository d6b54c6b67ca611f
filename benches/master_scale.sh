#!/usr/bin/env bash
# A master with many files: how long it takes to start, how much memory it holds and
# in which structures, and its CPU idle and busy with many chunkservers reporting.
#
# 1. `dfs bench load` writes FILES files of one chunk each into a new data dir
#    (through the master's own namespace code, without chunk bytes);
# 2. a master starts on it: the time until it answers (a restart: sled loaded into
#    memory), and its RSS;
# 3. `dfs bench holders` registers SERVERS chunkservers in name only, reporting every
#    chunk at replication 3, and heartbeats: the time until no chunk is missing,
#    the master's RSS, and its estimate per structure (/metrics);
# 4. the master's CPU while idle (20 s); with STEADY=1, also once upkeep's index
#    has caught up on every chunk after the registrations (60 s); then during
#    `dfs bench meta`; the lock upkeep held per round, `dfs status`, `dfs count /`,
#    `dfs fsck /` and a `dfs stat` while it runs.
#
# Usage: benches/master_scale.sh [FILES] [SERVERS]  (default 1000000 and 300).
# LOADED=DIR starts from a copy of a data dir `dfs bench load --files FILES` made,
# instead of loading anew (minutes at 10 M files).
# Needs a built `dfs` (DFS_BIN, else target/release/dfs). Everything lives in a temp
# dir (DIR_BASE, default /tmp) that is removed at the end, with every process.
set -euo pipefail
FILES=${1:-1000000}
SERVERS=${2:-300}
BIN=${DFS_BIN:-$(dirname "$0")/../target/release/dfs}
[ -x "$BIN" ] || { echo "no dfs binary at $BIN: cargo build --release -p dfs-cli, or set DFS_BIN" >&2; exit 1; }
BIN=$(realpath "$BIN")
DIR=$(mktemp -d "${DIR_BASE:-/tmp}/dfs-scale.XXXXXX")
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT

read -r MPORT HPORT <<<"$(python3 -c '
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))')"
MASTER=127.0.0.1:$MPORT
now() { date +%s.%N; }
since() { python3 -c "print(round($(now) - $1, 1))"; }
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
rss_mib() { awk '/VmRSS/{printf "%.0f", $2/1024}' "/proc/$1/status"; }
metrics() { curl -s "http://127.0.0.1:$HPORT/metrics"; }
status() { "$BIN" status --master "$MASTER" --json 2>/dev/null; }
field() { python3 -c "import json,sys; print(json.load(sys.stdin)[\"$1\"])" 2>/dev/null; }

echo "== $FILES files, $SERVERS chunkservers in name only; $(nproc) cores"
t=$(now)
if [ -n "${LOADED:-}" ]; then
  # A data dir an earlier `dfs bench load --files FILES` made (never started on):
  # copied, so runs can share one load.
  cp -r "$LOADED" "$DIR/master"
  echo "load: copied $LOADED [$(since "$t") s]"
else
  "$BIN" bench load --data "$DIR/master" --files "$FILES" --per-dir 10000 >"$DIR/load.txt"
  echo "load: $(head -1 "$DIR/load.txt") [$(since "$t") s with the checkpoint]"
fi
echo "on disk: $(du -sh "$DIR/master" | cut -f1)"

start_master() {
  "$BIN" master --listen "$MASTER" --data "$DIR/master" --http "127.0.0.1:$HPORT" \
    --dead-after 10s >>"$DIR/master.log" 2>&1 &
  MPID=$!; PIDS+=("$MPID")
  for _ in $(seq 100); do [ -s "$DIR/master/cluster.secret" ] && break; sleep 0.1; done
  export DFS_SECRET
  DFS_SECRET=$(cat "$DIR/master/cluster.secret")
}
t=$(now)
start_master
for _ in $(seq 6000); do status >/dev/null && break; sleep 0.1; done
echo "start: answering $(since "$t") s after launch; RSS $(rss_mib "$MPID") MiB with no chunkserver"

t=$(now)
"$BIN" bench holders --master "$MASTER" --servers "$SERVERS" --files "$FILES" >"$DIR/holders.log" 2>&1 &
PIDS+=("$!")
# Waits for the holders' own word.
for _ in $(seq 36000); do
  grep -q "registered" "$DIR/holders.log" && break
  sleep 0.1
done
echo "holders: all registered $(since "$t") s after they started; RSS $(rss_mib "$MPID") MiB"
t=$(now); missing=$(status | field missing)
echo "  chunks missing: $missing (dfs status took $(since "$t") s)"
metrics | awk -v f="$FILES" '/^dfs_master_memory_bytes/ {
  split($1, a, "\""); total += $2
  printf "  %-20s %7.1f MiB %7.1f bytes per file (estimated)\n", a[2], $2/1048576, $2/f }
  END { printf "  %-20s %7.1f MiB %7.1f bytes per file\n", "estimated in all", total/1048576, total/f }'
echo "  RSS per file: $(python3 -c "print(round($(rss_mib "$MPID") * 1048576 / $FILES, 1))") bytes"

t0=$(ticks "$MPID"); sleep 20; t1=$(ticks "$MPID")
echo "idle, $SERVERS heartbeating each second: $(python3 -c "print(round(($t1-$t0)/100/20*100,1))")% of a core"
if [ "${STEADY:-0}" = 1 ]; then
  # After the registrations, upkeep's index catches up on every chunk (16,384 a
  # round); then only the background sweep runs. Wait for that, then measure again.
  t=$(now); n=$(grep -c "every chunk assessed" "$DIR/master.log" || true)
  for _ in $(seq 3600); do
    [ "$(grep -c "every chunk assessed" "$DIR/master.log" || true)" -gt "$n" ] && break
    sleep 1
  done
  echo "the index caught up on every chunk $(since "$t") s later"
  t0=$(ticks "$MPID"); sleep 60; t1=$(ticks "$MPID")
  echo "idle after that, over 60 s: $(python3 -c "print(round(($t1-$t0)/100/60*100,1))")% of a core"
fi
t0=$(ticks "$MPID"); s0=$(now)
"$BIN" bench meta --master "$MASTER" --ops 20000 --json >"$DIR/meta.json"
t1=$(ticks "$MPID"); secs=$(since "$s0")
echo "busy (dfs bench meta --ops 20000, $secs s): $(python3 -c "print(round(($t1-$t0)/100/$secs*100,1))")% of a core;" \
  "$(python3 -c "
import json; d = json.load(open('$DIR/meta.json'))
print(', '.join('%s %.1f k/s' % (m['op'], m['rate']['per_s'] / 1000) for m in d['meta']))")"
echo "final RSS $(rss_mib "$MPID") MiB"
# How long upkeep rounds held the state lock, all rounds since the start: the mean,
# and the bucket the slowest fell in.
metrics | awk '
  /^dfs_master_upkeep_lock_seconds_sum/ { sum = $2 }
  /^dfs_master_upkeep_lock_seconds_count/ { n = $2 }
  /^dfs_master_upkeep_lock_seconds_bucket/ {
    split($1, a, "\""); le = a[2]
    if ($2 > seen) { top = le; seen = $2 } }
  END { printf "upkeep: %d rounds, lock held %.1f ms on average, the longest at most %s s\n", n, 1000 * sum / n, top }'
echo "status: $(t=$(now); status >/dev/null; since "$t") s for dfs status after the load"
t=$(now); files=$("$BIN" count / --master "$MASTER" --json | field files)
echo "count: dfs count / found $files files in $(since "$t") s"
# fsck walks every file in slices of 10,000 with the lock free in between; meanwhile
# a stat must not wait for the whole walk.
t=$(now)
"$BIN" fsck / --master "$MASTER" --json >"$DIR/fsck.json" 2>/dev/null &
FSCK=$!
sleep 1
s=$(now); "$BIN" stat /bulk/d000000/f000000 --master "$MASTER" >/dev/null 2>&1 || true
stat_s=$(since "$s")
wait "$FSCK" || true
echo "fsck: dfs fsck / checked $(field files <"$DIR/fsck.json") files in $(since "$t") s;" \
  "a dfs stat during it answered in $stat_s s"
