//! `dfs`: the one binary — servers, a local cluster, and the client verbs.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use dfs_cli::cluster::{ClusterOptions, LocalCluster};
use dfs_cli::credentials;
use dfs_cli::output;
use dfs_cli::progress::{bar, Metered};
use dfs_cli::units::{parse_duration, parse_size};
use dfs_client::{
    AppendOptions, Client, ClientError, DirEntry, ErrorCode, FileKind, PutOptions, Role,
};
use dfs_protocol::{CodecError, ProtocolError};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

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
struct Cli {
    /// Address of the master, for client verbs and chunkservers.
    #[arg(
        long,
        global = true,
        env = "DFS_MASTER",
        default_value = "127.0.0.1:7070",
        value_name = "ADDR"
    )]
    master: String,
    /// A key file from `dfs key create`, for client verbs (else $DFS_KEY, else
    /// $DFS_SECRET, else key_file in the config file, else the key `dfs up` stored for
    /// this master).
    #[arg(long, global = true, value_name = "PATH")]
    key_file: Option<PathBuf>,
    /// Talk to the cluster over TLS, trusting the cluster CA in PATH (else the CA
    /// `dfs up --tls` stored for this master, if any).
    #[arg(long, global = true, env = "DFS_TLS_CA", value_name = "PATH")]
    tls_ca: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a master: the namespace and the chunk map.
    Master(MasterArgs),
    /// Run a chunkserver that stores chunks for the master at --master.
    Chunkserver(ChunkserverArgs),
    /// Run a whole local cluster (a master and chunkservers) in this process; Ctrl-C stops it.
    Up(UpArgs),
    /// Store LOCAL (a file, or '-' for stdin) at REMOTE; visible only once complete.
    Put {
        local: String,
        /// Remote path; a trailing '/' or an existing directory keeps LOCAL's file name.
        remote: String,
        /// Replicas per chunk (the cluster's default if not given).
        #[arg(long, value_name = "N")]
        replication: Option<u32>,
        /// Replace REMOTE if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Fetch REMOTE into LOCAL (a file or directory, or '-' for stdout).
    Get { remote: String, local: String },
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
    Ls {
        /// Long format: kind, size, modification time.
        #[arg(short = 'l')]
        long: bool,
        /// List subdirectories recursively.
        #[arg(short = 'R')]
        recursive: bool,
        path: Option<String>,
        /// Print JSON: [{"name","kind","size"}].
        #[arg(long)]
        json: bool,
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
    /// Move or rename SRC to DST atomically (into DST if it is a directory).
    Mv { src: String, dst: String },
    /// List or restore what rm moved to the trash.
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
    /// Make the TLS files of a cluster: a self-signed cluster CA and a server
    /// certificate signed by it.
    Tls {
        #[command(subcommand)]
        command: TlsCommand,
    },
}

#[derive(Subcommand, Debug)]
enum TlsCommand {
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
enum KeyCommand {
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
enum TrashCommand {
    /// List the trash: original path, size, when removed, when purged.
    Ls {
        /// Print JSON: [{"path","kind","size","deleted_at","expires_at"}].
        #[arg(long)]
        json: bool,
    },
    /// Put the most recently removed entry that was at PATH back there.
    Restore { path: String },
}

#[derive(Args, Debug)]
struct MasterArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7070", value_name = "ADDR")]
    listen: SocketAddr,
    /// Directory for the master's metadata.
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// Default replicas per chunk.
    #[arg(long, default_value_t = 3, value_name = "N")]
    replication: u32,
    /// Size files are cut into chunks at.
    #[arg(long, default_value = "64MiB", value_parser = parse_size, value_name = "SIZE")]
    chunk_size: u64,
    /// A chunkserver silent this long is dead.
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    dead_after: Duration,
    /// Address clients should dial, if it differs from --listen (informational for the master).
    #[arg(long, value_name = "ADDR")]
    advertise: Option<String>,
    /// How long removed entries stay in the trash; 0 deletes at once.
    #[arg(long, default_value = "1d", value_parser = parse_duration, value_name = "DURATION")]
    trash_retention: Duration,
    /// After a start, wait up to this long for chunkservers to report before deleting garbage.
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    safe_start: Duration,
    /// Balance while disk use of the fullest and emptiest chunkservers differs by more
    /// than this many percentage points.
    #[arg(long, default_value_t = 10, value_name = "PCT")]
    balance_threshold: u32,
    /// Largest record appended atomically (default: a quarter of --chunk-size).
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    max_append: Option<u64>,
    /// How long an append lease lasts unless its primary's heartbeats extend it.
    #[arg(long, default_value = "60s", value_parser = parse_duration, value_name = "DURATION")]
    lease: Duration,
    /// File holding the cluster secret (else $DFS_SECRET, else DIR/cluster.secret, created on first start).
    #[arg(long, value_name = "PATH")]
    secret_file: Option<PathBuf>,
    /// Serve, and dial chunkservers, over TLS with the files `dfs tls init` wrote to DIR.
    #[arg(long, value_name = "DIR")]
    tls: Option<PathBuf>,
    /// A config file (TOML: secret_file, tls); flags and environment come first.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// How long chunk tokens handed out with locations stay valid.
    #[arg(long, default_value = "1h", value_parser = parse_duration, value_name = "DURATION")]
    token_ttl: Duration,
    /// A chunkserver dead this long is forgotten: no longer listed by `dfs status`.
    #[arg(long, default_value = "1d", value_parser = parse_duration, value_name = "DURATION")]
    forget_dead_after: Duration,
}

#[derive(Args, Debug)]
struct ChunkserverArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7071", value_name = "ADDR")]
    listen: SocketAddr,
    /// Directory for chunks and this server's identity.
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// Bytes this server may store (default: what it holds plus the disk's free space).
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    capacity: Option<u64>,
    /// Interval between heartbeats to the master.
    #[arg(long, default_value = "1s", value_parser = parse_duration, value_name = "DURATION")]
    heartbeat: Duration,
    /// Address the master, clients and other chunkservers should dial (default: --listen).
    #[arg(long, value_name = "ADDR")]
    advertise: Option<String>,
    /// Bytes per second the background scrubber may verify; 0 turns it off.
    #[arg(long, default_value = "16MiB", value_parser = parse_size, value_name = "SIZE")]
    scrub_rate: u64,
    /// A chunk untouched this long counts as idle and may be scrubbed.
    #[arg(long, default_value = "60s", value_parser = parse_duration, value_name = "DURATION")]
    scrub_idle: Duration,
    /// Bytes per second that chunk copies (repair, re-replication, balancing) may pull.
    #[arg(long, default_value = "64MiB", value_parser = parse_size, value_name = "SIZE")]
    replication_rate: u64,
    /// Serve, and dial the master and peers, over TLS with the files in DIR.
    #[arg(long, value_name = "DIR")]
    tls: Option<PathBuf>,
    /// A config file (TOML: secret_file, tls); flags and environment come first.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// File holding the cluster secret (else $DFS_SECRET; the master wrote it to its data dir).
    #[arg(long, value_name = "PATH")]
    secret_file: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct UpArgs {
    /// Directory for every node's data.
    #[arg(long, default_value = "./dfs-data", value_name = "DIR")]
    data: PathBuf,
    /// Number of chunkservers.
    #[arg(long, default_value_t = 3, value_name = "N")]
    chunkservers: usize,
    /// Master address (default: --master); chunkservers take the following ports.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Default replicas per chunk (default: 3, or fewer with fewer chunkservers).
    #[arg(long, value_name = "N")]
    replication: Option<u32>,
    #[arg(long, default_value = "64MiB", value_parser = parse_size, value_name = "SIZE")]
    chunk_size: u64,
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    dead_after: Duration,
    #[arg(long, default_value = "1s", value_parser = parse_duration, value_name = "DURATION")]
    heartbeat: Duration,
    /// Per-chunkserver capacity (default: the disk's free space).
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    capacity: Option<u64>,
    /// How long removed entries stay in the trash; 0 deletes at once.
    #[arg(long, default_value = "1d", value_parser = parse_duration, value_name = "DURATION")]
    trash_retention: Duration,
    /// After a start, wait up to this long for chunkservers to report before deleting garbage.
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    safe_start: Duration,
    /// Every link over TLS: makes a cluster CA in DIR/tls on first use, and stores
    /// the CA where client verbs for this master find it.
    #[arg(long)]
    tls: bool,
}

/// Exit status of a process killed by SIGPIPE, which is how `dfs cat | head` should end.
const BROKEN_PIPE_EXIT: u8 = 141;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let server = matches!(
        cli.command,
        Command::Master(_) | Command::Chunkserver(_) | Command::Up(_)
    );
    init_tracing(if server { "info" } else { "warn" });
    if server {
        raise_open_file_limit();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dfs: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let master = cli.master.clone();
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => ExitCode::from(BROKEN_PIPE_EXIT),
        Err(e) => {
            eprintln!("dfs: {}", explain(&e, &master));
            ExitCode::FAILURE
        }
    }
}

/// Servers hold a socket per client and peer: take every file descriptor the hard
/// limit allows rather than the (often 1024) soft default.
fn raise_open_file_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::debug!(error = %e, "could not raise the open file limit");
        }
    }
}

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// One line for the user: the error, with advice where we can give it.
fn explain(e: &anyhow::Error, master: &str) -> String {
    if let Some(ClientError::Peer { addr, source }) = e.downcast_ref::<ClientError>() {
        if addr == master {
            if let ProtocolError::Codec(CodecError::Io(io)) = source {
                if io.kind() == std::io::ErrorKind::ConnectionRefused {
                    return format!(
                        "cannot reach the master at {master}: connection refused (is a cluster running? `dfs up` starts one)"
                    );
                }
            }
        }
    }
    e.chain()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(": ")
}

