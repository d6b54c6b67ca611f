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

#[cfg(test)]
mod tests {
    use super::*;

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
