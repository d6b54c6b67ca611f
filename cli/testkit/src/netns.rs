//! Several hosts on one machine, for tests of what crosses a real network stack.
//!
//! Each host is a Linux network namespace with one veth link to a bridge, and the
//! bridge sits in a switch namespace of its own, so nothing touches the machine's
//! own namespace. Hosts get private addresses (`10.77.0.x`) that exist only inside
//! these namespaces. Faults, per host:
//! - [`Net::cut`]: packets to and from chosen hosts silently dropped, as in a real
//!   partition (no reset, no error: the peer just stops answering);
//! - [`Net::set_loss`]: a share of the host's packets dropped at random;
//! - [`Net::set_rate`]: a slow link (a token bucket on its egress).
//!
//! Everything is made by the test and torn down when the [`Net`] drops: processes
//! still in the namespaces are killed and the namespaces deleted, which deletes their
//! links. Namespaces a crashed earlier run left behind are removed on the next start.
//!
//! Needs root, `ip` (iproute2) and `nft` (nftables). Drops and loss are nftables
//! rules rather than `tc netem`, which the kernels of this project's machines lack
//! (`CONFIG_NET_SCH_NETEM` is not set); the slow link is `tc`'s `tbf`.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::net::Ipv4Addr;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};

/// Every namespace this kit makes starts with this, then the owning process id.
const PREFIX: &str = "dfst";

static NETS: AtomicU32 = AtomicU32::new(0);

/// Hosts on one switch; see the module docs.
#[derive(Debug)]
pub struct Net {
    switch: String,
    hosts: Vec<Host>,
}

#[derive(Debug)]
struct Host {
    ns: String,
    addr: Ipv4Addr,
    /// Hosts whose packets this one drops, both ways.
    cut: BTreeSet<usize>,
    /// Percent of packets dropped on the link, both ways.
    loss: u32,
}

impl Net {
    /// Why hosts cannot be made on this machine, if they cannot: not root, or no
    /// `ip` or `nft`, or namespaces refused (a container without the capability).
    pub fn unavailable() -> Option<String> {
        if !rustix::process::geteuid().is_root() {
            return Some("network namespaces need root".to_string());
        }
        for tool in ["ip", "nft", "tc"] {
            if run(&[tool, "-V"]).is_err() && run(&[tool, "--version"]).is_err() {
                return Some(format!("`{tool}` is not installed"));
            }
        }
        let probe = format!("{PREFIX}{}probe", std::process::id());
        if let Err(e) = run(&["ip", "netns", "add", &probe]) {
            return Some(format!("cannot make a network namespace: {e}"));
        }
        let _ = run(&["ip", "netns", "del", &probe]);
        None
    }

