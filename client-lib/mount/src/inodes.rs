//! The mount's inode numbers: dfs names files by path, the kernel by number. Each
//! path the kernel looked up gets a number, kept until the kernel forgets it, and
//! follows its entry through renames.

use std::collections::HashMap;

pub const ROOT: u64 = 1;

#[derive(Debug)]
struct Node {
    path: String,
    /// Lookups the kernel has not forgotten yet.
    lookups: u64,
}

#[derive(Debug)]
pub struct Inodes {
    by_ino: HashMap<u64, Node>,
    by_path: HashMap<String, u64>,
    next: u64,
}

impl Default for Inodes {
    fn default() -> Self {
        let mut by_ino = HashMap::new();
        by_ino.insert(
            ROOT,
            Node {
                path: "/".into(),
                lookups: 1,
            },
        );
        let mut by_path = HashMap::new();
        by_path.insert("/".to_string(), ROOT);
        Inodes {
            by_ino,
            by_path,
            next: ROOT + 1,
        }
    }
}

/// `name` inside the directory `dir`.
pub fn child(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

impl Inodes {
    pub fn path(&self, ino: u64) -> Option<String> {
        self.by_ino.get(&ino).map(|n| n.path.clone())
    }

    /// The number for `path`, counting one lookup by the kernel.
    pub fn lookup(&mut self, path: &str) -> u64 {
        if let Some(&ino) = self.by_path.get(path) {
            if let Some(n) = self.by_ino.get_mut(&ino) {
                n.lookups += 1;
            }
            return ino;
        }
        let ino = self.next;
        self.next += 1;
        self.by_ino.insert(
            ino,
            Node {
                path: path.to_string(),
                lookups: 1,
            },
        );
        self.by_path.insert(path.to_string(), ino);
        ino
    }

    /// The number for `path` if it has one, without counting a lookup.
    pub fn peek(&self, path: &str) -> Option<u64> {
        self.by_path.get(path).copied()
    }

    /// The kernel dropped `n` lookups of `ino`; returns whether it is gone.
    pub fn forget(&mut self, ino: u64, n: u64) -> bool {
        if ino == ROOT {
            return false;
        }
        let Some(node) = self.by_ino.get_mut(&ino) else {
            return true;
        };
        node.lookups = node.lookups.saturating_sub(n);
        if node.lookups > 0 {
            return false;
        }
        let path = node.path.clone();
        self.by_ino.remove(&ino);
        if self.by_path.get(&path) == Some(&ino) {
            self.by_path.remove(&path);
        }
        true
    }

    /// `path` no longer names anything (unlinked, or replaced by a rename): its
    /// number stays valid for open files but no longer resolves by path.
    pub fn detach(&mut self, path: &str) {
        if let Some(ino) = self.by_path.remove(path) {
            if let Some(n) = self.by_ino.get_mut(&ino) {
                // Marks it unreachable: no later path matches this one.
                n.path = format!("\0unlinked\0{ino}");
            }
        }
    }

    /// Everything at or below `from` is now at or below `to`.
    pub fn rename(&mut self, from: &str, to: &str) {
        self.detach(to);
        let prefix = format!("{}/", from.trim_end_matches('/'));
        let moved: Vec<(String, u64)> = self
            .by_path
            .iter()
            .filter(|(p, _)| p.as_str() == from || p.starts_with(&prefix))
            .map(|(p, &i)| (p.clone(), i))
            .collect();
        for (old, ino) in moved {
            let new = format!("{to}{}", &old[from.len()..]);
            self.by_path.remove(&old);
            self.by_path.insert(new.clone(), ino);
            if let Some(n) = self.by_ino.get_mut(&ino) {
                n.path = new;
            }
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.by_ino.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_follow_renames_and_are_forgotten() {
        let mut t = Inodes::default();
        let d = t.lookup("/d");
        let f = t.lookup("/d/f");
        assert_eq!(t.lookup("/d/f"), f);
        t.rename("/d", "/e");
        assert_eq!(t.path(f).as_deref(), Some("/e/f"));
        assert_eq!(t.path(d).as_deref(), Some("/e"));
        assert_eq!(t.peek("/d/f"), None);
        assert!(!t.forget(f, 1));
        assert!(t.forget(f, 1));
        assert_eq!(t.path(f), None);
        let g = t.lookup("/g");
        t.rename("/e", "/g");
        assert_eq!(t.peek("/g"), Some(d));
        assert!(t.path(g).is_some_and(|p| p.starts_with('\0')));
        assert_eq!(t.len(), 3);
    }
}
