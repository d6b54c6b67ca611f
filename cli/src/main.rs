//! `dfs`: the one binary — servers, a local cluster, and the client verbs.
//!
//! `args` is the command line, `cmd` the verbs' bodies; this file starts the runtime,
//! dispatches, and turns errors into one line for the user.

mod args;
mod cmd;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches};
use dfs_cli::credentials;
use dfs_cli::output;
use dfs_client::{Client, ClientError, ClientOptions};
use dfs_protocol::{CodecError, ProtocolError};

use args::{BenchCommand, Cli, Command, ConfigCommand, TlsCommand, TrashCommand};
use cmd::{print_json, print_text};
use dfs_cli::settings::{self, Source};

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    dfs_cli::progress::set_quiet(cli.quiet);
    let master_flag = match (matches.value_source("master"), &cli.master) {
        (Some(ValueSource::CommandLine), Some(m)) => Some(("--master", m.clone())),
        (Some(ValueSource::EnvVariable), Some(m)) => Some(("DFS_MASTER", m.clone())),
        _ => None,
    };
    let server = matches!(
        cli.command,
        Command::Master(_) | Command::Chunkserver(_) | Command::Up(_)
    );
    init_tracing(if server { "info" } else { "warn" });
    if server {
        cmd::server::raise_open_file_limit();
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
    let master = master_flag
        .as_ref()
        .map_or(settings::DEFAULT_MASTER.to_string(), |(_, m)| m.clone());
    match runtime.block_on(run(cli, master_flag)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => ExitCode::from(BROKEN_PIPE_EXIT),
        Err(e) => {
            eprintln!("dfs: {}", explain(&e, &master));
            ExitCode::FAILURE
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
pub(crate) fn explain(e: &anyhow::Error, master: &str) -> String {
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

/// Exit status of a process killed by SIGPIPE, which is how `dfs cat | head` should end.
const BROKEN_PIPE_EXIT: u8 = 141;

/// The client side's settings: the config file and where the master came from.
#[derive(Clone, Debug)]
pub(crate) struct Context {
    pub(crate) file: dfs_cli::config::Config,
    pub(crate) file_path: Option<std::path::PathBuf>,
    pub(crate) master: String,
    pub(crate) master_source: Source,
}

impl Context {
    /// Files moved at once: the flag, else the config file, else the default.
    pub(crate) fn parallel(&self, flag: Option<u32>) -> usize {
        flag.or(self.file.parallel)
            .unwrap_or(settings::DEFAULT_PARALLEL) as usize
    }

    /// Replicas of new files: the flag, else the config file, else the cluster's.
    pub(crate) fn replication(&self, flag: Option<u32>) -> Option<u32> {
        flag.or(self.file.replication)
    }
}

/// `master_flag`: the master from `--master` or `$DFS_MASTER` (which one), if given.
async fn run(cli: Cli, master_flag: Option<(&'static str, String)>) -> anyhow::Result<()> {
    // Servers take the master from the flag or the environment only.
    let server_master = master_flag
        .as_ref()
        .map_or(settings::DEFAULT_MASTER.to_string(), |(_, m)| m.clone());
    match cli.command {
        Command::Master(a) => cmd::server::master(a).await,
        Command::Chunkserver(a) => cmd::server::chunkserver(a, &server_master).await,
        Command::Up(a) => cmd::server::up(a, &server_master).await,
        // Needs no cluster: only the local mount table.
        Command::Umount { mountpoint } => cmd::mount::umount(&mountpoint),
        // Needs no cluster: the machine alone.
        Command::Bench {
            what: Some(BenchCommand::Ceiling { dir, size }),
            json,
            rest,
            ..
        } => cmd::bench::ceiling_only(&dir, size, rest, json).await,
        // Speaks to the master as chunkservers do, with the cluster secret.
        Command::Bench {
            what:
                Some(BenchCommand::Holders {
                    servers,
                    files,
                    replication,
                    file_size,
                    heartbeat,
                    run_for,
                    secret_file,
                }),
            ..
        } => {
            cmd::bench::holders(
                &server_master,
                secret_file.as_deref(),
                (servers, files, replication, file_size),
                heartbeat,
                run_for,
            )
            .await
        }
        // Needs no cluster: a stopped master's data dir.
        Command::Bench {
            what:
                Some(BenchCommand::Load {
                    data,
                    files,
                    per_dir,
                    file_size,
                    replication,
                }),
            json,
            ..
        } => cmd::bench::load(data, files, per_dir, file_size, replication, json).await,
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
            let file_path = dfs_cli::config::client_path().filter(|p| p.exists());
            let file = dfs_cli::config::client()?;
            let (master, master_source) = match master_flag {
                Some((flag, m)) if flag.starts_with("--") => (m, Source::Flag("--master")),
                Some((_, m)) => (m, Source::Env("DFS_MASTER")),
                None => match (&file.master, &file_path) {
                    (Some(m), Some(p)) => (m.clone(), Source::File(p.clone())),
                    _ => (settings::DEFAULT_MASTER.to_string(), Source::Default),
                },
            };
            let ctx = Context {
                file,
                file_path,
                master,
                master_source,
            };
            if let Command::Config {
                command: ConfigCommand::Show { json },
            } = command
            {
                return cmd::config::show(
                    &ctx,
                    cli.key_file.as_deref(),
                    cli.tls_ca.as_deref(),
                    json,
                );
            }
            let master = ctx.master.clone();
            let mut identity =
                credentials::client_identity(cli.key_file.as_deref(), &ctx.file, &master)?;
            let ca = cli
                .tls_ca
                .clone()
                .or(ctx.file.tls_ca.clone())
                .or_else(|| dfs_cli::tls::default_ca_path(&master).filter(|p| p.exists()));
            if let Some(ca) = ca {
                identity = identity.with_tls(dfs_cli::tls::load_client(&ca)?);
            }
            let client = Client::with_options(
                master,
                identity,
                ClientOptions {
                    io_timeout: cli.io_timeout,
                    ..ClientOptions::default()
                },
            );
            if let Command::Shell = command {
                return cmd::shell::shell(&client, &ctx).await;
            }
            verb(&client, &ctx, command).await
        }
    }
}

/// Runs a client verb.
pub(crate) async fn verb(client: &Client, ctx: &Context, command: Command) -> anyhow::Result<()> {
    let client = client.clone();
    match command {
        Command::Master(_)
        | Command::Chunkserver(_)
        | Command::Up(_)
        | Command::Tls { .. }
        | Command::Shell
        | Command::Umount { .. }
        | Command::Config { .. } => {
            bail!("not a client verb")
        }
        Command::Key { command } => cmd::admin::key(&client, command).await,
        Command::Bench {
            what,
            json,
            ceiling_dir,
            ceiling_size,
            runs,
            rest,
        } => {
            let ceiling = ceiling_dir.as_deref().map(|dir| cmd::bench::ProbeAt {
                dir,
                bytes: ceiling_size,
                rest,
            });
            cmd::bench::bench(&client, what, json, ceiling, runs).await
        }
        Command::Mount {
            mountpoint,
            read_only,
            foreground,
            attr_timeout,
            cache_dir,
            stall_timeout,
            trash,
        } => {
            let options = cmd::mount::Options {
                read_only,
                foreground,
                attr_timeout,
                cache_dir,
                stall_timeout,
                trash,
            };
            cmd::mount::mount(&client, &mountpoint, options).await
        }
        Command::Put {
            local,
            remote,
            recursive,
            replication,
            force,
            parallel,
        } => {
            let replication = ctx.replication(replication);
            if let ([one], false) = (local.as_slice(), recursive) {
                cmd::transfer::put(&client, one, &remote, replication, force).await
            } else {
                let batch = cmd::batch::Batch {
                    parallel: ctx.parallel(parallel),
                    replication,
                    force,
                };
                cmd::batch::put(&client, &local, &remote, recursive, batch).await
            }
        }
        Command::Get {
            remote,
            local,
            recursive,
            parallel,
        } => {
            if let ([one], false) = (remote.as_slice(), recursive) {
                cmd::transfer::get(&client, one, &local).await
            } else {
                cmd::batch::get(&client, &remote, &local, recursive, ctx.parallel(parallel)).await
            }
        }
        Command::Cp {
            src,
            dst,
            recursive,
            replication,
            force,
            through_client,
            parallel,
        } => {
            let batch = cmd::batch::Batch {
                parallel: ctx.parallel(parallel),
                replication,
                force,
            };
            cmd::batch::cp(&client, &src, &dst, recursive, through_client, batch).await
        }
        Command::Sync {
            local,
            remote,
            watch,
            delete,
            checksum,
            replication,
            parallel,
            json,
        } => {
            let options = cmd::sync::SyncOptions {
                delete,
                checksum,
                parallel: ctx.parallel(parallel),
                replication: ctx.replication(replication),
                json,
            };
            cmd::sync::sync(&client, &local, &remote, watch, options).await
        }
        Command::Checksum {
            paths,
            local,
            chunk_size,
            json,
        } => cmd::checksum::checksum(&client, &paths, local, chunk_size, json).await,
        Command::Cat { remote } => {
            let stdout = tokio::io::stdout();
            client.get(&remote, stdout).await?;
            Ok(())
        }
        Command::Append {
            local,
            remote,
            replication,
        } => {
            let replication = ctx.replication(replication);
            cmd::transfer::append(&client, &local, &remote, replication).await
        }
        Command::Tail {
            remote,
            follow,
            bytes,
            interval,
        } => cmd::transfer::tail(&client, &remote, follow, bytes, interval).await,
        Command::Ls {
            long,
            recursive,
            human,
            directory,
            path,
            json,
            help: _,
        } => {
            let view = cmd::namespace::LsView {
                long,
                recursive,
                human,
                directory,
                json,
            };
            cmd::namespace::ls(&client, path.as_deref().unwrap_or("/"), view).await
        }
        Command::Mkdir { parents, path } => Ok(client.mkdir(&path, parents).await?),
        Command::Head {
            remote,
            bytes,
            lines,
        } => cmd::transfer::head(&client, &remote, bytes, lines).await,
        Command::Rmdir { path } => cmd::namespace::rmdir(&client, &path).await,
        Command::Chmod { mode, paths } => {
            for path in paths {
                let change = dfs_client::SetAttr {
                    mode: Some(mode),
                    ..Default::default()
                };
                client.set_attr(&path, change).await?;
            }
            Ok(())
        }
        Command::Chown {
            owner: (uid, gid),
            paths,
        } => {
            for path in paths {
                let change = dfs_client::SetAttr {
                    uid: Some(uid),
                    gid,
                    ..Default::default()
                };
                client.set_attr(&path, change).await?;
            }
            Ok(())
        }
        Command::Touch { paths } => {
            for path in paths {
                client.touch(&path).await?;
            }
            Ok(())
        }
        Command::Du {
            summarize,
            human,
            path,
            json,
            help: _,
        } => {
            let path = path.as_deref().unwrap_or("/");
            cmd::namespace::du(&client, path, summarize, human, json).await
        }
        Command::Df {
            human,
            json,
            help: _,
        } => cmd::admin::df(&client, human, json).await,
        Command::Count { path, json } => {
            cmd::namespace::count(&client, path.as_deref().unwrap_or("/"), json).await
        }
        Command::Tree { path, depth } => {
            cmd::namespace::tree(&client, path.as_deref().unwrap_or("/"), depth).await
        }
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
        Command::Trash {
            command: TrashCommand::Empty { json },
        } => {
            let (entries, bytes) = client.trash_empty().await?;
            if json {
                print_json(&serde_json::json!({ "entries": entries, "bytes": bytes }))
            } else {
                print_text(&format!(
                    "purged {entries} trash entries ({})\n",
                    dfs_cli::units::human_size(bytes)
                ))
            }
        }
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
