//! Renderings of `ls`, `stat` and `status`: plain text for people, and the `--json`
//! shapes written in docs/operations.md (fields may be added, never renamed).

use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use dfs_client::{
    BalanceReport, ClusterStatus, DirEntry, FileKind, FileStat, FsckReport, KeyInfo, TrashInfo,
};
use serde_json::{json, Value};

use crate::units::human_size;

fn time(secs: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

/// A pretty-printed JSON array written in pieces, the same text as
/// `serde_json::to_string_pretty` of the whole array, for listings too large to
/// hold at once.
#[derive(Debug, Default)]
pub struct JsonArray {
    started: bool,
}

impl JsonArray {
    /// The text for the elements of `items` (a JSON array), to follow what came before.
    pub fn items(&mut self, items: &Value) -> serde_json::Result<String> {
        let mut out = String::new();
        for item in items.as_array().into_iter().flatten() {
            out.push_str(if self.started { ",\n" } else { "[\n" });
            self.started = true;
            let text = serde_json::to_string_pretty(item)?;
            for (i, line) in text.lines().enumerate() {
                if i > 0 {
                    out.push('\n');
                }
                out.push_str("  ");
                out.push_str(line);
            }
        }
        Ok(out)
    }

    /// The closing text.
    pub fn end(&self) -> String {
        if self.started {
            "\n]\n".into()
        } else {
            "[]\n".into()
        }
    }
}

/// `[{"name","kind","size"}]`, plus `mtime` and `replication` (0 for a directory).
pub fn ls_json(entries: &[DirEntry]) -> Value {
    Value::Array(
        entries
            .iter()
            .map(|e| {
                json!({
                    "name": e.name, "kind": e.kind.as_str(), "size": e.size,
                    "mtime": e.mtime, "replication": e.replication,
                })
            })
            .collect(),
    )
}

/// One name per line; `long` adds kind, size, time and replication (after the
/// columns it had before it, so scripts reading those still read them). Directories
/// end in `/`.
pub fn ls_plain(entries: &[DirEntry], long: bool, human: bool) -> String {
    let mut out = String::new();
    for e in entries {
        let slash = if e.kind == FileKind::Dir { "/" } else { "" };
        if long {
            let size = if human {
                crate::units::human_size(e.size)
            } else {
                e.size.to_string()
            };
            let replication = match e.kind {
                FileKind::File => e.replication.to_string(),
                FileKind::Dir | FileKind::Symlink => "-".to_string(),
            };
            let _ = writeln!(
                out,
                "{:<4} {:>14} {} {:>2}  {}{}",
                e.kind.as_str(),
                size,
                time(e.mtime),
                replication,
                e.name,
                slash
            );
        } else {
            let _ = writeln!(out, "{}{}", e.name, slash);
        }
    }
    out
}

/// `{"path","kind","size","replication","chunks":[{"handle","version","size","replicas"}]}`,
/// plus `mtime`, `mode` (the permission bits as a number), `uid`, `gid`, `atime` and,
/// per chunk, `open` (taking appends) and `primary` (its lease holder).
pub fn stat_json(s: &FileStat) -> Value {
    json!({
        "path": s.path,
        "kind": s.kind.as_str(),
        "size": s.size,
        "replication": s.replication,
        "mtime": s.mtime,
        "mode": s.mode,
        "uid": s.uid,
        "gid": s.gid,
        "atime": s.atime,
        "chunks": s.chunks.iter().map(|c| json!({
            "handle": c.handle.to_string(),
            "version": c.version.0,
            "size": c.size,
            "replicas": c.replicas,
            "open": c.open,
            "primary": c.primary,
        })).collect::<Vec<_>>(),
    })
}

pub fn stat_plain(s: &FileStat) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "path:        {}", s.path);
    let _ = writeln!(out, "kind:        {}", s.kind.as_str());
    let _ = writeln!(out, "size:        {} ({})", s.size, human_size(s.size));
    let _ = writeln!(out, "modified:    {}", time(s.mtime));
    let _ = writeln!(out, "accessed:    {}", time(s.atime));
    let _ = writeln!(out, "mode:        {:04o}", s.mode);
    let _ = writeln!(out, "owner:       {}:{}", s.uid, s.gid);
    if s.kind == FileKind::File {
        let _ = writeln!(out, "replication: {}", s.replication);
        let _ = writeln!(out, "chunks:      {}", s.chunks.len());
        for (i, c) in s.chunks.iter().enumerate() {
            let _ = writeln!(
                out,
                "  {i:>4}  {}  v{}  {:>10}  {}{}",
                c.handle,
                c.version,
                c.size,
                if c.replicas.is_empty() {
                    "NO LIVE REPLICA".to_string()
                } else {
                    c.replicas.join(" ")
                },
                match (&c.primary, c.open) {
                    (Some(p), _) => format!("  (appending, lease on {p})"),
                    (None, true) => "  (appended to, size settling)".to_string(),
                    (None, false) => String::new(),
                }
            );
        }
    }
    out
}

