//! Lab tests: real AF_XDP sockets on veth pairs inside a network namespace the test
//! creates (and always deletes). Need root and clang; skipped otherwise.
//!
//! Each test runs its body on a thread that has entered the namespace with setns(2),
//! so the sockets, the XDP attach and the interface lookups all happen in there. Only
//! the test-only program in `tests/bpf/redirect.c` is loaded, and only on our veths.
#![allow(unsafe_code)]

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use aya::maps::XskMap;
use aya::programs::{Xdp, XdpMode};
use sluice_xsk::{Frame, PortId, WorkerIo, XskConfig, XskError};

static NEXT_NS: AtomicU32 = AtomicU32::new(0);

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn run(cmd: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .with_context(|| format!("running {cmd}"))?;
    ensure!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A network namespace `slk-<pid>-<n>`, deleted on drop (also when the test panics).
struct NetNs {
    name: String,
}

impl NetNs {
    fn new() -> Result<Self> {
        let name = format!(
            "slk-{}-{}",
            std::process::id(),
            NEXT_NS.fetch_add(1, Ordering::Relaxed)
        );
        run("ip", &["netns", "add", &name])?;
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        // Keep IPv6 autoconfiguration chatter off the test links.
        ns.exec(&["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"])?;
        ns.exec(&["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"])?;
        Ok(ns)
    }

    fn ip(&self, args: &[&str]) -> Result<String> {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    fn exec(&self, args: &[&str]) -> Result<String> {
        let mut all = vec!["netns", "exec", &self.name];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// veth pair `a`/`b`, both up.
    fn veth(&self, a: &str, b: &str) -> Result<()> {
        self.ip(&["link", "add", a, "type", "veth", "peer", "name", b])?;
        self.ip(&["link", "set", a, "up"])?;
        self.ip(&["link", "set", b, "up"])?;
        Ok(())
    }

    fn rx_packets(&self, dev: &str) -> Result<u64> {
        let path = format!("/sys/class/net/{dev}/statistics/rx_packets");
        Ok(self.exec(&["cat", &path])?.trim().parse()?)
    }

    /// `ping` from `dev` to `target` with a static neighbour entry, so ICMP echo
    /// requests leave `dev` without ARP. Nobody answers; we only count requests.
    fn start_ping(&self, dev: &str, addr: &str, target: &str, count: u32) -> Result<Child> {
        self.ip(&["addr", "add", addr, "dev", dev])?;
        self.ip(&[
            "neigh",
            "replace",
            target,
            "lladdr",
            "02:00:00:00:00:02",
            "dev",
            dev,
            "nud",
            "permanent",
        ])?;
        Ok(Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.name,
                "ping",
                "-q",
                "-c",
                &count.to_string(),
                "-i",
                "0.01",
                "-W",
                "1",
                "-I",
                dev,
                target,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?)
    }

    /// Runs `f` on a thread inside the namespace.
    fn enter<T: Send>(&self, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|s| {
            s.spawn(|| {
                let file = File::open(&path).with_context(|| path.clone())?;
                // SAFETY: `file` is an open netns file; CLONE_NEWNET only moves this
                // thread (which we own and end after `f`) into that namespace.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                ensure!(rc == 0, "setns: {}", std::io::Error::last_os_error());
                f()
            })
            .join()
            .map_err(|_| anyhow::anyhow!("test thread panicked"))?
        })
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Deleting the namespace deletes its veths, which detaches the XDP program.
        if let Err(e) = run("ip", &["netns", "del", &self.name]) {
            eprintln!("cleanup of {} failed: {e}", self.name);
        }
    }
}

/// Reserves 2 MiB hugepages for the test and restores the old count on drop.
struct Hugepages {
    before: String,
}

impl Hugepages {
    const PATH: &str = "/proc/sys/vm/nr_hugepages";

    fn reserve(n: u32) -> Result<Self> {
        let before = std::fs::read_to_string(Self::PATH)?.trim().to_string();
        let want = before.parse::<u32>()?.max(n);
        std::fs::write(Self::PATH, want.to_string())?;
        Ok(Self { before })
    }
}

impl Drop for Hugepages {
    fn drop(&mut self) {
        let _ = std::fs::write(Self::PATH, &self.before);
    }
}

/// Compiles `tests/bpf/redirect.c` once per test binary run.
fn xdp_object() -> Result<PathBuf> {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("sluice-xsk-redirect-{}.o", std::process::id()));
    if !out.exists() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bpf/redirect.c");
        let arch_include = format!("-I/usr/include/{}-linux-gnu", std::env::consts::ARCH);
        let tmp = out.with_extension(
            format!("{:?}.tmp", std::thread::current().id()).replace(['(', ')'], ""),
        );
        run(
            "clang",
            &[
                "-O2",
                "-g",
                "-target",
                "bpf",
                &arch_include,
                "-c",
                src.to_str().unwrap(),
                "-o",
                tmp.to_str().unwrap(),
            ],
        )?;
        std::fs::rename(&tmp, &out)?;
    }
    Ok(out)
}

