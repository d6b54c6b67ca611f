//! Replays the meta-file fuzz corpus (`protocol/fuzz/corpus/chunk_meta`) through the
//! decoder on the stable toolchain.

use dfs_chunkserver::store::decode_meta;

#[test]
fn meta_corpus_decodes_without_panics() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../protocol/fuzz/corpus/chunk_meta");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("corpus dir") {
        let data = std::fs::read(entry.expect("entry").path()).expect("read");
        let _ = decode_meta(&data);
        let mut sealed = data.clone();
        sealed.extend_from_slice(blake3::hash(&data).as_bytes());
        let _ = decode_meta(&sealed);
        n += 1;
    }
    assert!(n > 0, "the corpus is empty");
}