/// `{"chunkservers":[{"id","addr","alive","capacity","used","chunks"}],"files","chunks","under_replicated"}`.
pub fn status_json(s: &ClusterStatus) -> Value {
    json!({
        "chunkservers": s.chunkservers.iter().map(|c| json!({
            "id": c.id.to_string(),
            "addr": c.addr,
            "alive": c.alive,
            "capacity": c.capacity,
            "used": c.used,
            "chunks": c.chunks,
            "load": c.load,
            "decommissioning": c.decommissioning,
            "draining": c.draining,
        })).collect::<Vec<_>>(),
        "files": s.files,
        "chunks": s.chunks,
        "under_replicated": s.under_replicated,
        "chunk_size": s.chunk_size,
        "replication": s.replication,
        "safe_mode": s.safe_mode,
        "trash": s.trash,
        "garbage": s.garbage,
        "missing": s.missing,
        "over_replicated": s.over_replicated,
        "copying": s.copying,
    })
}

pub fn status_plain(s: &ClusterStatus) -> String {
    let mut out = String::new();
    let alive = s.chunkservers.iter().filter(|c| c.alive).count();
    let _ = writeln!(
        out,
        "chunkservers: {alive} alive, {} dead   chunk size {}   default replication {}",
        s.chunkservers.len() - alive,
        human_size(s.chunk_size),
        s.replication
    );
    let _ = writeln!(
        out,
        "{:<36}  {:<21}  {:<12}  {:>12}  {:>12}  {:>8}  {:>4}",
        "ID", "ADDRESS", "STATE", "CAPACITY", "USED", "CHUNKS", "LOAD"
    );
    for c in &s.chunkservers {
        let state = match (c.alive, c.decommissioning, c.draining) {
            (false, _, _) => "DEAD".to_string(),
            (true, true, 0) => "drained".to_string(),
            (true, true, n) => format!("draining {n}"),
            (true, false, _) => "up".to_string(),
        };
        let _ = writeln!(
            out,
            "{:<36}  {:<21}  {:<12}  {:>12}  {:>12}  {:>8}  {:>4}",
            c.id.to_string(),
            c.addr,
            state,
            human_size(c.capacity),
            human_size(c.used),
            c.chunks,
            c.load
        );
    }
    let _ = writeln!(
        out,
        "files: {}   chunks: {}   under-replicated: {}   missing: {}   over-replicated: {}   copying: {}",
        s.files, s.chunks, s.under_replicated, s.missing, s.over_replicated, s.copying
    );
    let _ = writeln!(out, "in trash: {}   garbage chunks: {}", s.trash, s.garbage);
    if s.safe_mode {
        let _ = writeln!(
            out,
            "SAFE MODE: waiting for chunkservers to report; no garbage is deleted yet"
        );
    }
    out
}

/// `[{"name","role","created"}]`: never a secret.
pub fn keys_json(keys: &[KeyInfo]) -> Value {
    Value::Array(
        keys.iter()
            .map(|k| json!({"name": k.name, "role": k.role.as_str(), "created": k.created}))
            .collect(),
    )
}