fn ifindex(name: &str) -> Result<u32> {
    let c = std::ffi::CString::new(name)?;
    // SAFETY: `c` is a valid NUL-terminated string for the call.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    ensure!(i != 0, "no interface {name}");
    Ok(i)
}

/// The test XDP program, attached (generic mode) to `devs`, with an XSKMAP keyed by ifindex.
struct Redirect {
    bpf: aya::Ebpf,
}

impl Redirect {
    fn attach(devs: &[&str]) -> Result<Self> {
        let mut bpf = aya::Ebpf::load_file(xdp_object()?)?;
        let prog: &mut Xdp = bpf.program_mut("redirect").context("program")?.try_into()?;
        prog.load()?;
        for dev in devs {
            prog.attach(dev, XdpMode::Skb)
                .with_context(|| format!("attach to {dev}"))?;
        }
        Ok(Self { bpf })
    }

    fn insert(&mut self, dev: &str, io: &WorkerIo, port: PortId) -> Result<()> {
        let mut map = XskMap::try_from(self.bpf.map_mut("XSKS").context("map")?)?;
        map.set(ifindex(dev)?, io.port_fd(port), 0)?;
        Ok(())
    }
}

/// True for an IPv4 frame addressed to `dst`.
fn is_ipv4_to(bytes: &[u8], dst: [u8; 4]) -> bool {
    bytes.len() >= 34 && bytes[12..14] == [0x08, 0x00] && bytes[30..34] == dst
}

/// One worker-loop pass over `routes` (from, to); counts forwarded IPv4 frames to `dst`.
fn pump(
    io: &mut WorkerIo,
    routes: &[(PortId, PortId)],
    batch: &mut Vec<Frame>,
    dst: [u8; 4],
    seen: &mut u64,
) -> Result<(), XskError> {
    for &(from, to) in routes {
        io.receive(from, batch, 64)?;
        for mut frame in batch.drain(..) {
            // Touch the bytes the way the pipeline would.
            let buf = io.buffer_mut(&mut frame);
            if is_ipv4_to(buf, dst) {
                *seen += 1;
            }
            if let Err(frame) = io.transmit(to, frame) {
                io.release(frame);
            }
        }
    }
    io.flush()
}

/// Pings through `from_dev` while pumping, until ping exits and the queue drains.
fn forward_ping(
    ns: &NetNs,
    io: &mut WorkerIo,
    routes: &[(PortId, PortId)],
    from_dev: &str,
    addr: &str,
    target: &str,
    count: u32,
) -> Result<u64> {
    let dst = target.parse::<std::net::Ipv4Addr>()?.octets();
    let mut child = ns.start_ping(from_dev, addr, target, count)?;
    let mut batch = Vec::with_capacity(64);
    let mut seen = 0;
    let mut done_at = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    while done_at.is_none_or(|t: Instant| t.elapsed() < Duration::from_millis(300)) {
        if done_at.is_none() && child.try_wait()?.is_some() {
            done_at = Some(Instant::now());
        }
        if Instant::now() > deadline {
            let _ = child.kill(); // our own child, by handle
            bail!("ping did not finish");
        }
        pump(io, routes, &mut batch, dst, &mut seen)?;
        std::thread::sleep(Duration::from_micros(200));
    }
    Ok(seen)
}

