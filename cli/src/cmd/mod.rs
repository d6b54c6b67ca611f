//! The verbs' bodies, by kind; `main.rs` parses and dispatches.
//!
//! - `server` has `master`, `chunkserver` and `up`;
//! - `transfer` has `put`, `get`, `append`, `tail` and `head`;
//! - `batch` has the many-file transfers: `put -r`, `get -r` and `cp`;
//! - `checksum` has `checksum`;
//! - `config` has `config show`;
//! - `shell` has `shell`;
//! - `sync` has `sync [--watch] [--delete]`;
//! - `namespace` has `ls`, `rmdir`, `du`, `count` and `tree`;
//! - `admin` has `key` and `df`;
//! - `mount` has `mount` and `umount`;
//! - `bench` has `bench` and `bench ceiling`.

use std::io::Write as _;

pub(crate) mod admin;
pub(crate) mod batch;
pub(crate) mod bench;
pub(crate) mod checksum;
pub(crate) mod config;
pub(crate) mod mount;
pub(crate) mod namespace;
pub(crate) mod server;
pub(crate) mod shell;
pub(crate) mod sync;
pub(crate) mod transfer;

pub(crate) fn print_json(value: &serde_json::Value) -> anyhow::Result<()> {
    print_text(&format!("{}\n", serde_json::to_string_pretty(value)?))
}

pub(crate) fn print_text(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// Resolves when the process is asked to stop (Ctrl-C or SIGTERM).
pub(crate) async fn shutdown_signal() {
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
