//! The `dfs` command line: every verb, flag and default as clap parses them. The
//! names here are a public contract: add, never rename.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use dfs_cli::units::{parse_duration, parse_positive_duration, parse_size};

#[derive(Parser, Debug)]
#[command(
    name = "dfs",
    version,
    about = "dfs: a GFS-style distributed file system",
    long_about = "dfs: a GFS-style distributed file system.\n\n\
        One master keeps the namespace; chunkservers keep files as replicated, checksummed chunks.\n\
        Start a local cluster with `dfs up`, then use the client verbs from another terminal:\n\
        \n  dfs put ./photo.jpg /photos/photo.jpg\n  dfs ls -l /photos\n  dfs get /photos/photo.jpg ./copy.jpg\n\n\
        Client verbs find the master from --master, else $DFS_MASTER, else 127.0.0.1:7070.\n\
        Every connection is authenticated: client verbs prove a key from --key-file, else\n\
        $DFS_KEY, else $DFS_SECRET (the cluster secret: admin), else key_file in\n\
        ~/.config/dfs/config.toml, else the admin key `dfs up` stored for the master."
)]
pub(crate) struct Cli {
    /// Address of the master, for client verbs and chunkservers (else `master` in the
    /// config file, else 127.0.0.1:7070).
    #[arg(long, global = true, env = "DFS_MASTER", value_name = "ADDR")]
    pub(crate) master: Option<String>,
    /// A key file from `dfs key create`, for client verbs (else $DFS_KEY, else
    /// $DFS_SECRET, else key_file in the config file, else the key `dfs up` stored for
    /// this master).
    #[arg(long, global = true, value_name = "PATH")]
    pub(crate) key_file: Option<PathBuf>,
    /// Talk to the cluster over TLS, trusting the cluster CA in PATH (else the CA
    /// `dfs up --tls` stored for this master, if any).
    #[arg(long, global = true, env = "DFS_TLS_CA", value_name = "PATH")]
    pub(crate) tls_ca: Option<PathBuf>,
    /// How long client verbs wait on one exchange with a server (a metadata call,
    /// a packet, a chunk's confirmation) before giving up on it: a put then moves
    /// the chunk to other chunkservers and a get reads another replica. A
    /// partitioned server answers nothing, so this bounds how long it can stall a
    /// transfer.
    #[arg(long, global = true, env = "DFS_IO_TIMEOUT", default_value = "60s",
          value_parser = parse_positive_duration, value_name = "DURATION")]
    pub(crate) io_timeout: Duration,
    /// No progress bars (they are shown only when stderr is a terminal anyway).
    #[arg(short = 'q', long, global = true)]
    pub(crate) quiet: bool,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Run a master: the namespace and the chunk map.
    Master(MasterArgs),
    /// Run a chunkserver that stores chunks for the master at --master.
    Chunkserver(ChunkserverArgs),
    /// Run a whole local cluster (a master and chunkservers) in this process; Ctrl-C stops it.
    Up(UpArgs),
    /// Store LOCAL (a file, or '-' for stdin) at REMOTE; visible only once complete.
    ///
    /// With several LOCALs, or -r for directories, REMOTE is a directory (created if
    /// missing) and the files are stored several at a time (--parallel). A file that
    /// fails is reported and the rest go on; the exit status says whether all did.
    Put {
        /// Files (or with -r directories) to store; '-' is stdin.
        #[arg(required = true, num_args = 1.., value_name = "LOCAL")]
        local: Vec<String>,
        /// Remote path; a trailing '/' or an existing directory keeps LOCAL's file name.
        remote: String,
        /// Store directories and everything below them.
        #[arg(short = 'r', long)]
        recursive: bool,
        /// Replicas per chunk (the cluster's default if not given).
        #[arg(long, value_name = "N")]
        replication: Option<u32>,
        /// Replace REMOTE if it exists.
        #[arg(long)]
        force: bool,
        /// Files transferred at once with -r or several LOCALs (else `parallel` in the
        /// config file, else 8).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=256))]
        parallel: Option<u32>,
    },
    /// Fetch REMOTE into LOCAL (a file or directory, or '-' for stdout).
    ///
    /// With several REMOTEs, or -r for directories, LOCAL is a directory (created if
    /// missing). Each file appears whole under its name or not at all.
    Get {
        /// Files (or with -r directories) to fetch.
        #[arg(required = true, num_args = 1.., value_name = "REMOTE")]
        remote: Vec<String>,
        local: String,
        /// Fetch directories and everything below them.
        #[arg(short = 'r', long)]
        recursive: bool,
        /// Files transferred at once with -r or several REMOTEs (else `parallel` in the
        /// config file, else 8).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=256))]
        parallel: Option<u32>,
    },
    /// Copy SRC to DST inside the cluster: the chunkservers copy the chunks among
    /// themselves, so no bytes pass through this machine (unless --through-client).
    ///
    /// DST (or with several SRCs, DST/name) must not exist unless --force; an existing
    /// directory DST receives SRC under its name. DST appears whole or not at all, with
    /// SRC's replication unless --replication.
    Cp {
        /// Files (or with -r directories) to copy.
        #[arg(required = true, num_args = 1.., value_name = "SRC")]
        src: Vec<String>,
        dst: String,
        /// Copy directories and everything below them.
        #[arg(short = 'r', long)]
        recursive: bool,
        /// Replicas per chunk of the copies (default: each source's).
        #[arg(long, value_name = "N")]
        replication: Option<u32>,
        /// Replace files that exist at the destination.
        #[arg(long)]
        force: bool,
        /// Read the sources and write the copies through this client instead.
        #[arg(long)]
        through_client: bool,
        /// Files copied at once (else `parallel` in the config file, else 8).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=256))]
        parallel: Option<u32>,
    },
    /// Print each file's checksum: a blake3 composed from its chunks' blake3, which the
    /// chunkservers compute, so two copies compare without downloading either.
    ///
    /// With --local, the same checksum of local files (cut at the cluster's chunk
    /// size, or --chunk-size), to check a file in the cluster against its source.
    Checksum {
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<String>,
        /// PATHs are local files.
        #[arg(long)]
        local: bool,
        /// With --local: the chunk size to cut at (default: ask the master).
        #[arg(long, value_parser = parse_size, value_name = "SIZE", requires = "local")]
        chunk_size: Option<u64>,
        /// Print JSON: [{"path","algorithm","checksum","size","chunks","chunk_size"}].
        #[arg(long)]
        json: bool,
    },
    /// Write REMOTE to stdout.
    Cat { remote: String },
    /// Append LOCAL (a file, or '-' for stdin) to REMOTE, creating REMOTE if missing.
    ///
    /// The input is cut into records of the cluster's max append size (a quarter of
    /// the chunk size unless the master says otherwise). Each record lands whole,
    /// never interleaved with other appenders' records; records of one `dfs append`
    /// keep their order. After a failure a record may appear twice, never torn.
    Append {
        local: String,
        remote: String,
        /// Replicas per chunk if REMOTE is created (the cluster's default if not given).
        #[arg(long, value_name = "N")]
        replication: Option<u32>,
    },
    /// Print the start of REMOTE: its first lines (-n, 10 by default) or bytes (-c).
    /// Only what is printed is read.
    Head {
        remote: String,
        /// Print the first SIZE bytes.
        #[arg(short = 'c', long = "bytes", value_parser = parse_size, value_name = "SIZE", conflicts_with = "lines")]
        bytes: Option<u64>,
        /// Print the first N lines.
        #[arg(short = 'n', long = "lines", value_name = "N")]
        lines: Option<u64>,
    },
    /// Print the end of REMOTE; with -f, keep printing what is appended to it.
    Tail {
        remote: String,
        /// Follow: wait for appends and print them as they arrive (Ctrl-C stops).
        #[arg(short = 'f', long)]
        follow: bool,
        /// How much of the end to print first.
        #[arg(short = 'c', long = "bytes", default_value = "1KiB", value_parser = parse_size, value_name = "SIZE")]
        bytes: u64,
        /// With -f, how often to look for new data.
        #[arg(long, default_value = "500ms", value_parser = parse_duration, value_name = "DURATION")]
        interval: Duration,
    },
    /// List a directory (default /).
    #[command(disable_help_flag = true)]
    Ls {
        /// Long format: kind, size, modification time.
        #[arg(short = 'l')]
        long: bool,
        /// List subdirectories recursively.
        #[arg(short = 'R')]
        recursive: bool,
        /// With -l, sizes in KiB, MiB, GiB.
        #[arg(short = 'h')]
        human: bool,
        /// List PATH itself, not its entries.
        #[arg(short = 'd')]
        directory: bool,
        path: Option<String>,
        /// Print JSON: [{"name","kind","size"}].
        #[arg(long)]
        json: bool,
        /// Print help.
        #[arg(long, action = clap::ArgAction::Help)]
        help: Option<bool>,
    },
    /// Create a directory.
    Mkdir {
        /// Create missing parents; no error if it exists.
        #[arg(short = 'p')]
        parents: bool,
        path: String,
    },
    /// Remove a file, or a directory with -r; it goes to the trash unless --skip-trash.
    Rm {
        /// Remove a directory and everything below it.
        #[arg(short = 'r')]
        recursive: bool,
        /// Delete for good at once instead of moving to the trash.
        #[arg(long)]
        skip_trash: bool,
        path: String,
    },
    /// Set the modification time of each PATH to now, creating an empty file where
    /// nothing is (the parent must exist).
    Touch {
        #[arg(required = true)]
        paths: Vec<String>,
    },
    /// Set the permission bits of each PATH (octal, as chmod: 644, 0755, 1777).
    ///
    /// dfs keeps modes and owners for the mount (`dfs mount`); the cluster itself
    /// authorizes by key, not by mode.
    Chmod {
        #[arg(value_parser = parse_mode, value_name = "MODE")]
        mode: u32,
        #[arg(required = true)]
        paths: Vec<String>,
    },
    /// Set the owner (and with UID:GID the group) of each PATH, as numeric ids.
    Chown {
        #[arg(value_parser = parse_owner, value_name = "UID[:GID]")]
        owner: (u32, Option<u32>),
        #[arg(required = true)]
        paths: Vec<String>,
    },
    /// Remove an empty directory (a file or a directory with entries is refused).
    Rmdir { path: String },
    /// Show the bytes stored at or below each entry of PATH (default /), or with -s
    /// their total. Bytes are file sizes, before replication.
    #[command(disable_help_flag = true)]
    Du {
        /// One line: the total for PATH.
        #[arg(short = 's')]
        summarize: bool,
        /// Sizes in KiB, MiB, GiB.
        #[arg(short = 'h')]
        human: bool,
        path: Option<String>,
        /// Print JSON: [{"path","size"}].
        #[arg(long)]
        json: bool,
        /// Print help.
        #[arg(long, action = clap::ArgAction::Help)]
        help: Option<bool>,
    },
    /// Show the cluster's capacity, what is used and what is free, over the live
    /// chunkservers (replicas included).
    #[command(disable_help_flag = true)]
    Df {
        /// Sizes in KiB, MiB, GiB, TiB.
        #[arg(short = 'h')]
        human: bool,
        /// Print JSON: {"capacity","used","available","chunkservers"}.
        #[arg(long)]
        json: bool,
        /// Print help.
        #[arg(long, action = clap::ArgAction::Help)]
        help: Option<bool>,
    },
    /// Count the directories (PATH itself included), files and bytes at or below PATH
    /// (default /).
    Count {
        path: Option<String>,
        /// Print JSON: {"path","dirs","files","bytes"}.
        #[arg(long)]
        json: bool,
    },
    /// Show PATH (default /) and everything below it as a tree.
    Tree {
        path: Option<String>,
        /// Descend at most DEPTH levels.
        #[arg(short = 'L', value_name = "DEPTH")]
        depth: Option<usize>,
    },
    /// Move or rename SRC to DST atomically (into DST if it is a directory).
    Mv { src: String, dst: String },
    /// List, restore or empty what rm moved to the trash.
    Trash {
        #[command(subcommand)]
        command: TrashCommand,
    },
    /// Show a file's or directory's metadata: size, replication, chunks and replicas.
    Stat {
        path: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check replication and checksum health of the files at or below PATH (default /);
    /// exits non-zero when anything is missing, under-replicated, corrupt or stale.
    Fsck {
        path: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Change the replication of PATH (a file, or every file below a directory).
    Setrep {
        /// Wait until every chunk has exactly N live replicas.
        #[arg(short = 'w')]
        wait: bool,
        replication: u32,
        path: String,
    },
    /// Drain the chunkserver at ADDR: its chunks are copied elsewhere; `dfs status`
    /// shows when it is safe to stop it.
    Decommission {
        addr: String,
        /// Take it back into service instead.
        #[arg(long)]
        cancel: bool,
    },
    /// Show how evenly disk use is spread and what the (automatic) balancer is doing.
    Balance {
        /// Even out while fullest and emptiest differ by more than PCT percentage points.
        #[arg(long, value_name = "PCT")]
        threshold: Option<u32>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show the cluster: chunkservers, capacity, usage, file and chunk counts.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Issue, list and remove client keys (admin only).
    ///
    /// A key is one line; clients take it from $DFS_KEY or --key-file. Read-only keys
    /// may list, stat, get and check; read-write keys (the default) may also change
    /// files; admin keys may also decommission, balance and manage keys.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Mirror LOCAL_DIR into REMOTE_DIR, sending only files that changed (size and
    /// modification time, then content hash); with --watch, keep mirroring.
    ///
    /// Each file is stored whole or not at all; a file that changes while it is read
    /// is not stored. With --watch, a path is sent once it has been quiet for half a
    /// second, so a file still being written is not sent half-done. Removals (with
    /// --delete) go to the trash.
    Sync {
        local: String,
        remote: String,
        /// Keep mirroring edits, creations, renames and deletions as they happen (Ctrl-C stops).
        #[arg(long)]
        watch: bool,
        /// Remove what REMOTE_DIR has and LOCAL_DIR does not (to the trash).
        #[arg(long)]
        delete: bool,
        /// Compare content hashes even when size and time say a file is unchanged.
        #[arg(long)]
        checksum: bool,
        /// Replicas per chunk of the files sent (else `replication` in the config file,
        /// else the cluster's).
        #[arg(long, value_name = "N")]
        replication: Option<u32>,
        /// Files sent at once (else `parallel` in the config file, else 8).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=256))]
        parallel: Option<u32>,
        /// Print what was done as JSON: {"uploaded","deleted","created_dirs","unchanged","bytes","failed"}
        /// (with --watch, one line per step).
        #[arg(long)]
        json: bool,
    },
    /// Mount the cluster at MOUNTPOINT as an ordinary file system (FUSE), so that
    /// any program can use it: cp, rsync, tar, git, editors.
    ///
    /// Runs in the background once mounted (with --foreground it stays attached,
    /// and Ctrl-C unmounts). `dfs umount MOUNTPOINT` unmounts. A file's changes
    /// become visible to other clients when it is closed or fsynced (close-to-open,
    /// as NFS); see docs/mount.md for what is and is not POSIX.
    Mount {
        mountpoint: std::path::PathBuf,
        /// Refuse every change (EROFS).
        #[arg(long)]
        read_only: bool,
        /// Stay attached to the terminal; Ctrl-C or SIGTERM unmounts.
        #[arg(long)]
        foreground: bool,
        /// Seconds the kernel trusts names and attributes before asking again
        /// (0 asks every time; the mount's own changes are seen at once).
        #[arg(long, value_name = "SECS", default_value_t = 1.0)]
        attr_timeout: f64,
        /// Where changes at random offsets wait for close (default: the user's
        /// cache dir, $XDG_CACHE_HOME/dfs/mount or ~/.cache/dfs/mount).
        #[arg(long, value_name = "DIR")]
        cache_dir: Option<std::path::PathBuf>,
        /// Seconds operations wait for an unreachable master (a restart) before
        /// failing with EIO.
        #[arg(long, value_name = "SECS", default_value_t = 60)]
        stall_timeout: u64,
        /// Deleted files go to the cluster's trash (`dfs trash restore`) instead
        /// of being removed.
        #[arg(long)]
        trash: bool,
    },
    /// Measure the cluster: put and get of one large file, many small files,
    /// record append with 1, 4 and 16 appenders, and metadata operations; or, with
    /// `ceiling`, what this machine's disk, loopback and blake3 can do.
    ///
    /// With no workload named, runs them all. With --ceiling-dir, also measures the
    /// ceilings (disk files in DIR) and shows each figure as a ratio to its ceiling.
    /// Everything is written under /.dfs-bench/<id> and removed at the end.
    Bench {
        #[command(subcommand)]
        what: Option<BenchCommand>,
        /// Print one JSON object: {"ceiling","put","get","small","append","meta"},
        /// each present when measured.
        #[arg(long, global = true)]
        json: bool,
        /// Measure the ceilings with files in DIR (on the chunkservers' disk, for a
        /// fair ratio) and add `ratio` to put and get.
        #[arg(long, global = true, value_name = "DIR")]
        ceiling_dir: Option<std::path::PathBuf>,
        /// Bytes each disk writer of the ceiling probe writes (with --ceiling-dir).
        #[arg(long, global = true, default_value = "1GiB", value_parser = parse_size, value_name = "SIZE")]
        ceiling_size: u64,
        /// Measure each workload N times and report the median run, with every
        /// run's figure under `runs`. With --ceiling-dir the ceilings are probed
        /// before each put and get, and `ratio` is the median of each run's figure
        /// over the ceiling measured just before it: a disk whose speed swings
        /// between minutes then moves both sides of each ratio together.
        #[arg(long, global = true, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=20), value_name = "N")]
        runs: u32,
        /// With --ceiling-dir (and for `bench ceiling`): time left idle before each
        /// disk run of the probe, before each put and get held against it, and
        /// before each small-files and append run. On
        /// this project's VMs a put started right after the probe's 10 GiB of
        /// writes ran 14-37% slower than one started after 30 s idle, so without a
        /// rest each measurement also measures the one before it. 0s for none.
        #[arg(long, global = true, default_value = "20s", value_parser = parse_duration, value_name = "DURATION")]
        rest: Duration,
    },
    /// Unmount a dfs mount (as `fusermount3 -u` does); the mount process exits.
    Umount { mountpoint: std::path::PathBuf },
    /// An interactive shell: every verb at a prompt on one connection, a working
    /// directory (cd, pwd, relative paths), help, history and Tab completion.
    ///
    /// When stdin is not a terminal, reads one command per line from it (for
    /// scripts) and exits non-zero if any failed.
    Shell,
    /// Show the client settings in force and where each came from (flag,
    /// environment, config file, default).
    ///
    /// The config file is $XDG_CONFIG_HOME/dfs/config.toml, else
    /// ~/.config/dfs/config.toml. It may set master, key_file, tls_ca, replication
    /// and parallel; flags and environment variables come first.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Make the TLS files of a cluster: a self-signed cluster CA and a server
    /// certificate signed by it.
    Tls {
        #[command(subcommand)]
        command: TlsCommand,
    },
}

/// An octal mode of at most four digits (`644`, `0755`, `1777`).
fn parse_mode(s: &str) -> Result<u32, String> {
    match u32::from_str_radix(s, 8) {
        Ok(m) if m <= 0o7777 && !s.is_empty() && s.len() <= 4 => Ok(m),
        _ => Err(format!("{s:?} is not an octal mode (such as 644 or 0755)")),
    }
}

/// `UID` or `UID:GID`, numeric.
fn parse_owner(s: &str) -> Result<(u32, Option<u32>), String> {
    let bad = || format!("{s:?} is not UID or UID:GID (numbers)");
    match s.split_once(':') {
        Some((u, g)) => Ok((
            u.parse().map_err(|_| bad())?,
            Some(g.parse().map_err(|_| bad())?),
        )),
        None => Ok((s.parse().map_err(|_| bad())?, None)),
    }
}

/// Each `dfs bench` workload's defaults, also what a run of every workload uses.
pub(crate) mod bench_defaults {
    pub(crate) const SMALL_FILES: u64 = 1000;
    pub(crate) const SMALL_SIZE: u64 = 64 << 10;
    pub(crate) const SMALL_CONCURRENCY: u32 = 16;
    pub(crate) const APPEND_RECORD: u64 = 1 << 20;
    /// Enough that one appender's run is not mostly its lease being granted.
    pub(crate) const APPEND_RECORDS: u64 = 64;
    pub(crate) const APPENDERS: [u32; 3] = [1, 4, 16];
    /// Records in flight over all appenders of a run, shared out evenly (at least
    /// one each): two batches' worth of 1 MiB records (a primary writes up to 8 MiB
    /// at once), so the next batch is already there when one is answered. One
    /// appender gave 339–350 MiB/s with 16 and 309–310 with 8; 16 appenders gave
    /// 384 MiB/s with 1 each and 294 with 16 each (docs/benchmarks.md).
    pub(crate) const APPEND_IN_FLIGHT: u32 = 16;

    /// Records each of `appenders` keeps in flight when not set.
    pub(crate) fn append_in_flight(appenders: u32) -> u32 {
        (APPEND_IN_FLIGHT / appenders.max(1)).max(1)
    }
    /// Operations of each kind in `bench meta`. 2,000 took some 80 ms at 25k/s, so
    /// a process's first moments weighed on the first kind: mkdir gave 14.6-15.8k/s
    /// where 20,000 gave 25.4-26.6k/s on the same cluster (docs/benchmarks.md).
    pub(crate) const META_OPS: u64 = 20_000;
    pub(crate) const META_CLIENTS: u32 = 32;
    pub(crate) const META_IN_FLIGHT: u32 = 1;
}

#[derive(Subcommand, Debug, Clone, PartialEq)]
pub(crate) enum BenchCommand {
    /// Store one large file (streamed from memory).
    Put {
        #[arg(long, default_value = "1GiB", value_parser = parse_size, value_name = "SIZE")]
        size: u64,
    },
    /// Store one large file, then read it back into nothing (the get is measured).
    Get {
        #[arg(long, default_value = "1GiB", value_parser = parse_size, value_name = "SIZE")]
        size: u64,
    },
    /// Store and read back many small files, several at once.
    Small {
        #[arg(long, default_value_t = bench_defaults::SMALL_FILES)]
        files: u64,
        #[arg(long, default_value = "64KiB", value_parser = parse_size, value_name = "SIZE")]
        size: u64,
        #[arg(long, default_value_t = bench_defaults::SMALL_CONCURRENCY, value_parser = clap::value_parser!(u32).range(1..=1024))]
        concurrency: u32,
    },
    /// Record appends to one file by 1, 4 and 16 appenders (each its own client).
    Append {
        #[arg(long, default_value = "1MiB", value_parser = parse_size, value_name = "SIZE")]
        record: u64,
        /// Records per appender.
        #[arg(long, default_value_t = bench_defaults::APPEND_RECORDS)]
        records: u64,
        #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
        appenders: Vec<u32>,
        /// Records each appender keeps in flight (they land whole, in any order).
        /// Default: 16 shared out over each run's appenders, at least 1 each (16, 4
        /// and 1 for 1, 4 and 16 appenders).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=64))]
        in_flight: Option<u32>,
    },
    /// mkdir, create, rename and stat, each OPS times, spread over CLIENTS clients.
    Meta {
        #[arg(long, default_value_t = bench_defaults::META_OPS)]
        ops: u64,
        #[arg(long, default_value_t = bench_defaults::META_CLIENTS, value_parser = clap::value_parser!(u32).range(1..=1024))]
        clients: u32,
        /// Operations each client keeps in flight on its one master connection.
        #[arg(long, default_value_t = bench_defaults::META_IN_FLIGHT, value_parser = clap::value_parser!(u32).range(1..=64))]
        in_flight: u32,
    },
    /// Fill a stopped master's data dir with FILES files of one chunk each, under
    /// /bulk, through the master's own namespace code (no chunk bytes are written,
    /// and no chunkserver holds the chunks): for measuring a large master's memory
    /// and restart time. Needs no cluster; the master must not be running.
    Load {
        /// The master's data dir (made if missing).
        #[arg(long, value_name = "DIR")]
        data: std::path::PathBuf,
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
        files: u64,
        /// Files to a directory.
        #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
        per_dir: u64,
        /// Each file's size (one chunk).
        #[arg(long, default_value = "64KiB", value_parser = parse_size, value_name = "SIZE")]
        file_size: u64,
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=16))]
        replication: u32,
    },
    /// Run SERVERS chunkservers in name only against the master: each registers over
    /// the real protocol (with the cluster secret, from $DFS_SECRET or
    /// --secret-file) reporting its share of the chunks `dfs bench load` wrote for
    /// FILES files, then heartbeats until Ctrl-C or --for. They store and serve
    /// nothing: for measuring a large master's memory and CPU.
    Holders {
        #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=10_000))]
        servers: u64,
        /// Files `dfs bench load` wrote.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
        files: u64,
        /// Replicas of each chunk among the holders (at most --servers).
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=16))]
        replication: u64,
        /// The files' size, as `dfs bench load` was given it.
        #[arg(long, default_value = "64KiB", value_parser = parse_size, value_name = "SIZE")]
        file_size: u64,
        #[arg(long, default_value = "1s", value_parser = parse_positive_duration, value_name = "DURATION")]
        heartbeat: Duration,
        /// Stop after this long (default: at Ctrl-C).
        #[arg(long = "for", value_parser = parse_positive_duration, value_name = "DURATION")]
        run_for: Option<Duration>,
        /// File holding the cluster secret (else $DFS_SECRET).
        #[arg(long, value_name = "PATH")]
        secret_file: Option<PathBuf>,
    },
    /// The machine's ceilings: fdatasync writes by one and three writers, a cold
    /// read, loopback TCP through dfs's framing, blake3 on one core; and the put and
    /// get ceilings they give. Needs no cluster.
    Ceiling {
        /// Where the disk files go (on the disk the chunkservers use).
        #[arg(long, default_value = ".", value_name = "DIR")]
        dir: std::path::PathBuf,
        /// Bytes each writer writes.
        #[arg(long, default_value = "1GiB", value_parser = parse_size, value_name = "SIZE")]
        size: u64,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum ConfigCommand {
    /// Print each setting, its value and its source.
    Show {
        /// Print JSON: {"config_file","settings":[{"name","value","source"}]}.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum TlsCommand {
    /// Write ca.pem, ca.key, server.pem and server.key to DIR (never replacing a CA).
    ///
    /// Start servers with `--tls DIR` (copy server.pem, server.key and ca.pem to each
    /// server); give clients ca.pem (`--tls-ca` or $DFS_TLS_CA). The server
    /// certificate names localhost, 127.0.0.1 and ::1, and every --name.
    Init {
        dir: PathBuf,
        /// A host name or IP address servers are dialed at (repeat for each).
        #[arg(long = "name", value_name = "HOST")]
        names: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum KeyCommand {
    /// Issue a key called NAME and print it (one line: keep it secret).
    Create {
        name: String,
        /// The key may only read.
        #[arg(long, conflicts_with = "admin")]
        read_only: bool,
        /// The key may do everything, also manage keys.
        #[arg(long)]
        admin: bool,
    },
    /// List keys: names, roles, creation times (never secrets).
    Ls {
        /// Print JSON: [{"name","role","created"}].
        #[arg(long)]
        json: bool,
    },
    /// Remove key NAME: it stops working at once, also on open connections.
    Rm { name: String },
}

#[derive(Subcommand, Debug)]
pub(crate) enum TrashCommand {
    /// List the trash: original path, size, when removed, when purged.
    Ls {
        /// Print JSON: [{"path","kind","size","deleted_at","expires_at"}].
        #[arg(long)]
        json: bool,
    },
    /// Put the most recently removed entry that was at PATH back there.
    Restore { path: String },
    /// Delete everything in the trash for good, now (admin keys only); prints what
    /// was purged.
    Empty {
        /// Print JSON: {"entries","bytes"}.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug)]
pub(crate) struct MasterArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7070", value_name = "ADDR")]
    pub(crate) listen: SocketAddr,
    /// Directory for the master's metadata.
    #[arg(long, value_name = "DIR")]
    pub(crate) data: PathBuf,
    /// Default replicas per chunk.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub(crate) replication: u32,
    /// Size files are cut into chunks at.
    #[arg(long, default_value = "64MiB", value_parser = parse_size, value_name = "SIZE")]
    pub(crate) chunk_size: u64,
    /// A chunkserver silent this long is dead.
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub(crate) dead_after: Duration,
    /// Address clients should dial, if it differs from --listen (informational for the master).
    #[arg(long, value_name = "ADDR")]
    pub(crate) advertise: Option<String>,
    /// How long removed entries stay in the trash; 0 deletes at once.
    #[arg(long, default_value = "1d", value_parser = parse_duration, value_name = "DURATION")]
    pub(crate) trash_retention: Duration,
    /// After a start, wait up to this long for chunkservers to report before deleting
    /// garbage or copying chunks. While chunkservers are still registering it waits on,
    /// until none has for 10 s, and at most ten times this long.
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    pub(crate) safe_start: Duration,
    /// Balance while disk use of the fullest and emptiest chunkservers differs by more
    /// than this many percentage points.
    #[arg(long, default_value_t = 10, value_name = "PCT")]
    pub(crate) balance_threshold: u32,
    /// Largest record appended atomically (default: a quarter of --chunk-size).
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    pub(crate) max_append: Option<u64>,
    /// How long an append lease lasts unless its primary's heartbeats extend it.
    #[arg(long, default_value = "60s", value_parser = parse_duration, value_name = "DURATION")]
    pub(crate) lease: Duration,
    /// File holding the cluster secret (else $DFS_SECRET, else DIR/cluster.secret, created on first start).
    #[arg(long, value_name = "PATH")]
    pub(crate) secret_file: Option<PathBuf>,
    /// Serve, and dial chunkservers, over TLS with the files `dfs tls init` wrote to DIR.
    #[arg(long, value_name = "DIR")]
    pub(crate) tls: Option<PathBuf>,
    /// A config file (TOML: secret_file, tls); flags and environment come first.
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// How long chunk tokens handed out with locations stay valid.
    #[arg(long, default_value = "1h", value_parser = parse_duration, value_name = "DURATION")]
    pub(crate) token_ttl: Duration,
    /// A chunkserver dead this long is forgotten: no longer listed by `dfs status`.
    #[arg(long, default_value = "1d", value_parser = parse_duration, value_name = "DURATION")]
    pub(crate) forget_dead_after: Duration,
    /// Serve the status page and /metrics on ADDR (HTTP, no authentication: keep it
    /// on loopback or a network you trust with file names and sizes).
    #[arg(long, value_name = "ADDR")]
    pub(crate) http: Option<SocketAddr>,
}

#[derive(Args, Debug)]
pub(crate) struct ChunkserverArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7071", value_name = "ADDR")]
    pub(crate) listen: SocketAddr,
    /// Directory for chunks and this server's identity.
    #[arg(long, value_name = "DIR")]
    pub(crate) data: PathBuf,
    /// Bytes this server may store (default: what it holds plus the disk's free space).
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    pub(crate) capacity: Option<u64>,
    /// Interval between heartbeats to the master.
    #[arg(long, default_value = "1s", value_parser = parse_duration, value_name = "DURATION")]
    pub(crate) heartbeat: Duration,
    /// Interval between full chunk reports to the master (heartbeats in between carry
    /// only what changed): a safety net for any change a heartbeat failed to carry.
    #[arg(long, default_value = "1h", value_parser = parse_duration, value_name = "DURATION")]
    pub(crate) full_report_every: Duration,
    /// Address the master, clients and other chunkservers should dial (default: --listen).
    #[arg(long, value_name = "ADDR")]
    pub(crate) advertise: Option<String>,
    /// Bytes per second the background scrubber may verify; 0 turns it off.
    #[arg(long, default_value = "16MiB", value_parser = parse_size, value_name = "SIZE")]
    pub(crate) scrub_rate: u64,
    /// A chunk untouched this long counts as idle and may be scrubbed.
    #[arg(long, default_value = "60s", value_parser = parse_duration, value_name = "DURATION")]
    pub(crate) scrub_idle: Duration,
    /// Bytes per second that chunk copies (repair, re-replication, balancing) may pull.
    #[arg(long, default_value = "64MiB", value_parser = parse_size, value_name = "SIZE")]
    pub(crate) replication_rate: u64,
    /// Serve, and dial the master and peers, over TLS with the files in DIR.
    #[arg(long, value_name = "DIR")]
    pub(crate) tls: Option<PathBuf>,
    /// A config file (TOML: secret_file, tls); flags and environment come first.
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// File holding the cluster secret (else $DFS_SECRET; the master wrote it to its data dir).
    #[arg(long, value_name = "PATH")]
    pub(crate) secret_file: Option<PathBuf>,
    /// Serve /metrics (Prometheus) on ADDR.
    #[arg(long, value_name = "ADDR")]
    pub(crate) http: Option<SocketAddr>,
    /// Write chunks (new ones and appends) through the page cache instead of with
    /// O_DIRECT (which is used where the file system allows it, and costs far less
    /// CPU per byte).
    #[arg(long)]
    pub(crate) buffered_writes: bool,
    /// New chunks of at most SIZE (such as 256KiB) go into shared pack files, whose
    /// fsyncs concurrent writes share, instead of two files each: small files cost the
    /// disk a fraction as much. 0, the default, packs none, so every chunk keeps a file
    /// of its own named by its handle; at most 16MiB.
    #[arg(long, default_value = "0", value_parser = parse_pack_below, value_name = "SIZE")]
    pub(crate) pack_below: u64,
}

#[derive(Args, Debug)]
pub(crate) struct UpArgs {
    /// Directory for every node's data.
    #[arg(long, default_value = "./dfs-data", value_name = "DIR")]
    pub(crate) data: PathBuf,
    /// Number of chunkservers.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub(crate) chunkservers: usize,
    /// Master address (default: --master); chunkservers take the following ports.
    #[arg(long, value_name = "ADDR")]
    pub(crate) listen: Option<SocketAddr>,
    /// Default replicas per chunk (default: 3, or fewer with fewer chunkservers).
    #[arg(long, value_name = "N")]
    pub(crate) replication: Option<u32>,
    #[arg(long, default_value = "64MiB", value_parser = parse_size, value_name = "SIZE")]
    pub(crate) chunk_size: u64,
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub(crate) dead_after: Duration,
    #[arg(long, default_value = "1s", value_parser = parse_duration, value_name = "DURATION")]
    pub(crate) heartbeat: Duration,
    /// Per-chunkserver capacity (default: the disk's free space).
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    pub(crate) capacity: Option<u64>,
    /// How long removed entries stay in the trash; 0 deletes at once.
    #[arg(long, default_value = "1d", value_parser = parse_duration, value_name = "DURATION")]
    pub(crate) trash_retention: Duration,
    /// After a start, wait up to this long for chunkservers to report before deleting
    /// garbage or copying chunks. While chunkservers are still registering it waits on,
    /// until none has for 10 s, and at most ten times this long.
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    pub(crate) safe_start: Duration,
    /// Every link over TLS: makes a cluster CA in DIR/tls on first use, and stores
    /// the CA where client verbs for this master find it.
    #[arg(long)]
    pub(crate) tls: bool,
    /// Where the master serves the status page and /metrics; chunkservers serve
    /// their /metrics on the ports that follow (port 0: free ports).
    #[arg(
        long,
        default_value = "127.0.0.1:7080",
        value_name = "ADDR",
        conflicts_with = "no_http"
    )]
    pub(crate) http: SocketAddr,
    /// No status page and no /metrics.
    #[arg(long)]
    pub(crate) no_http: bool,
    /// Chunkservers write chunks (new ones and appends) through the page cache
    /// instead of with O_DIRECT.
    #[arg(long)]
    pub(crate) buffered_writes: bool,
    /// Chunkservers put new chunks of at most SIZE (such as 256KiB) into shared pack
    /// files instead of two files each (see `dfs chunkserver --help`); 0, the
    /// default, packs none.
    #[arg(long, default_value = "0", value_parser = parse_pack_below, value_name = "SIZE")]
    pub(crate) pack_below: u64,
}

/// A `--pack-below` size: packed chunks are held in memory until committed, so
/// the store takes none above 16 MiB.
fn parse_pack_below(s: &str) -> Result<u64, String> {
    let n = parse_size(s)?;
    if n > dfs_chunkserver::store::MAX_PACKED {
        return Err(format!(
            "{s} is more than the 16MiB a packed chunk may hold"
        ));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    /// A run of every workload uses the same defaults as each workload named alone.
    #[test]
    fn bench_defaults_match_each_workload_s_flags() {
        let parse = |what: &str| match Cli::try_parse_from(["dfs", "bench", what]) {
            Ok(cli) => match cli.command {
                Command::Bench { what: Some(w), .. } => w,
                other => panic!("parsed as {other:?}"),
            },
            Err(e) => panic!("{e}"),
        };
        use bench_defaults as D;
        assert_eq!(
            parse("small"),
            BenchCommand::Small {
                files: D::SMALL_FILES,
                size: D::SMALL_SIZE,
                concurrency: D::SMALL_CONCURRENCY,
            }
        );
        assert_eq!(
            parse("append"),
            BenchCommand::Append {
                record: D::APPEND_RECORD,
                records: D::APPEND_RECORDS,
                appenders: D::APPENDERS.to_vec(),
                in_flight: None,
            }
        );
        assert_eq!(
            parse("meta"),
            BenchCommand::Meta {
                ops: D::META_OPS,
                clients: D::META_CLIENTS,
                in_flight: D::META_IN_FLIGHT,
            }
        );
    }
}