fn skip() -> bool {
    if !is_root() || Command::new("clang").arg("--version").output().is_err() {
        eprintln!("skipping: needs root and clang");
        return true;
    }
    false
}

fn shared_umem_forwards_between_two_veths(cfg: XskConfig) -> Result<bool> {
    let ns = NetNs::new()?;
    ns.veth("xa0", "xa1")?;
    ns.veth("xb0", "xb1")?;
    ns.enter(|| {
        let mut io = WorkerIo::new(&cfg)?;
        let a = io.open_port("xa0", 0)?;
        let b = io.open_port("xb0", 0)?;
        let mut prog = Redirect::attach(&["xa0", "xb0"])?;
        prog.insert("xa0", &io, a)?;
        prog.insert("xb0", &io, b)?;

        // xa1 --ping--> xa0 -> XDP -> port A -> WorkerIo -> port B -> xb0 -> xb1
        let before = ns.rx_packets("xb1")?;
        let seen = forward_ping(
            &ns,
            &mut io,
            &[(a, b), (b, a)],
            "xa1",
            "10.77.0.1/24",
            "10.77.0.2",
            50,
        )?;
        let arrived = ns.rx_packets("xb1")? - before;
        eprintln!("A->B: worker forwarded {seen} echo requests, xb1 counted {arrived} frames");
        ensure!(seen >= 50, "only {seen} of 50 echo requests reached port A");
        ensure!(
            arrived >= seen,
            "xb1 got {arrived} frames, fewer than the {seen} forwarded"
        );

        // And back: xb1 -> port B -> port A -> xa1, on frames that now cycle through
        // the shared pool in the other direction.
        let before = ns.rx_packets("xa1")?;
        let seen = forward_ping(
            &ns,
            &mut io,
            &[(a, b), (b, a)],
            "xb1",
            "10.78.0.1/24",
            "10.78.0.2",
            50,
        )?;
        let arrived = ns.rx_packets("xa1")? - before;
        eprintln!("B->A: worker forwarded {seen} echo requests, xa1 counted {arrived} frames");
        ensure!(
            seen >= 50 && arrived >= seen,
            "B->A: seen {seen}, arrived {arrived}"
        );

        for p in [a, b] {
            let s = io.port_stats(p)?;
            eprintln!("{}: {s:?}", io.port_ifname(p)?);
            ensure!(
                s.rx_invalid_descs == 0 && s.tx_invalid_descs == 0 && s.bogus_descs == 0,
                "{s:?}"
            );
        }
        ensure!(io.wants_poll(), "TX still in flight after draining");
        Ok(io.uses_hugepages())
    })
}

#[test]
fn shared_umem_forwards_ping_between_veths_on_normal_pages() -> Result<()> {
    if skip() {
        return Ok(());
    }
    let huge = shared_umem_forwards_between_two_veths(XskConfig {
        hugepages: false,
        ..Default::default()
    })?;
    assert!(!huge);
    Ok(())
}

#[test]
fn shared_umem_forwards_ping_between_veths_on_hugepages() -> Result<()> {
    if skip() {
        return Ok(());
    }
    // 4096 frames x 4 KiB = 16 MiB = 8 hugepages.
    let _pages = Hugepages::reserve(8)?;
    let huge = shared_umem_forwards_between_two_veths(XskConfig::default())?;
    assert!(huge, "UMEM should sit on the reserved hugepages");
    Ok(())
}

