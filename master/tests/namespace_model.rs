//! A model test of the namespace: random mkdir / put / rm (trash or not) / mv /
//! restore sequences with restarts in between, against a `BTreeMap` model, through the
//! same plan -> log -> apply path and the same recovery the master runs. Then replay
//! idempotence: replaying the whole log over a store that already holds any prefix of
//! it gives the same namespace.

use std::collections::BTreeMap;
use std::path::Path;

use dfs_master::mutation::Mutation;
use dfs_master::namespace::Namespace;
use dfs_master::oplog::OpLog;
use dfs_master::recovery;
use dfs_protocol::{ChunkHandle, CommittedChunk, FileKind};
use proptest::prelude::*;

type P = Vec<String>;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Node {
    Dir,
    File { size: u64 },
}

#[derive(Clone, Debug)]
enum Op {
    Mkdir(P, bool),
    Put(P, u8, bool),
    Rm(P, bool, bool),
    Mv(P, P),
    Restore(P),
    Restart,
}

fn path() -> impl Strategy<Value = P> {
    proptest::collection::vec(prop_oneof![Just("a"), Just("b"), Just("c")], 0..4)
        .prop_map(|v| v.into_iter().map(String::from).collect())
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (path(), any::<bool>()).prop_map(|(p, parents)| Op::Mkdir(p, parents)),
        3 => (path(), 0u8..3, any::<bool>()).prop_map(|(p, n, o)| Op::Put(p, n, o)),
        2 => (path(), any::<bool>(), any::<bool>()).prop_map(|(p, r, t)| Op::Rm(p, r, t)),
        2 => (path(), path()).prop_map(|(a, b)| Op::Mv(a, b)),
        1 => path().prop_map(Op::Restore),
        1 => Just(Op::Restart),
    ]
}

fn show(p: &P) -> String {
    format!("/{}", p.join("/"))
}

/// The model: what a file system with these semantics must hold.
#[derive(Debug, Default)]
struct Model {
    tree: BTreeMap<P, Node>,
    trash: Vec<(P, BTreeMap<P, Node>)>,
}

impl Model {
    fn node(&self, p: &P) -> Option<&Node> {
        if p.is_empty() {
            return Some(&Node::Dir);
        }
        self.tree.get(p)
    }

    fn is_dir(&self, p: &P) -> bool {
        self.node(p) == Some(&Node::Dir)
    }

    fn parent_is_dir(&self, p: &P) -> bool {
        !p.is_empty() && self.is_dir(&p[..p.len() - 1].to_vec())
    }

    fn subtree(&self, p: &P) -> BTreeMap<P, Node> {
        self.tree
            .iter()
            .filter(|(k, _)| k.starts_with(p))
            .map(|(k, v)| (k[p.len()..].to_vec(), v.clone()))
            .collect()
    }

    fn take(&mut self, p: &P) -> BTreeMap<P, Node> {
        let sub = self.subtree(p);
        self.tree.retain(|k, _| !k.starts_with(p));
        sub
    }

    fn graft(&mut self, p: &P, sub: BTreeMap<P, Node>) {
        for (rel, node) in sub {
            let mut k = p.clone();
            k.extend(rel);
            self.tree.insert(k, node);
        }
    }

    fn mkdir(&mut self, p: &P, parents: bool) -> bool {
        if p.is_empty() {
            return parents;
        }
        if parents {
            for i in 1..=p.len() {
                match self.node(&p[..i].to_vec()) {
                    Some(Node::File { .. }) => return false,
                    Some(Node::Dir) => {}
                    None => {
                        self.tree.insert(p[..i].to_vec(), Node::Dir);
                    }
                }
            }
            true
        } else if self.parent_is_dir(p) && self.node(p).is_none() {
            self.tree.insert(p.clone(), Node::Dir);
            true
        } else {
            false
        }
    }

    fn put(&mut self, p: &P, size: u64, overwrite: bool) -> bool {
        if !self.parent_is_dir(p) {
            return false;
        }
        match self.node(p) {
            Some(Node::Dir) => false,
            Some(Node::File { .. }) if !overwrite => false,
            _ => {
                self.tree.insert(p.clone(), Node::File { size });
                true
            }
        }
    }

    fn rm(&mut self, p: &P, recursive: bool, trash: bool) -> bool {
        if p.is_empty() || self.node(p).is_none() {
            return false;
        }
        if self.is_dir(p) && !recursive && self.subtree(p).len() > 1 {
            return false;
        }
        let sub = self.take(p);
        if trash {
            self.trash.push((p.clone(), sub));
        }
        true
    }

    fn mv(&mut self, s: &P, d: &P) -> bool {
        if s.is_empty() || self.node(s).is_none() {
            return false;
        }
        let fin = match self.node(d) {
            Some(Node::Dir) => {
                let mut f = d.clone();
                f.push(s[s.len() - 1].clone());
                f
            }
            Some(Node::File { .. }) => return false,
            None if self.parent_is_dir(d) => d.clone(),
            None => return false,
        };
        if fin.starts_with(s) || self.node(&fin).is_some() {
            return false;
        }
        let sub = self.take(s);
        self.graft(&fin, sub);
        true
    }

    fn restore(&mut self, p: &P) -> bool {
        let Some(i) = self.trash.iter().rposition(|(o, _)| o == p) else {
            return false;
        };
        if !self.parent_is_dir(p) || self.node(p).is_some() {
            return false;
        }
        let (_, sub) = self.trash.remove(i);
        self.graft(p, sub);
        true
    }