pub fn keys_plain(keys: &[KeyInfo]) -> String {
    let mut out = String::new();
    if keys.is_empty() {
        out.push_str("no keys (`dfs key create NAME` issues one)\n");
        return out;
    }
    let _ = writeln!(out, "{:<11} {:<20}  NAME", "ROLE", "CREATED");
    for k in keys {
        let _ = writeln!(
            out,
            "{:<11} {:<20}  {}",
            k.role.as_str(),
            time(k.created),
            k.name
        );
    }
    out
}

/// `[{"path","kind","size","deleted_at","expires_at"}]`.
pub fn trash_json(entries: &[TrashInfo]) -> Value {
    Value::Array(
        entries
            .iter()
            .map(|t| {
                json!({"path": t.path, "kind": t.kind.as_str(), "size": t.size,
                       "deleted_at": t.deleted_at, "expires_at": t.expires_at})
            })
            .collect(),
    )
}

pub fn trash_plain(entries: &[TrashInfo]) -> String {
    let mut out = String::new();
    if entries.is_empty() {
        out.push_str("the trash is empty\n");
        return out;
    }
    let _ = writeln!(
        out,
        "{:<20}  {:<20}  {:<4} {:>14}  PATH",
        "REMOVED", "PURGED AFTER", "KIND", "SIZE"
    );
    for t in entries {
        let _ = writeln!(
            out,
            "{:<20}  {:<20}  {:<4} {:>14}  {}",
            time(t.deleted_at),
            time(t.expires_at),
            t.kind.as_str(),
            t.size,
            t.path
        );
    }
    out
}

/// `{"path","healthy","files","chunks","missing","under_replicated","corrupt","stale","safe_mode","problems":[...]}`.
pub fn fsck_json(r: &FsckReport) -> Value {
    json!({
        "path": r.path,
        "healthy": r.healthy(),
        "files": r.files,
        "chunks": r.chunks,
        "missing": r.missing,
        "under_replicated": r.under_replicated,
        "corrupt": r.corrupt,
        "stale": r.stale,
        "over_replicated": r.over_replicated,
        "safe_mode": r.safe_mode,
        "problems": r.problems.iter().map(|p| json!({
            "path": p.path,
            "chunks": p.chunks,
            "missing": p.missing,
            "under_replicated": p.under_replicated,
            "corrupt": p.corrupt,
            "stale": p.stale,
        })).collect::<Vec<_>>(),
    })
}

pub fn fsck_plain(r: &FsckReport) -> String {
    let mut out = String::new();
    for p in &r.problems {
        let _ = writeln!(
            out,
            "{}: {} missing, {} under-replicated, {} corrupt, {} stale of {} chunks",
            p.path, p.missing, p.under_replicated, p.corrupt, p.stale, p.chunks
        );
    }
    let _ = writeln!(
        out,
        "fsck {}: {} files, {} chunks; {} missing, {} under-replicated, {} corrupt, {} stale: {}",
        r.path,
        r.files,
        r.chunks,
        r.missing,
        r.under_replicated,
        r.corrupt,
        r.stale,
        if r.healthy() { "HEALTHY" } else { "UNHEALTHY" }
    );
    if r.safe_mode {
        let _ = writeln!(
            out,
            "(the master is in safe mode: chunkservers may not all have reported yet)"
        );
    }
    out
}

/// `{"servers":[{"addr","used_fraction"}],"spread","threshold","moving"}`.
pub fn balance_json(r: &BalanceReport) -> Value {
    json!({
        "servers": r.servers.iter().map(|(addr, u)| json!({"addr": addr, "used_fraction": u})).collect::<Vec<_>>(),
        "spread": r.spread,
        "threshold": r.threshold,
        "moving": r.moving,
    })
}

pub fn balance_plain(r: &BalanceReport) -> String {
    let mut out = String::new();
    for (addr, u) in &r.servers {
        let _ = writeln!(out, "{addr:<21}  {:>6.2}% used", u * 100.0);
    }
    let _ = writeln!(
        out,
        "spread {:.2} points, threshold {:.2}: {}; {} moves under way",
        r.spread * 100.0,
        r.threshold * 100.0,
        if r.spread > r.threshold {
            "balancing"
        } else {
            "balanced"
        },
        r.moving
    );
    out
}

