//! The checksum format every party agrees on: blake3 over each 64 KiB block of a chunk.

use crate::CHECKSUM_BLOCK;

/// The blake3 of each `CHECKSUM_BLOCK` of `data` (the last may be short).
pub fn block_checksums(data: &[u8]) -> Vec<[u8; 32]> {
    data.chunks(CHECKSUM_BLOCK as usize)
        .map(|b| *blake3::hash(b).as_bytes())
        .collect()
}

/// Checks `data` (whole blocks; the last may be short) against `checksums`.
/// `Err(i)` names the first block that does not match (or is missing its checksum).
pub fn verify_blocks(data: &[u8], checksums: &[[u8; 32]]) -> Result<(), usize> {
    let blocks = data.len().div_ceil(CHECKSUM_BLOCK as usize);
    if blocks != checksums.len() {
        return Err(blocks.min(checksums.len()));
    }
    for (i, (block, want)) in data
        .chunks(CHECKSUM_BLOCK as usize)
        .zip(checksums)
        .enumerate()
    {
        if blake3::hash(block).as_bytes() != want {
            return Err(i);
        }
    }
    Ok(())
}

/// The name `dfs checksum` gives the digest `FileDigest` computes.
pub const FILE_DIGEST_ALGORITHM: &str = "blake3-chunks";

/// A file's checksum composed from its chunks: blake3 (in its key-derivation mode,
/// so it can never equal a plain blake3 of some content) over the chunk size, then
/// each chunk's length and blake3 in order. Chunkservers hash their replicas, so two
/// copies of a file are compared without moving their bytes; the same digest of a
/// local file, cut at the same chunk size, says whether it matches a stored one.
#[derive(Clone, Debug)]
pub struct FileDigest {
    hasher: blake3::Hasher,
}

impl FileDigest {
    pub fn new(chunk_size: u64) -> FileDigest {
        let mut hasher = blake3::Hasher::new_derive_key("dfs file checksum v1 (blake3 of chunks)");
        hasher.update(&chunk_size.to_le_bytes());
        FileDigest { hasher }
    }

    /// Adds the next chunk: its length and the blake3 of its bytes.
    pub fn chunk(&mut self, len: u64, digest: &[u8; 32]) {
        self.hasher.update(&len.to_le_bytes());
        self.hasher.update(digest);
    }

    pub fn finish(&self) -> [u8; 32] {
        *self.hasher.finalize().as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_digest_depends_on_every_chunk_and_the_chunk_size() {
        let a = *blake3::hash(b"a").as_bytes();
        let b = *blake3::hash(b"b").as_bytes();
        let digest = |size: u64, chunks: &[(u64, [u8; 32])]| {
            let mut d = FileDigest::new(size);
            for (len, h) in chunks {
                d.chunk(*len, h);
            }
            d.finish()
        };
        let base = digest(4, &[(1, a), (1, b)]);
        assert_eq!(base, digest(4, &[(1, a), (1, b)]));
        assert_ne!(base, digest(4, &[(1, b), (1, a)]));
        assert_ne!(base, digest(8, &[(1, a), (1, b)]));
        assert_ne!(base, digest(4, &[(1, a)]));
        assert_ne!(digest(4, &[]), *blake3::hash(b"").as_bytes());
    }

    #[test]
    fn verifies_and_names_the_bad_block() {
        let mut data = vec![3u8; 200_000];
        let sums = block_checksums(&data);
        assert_eq!(sums.len(), 4);
        assert_eq!(verify_blocks(&data, &sums), Ok(()));
        data[140_000] ^= 1;
        assert_eq!(verify_blocks(&data, &sums), Err(2));
        assert!(verify_blocks(&data[..100], &sums).is_err());
        assert_eq!(verify_blocks(&[], &[]), Ok(()));
    }
}