/// Resolves when the process is asked to stop (Ctrl-C or SIGTERM).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Binds `addr`, runs the server built by `start` on it, and on Ctrl-C or SIGTERM
/// cancels it and waits for its clean stop.
async fn serve<F, Fut>(addr: SocketAddr, start: F) -> anyhow::Result<()>
where
    F: FnOnce(tokio::net::TcpListener, CancellationToken) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let token = CancellationToken::new();
    let server = start(listener, token.clone());
    tokio::pin!(server);
    tokio::select! {
        r = &mut server => return r,
        _ = shutdown_signal() => {
            tracing::info!("stopping");
            token.cancel();
        }
    }
    server.await
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Master(a) => {
            let mut config = dfs_master::MasterConfig::new(&a.data);
            config.replication = a.replication;
            config.chunk_size = a.chunk_size;
            config.dead_after = a.dead_after;
            config.trash_retention = a.trash_retention;
            config.safe_start = a.safe_start;
            config.balance_threshold = f64::from(a.balance_threshold) / 100.0;
            config.max_append = a.max_append;
            config.lease = a.lease;
            config.token_ttl = a.token_ttl;
            config.forget_dead_after = a.forget_dead_after;
            let file = match &a.config {
                Some(p) => dfs_cli::config::read(p)?,
                None => Default::default(),
            };
            if let Some(dir) = a.tls.as_ref().or(file.tls.as_ref()) {
                config.tls = Some(dfs_cli::tls::load_server(dir)?);
            }
            config.secret = credentials::server_secret(a.secret_file.as_deref(), &file)?;
            config.validate()?;
            if let Some(adv) = &a.advertise {
                tracing::info!(advertise = %adv, "clients should dial the advertised address");
            }
            serve(a.listen, |listener, token| async move {
                Ok(dfs_master::run(config, listener, token).await?)
            })
            .await
        }
        Command::Chunkserver(a) => {
            let file = match &a.config {
                Some(p) => dfs_cli::config::read(p)?,
                None => Default::default(),
            };
            let secret = credentials::server_secret(a.secret_file.as_deref(), &file)?
                .with_context(|| {
                    "no cluster secret: pass --secret-file or set $DFS_SECRET \
                 (the master wrote it to cluster.secret in its data dir)"
                })?;
            let mut config =
                dfs_chunkserver::ChunkserverConfig::new(&a.data, cli.master.clone(), secret);
            config.capacity = a.capacity;
            config.heartbeat = a.heartbeat;
            config.advertise = a.advertise;
            config.scrub_rate = a.scrub_rate;
            config.scrub_idle = a.scrub_idle;
            config.replication_rate = a.replication_rate;
            if let Some(dir) = a.tls.as_ref().or(file.tls.as_ref()) {
                config.tls = Some(dfs_cli::tls::load_server(dir)?);
            }
            config.validate()?;
            serve(a.listen, |listener, token| async move {
                Ok(dfs_chunkserver::run(config, listener, token).await?)
            })
            .await
        }
        Command::Up(a) => up(a, &cli.master).await,
        Command::Tls {
            command: TlsCommand::Init { dir, names },
        } => {
            dfs_cli::tls::init(&dir, &names)?;
            print_text(&format!(
                "cluster CA and server certificate in {}: start servers with --tls {}, give clients {}\n",
                dir.display(),
                dir.display(),
                dir.join(dfs_cli::tls::CA_CERT).display()
            ))
        }
        command => {
            let file = dfs_cli::config::client()?;
            let mut identity =
                credentials::client_identity(cli.key_file.as_deref(), &file, &cli.master)?;
            let ca = cli
                .tls_ca
                .clone()
                .or(file.tls_ca.clone())
                .or_else(|| dfs_cli::tls::default_ca_path(&cli.master).filter(|p| p.exists()));
            if let Some(ca) = ca {
                identity = identity.with_tls(dfs_cli::tls::load_client(&ca)?);
            }
            verb(&Client::new(cli.master.clone(), identity), command).await
        }
    }
}