/// `dfs count --json`: `{"path","dirs","files","bytes"}`.
pub fn count_json(path: &str, s: &dfs_client::Summary) -> Value {
    json!({"path": path, "dirs": s.dirs, "files": s.files, "bytes": s.bytes})
}

/// `dfs count`: directories, files, bytes and the path, as `hdfs dfs -count` lays them out.
pub fn count_plain(path: &str, s: &dfs_client::Summary) -> String {
    format!("{:>12} {:>12} {:>16} {path}\n", s.dirs, s.files, s.bytes)
}

/// `dfs du --json`: `[{"path","size"}]`.
pub fn du_json(rows: &[(String, u64)]) -> Value {
    Value::Array(
        rows.iter()
            .map(|(path, size)| json!({"path": path, "size": size}))
            .collect(),
    )
}

/// `dfs du`: a size and a path per line.
pub fn du_plain(rows: &[(String, u64)], human: bool) -> String {
    let mut out = String::new();
    for (path, size) in rows {
        let size = if human {
            crate::units::human_size(*size)
        } else {
            size.to_string()
        };
        out.push_str(&format!("{size:>12}  {path}\n"));
    }
    out
}

/// Capacity, use and what is free, over the live chunkservers.
fn df_totals(s: &ClusterStatus) -> (u64, u64, u64, usize) {
    let live: Vec<_> = s.chunkservers.iter().filter(|c| c.alive).collect();
    let capacity: u64 = live.iter().map(|c| c.capacity).sum();
    let used: u64 = live.iter().map(|c| c.used).sum();
    (capacity, used, capacity.saturating_sub(used), live.len())
}

/// `dfs df --json`: `{"capacity","used","available","chunkservers"}`.
pub fn df_json(s: &ClusterStatus) -> Value {
    let (capacity, used, available, live) = df_totals(s);
    json!({"capacity": capacity, "used": used, "available": available, "chunkservers": live})
}

/// `dfs df`: one header line and one line of figures.
pub fn df_plain(s: &ClusterStatus, human: bool) -> String {
    let (capacity, used, available, live) = df_totals(s);
    let show = |n: u64| {
        if human {
            crate::units::human_size(n)
        } else {
            n.to_string()
        }
    };
    let pct = if capacity == 0 {
        0
    } else {
        used.saturating_mul(100).div_ceil(capacity)
    };
    format!(
        "{:>14} {:>14} {:>14} {:>5} {:>12}\n{:>14} {:>14} {:>14} {:>4}% {:>12}\n",
        "capacity",
        "used",
        "available",
        "use",
        "chunkservers",
        show(capacity),
        show(used),
        show(available),
        pct,
        live
    )
}

/// `dfs checksum`'s line for one file, as `b3sum` lays it out: checksum, two spaces, path.
pub fn checksum_plain(path: &str, sum: &dfs_client::FileChecksum) -> String {
    format!(
        "{}  {path}\n",
        blake3::Hash::from_bytes(sum.digest).to_hex()
    )
}

pub fn checksum_json(sums: &[(String, dfs_client::FileChecksum)]) -> Value {
    Value::Array(
        sums.iter()
            .map(|(path, sum)| {
                json!({
                    "path": path,
                    "algorithm": dfs_protocol::checksum::FILE_DIGEST_ALGORITHM,
                    "checksum": blake3::Hash::from_bytes(sum.digest).to_hex().as_str(),
                    "size": sum.size,
                    "chunks": sum.chunks,
                    "chunk_size": sum.chunk_size,
                })
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_array_in_pieces_reads_as_the_whole() {
        let items: Vec<Value> = (0..5)
            .map(|i| json!({"name": format!("f{i}"), "nested": {"a": [1, 2]}}))
            .collect();
        let mut a = JsonArray::default();
        let mut text = String::new();
        for chunk in items.chunks(2) {
            text.push_str(&a.items(&Value::Array(chunk.to_vec())).expect("json"));
        }
        text.push_str(&a.end());
        let whole = serde_json::to_string_pretty(&Value::Array(items)).expect("json") + "\n";
        assert_eq!(text, whole);
        let empty = JsonArray::default();
        assert_eq!(empty.end(), "[]\n");
    }
}