#[test]
fn deleting_an_interface_names_it_and_other_ports_keep_working() -> Result<()> {
    if skip() {
        return Ok(());
    }
    let ns = NetNs::new()?;
    ns.veth("xa0", "xa1")?;
    ns.veth("xb0", "xb1")?;
    ns.veth("xc0", "xc1")?;
    ns.enter(|| {
        let mut io = WorkerIo::new(&XskConfig { hugepages: false, ..Default::default() })?;
        // A is the UMEM's first socket: losing it must not stop B and C, nor new ports.
        let a = io.open_port("xa0", 0)?;
        let b = io.open_port("xb0", 0)?;
        let c = io.open_port("xc0", 0)?;
        let mut prog = Redirect::attach(&["xa0", "xb0", "xc0"])?;
        for (dev, p) in [("xa0", a), ("xb0", b), ("xc0", c)] {
            prog.insert(dev, &io, p)?;
        }

        ns.ip(&["link", "del", "xa0"])?;

        // Frames queued to A make the next flush kick its socket, which reports the loss.
        for _ in 0..4 {
            let f = io.alloc_frame().context("pool")?;
            if let Err(f) = io.transmit(a, f) {
                io.release(f);
            }
        }
        let err = io.flush().expect_err("flush must report the deleted interface");
        eprintln!("flush: {err}");
        match &err {
            XskError::PortDown { port, ifname, source, .. } => {
                ensure!(*port == a && &**ifname == "xa0", "{err}");
                ensure!(source.raw_os_error() == Some(libc::ENXIO), "{err}");
            }
            other => bail!("unexpected error {other}"),
        }
        ensure!(err.to_string().contains("xa0"));
        let mut batch = Vec::new();
        let again = io.receive(a, &mut batch, 64).expect_err("receive on a dead port");
        ensure!(matches!(again, XskError::PortDown { .. }), "{again}");
        io.close_port(a);
        io.flush()?;

        // B -> C still forwards.
        let before = ns.rx_packets("xc1")?;
        let seen = forward_ping(&ns, &mut io, &[(b, c), (c, b)], "xb1", "10.79.0.1/24", "10.79.0.2", 20)?;
        let arrived = ns.rx_packets("xc1")? - before;
        eprintln!("after deleting xa0: B->C forwarded {seen}, xc1 counted {arrived}");
        ensure!(seen >= 20 && arrived >= seen, "seen {seen}, arrived {arrived}");

        // A new port can still join the UMEM (shared through B, not the dead first socket).
        ns.veth("xd0", "xd1")?;
        let d = io.open_port("xd0", 0)?;
        ensure!(io.port_fd(d) >= 0);
        io.flush()?;
        // check_ports agrees everything left is healthy.
        io.check_ports()?;
        ensure!(io.free_frames() > 0);

        // A port that only ever receives notices through the probes: check_ports ...
        ns.ip(&["link", "del", "xd0"])?;
        let err = io.check_ports().expect_err("check_ports must report xd0");
        eprintln!("check_ports: {err}");
        ensure!(matches!(&err, XskError::PortDown { port, ifname, .. } if *port == d && &**ifname == "xd0"), "{err}");
        // ... or receive's own probe after a run of empty polls.
        ns.ip(&["link", "del", "xc0"])?;
        let err = (0..5000)
            .find_map(|_| io.receive(c, &mut batch, 64).err())
            .context("receive never reported the deleted xc0")?;
        eprintln!("receive: {err}");
        ensure!(matches!(&err, XskError::PortDown { port, ifname, .. } if *port == c && &**ifname == "xc0"), "{err}");
        // B is still fine.
        io.receive(b, &mut batch, 64)?;
        io.flush()?;
        Ok(())
    })
}