/// Runs a client verb.
async fn verb(client: &Client, command: Command) -> anyhow::Result<()> {
    let client = client.clone();
    match command {
        Command::Master(_) | Command::Chunkserver(_) | Command::Up(_) | Command::Tls { .. } => {
            bail!("not a client verb")
        }
        Command::Key { command } => key(&client, command).await,
        Command::Put {
            local,
            remote,
            replication,
            force,
        } => put(&client, &local, &remote, replication, force).await,
        Command::Get { remote, local } => get(&client, &remote, &local).await,
        Command::Cat { remote } => {
            let stdout = tokio::io::stdout();
            client.get(&remote, stdout).await?;
            Ok(())
        }
        Command::Append {
            local,
            remote,
            replication,
        } => append(&client, &local, &remote, replication).await,
        Command::Tail {
            remote,
            follow,
            bytes,
            interval,
        } => tail(&client, &remote, follow, bytes, interval).await,
        Command::Ls {
            long,
            recursive,
            path,
            json,
        } => {
            ls(
                &client,
                path.as_deref().unwrap_or("/"),
                long,
                recursive,
                json,
            )
            .await
        }
        Command::Mkdir { parents, path } => Ok(client.mkdir(&path, parents).await?),
        Command::Rm {
            recursive,
            skip_trash,
            path,
        } => Ok(client.remove(&path, recursive, skip_trash).await?),
        Command::Mv { src, dst } => Ok(client.rename(&src, &dst).await?),
        Command::Trash {
            command: TrashCommand::Ls { json },
        } => {
            let entries = client.trash_list().await?;
            if json {
                print_json(&output::trash_json(&entries))
            } else {
                print_text(&output::trash_plain(&entries))
            }
        }
        Command::Trash {
            command: TrashCommand::Restore { path },
        } => Ok(client.trash_restore(&path).await?),
        Command::Stat { path, json } => {
            let stat = client.stat(&path).await?;
            if json {
                print_json(&output::stat_json(&stat))
            } else {
                print_text(&output::stat_plain(&stat))
            }
        }
        Command::Fsck { path, json } => {
            let report = client.fsck(path.as_deref().unwrap_or("/")).await?;
            if json {
                print_json(&output::fsck_json(&report))?;
            } else {
                print_text(&output::fsck_plain(&report))?;
            }
            if report.healthy() {
                Ok(())
            } else {
                bail!(
                    "{}: unhealthy ({} missing, {} under-replicated, {} corrupt, {} stale chunks)",
                    report.path,
                    report.missing,
                    report.under_replicated,
                    report.corrupt,
                    report.stale
                )
            }
        }
        Command::Setrep {
            wait,
            replication,
            path,
        } => {
            client.set_replication(&path, replication).await?;
            if wait {
                // Until no chunk below PATH has too few or too many live replicas.
                loop {
                    let r = client.fsck(&path).await?;
                    if r.missing > 0 {
                        bail!(
                            "{path}: {} chunks have no live replica; not waiting",
                            r.missing
                        );
                    }
                    if r.under_replicated == 0 && r.over_replicated == 0 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            Ok(())
        }
        Command::Decommission { addr, cancel } => Ok(client.decommission(&addr, !cancel).await?),
        Command::Balance { threshold, json } => {
            let report = client.balance(threshold).await?;
            if json {
                print_json(&output::balance_json(&report))
            } else {
                print_text(&output::balance_plain(&report))
            }
        }
        Command::Status { json } => {
            let status = client.status().await?;
            if json {
                print_json(&output::status_json(&status))
            } else {
                print_text(&output::status_plain(&status))
            }
        }
    }
}

async fn key(client: &Client, command: KeyCommand) -> anyhow::Result<()> {
    match command {
        KeyCommand::Create {
            name,
            read_only,
            admin,
        } => {
            let role = match (read_only, admin) {
                (true, _) => Role::ReadOnly,
                (_, true) => Role::Admin,
                _ => Role::ReadWrite,
            };
            let key = client.create_key(&name, role).await?;
            print_text(&format!("{}\n", key.encode()))
        }
        KeyCommand::Ls { json } => {
            let keys = client.list_keys().await?;
            if json {
                print_json(&output::keys_json(&keys))
            } else {
                print_text(&output::keys_plain(&keys))
            }
        }
        KeyCommand::Rm { name } => Ok(client.remove_key(&name).await?),
    }
}

fn print_json(value: &serde_json::Value) -> anyhow::Result<()> {
    print_text(&format!("{}\n", serde_json::to_string_pretty(value)?))
}

fn print_text(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

async fn up(a: UpArgs, master: &str) -> anyhow::Result<()> {
    let listen = match a.listen {
        Some(addr) => addr,
        None => master.parse().with_context(|| {
            format!("--master {master} is not an IP:port to listen on; pass --listen")
        })?,
    };
    if a.chunkservers == 0 {
        bail!("--chunkservers must be at least 1");
    }
    let replication = a
        .replication
        .unwrap_or_else(|| u32::try_from(a.chunkservers.min(3)).unwrap_or(3));
    let options = ClusterOptions {
        data_dir: a.data.clone(),
        master_addr: listen,
        chunkserver_base_port: if listen.port() == 0 {
            0
        } else {
            listen.port().saturating_add(1)
        },
        chunkservers: a.chunkservers,
        replication,
        chunk_size: a.chunk_size,
        dead_after: a.dead_after,
        heartbeat: a.heartbeat,
        capacity: a.capacity,
        trash_retention: a.trash_retention,
        safe_start: a.safe_start,
        scrub_rate: 16 << 20,
        scrub_idle: Duration::from_secs(60),
        max_append: None,
        lease: Duration::from_secs(60),
        forget_dead_after: Duration::from_secs(24 * 3600),
        tls: None,
        sync_gate: None,
        clock: None,
    };
    let mut options = options;
    if a.tls {
        let dir = a.data.join("tls");
        if !dir.join(dfs_cli::tls::CA_CERT).exists() {
            dfs_cli::tls::init(&dir, &[listen.ip().to_string()])?;
        }
        options.tls = Some(dir);
    }
    let cluster = LocalCluster::start(options).await?;
    let key_path = up_admin_key(&cluster, &a.data).await?;
    if !a.tls {
        // A CA left by an earlier `dfs up --tls` on this address would make client
        // verbs try TLS against this plain cluster.
        if let Some(stale) = dfs_cli::tls::default_ca_path(&cluster.master_addr().to_string()) {
            let _ = std::fs::remove_file(stale);
        }
    }
    if a.tls {
        let ca = a.data.join("tls").join(dfs_cli::tls::CA_CERT);
        let stored = dfs_cli::tls::default_ca_path(&cluster.master_addr().to_string())
            .context("neither $XDG_CONFIG_HOME nor $HOME is set: cannot store the CA")?;
        let pem = std::fs::read_to_string(&ca).with_context(|| format!("read {}", ca.display()))?;
        credentials::write_private(&stored, pem.trim_end())?;
    }
    let addrs: Vec<String> = cluster
        .chunkserver_addrs()
        .iter()
        .map(ToString::to_string)
        .collect();
    eprintln!(
        "dfs up: master on {}, {} chunkservers on {}, replication {}, data in {}\n\
         dfs up: admin key in {} (client verbs on this machine find it with no flags)\n\
         dfs up: try `dfs put FILE /FILE` from another terminal; Ctrl-C stops the cluster",
        cluster.master_addr(),
        addrs.len(),
        addrs.join(", "),
        replication,
        a.data.display(),
        key_path.display()
    );
    shutdown_signal().await;
    eprintln!("dfs up: stopping");
    cluster.shutdown().await
}

/// Makes sure the local cluster has an admin key called `admin`, kept in the data
/// dir and where client verbs for this master look by default; returns that path.
async fn up_admin_key(cluster: &LocalCluster, data: &Path) -> anyhow::Result<PathBuf> {
    const NAME: &str = "admin";
    let admin = cluster.client();
    let kept = data.join("admin.key");
    let existing = credentials::read_key_file(&kept).ok();
    let listed = admin.list_keys().await?;
    let key = match existing {
        Some(k) if k.name == NAME && listed.iter().any(|i| i.name == NAME) => k,
        _ => {
            if listed.iter().any(|i| i.name == NAME) {
                admin.remove_key(NAME).await?;
            }
            let k = admin.create_key(NAME, Role::Admin).await?;
            credentials::write_private(&kept, &k.encode())?;
            k
        }
    };
    let master = cluster.master_addr().to_string();
    let path = credentials::default_key_path(&master)
        .context("neither $XDG_CONFIG_HOME nor $HOME is set: cannot store the admin key")?;
    credentials::write_private(&path, &key.encode())?;
    Ok(path)
}

fn base_name(path: &str) -> Option<&str> {
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|n| !n.is_empty())
}

async fn put(
    client: &Client,
    local: &str,
    remote: &str,
    replication: Option<u32>,
    force: bool,
) -> anyhow::Result<()> {
    let into_dir = remote.ends_with('/')
        || matches!(client.stat(remote).await, Ok(s) if s.kind == FileKind::Dir);
    let remote = if into_dir {
        let name = Path::new(local)
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|_| local != "-")
            .with_context(|| format!("{remote}: is a directory; name the remote file"))?;
        format!("{}/{}", remote.trim_end_matches('/'), name)
    } else {
        remote.to_string()
    };
    let options = PutOptions {
        replication,
        overwrite: force,
    };
    let (input, progress, opened) = local_input(local).await?;
    let result = match opened {
        None => client.put(&remote, input, options).await,
        Some(before) => {
            // A file that changes while it is read fails the put before its commit.
            let input = dfs_cli::unchanged::Unchanged::new(input, PathBuf::from(local), &before);
            client.put(&remote, input, options).await
        }
    };
    progress.finish_and_clear();
    result?;
    Ok(())
}

/// LOCAL ('-' for stdin) as an input metered by a progress bar (sized for a file).
/// For a file, also its metadata as opened.
async fn local_input(
    local: &str,
) -> anyhow::Result<(
    Metered<Box<dyn tokio::io::AsyncRead + Unpin + Send>>,
    indicatif::ProgressBar,
    Option<std::fs::Metadata>,
)> {
    if local == "-" {
        let progress = bar(None, false);
        return Ok((
            Metered::new(Box::new(tokio::io::stdin()), progress.clone()),
            progress,
            None,
        ));
    }
    let file = tokio::fs::File::open(local)
        .await
        .with_context(|| format!("{local}: cannot open"))?;
    let meta = file
        .metadata()
        .await
        .with_context(|| format!("{local}: cannot stat"))?;
    if meta.is_dir() {
        bail!("{local}: is a directory");
    }
    let progress = bar(Some(meta.len()), false);
    Ok((
        Metered::new(Box::new(file), progress.clone()),
        progress,
        Some(meta),
    ))
}

async fn append(
    client: &Client,
    local: &str,
    remote: &str,
    replication: Option<u32>,
) -> anyhow::Result<()> {
    let options = AppendOptions {
        create: true,
        replication,
    };
    let (input, progress, _) = local_input(local).await?;
    let result = client.append(remote, input, options).await;
    progress.finish_and_clear();
    result?;
    Ok(())
}

/// The last `bytes` of `remote`, then (with `follow`) whatever is appended, polling
/// its length every `interval`.
async fn tail(
    client: &Client,
    remote: &str,
    follow: bool,
    bytes: u64,
    interval: Duration,
) -> anyhow::Result<()> {
    let mut out = tokio::io::stdout();
    let stat = client.stat(remote).await?;
    if stat.kind == FileKind::Dir {
        return Err(ClientError::Remote(ErrorCode::IsADirectory { path: stat.path }).into());
    }
    let mut at = stat.size.saturating_sub(bytes);
    at += client.get_from(remote, at, &mut out).await?;
    if !follow {
        return Ok(());
    }
    loop {
        tokio::select! {
            _ = shutdown_signal() => return Ok(()),
            _ = tokio::time::sleep(interval) => {}
        }
        let size = client.stat(remote).await?.size;
        if size > at {
            at += client.get_from(remote, at, &mut out).await?;
        } else if size < at {
            eprintln!("dfs: {remote}: file shrank (replaced?); following from its end");
            at = size;
        }
    }
}

async fn get(client: &Client, remote: &str, local: &str) -> anyhow::Result<()> {
    if local == "-" {
        client.get(remote, tokio::io::stdout()).await?;
        return Ok(());
    }
    let stat = client.stat(remote).await?;
    if stat.kind == FileKind::Dir {
        return Err(ClientError::Remote(ErrorCode::IsADirectory { path: stat.path }).into());
    }
    let mut target = PathBuf::from(local);
    if target.is_dir() {
        target.push(base_name(&stat.path).context("cannot name the local file")?);
    }
    // Written beside the target and renamed at the end: never a half-written file at
    // `target`. The temp name is unguessable and created exclusively (O_EXCL: never
    // through a symlink someone planted), fsynced before the rename, and removed on
    // any failure, Ctrl-C and SIGTERM included.
    let file_name = target
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{local}: not a file name"))?;
    let tmp = target.with_file_name(format!(
        ".{file_name}.dfs-partial-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .await
        .with_context(|| format!("{}: cannot create", tmp.display()))?;
    let progress = bar(Some(stat.size), false);
    let mut writer = Metered::new(
        tokio::io::BufWriter::with_capacity(1 << 20, file),
        progress.clone(),
    );
    let transfer = async {
        client.get(remote, &mut writer).await?;
        writer.flush().await.context("writing the local file")?;
        writer
            .get_mut()
            .get_mut()
            .sync_all()
            .await
            .context("syncing the local file")?;
        tokio::fs::rename(&tmp, &target)
            .await
            .with_context(|| format!("{}: cannot write", target.display()))?;
        if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
            // The rename itself durable too; a failure here loses nothing already there.
            if let Ok(d) = tokio::fs::File::open(dir).await {
                let _ = d.sync_all().await;
            }
        }
        Ok::<(), anyhow::Error>(())
    };
    let result = tokio::select! {
        r = transfer => r,
        _ = shutdown_signal() => Err(anyhow::anyhow!("interrupted")),
    };
    progress.finish_and_clear();
    if result.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    result
}

/// Entries asked for per page: `ls` prints each page as it comes, so memory stays
/// bounded however large the directory.
const LS_PAGE: u32 = 5_000;

async fn ls(
    client: &Client,
    path: &str,
    long: bool,
    recursive: bool,
    json: bool,
) -> anyhow::Result<()> {
    let mut array = output::JsonArray::default();
    // Depth-first like `ls -R`; an explicit stack keeps deep trees off the call stack.
    let root = path.trim_end_matches('/').to_string();
    let mut stack = vec![String::new()];
    let mut first_dir = true;
    while let Some(rel) = stack.pop() {
        let shown = if rel.is_empty() {
            path.to_string()
        } else {
            format!("{root}/{rel}")
        };
        if recursive && !json {
            let gap = if first_dir { "" } else { "\n" };
            print_text(&format!("{gap}{shown}:\n"))?;
        }
        first_dir = false;
        let mut subdirs = Vec::new();
        let mut after = None;
        loop {
            let (page, next) = client.list_page(&shown, after, LS_PAGE).await?;
            let page: Vec<DirEntry> = page
                .into_iter()
                .map(|e| {
                    if recursive && e.kind == FileKind::Dir {
                        subdirs.push(join_rel(&rel, &e.name));
                    }
                    if recursive && json {
                        DirEntry {
                            name: join_rel(&rel, &e.name),
                            ..e
                        }
                    } else {
                        e
                    }
                })
                .collect();
            if json {
                print_text(&array.items(&output::ls_json(&page))?)?;
            } else {
                print_text(&output::ls_plain(&page, long))?;
            }
            match next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        for sub in subdirs.into_iter().rev() {
            stack.push(sub);
        }
    }
    if json {
        print_text(&array.end())?;
    }
    Ok(())
}

fn join_rel(rel: &str, name: &str) -> String {
    if rel.is_empty() {
        name.to_string()
    } else {
        format!("{rel}/{name}")
    }
}
