//! Replays the operation-log fuzz corpus (`protocol/fuzz/corpus/oplog_record`)
//! through the record and mutation decoders on the stable toolchain.

use dfs_master::mutation::Mutation;
use dfs_master::oplog::decode_record;

#[test]
fn oplog_corpus_decodes_without_panics() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../protocol/fuzz/corpus/oplog_record");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("corpus dir") {
        let data = std::fs::read(entry.expect("entry").path()).expect("read");
        let mut rest = &data[..];
        while let Ok((_, payload, used)) = decode_record(rest) {
            let _ = Mutation::decode(payload);
            rest = &rest[used..];
        }
        if let Ok(m) = Mutation::decode(&data) {
            let again = m.encode().expect("encode");
            assert_eq!(Mutation::decode(&again).ok(), Some(m));
        }
        n += 1;
    }
    assert!(n > 0, "the corpus is empty");
}
