//! Running helper programs (ip, nsenter, ping, iperf3) with a deadline.
//!
//! Every command the lab runs goes through [`run`]: it never waits longer than its
//! timeout, and a command that overruns is killed (it is our own child, so its PID
//! cannot have been reused before we reap it).

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Default deadline for setup commands (ip, sysctl, ethtool).
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

/// What a finished command printed.
#[derive(Debug, Clone)]
pub struct CmdOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CmdOutput {
    pub fn success(&self) -> bool {
        self.status.success()
    }
}

/// The path `ip netns add` binds a namespace to.
pub fn netns_path(netns: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(netns)
}

/// A command that runs `args` inside network namespace `netns`.
///
/// nsenter rather than `ip netns exec`: the latter remounts /sys, which hides the
/// root's bpffs and sysfs view from the program; nsenter only switches the netns.
pub fn in_netns(netns: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={}", netns_path(netns).display()))
        .arg("--")
        .args(args);
    cmd
}

/// `ip <args>` in the root namespace's view; lab calls always carry `-n <netns>`.
pub fn ip(args: &[&str]) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(args);
    cmd
}

/// A printable form of a command for error messages.
pub fn describe(cmd: &Command) -> String {
    let mut text = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

/// Runs `cmd` to completion or until `timeout`, capturing its output. A non-zero
/// exit is not an error here (ping reports loss with exit 1); a timeout is.
pub fn run(cmd: &mut Command, timeout: Duration) -> Result<CmdOutput> {
    start(cmd)?.finish(timeout)
}

/// A started command whose output is being collected.
#[derive(Debug)]
pub struct Running {
    what: String,
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
}

/// Starts `cmd` with its output captured; [`Running::finish`] collects it.
pub fn start(cmd: &mut Command) -> Result<Running> {
    spawn_collecting(cmd.stdin(Stdio::null()))
}

/// Spawns `cmd` (stdin as the caller set it) with stdout and stderr collected.
fn spawn_collecting(cmd: &mut Command) -> Result<Running> {
    let what = describe(cmd);
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start `{what}`"))?;
    let stdout = reader(child.stdout.take());
    let stderr = reader(child.stderr.take());
    Ok(Running {
        what,
        child,
        stdout,
        stderr,
    })
}

/// Like [`run`], with `input` written to the command's stdin (then closed).
pub fn run_with_input(cmd: &mut Command, input: &[u8], timeout: Duration) -> Result<CmdOutput> {
    use std::io::Write;
    let mut running = spawn_collecting(cmd.stdin(Stdio::piped()))?;
    if let Some(mut stdin) = running.child.stdin.take() {
        // A command that exits without reading its input is not our error here.
        let _ = stdin.write_all(input);
    }
    running.finish(timeout)
}

impl Running {
    /// Waits for the command until `timeout`; kills it when it overruns.
    pub fn finish(mut self, timeout: Duration) -> Result<CmdOutput> {
        let status = match wait_until(&mut self.child, Instant::now() + timeout)? {
            Some(status) => status,
            None => {
                // Our own unreaped child: the PID is still ours to signal.
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!(
                    "`{}` did not finish within {timeout:?} and was killed",
                    self.what
                );
            }
        };
        // A grandchild that inherited the pipes could keep them open; don't wait on it.
        let grace = Duration::from_secs(2);
        Ok(CmdOutput {
            status,
            stdout: self.stdout.recv_timeout(grace).unwrap_or_default(),
            stderr: self.stderr.recv_timeout(grace).unwrap_or_default(),
        })
    }
}

/// Like [`run`], but a non-zero exit is an error carrying the command's stderr.
pub fn run_ok(cmd: &mut Command, timeout: Duration) -> Result<CmdOutput> {
    let out = run(cmd, timeout)?;
    if !out.success() {
        bail!(
            "`{}` failed ({}): {}",
            describe(cmd),
            out.status,
            out.stderr.trim()
        );
    }
    Ok(out)
}

fn reader<R: Read + Send + 'static>(pipe: Option<R>) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    if let Some(mut pipe) = pipe {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            let _ = tx.send(String::from_utf8_lossy(&bytes).into_owned());
        });
    }
    rx
}

/// Polls `child` until it exits or `deadline` passes (`Ok(None)`).
pub fn wait_until(child: &mut Child, deadline: Instant) -> Result<Option<ExitStatus>> {
    loop {
        if let Some(status) = child.try_wait().context("waiting for a child")? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Stops one of our own children: SIGTERM, up to `grace` to exit, then SIGKILL.
/// Returns how it ended.
pub fn terminate(child: &mut Child, grace: Duration) -> Result<ExitStatus> {
    if let Some(status) = child.try_wait()? {
        return Ok(status);
    }
    // Not reaped yet, so the PID still names this child.
    let pid = Pid::from_raw(child.id() as i32);
    let _ = kill(pid, Signal::SIGTERM);
    if let Some(status) = wait_until(child, Instant::now() + grace)? {
        return Ok(status);
    }
    let _ = child.kill();
    Ok(child.wait()?)
}

/// Stops a process that is not our child (found in a lab namespace by
/// `ip netns pids`): SIGTERM, then SIGKILL, each followed by a bounded wait for
/// it to disappear. Returns whether it is gone.
pub fn terminate_foreign(pid: u32, grace: Duration) -> bool {
    let target = Pid::from_raw(pid as i32);
    let gone = || !std::path::Path::new(&format!("/proc/{pid}")).exists() || is_zombie(pid);
    for signal in [Signal::SIGTERM, Signal::SIGKILL] {
        if kill(target, signal).is_err() {
            return true;
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if gone() {
                return true;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
    gone()
}

/// A zombie has left its namespaces; only its parent's wait is missing.
fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // The state follows the parenthesized command name, which may contain spaces.
            let after = stat.rsplit_once(')')?.1;
            after.split_whitespace().next().map(|s| s == "Z")
        })
        .unwrap_or(false)
}

/// The lab needs root for namespaces, veths and nsenter.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_captures_output_and_status() {
        let out = run(
            Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
            SETUP_TIMEOUT,
        )
        .unwrap();
        assert_eq!(out.stdout, "out\n");
        assert_eq!(out.stderr, "err\n");
        assert_eq!(out.status.code(), Some(3));
    }

    #[test]
    fn run_kills_a_command_that_overruns() {
        let started = Instant::now();
        let err = run(Command::new("sleep").arg("30"), Duration::from_millis(200)).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(err.to_string().contains("did not finish"), "{err}");
    }

    #[test]
    fn run_ok_reports_stderr() {
        let err = run_ok(
            Command::new("sh").args(["-c", "echo broken >&2; exit 1"]),
            SETUP_TIMEOUT,
        )
        .unwrap_err();
        assert!(err.to_string().contains("broken"), "{err}");
    }

    #[test]
    fn terminate_stops_a_child_that_ignores_nothing() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let status = terminate(&mut child, Duration::from_secs(2)).unwrap();
        assert!(!status.success());
    }

    #[test]
    fn in_netns_uses_nsenter_with_the_bound_path() {
        let cmd = in_netns("sl1x0-p1", &["ping", "-c", "1", "10.200.0.12"]);
        assert_eq!(
            describe(&cmd),
            "nsenter --net=/run/netns/sl1x0-p1 -- ping -c 1 10.200.0.12"
        );
    }
}