    fn chunks(&self) -> u64 {
        let count = |t: &BTreeMap<P, Node>| -> u64 {
            t.values()
                .map(|n| match n {
                    Node::File { size } => size / 100,
                    Node::Dir => 0,
                })
                .sum()
        };
        count(&self.tree) + self.trash.iter().map(|(_, t)| count(t)).sum::<u64>()
    }
}

/// The real thing: namespace + log, exactly as the master drives them.
struct Real {
    ns: Namespace,
    log: OpLog,
    history: Vec<(u64, Mutation)>,
    now: u64,
}

impl Real {
    fn open(dir: &Path) -> (Namespace, OpLog) {
        recovery::recover(dir).expect("recover")
    }

    fn exec(&mut self, m: Mutation) {
        let seq = self.ns.applied() + 1;
        self.log.append(seq, &m.encode().unwrap()).unwrap();
        self.ns.apply(seq, &m).unwrap();
        self.history.push((seq, m));
    }

    fn run(&mut self, op: &Op) -> bool {
        self.now += 1;
        let now = self.now;
        match op {
            Op::Mkdir(p, parents) => match self.ns.plan_mkdir(&show(p), *parents, now) {
                Ok(Some(m)) => {
                    self.exec(m);
                    true
                }
                Ok(None) => true,
                Err(_) => false,
            },
            Op::Put(p, n, overwrite) => {
                let Ok((upload, m)) = self.ns.plan_begin_upload(&show(p), 3, *overwrite, now)
                else {
                    return false;
                };
                self.exec(m);
                let mut committed = Vec::new();
                for _ in 0..*n {
                    let handle = ChunkHandle::random();
                    let m = self.ns.plan_allocate(upload, handle, vec![], now).unwrap();
                    self.exec(m);
                    committed.push(CommittedChunk { handle, size: 100 });
                }
                let m = self.ns.plan_commit(upload, &committed, 1000, now).unwrap();
                self.exec(m);
                true
            }
            Op::Rm(p, recursive, trash) => {
                match self.ns.plan_remove(&show(p), *recursive, *trash, now) {
                    Ok(m) => {
                        self.exec(m);
                        true
                    }
                    Err(_) => false,
                }
            }
            Op::Mv(s, d) => match self.ns.plan_rename(&show(s), &show(d)) {
                Ok(m) => {
                    self.exec(m);
                    true
                }
                Err(_) => false,
            },
            Op::Restore(p) => match self.ns.plan_restore(&show(p)) {
                Ok(m) => {
                    self.exec(m);
                    true
                }
                Err(_) => false,
            },
            Op::Restart => true,
        }
    }
}

fn dump(ns: &Namespace) -> BTreeMap<P, Node> {
    let mut out = BTreeMap::new();
    let mut stack: Vec<P> = vec![vec![]];
    while let Some(dir) = stack.pop() {
        for e in ns.list(&show(&dir)).expect("list") {
            let mut p = dir.clone();
            p.push(e.name);
            match e.kind {
                FileKind::Dir => {
                    out.insert(p.clone(), Node::Dir);
                    stack.push(p);
                }
                FileKind::File => {
                    out.insert(p, Node::File { size: e.size });
                }
                FileKind::Symlink => panic!("the model makes no symbolic links"),
            }
        }
    }
    out
}

fn check(real: &Real, model: &Model, step: &str) -> Result<(), TestCaseError> {
    prop_assert_eq!(&dump(&real.ns), &model.tree, "tree after {}", step);
    prop_assert_eq!(
        real.ns.trash().count(),
        model.trash.len(),
        "trash after {}",
        step
    );
    prop_assert_eq!(
        real.ns.chunks().count() as u64,
        model.chunks(),
        "chunk table after {}",
        step
    );
    let visible = model
        .tree
        .values()
        .filter(|n| matches!(n, Node::File { .. }))
        .count() as u64;
    prop_assert_eq!(
        real.ns.visible_files(),
        visible,
        "file count after {}",
        step
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    #[test]
    fn namespace_matches_the_model_across_restarts(ops in proptest::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let (ns, log) = Real::open(dir.path());
        let mut real = Real { ns, log, history: Vec::new(), now: 1_000 };
        let mut model = Model::default();
        for (i, op) in ops.iter().enumerate() {
            let step = format!("step {i}: {op:?}");
            if let Op::Restart = op {
                let Real { ns, log, history, now } = real;
                log.close().unwrap();
                drop(ns);
                let (ns, log) = Real::open(dir.path());
                real = Real { ns, log, history, now };
            } else {
                let want = match op {
                    Op::Mkdir(p, parents) => model.mkdir(p, *parents),
                    Op::Put(p, n, o) => model.put(p, u64::from(*n) * 100, *o),
                    Op::Rm(p, r, t) => model.rm(p, *r, *t),
                    Op::Mv(s, d) => model.mv(s, d),
                    Op::Restore(p) => model.restore(p),
                    Op::Restart => true,
                };
                prop_assert_eq!(real.run(op), want, "outcome of {}", step);
            }
            check(&real, &model, &step)?;
        }

        // Replay idempotence: over a store that already holds any prefix of the
        // history, replaying all of it yields the same namespace.
        let expected = dump(&real.ns);
        let history = std::mem::take(&mut real.history);
        for prefix in [0, history.len() / 3, history.len()] {
            let d = tempfile::tempdir().unwrap();
            let (mut ns, log) = Real::open(d.path());
            for (seq, m) in &history[..prefix] {
                ns.apply(*seq, m).unwrap();
            }
            for (seq, m) in &history {
                ns.apply(*seq, m).unwrap();
            }
            for (seq, m) in &history {
                ns.apply(*seq, m).unwrap();
            }
            prop_assert_eq!(&dump(&ns), &expected, "replay over a prefix of {}", prefix);
            drop(log);
        }
    }
}
