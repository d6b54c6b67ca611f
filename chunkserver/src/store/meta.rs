//! The meta file: its format (a format byte, the bincode of [`ChunkMeta`], a blake3 of
//! both), the file names of a chunk, and blake3 per checksum block over bytes fed in
//! order.

use std::fs::File;
use std::path::Path;

use dfs_protocol::{ChunkHandle, ChunkVersion, CHECKSUM_BLOCK};
use serde::{Deserialize, Serialize};

use crate::error::StoreError;

const META_FORMAT: u8 = 1;
/// A chunk is never longer than this, whatever the client sends.
pub const MAX_CHUNK_LEN: u64 = 4 << 30;
/// A meta file is never larger than this (4 GiB of chunk at 32 bytes per 64 KiB, plus slack).
const MAX_META_LEN: u64 = (MAX_CHUNK_LEN / CHECKSUM_BLOCK) * 40 + 4096;

/// What a chunk's meta file holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkMeta {
    pub(super) handle: ChunkHandle,
    pub(super) version: ChunkVersion,
    pub(super) len: u64,
    pub(super) blocks: Vec<[u8; 32]>,
}

pub(super) fn chunk_name(handle: ChunkHandle) -> String {
    format!("{handle}.chunk")
}

pub(super) fn meta_name(handle: ChunkHandle) -> String {
    format!("{handle}.meta")
}

pub(super) fn encode_meta(meta: &ChunkMeta) -> Result<Vec<u8>, StoreError> {
    let mut out = vec![META_FORMAT];
    let body = bincode::serde::encode_to_vec(meta, bincode::config::standard())
        .map_err(|e| StoreError::io("encode meta", std::io::Error::other(e.to_string())))?;
    out.extend(body);
    let sum = blake3::hash(&out);
    out.extend_from_slice(sum.as_bytes());
    Ok(out)
}

/// Parses a meta file (format byte, bincode body, blake3 of both); public so the
/// fuzz targets can reach it. Never panics, whatever the bytes.
pub fn decode_meta(bytes: &[u8]) -> Result<ChunkMeta, String> {
    if bytes.len() < 33 {
        return Err("too short".into());
    }
    let (body, sum) = bytes.split_at(bytes.len() - 32);
    if blake3::hash(body).as_bytes() != sum {
        return Err("checksum of the meta file does not match".into());
    }
    if body[0] != META_FORMAT {
        return Err(format!("unknown format {}", body[0]));
    }
    let config = bincode::config::standard().with_limit::<{ MAX_META_LEN as usize }>();
    let (meta, _) =
        bincode::serde::decode_from_slice(&body[1..], config).map_err(|e| e.to_string())?;
    Ok(meta)
}

pub(super) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(format!("fsync {}", dir.display()), e))
}

/// blake3 per checksum block over bytes fed in order, possibly starting inside a block.
#[derive(Debug, Clone)]
pub(super) struct BlockHasher {
    blocks: Vec<[u8; 32]>,
    partial: blake3::Hasher,
    partial_len: u64,
}

impl BlockHasher {
    pub(super) fn new(blocks: Vec<[u8; 32]>) -> BlockHasher {
        BlockHasher {
            blocks,
            partial: blake3::Hasher::new(),
            partial_len: 0,
        }
    }

    pub(super) fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let room = (CHECKSUM_BLOCK - self.partial_len) as usize;
            let take = room.min(data.len());
            self.partial.update(&data[..take]);
            self.partial_len += take as u64;
            data = &data[take..];
            if self.partial_len == CHECKSUM_BLOCK {
                self.blocks.push(*self.partial.finalize().as_bytes());
                self.partial.reset();
                self.partial_len = 0;
            }
        }
    }

    pub(super) fn finish(mut self) -> Vec<[u8; 32]> {
        if self.partial_len > 0 {
            self.blocks.push(*self.partial.finalize().as_bytes());
        }
        self.blocks
    }
}
