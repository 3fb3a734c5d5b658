//! Small lab helpers shared by the benchmarks (`forward.rs`, `scenarios.rs`).

use std::fs;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use sluice_tables::MacAddr;

use crate::command::{in_netns, ip, run_ok, SETUP_TIMEOUT};
use crate::Lab;

/// Runs `f` on a fresh thread that has entered network namespace `netns`, so interface
/// names resolve there; the calling thread stays where it is.
pub fn within_netns<T: Send>(netns: &str, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let path = crate::command::netns_path(netns);
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let file =
                    fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
                nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .with_context(|| format!("entering {}", path.display()))?;
                f()
            })
            .join()
            .map_err(|_| anyhow!("the thread entering {netns} panicked"))?
    })
}

/// MAC of `ifname` in `netns`.
pub fn link_mac(netns: &str, ifname: &str) -> Result<MacAddr> {
    let links = link_json(netns, ifname, false)?;
    links[0]["address"]
        .as_str()
        .and_then(MacAddr::parse)
        .ok_or_else(|| anyhow!("no MAC for {ifname} in {netns}: {links}"))
}

fn link_json(netns: &str, ifname: &str, stats: bool) -> Result<serde_json::Value> {
    let mut args = vec!["-n", netns, "-j"];
    if stats {
        args.push("-s");
    }
    args.extend(["link", "show", "dev", ifname]);
    let out = run_ok(&mut ip(&args), SETUP_TIMEOUT)?;
    Ok(serde_json::from_str(&out.stdout)?)
}

/// (packets, dropped) of `ifname` in `netns` in direction `dir` ("tx" or "rx").
pub fn link_counts(netns: &str, ifname: &str, dir: &str) -> Result<(u64, u64)> {
    let links = link_json(netns, ifname, true)?;
    let s = &links[0]["stats64"][dir];
    Ok((
        s["packets"]
            .as_u64()
            .ok_or_else(|| anyhow!("no {dir} packets for {ifname} in {netns}"))?,
        s["dropped"].as_u64().unwrap_or(0),
    ))
}

/// Waits until the engine reports `ports` ports up (at most 10 s).
pub fn wait_for_ports(lab: &Lab, ports: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = lab.engine_stats()?;
        let up = stats["ports"]
            .as_array()
            .map_or(0, |p| p.iter().filter(|p| p["state"] == "up").count());
        if up >= ports {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "the engine has {up} of {ports} ports up after 10 s: {}",
                stats["ports"]
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether `program` is on $PATH.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false)
}

/// Fails unless `program` is on $PATH, naming the Debian package that has it.
pub fn require(program: &str, package: &str) -> Result<()> {
    ensure!(
        on_path(program),
        "{program} not found (Debian package {package}: scripts/install-deps.sh)"
    );
    Ok(())
}

/// The network namespace identity (`net:[inode]`) that processes started in `netns` see.
fn netns_identity(netns: &str) -> Result<String> {
    let out = run_ok(
        &mut in_netns(netns, &["readlink", "/proc/self/ns/net"]),
        SETUP_TIMEOUT,
    )?;
    Ok(out.stdout.trim().to_string())
}

/// Refuses to go on unless commands run in the lab's node namespace really land in a
/// namespace other than this process's own (the root namespace): the guard in front of
/// every iptables and nft call of the benchmarks.
pub fn ensure_node_netns_is_not_ours(lab: &Lab) -> Result<()> {
    let ours = fs::read_link("/proc/self/ns/net")
        .context("reading /proc/self/ns/net")?
        .display()
        .to_string();
    let node = netns_identity(lab.node_netns())?;
    ensure!(
        node.starts_with("net:[") && node != ours,
        "refusing to touch netfilter: the node namespace {} resolves to {node}, this \
         process is in {ours}",
        lab.node_netns()
    );
    Ok(())
}

/// A sluice-lab helper binary: `$<env>`, else next to the current executable or one
/// directory up (test binaries live in `deps/`).
pub fn find_tool(name: &str, env: &str) -> Result<std::path::PathBuf> {
    if let Some(path) = std::env::var_os(env) {
        let path = std::path::PathBuf::from(path);
        ensure!(
            path.is_file(),
            "${env} names {}, not a file",
            path.display()
        );
        return Ok(path);
    }
    let exe = std::env::current_exe().context("finding the current executable")?;
    for dir in exe.ancestors().skip(1).take(2) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "no {name} binary next to {} (cargo build --release -p sluice-lab builds it) and ${env} \
         is not set",
        exe.display()
    )
}
