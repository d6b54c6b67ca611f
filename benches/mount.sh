#!/usr/bin/env bash
# Throughput through `dfs mount` next to `dfs put`/`get`, in one run on one cluster,
# with the disk's own ceiling measured in the same run:
#   - 1 GiB: `dd` into the mount and out of it, `cp` in and out, `dfs put`/`dfs get`;
#   - 1,000 x 64 KiB files written and read by one process (`cp -r` in and out of
#     the mount, `tar c` out of it) next to `dfs put -r`/`get -r`.
# Runs `dfs up` (release build, replication 3, fsync on every replica) in a temp dir
# on 127.0.0.1 and cleans everything up. Page caches are dropped before each read
# (root only; otherwise reads may come from the cache and the script says so).
# Usage: benches/mount.sh [SIZE_MIB]   (default 1024)
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=${1:-1024}

cargo build --release --quiet -p dfs-cli
dfs=$PWD/target/release/dfs
work=$(mktemp -d "${TMPDIR:-/tmp}/dfs-mount-bench.XXXXXX")
port=$((20000 + RANDOM % 10000))
export DFS_MASTER=127.0.0.1:$port
mnt=$work/mnt
mkdir -p "$mnt" "$work/local" "$work/small"
up_pid=""
cleanup() {
    if mountpoint -q "$mnt" 2>/dev/null; then "$dfs" umount "$mnt" || umount -l "$mnt" || true; fi
    [ -n "$up_pid" ] && kill "$up_pid" 2>/dev/null && wait "$up_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

drop_caches() {
    sync
    if [ -w /proc/sys/vm/drop_caches ]; then echo 3 >/proc/sys/vm/drop_caches; else echo "(caches not dropped: not root)"; fi
}
# Seconds for a command, to the millisecond.
timed() {
    local t0 t1
    t0=$(date +%s.%N)
    "$@" >/dev/null
    t1=$(date +%s.%N)
    echo "$t1 - $t0" | bc -l
}
rate() { echo "scale=1; $1 / $2" | bc -l; }

echo "== ceiling: one fdatasync writer and three in parallel, cold read ($size_mib MiB each)"
one=$(timed dd if=/dev/zero of="$work/local/c0" bs=1M count="$size_mib" conv=fdatasync status=none)
three=$(timed bash -c "for i in 1 2 3; do dd if=/dev/zero of=$work/local/p\$i bs=1M count=$size_mib conv=fdatasync status=none & done; wait")
drop_caches
cold=$(timed dd if="$work/local/c0" of=/dev/null bs=1M status=none)
rm -f "$work/local"/p*
echo "disk write, 1 writer:   $(rate "$size_mib" "$one") MiB/s"
echo "disk write, 3 writers:  $(rate "$size_mib" "$three") MiB/s of user data (3 copies each)"
echo "disk read, cold:        $(rate "$size_mib" "$cold") MiB/s"

"$dfs" up --data "$work/data" --master "$DFS_MASTER" --no-http >"$work/up.log" 2>&1 &
up_pid=$!
for _ in $(seq 1 100); do "$dfs" ls / >/dev/null 2>&1 && break; sleep 0.1; done
"$dfs" mount "$mnt" --cache-dir "$work/cache"

src=$work/local/c0
echo "== 1 GiB-class transfers ($size_mib MiB)"
put=$(timed "$dfs" -q put "$src" /put.bin)
drop_caches
get=$(timed "$dfs" -q get /put.bin "$work/local/got.bin")
rm -f "$work/local/got.bin"
dd_in=$(timed dd if="$src" of="$mnt/dd.bin" bs=1M conv=fsync status=none)
drop_caches
dd_out=$(timed dd if="$mnt/dd.bin" of=/dev/null bs=1M status=none)
cp_in=$(timed cp "$src" "$mnt/cp.bin")
drop_caches
cp_out=$(timed cp "$mnt/cp.bin" "$work/local/cp.bin")
cmp "$src" "$work/local/cp.bin"
rm -f "$work/local/cp.bin"
echo "dfs put:        $(rate "$size_mib" "$put") MiB/s"
echo "dfs get:        $(rate "$size_mib" "$get") MiB/s"
echo "dd into mount:  $(rate "$size_mib" "$dd_in") MiB/s   ($(rate "$put" "$dd_in") x put)"
echo "dd out of mount: $(rate "$size_mib" "$dd_out") MiB/s  ($(rate "$get" "$dd_out") x get)"
echo "cp into mount:  $(rate "$size_mib" "$cp_in") MiB/s   ($(rate "$put" "$cp_in") x put)"
echo "cp out of mount: $(rate "$size_mib" "$cp_out") MiB/s  ($(rate "$get" "$cp_out") x get)"

echo "== 1,000 x 64 KiB files, one process"
for i in $(seq 1 1000); do head -c 65536 /dev/urandom >"$work/small/f$i"; done
putr=$(timed "$dfs" -q put -r "$work/small" /small-put)
getr=$(timed "$dfs" -q get -r /small-put "$work/got-small")
cpr_in=$(timed cp -r "$work/small" "$mnt/small-cp")
drop_caches
cpr_out=$(timed cp -r "$mnt/small-cp" "$work/got-cp")
diff -r "$work/small" "$work/got-cp"
drop_caches
tar_out=$(timed bash -c "tar cf - -C $mnt small-cp | cat >/dev/null")
echo "dfs put -r:       $(rate 1000 "$putr") files/s"
echo "dfs get -r:       $(rate 1000 "$getr") files/s"
echo "cp -r into mount: $(rate 1000 "$cpr_in") files/s   ($(rate "$putr" "$cpr_in") x put -r)"
echo "cp -r out of it:  $(rate 1000 "$cpr_out") files/s   ($(rate "$getr" "$cpr_out") x get -r)"
echo "tar c out of it:  $(rate 1000 "$tar_out") files/s"