#[test]
fn open_port_errors_name_the_interface() -> Result<()> {
    if !is_root() {
        eprintln!("skipping: needs root");
        return Ok(());
    }
    let ns = NetNs::new()?;
    ns.veth("xe0", "xe1")?;
    ns.enter(|| {
        let mut io = WorkerIo::new(&XskConfig {
            hugepages: false,
            ..Default::default()
        })?;
        let err = io.open_port("nope0", 0).unwrap_err();
        ensure!(
            matches!(&err, XskError::NoSuchInterface { ifname } if &**ifname == "nope0"),
            "{err}"
        );
        let _p = io.open_port("xe0", 0)?;
        let err = io.open_port("xe0", 0).unwrap_err();
        ensure!(matches!(err, XskError::PortInUse { .. }), "{err}");
        // veth has one queue per direction by default, so queue 5 does not exist.
        let err = io.open_port("xe1", 5).unwrap_err();
        eprintln!("queue 5: {err}");
        ensure!(
            matches!(&err, XskError::PortSetup { ifname, step: "bind", .. } if &**ifname == "xe1"),
            "{err}"
        );
        Ok(())
    })
}

/// Throughput on this machine: a generator worker on xa1 blasts 64-byte frames, the
/// forwarder worker moves them A -> B, xb1's rx counter measures what came out.
/// `cargo test -p sluice-xsk --test lab -- --ignored --nocapture bench`
#[test]
#[ignore = "benchmark; run by hand"]
fn bench_forward_pps() -> Result<()> {
    use std::sync::atomic::AtomicBool;
    if skip() {
        return Ok(());
    }
    let ns = NetNs::new()?;
    ns.veth("xa0", "xa1")?;
    ns.veth("xb0", "xb1")?;
    let secs = 3;
    ns.enter(|| {
        let mut fwd = WorkerIo::new(&XskConfig { hugepages: false, ..Default::default() })?;
        let a = fwd.open_port("xa0", 0)?;
        let b = fwd.open_port("xb0", 0)?;
        let mut prog = Redirect::attach(&["xa0"])?;
        prog.insert("xa0", &fwd, a)?;
        let stop = AtomicBool::new(false);
        let before = ns.rx_packets("xb1")?;
        let (forwarded, generated) = std::thread::scope(|s| -> Result<(u64, u64)> {
            let gen = s.spawn(|| -> Result<u64> {
                let mut io = WorkerIo::new(&XskConfig { hugepages: false, ..Default::default() })?;
                let g = io.open_port("xa1", 0)?;
                let mut sent = 0;
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..64 {
                        let Some(mut f) = io.alloc_frame() else { break };
                        let buf = io.buffer_mut(&mut f);
                        buf[..12].copy_from_slice(&[2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1]);
                        buf[12..14].copy_from_slice(&[0x88, 0xb5]);
                        f.set_len(60);
                        match io.transmit(g, f) {
                            Ok(()) => sent += 1,
                            Err(f) => {
                                io.release(f);
                                break;
                            }
                        }
                    }
                    io.flush()?;
                }
                Ok(sent)
            });
            let start = Instant::now();
            let mut batch = Vec::with_capacity(64);
            let mut n = 0;
            while start.elapsed() < Duration::from_secs(secs) {
                fwd.receive(a, &mut batch, 64)?;
                for f in batch.drain(..) {
                    n += 1;
                    if let Err(f) = fwd.transmit(b, f) {
                        fwd.release(f);
                    }
                }
                fwd.flush()?;
            }
            stop.store(true, Ordering::Relaxed);
            let generated = gen.join().map_err(|_| anyhow::anyhow!("generator panicked"))??;
            Ok((n, generated))
        })?;
        let arrived = ns.rx_packets("xb1")? - before;
        eprintln!(
            "generated {:.0} pps, forwarded {:.0} pps, arrived at xb1 {:.0} pps (copy mode, veth, 2 threads)",
            generated as f64 / secs as f64,
            forwarded as f64 / secs as f64,
            arrived as f64 / secs as f64
        );
        eprintln!("A: {:?}\nB: {:?}", fwd.port_stats(a)?, fwd.port_stats(b)?);
        Ok(())
    })
}