    /// `n` hosts, `10.77.0.1` to `10.77.0.n`, on one switch. Panics if they cannot
    /// be made (check [`Net::unavailable`] first).
    pub fn new(n: usize) -> Net {
        assert!((1..=200).contains(&n), "1 to 200 hosts");
        remove_leftovers();
        let id = format!(
            "{PREFIX}{}x{}",
            std::process::id(),
            NETS.fetch_add(1, Ordering::Relaxed)
        );
        let mut net = Net {
            switch: format!("{id}-sw"),
            hosts: Vec::new(),
        };
        must(&["ip", "netns", "add", &net.switch]);
        must(&[
            "ip",
            "-n",
            &net.switch,
            "link",
            "add",
            "br0",
            "type",
            "bridge",
        ]);
        must(&["ip", "-n", &net.switch, "link", "set", "br0", "up"]);
        for i in 0..n {
            let ns = format!("{id}-h{i}");
            let port = format!("h{i}");
            let addr = Ipv4Addr::new(10, 77, 0, u8::try_from(i + 1).expect("at most 200"));
            must(&["ip", "netns", "add", &ns]);
            // Pushed before its links exist, so a failure below still removes it.
            net.hosts.push(Host {
                ns: ns.clone(),
                addr,
                cut: BTreeSet::new(),
                loss: 0,
            });
            must(&[
                "ip",
                "link",
                "add",
                "eth0",
                "netns",
                &ns,
                "type",
                "veth",
                "peer",
                "name",
                &port,
                "netns",
                &net.switch,
            ]);
            must(&[
                "ip",
                "-n",
                &net.switch,
                "link",
                "set",
                &port,
                "master",
                "br0",
            ]);
            must(&["ip", "-n", &net.switch, "link", "set", &port, "up"]);
            must(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
            must(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ]);
            must(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
        }
        for i in 0..n {
            net.render(i);
        }
        net
    }

    /// Host `i`'s address.
    pub fn addr(&self, i: usize) -> Ipv4Addr {
        self.hosts[i].addr
    }

    /// Host `i`'s namespace.
    pub fn ns(&self, i: usize) -> &str {
        &self.hosts[i].ns
    }

    /// `program` run on host `i` (through `ip netns exec`, which execs it, so the
    /// child is the program itself); killed when dropped.
    pub fn command(&self, i: usize, program: impl AsRef<OsStr>) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new("ip");
        cmd.args(["netns", "exec", &self.hosts[i].ns])
            .arg(program)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// A partition between hosts `a` and `b`: from now on every packet between them
    /// is dropped without a word, both ways; connections open between them hang.
    pub fn cut(&mut self, a: usize, b: usize) {
        self.hosts[a].cut.insert(b);
        self.hosts[b].cut.insert(a);
        self.render(a);
        self.render(b);
    }

    /// Ends the partition between `a` and `b`.
    pub fn heal(&mut self, a: usize, b: usize) {
        self.hosts[a].cut.remove(&b);
        self.hosts[b].cut.remove(&a);
        self.render(a);
        self.render(b);
    }

    /// Drops `percent` of host `i`'s packets at random, both ways (0: none).
    pub fn set_loss(&mut self, i: usize, percent: u32) {
        assert!(percent < 100, "loss below 100%");
        self.hosts[i].loss = percent;
        self.render(i);
    }

    /// Limits what host `i` sends to `rate` (`tc` units, such as `40mbit`); `None`
    /// lifts the limit. Packets beyond it queue (up to half a second) and then drop.
    pub fn set_rate(&mut self, i: usize, rate: Option<&str>) {
        let ns = self.hosts[i].ns.clone();
        match rate {
            Some(rate) => must(&[
                "tc", "-n", &ns, "qdisc", "replace", "dev", "eth0", "root", "tbf", "rate", rate,
                "burst", "64kb", "latency", "500ms",
            ]),
            None => {
                let _ = run(&["tc", "-n", &ns, "qdisc", "del", "dev", "eth0", "root"]);
            }
        }
    }

    /// Every cut healed, no loss, no rate limit.
    pub fn heal_all(&mut self) {
        for i in 0..self.hosts.len() {
            self.hosts[i].cut.clear();
            self.hosts[i].loss = 0;
            self.render(i);
            self.set_rate(i, None);
        }
    }

    /// Host `i`'s firewall, replaced as a whole in one nftables transaction.
    fn render(&self, i: usize) {
        let host = &self.hosts[i];
        let peers: Vec<String> = host
            .cut
            .iter()
            .map(|&p| self.hosts[p].addr.to_string())
            .collect();
        let mut out = String::new();
        let mut inp = String::new();
        if !peers.is_empty() {
            let set = peers.join(", ");
            out.push_str(&format!("    ip daddr {{ {set} }} drop\n"));
            inp.push_str(&format!("    ip saddr {{ {set} }} drop\n"));
        }
        if host.loss > 0 {
            let rule = format!("numgen random mod 100 < {} drop\n", host.loss);
            out.push_str(&format!("    oifname \"eth0\" {rule}"));
            inp.push_str(&format!("    iifname \"eth0\" {rule}"));
        }
        let rules = format!(
            "table inet dfstest {{}}\n\
             delete table inet dfstest\n\
             table inet dfstest {{\n\
             \x20 chain out {{\n    type filter hook output priority 0; policy accept;\n{out}  }}\n\
             \x20 chain in {{\n    type filter hook input priority 0; policy accept;\n{inp}  }}\n\
             }}\n"
        );
        if let Err(e) = run_with_input(&["ip", "netns", "exec", &host.ns, "nft", "-f", "-"], &rules)
        {
            panic!("nft on {}: {e}\n{rules}", host.ns);
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in self
            .hosts
            .iter()
            .map(|h| h.ns.as_str())
            .chain([self.switch.as_str()])
        {
            remove_ns(ns);
        }
    }
}

/// Kills what still runs in `ns`, then deletes it.
fn remove_ns(ns: &str) {
    if let Ok(pids) = output(&["ip", "netns", "pids", ns]) {
        for pid in pids
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
    }
    let _ = run(&["ip", "netns", "del", ns]);
}

/// Namespaces of this kit whose owning process is gone (a test killed before its
/// `Net` dropped).
fn remove_leftovers() {
    let Ok(list) = output(&["ip", "netns", "list"]) else {
        return;
    };
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let Ok(pid) = digits.parse::<u32>() else {
            continue;
        };
        if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            remove_ns(name);
        }
    }
}

fn must(args: &[&str]) {
    if let Err(e) = run(args) {
        panic!("{}: {e}", args.join(" "));
    }
}

fn run(args: &[&str]) -> Result<(), String> {
    output(args).map(drop)
}

fn output(args: &[&str]) -> Result<String, String> {
    let out = std::process::Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

fn run_with_input(args: &[&str], input: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = std::process::Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    child
        .stdin
        .take()
        .ok_or("no stdin")?
        .write_all(input.as_bytes())
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}
