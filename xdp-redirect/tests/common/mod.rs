//! Network namespaces for root tests: every test makes its own, and a guard deletes them.

use std::fs::File;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use nix::sched::{setns, CloneFlags};

/// True when the tests that need root can run; otherwise prints why they are skipped.
pub fn root_or_skip(test: &str) -> bool {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping {test}: needs root (network namespaces, XDP)");
        return false;
    }
    if Command::new("ip").arg("-V").output().is_err() {
        eprintln!("skipping {test}: `ip` (iproute2) not found");
        return false;
    }
    true
}

/// A network namespace named `slx-<pid>-<n>`, deleted on drop (with the veths in it), also
/// when the test panics.
#[derive(Debug)]
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    pub fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "slx-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run("ip", &["netns", "add", &name]);
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n NAME args`, which must succeed.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        let out = run("ip", &full);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Turns IPv6 off for interfaces made from now on, so that they send no router
    /// solicitations or MLD reports of their own into a count.
    pub fn without_ipv6(self) -> Self {
        let out = self.exec(&[
            "sysctl",
            "-qw",
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
        ]);
        assert!(
            out.status.success(),
            "sysctl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self
    }

    /// `ip netns exec NAME cmd...`, whatever its exit status.
    pub fn exec(&self, cmd: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(cmd)
            .output()
            .expect("run ip netns exec")
    }

    /// Runs `f` on a fresh thread that has entered this namespace, so the caller's thread
    /// stays where it was.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|scope| {
            let handle = scope.spawn(|| {
                let ns = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
                setns(ns, CloneFlags::CLONE_NEWNET).unwrap_or_else(|e| panic!("setns {path}: {e}"));
                f()
            });
            handle
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// `ip -d link show dev` in this namespace.
    pub fn link_details(&self, dev: &str) -> String {
        self.ip(&["-d", "link", "show", "dev", dev])
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        match Command::new("ip")
            .args(["netns", "del", &self.name])
            .output()
        {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "ip netns del {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => eprintln!("ip netns del {}: {e}", self.name),
        }
    }
}

/// A veth pair `a_dev` in `a` and `b_dev` in `b`, both up, with fixed MACs.
pub fn wire(a: &NetNs, a_dev: &str, a_mac: &str, b: &NetNs, b_dev: &str, b_mac: &str) {
    a.ip(&[
        "link", "add", a_dev, "address", a_mac, "type", "veth", "peer", "name", b_dev, "address",
        b_mac, "netns", &b.name,
    ]);
    a.ip(&["link", "set", a_dev, "up"]);
    b.ip(&["link", "set", b_dev, "up"]);
}

/// Runs a command that must succeed.
pub fn run(program: &str, args: &[&str]) -> Output {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Pings from `ns` and reports whether replies came back.
pub fn ping(ns: &NetNs, extra: &[&str], count: u32, dst: &str) -> bool {
    let count = count.to_string();
    let mut cmd = vec!["ping", "-n", "-q", "-c", &count, "-i", "0.2", "-W", "1"];
    cmd.extend_from_slice(extra);
    cmd.push(dst);
    ns.exec(&cmd).status.success()
}
