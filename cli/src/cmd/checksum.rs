//! `dfs checksum`: files' checksums composed from their chunks' blake3, in the
//! cluster (hashed by the chunkservers) or of local files (`--local`), in one format
//! so that the two compare.

use std::io::Read as _;

use anyhow::Context as _;
use dfs_cli::output;
use dfs_client::{Client, FileChecksum};
use dfs_protocol::checksum::FileDigest;

use crate::cmd::{print_json, print_text};

pub(crate) async fn checksum(
    client: &Client,
    paths: &[String],
    local: bool,
    chunk_size: Option<u64>,
    json: bool,
) -> anyhow::Result<()> {
    let chunk_size = match (local, chunk_size) {
        (true, Some(0)) => anyhow::bail!("--chunk-size must be more than 0"),
        (true, Some(size)) => size,
        (true, None) => client.chunk_size().await?,
        (false, _) => 0,
    };
    let mut sums = Vec::new();
    let mut failed = 0;
    for path in paths {
        let sum = if local {
            let (p, size) = (path.clone(), chunk_size);
            tokio::task::spawn_blocking(move || local_checksum(&p, size))
                .await
                .context("checksum task")?
        } else {
            client.checksum(path).await.map_err(anyhow::Error::from)
        };
        match sum {
            // One path: its own error is the whole story.
            Err(e) if paths.len() == 1 => return Err(e),
            Ok(sum) => {
                if !json {
                    print_text(&output::checksum_plain(path, &sum))?;
                }
                sums.push((path.clone(), sum));
            }
            Err(e) => {
                let e = format!("{e:#}");
                if e.starts_with(path.as_str()) {
                    eprintln!("dfs: {e}");
                } else {
                    eprintln!("dfs: {path}: {e}");
                }
                failed += 1;
            }
        }
    }
    if json {
        print_json(&output::checksum_json(&sums))?;
    }
    if failed > 0 {
        anyhow::bail!("{failed} of {} checksums failed", paths.len());
    }
    Ok(())
}

/// The checksum of the local file at `path`, cut into chunks of `chunk_size`.
pub(crate) fn local_checksum(path: &str, chunk_size: u64) -> anyhow::Result<FileChecksum> {
    let mut file = std::fs::File::open(path).with_context(|| format!("{path}: cannot open"))?;
    if file.metadata().map(|m| m.is_dir()).unwrap_or(false) {
        anyhow::bail!("{path}: is a directory");
    }
    let mut digest = FileDigest::new(chunk_size);
    let mut buf = vec![0u8; 1 << 20];
    let (mut size, mut chunks) = (0u64, 0u64);
    loop {
        let mut hasher = blake3::Hasher::new();
        let mut len = 0u64;
        while len < chunk_size {
            let want = (chunk_size - len).min(buf.len() as u64) as usize;
            let n = file
                .read(&mut buf[..want])
                .with_context(|| format!("{path}: cannot read"))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            len += n as u64;
        }
        if len == 0 {
            break;
        }
        digest.chunk(len, hasher.finalize().as_bytes());
        size += len;
        chunks += 1;
        if len < chunk_size {
            break;
        }
    }
    Ok(FileChecksum {
        size,
        chunk_size,
        chunks,
        digest: digest.finish(),
    })
}
