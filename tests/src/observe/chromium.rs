//! Debian's Chromium, headless, in the lab's node namespace: the DOM of a
//! page after its scripts ran (`--dump-dom` with a virtual time budget) and a
//! screenshot. Each run gets a fresh HOME and profile under the lab's run
//! directory, removed afterwards; Chromium runs in a process group of its
//! own, ended by its PID (the group's id) if it overruns.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use sluice_lab::command::{in_netns, wait_until};
use sluice_lab::Lab;

pub const CHROMIUM: &str = "/usr/bin/chromium";
/// How long one Chromium run may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(45);
/// Virtual time the page's scripts get before the DOM is taken (ms).
const VIRTUAL_TIME_MS: u32 = 5000;

/// PNG signature and the IHDR chunk's position.
const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];

/// What `--dump-dom` printed after the page's scripts ran.
pub fn dump_dom(lab: &Lab, url: &str) -> Result<String> {
    let out = run_chromium(lab, &["--dump-dom", url], "dump-dom")?;
    ensure!(
        out.contains("<html") || out.contains("<body"),
        "chromium --dump-dom {url} printed no document: {out:?}"
    );
    Ok(out)
}

/// A `width` x `height` screenshot of `url` saved as `path` (PNG).
pub fn screenshot(lab: &Lab, url: &str, path: &Path, (width, height): (u32, u32)) -> Result<()> {
    let _ = fs::remove_file(path);
    let shot = format!("--screenshot={}", path.display());
    let size = format!("--window-size={width},{height}");
    run_chromium(lab, &[&shot, &size, url], "screenshot")?;
    ensure!(
        path.is_file(),
        "chromium wrote no screenshot at {}",
        path.display()
    );
    Ok(())
}

/// The width and height a PNG file declares (its IHDR), checking the signature.
pub fn png_size(bytes: &[u8]) -> Result<(u32, u32)> {
    ensure!(
        bytes.len() > 24 && bytes[..8] == PNG_SIGNATURE && &bytes[12..16] == b"IHDR",
        "not a PNG ({} bytes)",
        bytes.len()
    );
    let be =
        |at: usize| u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    Ok((be(16), be(20)))
}

/// Runs Chromium headless with `args` in the node namespace; its stdout.
fn run_chromium(lab: &Lab, args: &[&str], what: &str) -> Result<String> {
    let home = lab.run_dir().join(format!("chromium-{what}"));
    let _ = fs::remove_dir_all(&home);
    fs::create_dir_all(&home).with_context(|| format!("creating {}", home.display()))?;
    let result = run_in(lab, &home, args);
    let _ = fs::remove_dir_all(&home);
    result
}

fn run_in(lab: &Lab, home: &Path, args: &[&str]) -> Result<String> {
    let profile = format!("--user-data-dir={}", home.join("profile").display());
    let budget = format!("--virtual-time-budget={VIRTUAL_TIME_MS}");
    let mut all = vec![
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-dev-shm-usage",
        &profile,
        &budget,
    ];
    all.extend_from_slice(args);
    let stdout_path = home.join("stdout.log");
    let stderr_path = home.join("stderr.log");
    let mut cmd: Command = in_netns(lab.node_netns(), &all);
    cmd.env("HOME", home)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&stdout_path)?)
        .stderr(fs::File::create(&stderr_path)?)
        .process_group(0);
    let mut child: Child = cmd
        .spawn()
        .with_context(|| format!("starting {CHROMIUM}"))?;
    let deadline = Instant::now() + RUN_TIMEOUT;
    let status = match wait_until(&mut child, deadline)? {
        Some(status) => status,
        None => {
            kill_group(child.id());
            let _ = child.wait();
            bail!(
                "chromium {} did not finish within {RUN_TIMEOUT:?} and was killed\n{}",
                args.join(" "),
                tail(&stderr_path, 20)
            );
        }
    };
    // Helpers (zygote, renderer) left behind by the browser process.
    kill_group(child.id());
    let stdout = fs::read_to_string(&stdout_path).unwrap_or_default();
    ensure!(
        status.success(),
        "chromium {} exited {status}\n{}",
        args.join(" "),
        tail(&stderr_path, 20)
    );
    Ok(stdout)
}

/// SIGKILL to the process group `pgid` (Chromium's, led by the PID we started).
fn kill_group(pgid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status();
}

fn tail(path: &PathBuf, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
