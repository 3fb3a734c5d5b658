//! A real container runtime driven against CNI plugins: containerd (Debian's
//! 1.6) as a private child process, busybox images built locally, and
//! `ctr run --cni` containers whose CNI plugins run in a node network namespace.
//!
//! The pieces, each a guard that removes what it made when dropped (also when a
//! test panics):
//!
//! - [`ScratchDir`]: a fresh directory under the temp dir for everything below.
//! - [`Containerd`]: the daemon with a private config (root, state, socket in its
//!   directory; CRI off; overlayfs). Stopping it also removes what ctr, runc and
//!   the shims leave outside that directory: this instance's shim sockets under
//!   `/run/containerd/s`, `/run/containerd` itself when it did not exist before,
//!   and the cgroup directories named after its containerd namespace.
//! - [`CniNetwork`]: a conf/conflist and a set of plugin binaries, and the node
//!   network namespace the plugins run in. ctr reads only the first file of
//!   `/etc/cni/net.d` and plugins from `/opt/cni/bin` (then `/usr/lib/cni`), and
//!   libcni caches results in `/var/lib/cni`: every ctr of a network runs in a
//!   private mount namespace where these paths are bind mounts of the network's
//!   own directories, so the machine's files are never read or written. The
//!   mount points are created when missing and removed with the last network.
//! - [`RunningContainer`]: `ctr run --rm --cni` kept in the foreground (ctr runs
//!   ADD before starting the task and DEL after it exits; `run -d` never runs
//!   DEL). [`RunningContainer::kill`] SIGKILLs the task (a PID 1 `sh`/`sleep`
//!   ignores SIGTERM), waits for ctr (DEL) and returns its output.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use sluice_tests::containerd::*;
//! let scratch = ScratchDir::new("example")?;
//! let ctd = Containerd::start(scratch.path().join("containerd"))?;
//! let image = ctd.import_busybox()?;
//! let conf = r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge"}]}"#;
//! let plugins = [reference_plugin("bridge")?];
//! let net = CniNetwork::new(scratch.path().join("cni"), "/run/netns/node", "10-n.conflist", conf, &plugins)?;
//! let c1 = ctd.run(&net, "c1", &image, &["sleep", "3600"])?;
//! let addr = c1.ipv4()?;
//! let out = c1.kill()?; // ctr's output, after CNI DEL
//! # let _ = (addr, out); Ok(()) }
//! ```

use std::collections::BTreeSet;
use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sluice_lab::command::{self, describe, run, run_ok, wait_until, CmdOutput};

/// The image [`build_busybox_image`] tags.
pub const BUSYBOX_IMAGE: &str = "localhost/sluice/busybox:test";
/// Static busybox from Debian's busybox-static.
pub const BUSYBOX_BIN: &str = "/bin/busybox";
/// Where Debian's containernetworking-plugins installs the reference plugins.
pub const REFERENCE_PLUGIN_DIR: &str = "/usr/lib/cni";
/// Applets linked to busybox in the image.
#[rustfmt::skip]
pub const BUSYBOX_APPLETS: &[&str] = &[
    "arp", "ash", "awk", "cat", "cut", "date", "dd", "echo", "env", "false", "grep", "head",
    "hostname", "httpd", "id", "ifconfig", "ip", "kill", "ln", "ls", "mkdir", "nc", "netstat",
    "nslookup", "ping", "ping6", "printf", "ps", "rm", "route", "sed", "seq", "sh", "sleep",
    "sort", "sysctl", "tail", "tee", "test", "timeout", "touch", "tr", "traceroute", "true",
    "uname", "wc", "wget",
];

/// Deadline for one ctr command (import, exec, kill, rm).
pub const CTR_TIMEOUT: Duration = Duration::from_secs(30);
/// Deadline for containerd to answer `ctr version`.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Deadline for a container to reach RUNNING (CNI ADD included), and for ctr
/// to finish after its task was killed (CNI DEL included).
pub const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// Paths ctr and libcni use, which each ctr of a [`CniNetwork`] sees as bind
/// mounts of the network's own directories (conf, bin, cache).
const CNI_CONF_DIR: &str = "/etc/cni/net.d";
const CNI_BIN_DIR: &str = "/opt/cni/bin";
const CNI_CACHE_DIR: &str = "/var/lib/cni";
/// containerd's default state dir: the shims put their sockets in `s/` under
/// it whatever the config says.
const RUN_CONTAINERD: &str = "/run/containerd";

static NEXT: AtomicU32 = AtomicU32::new(0);

fn next_id() -> u32 {
    NEXT.fetch_add(1, Ordering::Relaxed)
}

// ---------------------------------------------------------------------------
// Prerequisites

/// A program on `$PATH`, or `None`.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn missing(what: &str) -> anyhow::Error {
    anyhow!(
        "{what}: install the test dependencies with scripts/install-deps.sh \
         (apt: containerd containernetworking-plugins busybox-static)"
    )
}

/// Fails, naming `scripts/install-deps.sh`, when containerd, ctr, runc, static
/// busybox or the reference CNI plugins are missing.
pub fn check_prerequisites() -> Result<()> {
    for program in [
        "containerd",
        "ctr",
        "runc",
        "containerd-shim-runc-v2",
        "nsenter",
        "unshare",
    ] {
        if find_program(program).is_none() {
            return Err(missing(&format!("`{program}` is not installed")));
        }
    }
    let busybox = Path::new(BUSYBOX_BIN);
    if !busybox.is_file() {
        return Err(missing(&format!("{BUSYBOX_BIN} does not exist")));
    }
    if elf_has_interpreter(busybox)? {
        return Err(missing(&format!(
            "{BUSYBOX_BIN} is dynamically linked (the busybox package, not busybox-static)"
        )));
    }
    for plugin in ["bridge", "host-local"] {
        reference_plugin(plugin)?;
    }
    Ok(())
}

/// A reference plugin from containernetworking-plugins, e.g. `bridge`.
pub fn reference_plugin(name: &str) -> Result<PathBuf> {
    let path = Path::new(REFERENCE_PLUGIN_DIR).join(name);
    if !path.is_file() {
        return Err(missing(&format!(
            "CNI plugin {} is missing",
            path.display()
        )));
    }
    Ok(path)
}

/// Whether an ELF64 little-endian file has a PT_INTERP program header, i.e. is
/// dynamically linked.
fn elf_has_interpreter(path: &Path) -> Result<bool> {
    let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    ensure!(
        bytes.len() > 64 && bytes[..4] == *b"\x7fELF" && bytes[4] == 2 && bytes[5] == 1,
        "{} is not a 64-bit little-endian ELF file",
        path.display()
    );
    let u16_at = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]) as usize;
    let phoff = u64::from_le_bytes(bytes[0x20..0x28].try_into()?) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    for i in 0..phnum {
        let at = phoff + i * phentsize;
        let p_type = bytes
            .get(at..at + 4)
            .ok_or_else(|| anyhow!("{}: truncated program headers", path.display()))?;
        if u32::from_le_bytes(p_type.try_into()?) == 3 {
            return Ok(true);
        }
    }
    Ok(false)
}

// ---------------------------------------------------------------------------
// Scratch directories, mounts, removal

/// A fresh directory `<temp>/sluice-<tag>-<pid>-<n>`, removed (with anything
/// still mounted below it unmounted first) when dropped.
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    pub fn new(tag: &str) -> Result<ScratchDir> {
        let path =
            std::env::temp_dir().join(format!("sluice-{tag}-{}-{}", std::process::id(), next_id()));
        if path.exists() {
            // A leftover of an earlier process with the same PID.
            remove_tree(&path)?;
        }
        fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(ScratchDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if let Err(err) = remove_tree(&self.path) {
            eprintln!("containerd harness: {err:#}");
        }
    }
}

/// Mount points (of this mount namespace) at or below `dir`, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found: Vec<PathBuf> = info
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape_mountinfo(field)))
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

fn unescape_mountinfo(field: &str) -> String {
    let mut out = String::new();
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let code: String = chars.by_ref().take(3).collect();
            match u8::from_str_radix(&code, 8) {
                Ok(byte) => out.push(byte as char),
                Err(_) => {
                    out.push('\\');
                    out.push_str(&code);
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Unmounts what is mounted below `dir` (lazily if busy), then removes it.
pub fn remove_tree(dir: &Path) -> Result<()> {
    for mount in mounts_under(dir) {
        let plain = run(Command::new("umount").arg(&mount), command::SETUP_TIMEOUT);
        if !plain.map(|o| o.success()).unwrap_or(false) {
            run_ok(
                Command::new("umount").arg("-l").arg(&mount),
                command::SETUP_TIMEOUT,
            )
            .with_context(|| format!("unmounting {}", mount.display()))?;
        }
    }
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(anyhow!("removing {}: {err}", dir.display())),
    }
}

/// Removes a directory tree that holds only directories (a cgroup: its files
/// are virtual and go with their directory), deepest first.
fn remove_dir_tree(dir: &Path) -> Result<()> {
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_dir_tree(&entry.path())?;
            }
        }
    }
    match fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(anyhow!("removing {}: {err}", dir.display())),
    }
}

/// Mount points of the cgroup hierarchies (v1 controllers, v2 or both).
fn cgroup_hierarchies() -> Vec<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let fstype = right.split(' ').next()?;
            let mount = left.split(' ').nth(4)?;
            matches!(fstype, "cgroup" | "cgroup2").then(|| PathBuf::from(unescape_mountinfo(mount)))
        })
        .collect()
}

/// PIDs of containerd shims serving the containerd at `address` (their
/// command line carries `-address <address>`).
pub fn shims_for(address: &Path) -> Vec<u32> {
    let want = address.as_os_str().as_encoded_bytes();
    let Ok(procs) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            let is_shim = args
                .first()
                .is_some_and(|a0| a0.ends_with(b"containerd-shim-runc-v2"));
            is_shim && args.windows(2).any(|w| w[0] == b"-address" && w[1] == want)
        })
        .collect()
}

// ---------------------------------------------------------------------------
// The busybox image

struct TarFile<'a> {
    path: &'a str,
    kind: tar::EntryType,
    mode: u32,
    data: &'a [u8],
    link: Option<&'a str>,
}

fn tar_dir(path: &str) -> TarFile<'_> {
    TarFile {
        path,
        kind: tar::EntryType::Directory,
        mode: 0o755,
        data: &[],
        link: None,
    }
}

fn tar_file<'a>(path: &'a str, mode: u32, data: &'a [u8]) -> TarFile<'a> {
    TarFile {
        path,
        kind: tar::EntryType::Regular,
        mode,
        data,
        link: None,
    }
}

/// A tar with root-owned entries, mtime 0, in the given order: the same input
/// always gives the same bytes.
fn deterministic_tar(files: &[TarFile<'_>]) -> Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    for file in files {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(file.kind);
        header.set_mode(file.mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_size(file.data.len() as u64);
        match file.link {
            Some(target) => builder.append_link(&mut header, file.path, target)?,
            None => builder.append_data(&mut header, file.path, file.data)?,
        }
    }
    Ok(builder.into_inner()?)
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

/// Writes a docker-archive tar of a one-layer image to `path`: static busybox
/// ([`BUSYBOX_BIN`]) as `/bin/busybox`, [`BUSYBOX_APPLETS`] as symlinks to it,
/// `/etc/passwd` and `/etc/group` for root, empty `/tmp`, `/proc`, ...
/// Returns the image reference it is tagged with ([`BUSYBOX_IMAGE`]);
/// import it with [`Containerd::import_image`].
pub fn build_busybox_image(path: &Path) -> Result<String> {
    let busybox = fs::read(BUSYBOX_BIN).map_err(|err| missing(&format!("{BUSYBOX_BIN}: {err}")))?;
    let applets = run_ok(
        Command::new(BUSYBOX_BIN).arg("--list"),
        command::SETUP_TIMEOUT,
    )?;
    let available: BTreeSet<&str> = applets.stdout.lines().collect();
    let absent: Vec<&str> = BUSYBOX_APPLETS
        .iter()
        .copied()
        .filter(|a| !available.contains(a))
        .collect();
    ensure!(absent.is_empty(), "{BUSYBOX_BIN} lacks applets {absent:?}");

    let (dir, file) = (tar_dir, tar_file);
    let mut entries = vec![dir("bin/"), file("bin/busybox", 0o755, &busybox[..])];
    let mut sorted: Vec<&str> = BUSYBOX_APPLETS.to_vec();
    sorted.sort_unstable();
    let links: Vec<String> = sorted.iter().map(|a| format!("bin/{a}")).collect();
    for link in &links {
        entries.push(TarFile {
            path: link,
            kind: tar::EntryType::Symlink,
            mode: 0o777,
            data: &[],
            link: Some("busybox"),
        });
    }
    entries.extend([
        dir("dev/"),
        dir("etc/"),
        file("etc/group", 0o644, b"root:x:0:\n"),
        file("etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\n"),
        dir("proc/"),
        dir("root/"),
        dir("sys/"),
        TarFile {
            mode: 0o1777,
            ..dir("tmp/")
        },
    ]);
    let layer = deterministic_tar(&entries)?;
    let layer_hex = sha256_hex(&layer);

    let epoch = "1970-01-01T00:00:00Z";
    let config = serde_json::to_vec(&json!({
        "architecture": oci_arch(),
        "os": "linux",
        "created": epoch,
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["sh"],
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_hex}")]},
        "history": [{"created": epoch, "created_by": "sluice-tests build_busybox_image"}],
    }))?;
    let config_name = format!("{}.json", sha256_hex(&config));
    let layer_dir = format!("{layer_hex}/");
    let layer_name = format!("{layer_hex}/layer.tar");
    let manifest = serde_json::to_vec(&json!([{
        "Config": config_name,
        "RepoTags": [BUSYBOX_IMAGE],
        "Layers": [layer_name],
    }]))?;
    let archive = deterministic_tar(&[
        dir(&layer_dir),
        file(&layer_name, 0o644, &layer),
        file(&config_name, 0o644, &config),
        file("manifest.json", 0o644, &manifest),
    ])?;
    fs::write(path, archive).with_context(|| format!("writing {}", path.display()))?;
    Ok(BUSYBOX_IMAGE.to_string())
}

// ---------------------------------------------------------------------------
// containerd

/// A private containerd, started by [`Containerd::start`] and stopped (by PID)
/// when dropped, with everything it and its shims left behind.
#[derive(Debug)]
pub struct Containerd {
    dir: PathBuf,
    address: PathBuf,
    namespace: String,
    child: Option<Child>,
    /// Of `/run/containerd`, `/run/containerd/s`, `/run/containerd/fifo`: those
    /// absent at start, removed at the end when empty.
    run_dirs_absent: Vec<PathBuf>,
    /// `<hierarchy>/<namespace>` cgroups absent at start (all of them, normally).
    cgroups_absent: Vec<PathBuf>,
    /// Every container ID run, for their shim sockets.
    ids: Mutex<Vec<String>>,
}

impl Containerd {
    /// Starts `containerd --config <dir>/config.toml` with root, state and the
    /// socket under `dir` (created; it must be absent or empty, and is removed
    /// at the end), the CRI plugin disabled, and a fresh containerd namespace
    /// (`sluice-<pid>-<n>`) for ctr. Returns when `ctr version` answers.
    pub fn start(dir: impl AsRef<Path>) -> Result<Containerd> {
        check_prerequisites()?;
        ensure!(command::is_root(), "containerd needs root");
        let dir = dir.as_ref().to_path_buf();
        ensure!(dir.is_absolute(), "{} is not absolute", dir.display());
        if dir.exists() {
            let empty = fs::read_dir(&dir)?.next().is_none();
            ensure!(empty, "{} exists and is not empty", dir.display());
        }
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let namespace = format!("sluice-{}-{}", std::process::id(), next_id());
        let run_dirs_absent = ["", "s", "fifo"]
            .iter()
            .map(|sub| Path::new(RUN_CONTAINERD).join(sub))
            .filter(|p| !p.exists())
            .collect();
        let cgroups_absent = cgroup_hierarchies()
            .into_iter()
            .map(|h| h.join(&namespace))
            .filter(|p| !p.exists())
            .collect();
        let mut ctd = Containerd {
            address: dir.join("containerd.sock"),
            dir,
            namespace,
            child: None,
            run_dirs_absent,
            cgroups_absent,
            ids: Mutex::new(Vec::new()),
        };
        // From here on an error drops `ctd`, which cleans up.
        ctd.spawn()?;
        Ok(ctd)
    }

    fn spawn(&mut self) -> Result<()> {
        let d = self.dir.display();
        let config = format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "{d}/containerd.sock"

[ttrpc]
  address = "{d}/containerd.sock.ttrpc"

[debug]
  level = "info"

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"

[plugins."io.containerd.runtime.v1.linux"]
  runtime_root = "{d}/runc-v1"
"#
        );
        let config_path = self.dir.join("config.toml");
        fs::write(&config_path, config)?;
        for sub in ["ctr", "fifo", "runc"] {
            fs::create_dir_all(self.dir.join(sub))?;
        }
        let log = fs::File::create(self.log_path())?;
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting containerd")?;
        self.child = Some(child);

        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!(
                    "containerd exited at start ({status}):\n{}",
                    self.log_tail(30)
                );
            }
            let answer = run(&mut self.ctr(&["version"]), Duration::from_secs(5));
            if answer.map(|o| o.success()).unwrap_or(false) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "containerd did not answer within {START_TIMEOUT:?}:\n{}",
                    self.log_tail(30)
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The directory holding its config, root, state, socket and logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The grpc socket (what `CONTAINERD_ADDRESS` / `ctr --address` take).
    pub fn address(&self) -> &Path {
        &self.address
    }

    /// The containerd namespace every ctr command of this instance uses; also
    /// the cgroup parent of its containers.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// containerd's PID.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("containerd.log")
    }

    /// The last `lines` lines of containerd's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// `ctr --address <socket> -n <namespace> <args>`.
    pub fn ctr(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address")
            .arg(&self.address)
            .args(["-n", &self.namespace])
            .args(args);
        cmd
    }

    /// Runs a ctr command; a non-zero exit is an error with its stderr.
    pub fn ctr_ok(&self, args: &[&str]) -> Result<CmdOutput> {
        run_ok(&mut self.ctr(args), CTR_TIMEOUT)
    }

    /// `ctr image import` of a docker-archive or OCI tar, unpacked for overlayfs.
    pub fn import_image(&self, tar: &Path) -> Result<()> {
        let tar = tar.to_str().ok_or_else(|| anyhow!("non-UTF-8 path"))?;
        self.ctr_ok(&["image", "import", "--snapshotter", "overlayfs", tar])?;
        Ok(())
    }

    /// Builds the busybox image in this instance's directory and imports it.
    pub fn import_busybox(&self) -> Result<String> {
        let tar = self.dir.join("busybox-image.tar");
        let image = build_busybox_image(&tar)?;
        self.import_image(&tar)?;
        let listed = self.ctr_ok(&["image", "ls", "-q"])?;
        ensure!(
            listed.stdout.lines().any(|l| l == image),
            "image {image} not listed after import: {}",
            listed.stdout
        );
        Ok(image)
    }

    /// IDs of the containers of this namespace.
    pub fn containers(&self) -> Result<Vec<String>> {
        let out = self.ctr_ok(&["container", "ls", "-q"])?;
        Ok(out.stdout.split_whitespace().map(String::from).collect())
    }

    /// Tasks of this namespace: (ID, PID, status).
    pub fn tasks(&self) -> Result<Vec<(String, u32, String)>> {
        let out = self.ctr_ok(&["task", "ls"])?;
        Ok(out
            .stdout
            .lines()
            .skip(1)
            .filter_map(|line| {
                let mut f = line.split_whitespace();
                let id = f.next()?.to_string();
                let pid = f.next()?.parse().ok()?;
                Some((id, pid, f.next()?.to_string()))
            })
            .collect())
    }

    /// Shim processes serving this containerd.
    pub fn shim_pids(&self) -> Vec<u32> {
        shims_for(&self.address)
    }

    /// Removes container `id` whatever its state: kills and deletes its task,
    /// deletes the container and its snapshot. Absent is fine.
    pub fn remove_container(&self, id: &str) -> Result<()> {
        let exists = run(&mut self.ctr(&["container", "info", id]), CTR_TIMEOUT)?.success();
        if !exists {
            return Ok(());
        }
        let _ = run(
            &mut self.ctr(&["task", "kill", "-s", "SIGKILL", id]),
            CTR_TIMEOUT,
        );
        let _ = run(&mut self.ctr(&["task", "rm", "-f", id]), CTR_TIMEOUT);
        self.ctr_ok(&["container", "rm", id])
            .with_context(|| format!("removing container {id}"))?;
        Ok(())
    }

    /// `ctr run --rm --cni IMAGE ID ARGS` in `net`'s node namespace and private
    /// mounts; returns when the task runs (CNI ADD succeeded). When ctr exits
    /// before (ADD failed, or the command ended), the container is removed and
    /// the error carries ctr's output. For commands that end by themselves use
    /// [`Containerd::run_to_completion`].
    pub fn run<'a>(
        &'a self,
        net: &'a CniNetwork,
        id: &str,
        image: &str,
        args: &[&str],
    ) -> Result<RunningContainer<'a>> {
        self.run_with(net, id, image, &[], args)
    }

    /// [`Containerd::run`] with extra `ctr run` flags (`--env K=V`,
    /// `--cap-add ...`, `--label ...`), placed before the image.
    pub fn run_with<'a>(
        &'a self,
        net: &'a CniNetwork,
        id: &str,
        image: &str,
        ctr_flags: &[&str],
        args: &[&str],
    ) -> Result<RunningContainer<'a>> {
        let mut container = self.spawn_run(net, id, image, ctr_flags, args)?;
        let deadline = Instant::now() + RUN_TIMEOUT;
        loop {
            let ctr = container.ctr.as_mut().expect("ctr runs");
            if ctr.try_wait()?.is_some() {
                let out = container.finish(false, RUN_TIMEOUT);
                let out = out
                    .map(|o| format_output(&o))
                    .unwrap_or_else(|e| format!("{e:#}"));
                bail!("ctr run of {id} exited before its task ran (CNI ADD failed?):\n{out}");
            }
            let running = self
                .tasks()?
                .into_iter()
                .find(|(task, _, status)| task == id && status == "RUNNING");
            if let Some((_, pid, _)) = running {
                container.task_pid = pid;
                return Ok(container);
            }
            if Instant::now() >= deadline {
                let out = container.finish(true, RUN_TIMEOUT);
                let out = out
                    .map(|o| format_output(&o))
                    .unwrap_or_else(|e| format!("{e:#}"));
                bail!("container {id} did not run within {RUN_TIMEOUT:?}:\n{out}");
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs a container whose command ends by itself (`ip addr`, `ping -c`),
    /// with CNI ADD before and DEL after; returns ctr's output (the command's
    /// stdout/stderr, ctr's errors). Killed (and cleaned) after `timeout`.
    pub fn run_to_completion(
        &self,
        net: &CniNetwork,
        id: &str,
        image: &str,
        args: &[&str],
        timeout: Duration,
    ) -> Result<CmdOutput> {
        let mut container = self.spawn_run(net, id, image, &[], args)?;
        let ctr = container.ctr.as_mut().expect("ctr runs");
        let ended = wait_until(ctr, Instant::now() + timeout)?.is_some();
        let out = container.finish(!ended, RUN_TIMEOUT)?;
        ensure!(
            ended,
            "container {id} did not finish within {timeout:?}:\n{}",
            format_output(&out)
        );
        Ok(out)
    }

    fn spawn_run<'a>(
        &'a self,
        net: &'a CniNetwork,
        id: &str,
        image: &str,
        ctr_flags: &[&str],
        args: &[&str],
    ) -> Result<RunningContainer<'a>> {
        ensure!(valid_id(id), "invalid container id {id:?}");
        {
            let mut ids = self.ids.lock().unwrap_or_else(|p| p.into_inner());
            ensure!(
                !ids.iter().any(|i| i == id),
                "container id {id} was already used"
            );
            ids.push(id.to_string());
        }
        let stdout = self.dir.join("ctr").join(format!("{id}.stdout"));
        let stderr = self.dir.join("ctr").join(format!("{id}.stderr"));
        let mut ctr = vec![
            "ctr".to_string(),
            "--address".into(),
            self.address.display().to_string(),
            "-n".into(),
            self.namespace.clone(),
            "run".into(),
            "--rm".into(),
            "--cni".into(),
            "--snapshotter".into(),
            "overlayfs".into(),
            "--runc-root".into(),
            self.dir.join("runc").display().to_string(),
            "--fifo-dir".into(),
            self.dir.join("fifo").display().to_string(),
        ];
        ctr.extend(ctr_flags.iter().map(|s| s.to_string()));
        ctr.push(image.to_string());
        ctr.push(id.to_string());
        ctr.extend(args.iter().map(|s| s.to_string()));
        let mut cmd = net.command(&ctr);
        cmd.stdin(Stdio::null())
            .stdout(fs::File::create(&stdout)?)
            .stderr(fs::File::create(&stderr)?);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting `{}`", describe(&cmd)))?;
        Ok(RunningContainer {
            ctd: self,
            net,
            id: id.to_string(),
            ctr: Some(child),
            task_pid: 0,
            stdout,
            stderr,
            next_exec: AtomicU32::new(0),
        })
    }

    /// Stops everything; keeps going past errors and returns them.
    fn shutdown(&mut self) -> Vec<anyhow::Error> {
        let mut errors = Vec::new();
        if let Some(mut child) = self.child.take() {
            // Containers a RunningContainer did not clean (leaked guards): their
            // shims exit when they are deleted.
            if child.try_wait().ok().flatten().is_none() {
                if let Ok(ids) = self.containers() {
                    for id in ids {
                        if let Err(err) = self.remove_container(&id) {
                            errors.push(err);
                        }
                    }
                }
            }
            if let Err(err) = command::terminate(&mut child, Duration::from_secs(5)) {
                errors.push(anyhow!("stopping containerd: {err:#}"));
            }
        }
        for pid in self.shim_pids() {
            if !command::terminate_foreign(pid, Duration::from_secs(2)) {
                errors.push(anyhow!("shim {pid} of {} survives", self.namespace));
            }
        }
        let ids = std::mem::take(&mut *self.ids.lock().unwrap_or_else(|p| p.into_inner()));
        for id in ids {
            let _ = fs::remove_file(self.shim_socket_path(&id));
        }
        // Deepest first; an error means someone else's files are there.
        for dir in self.run_dirs_absent.iter().rev() {
            let _ = fs::remove_dir(dir);
        }
        for cgroup in &self.cgroups_absent {
            if let Err(err) = remove_dir_tree(cgroup) {
                errors.push(err);
            }
        }
        if let Err(err) = remove_tree(&self.dir) {
            errors.push(err);
        }
        errors
    }

    /// The socket of container `id`'s shim: `/run/containerd/s/<sha256 of
    /// "<address>/<namespace>/<id>">` whatever the config says (containerd 1.6
    /// runtime/v2/shim SocketAddress). The shim removes it when it exits.
    pub fn shim_socket_path(&self, id: &str) -> PathBuf {
        let key = self.address.join(&self.namespace).join(id);
        Path::new(RUN_CONTAINERD)
            .join("s")
            .join(sha256_hex(key.as_os_str().as_encoded_bytes()))
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        for err in self.shutdown() {
            eprintln!("containerd harness: {err:#}");
        }
    }
}

/// containerd's identifier rule: alphanumerics separated by single `.`, `_`, `-`.
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 76
        && id
            .split(['.', '_', '-'])
            .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric()))
}

fn format_output(out: &CmdOutput) -> String {
    format!(
        "status: {}\n--- stdout\n{}--- stderr\n{}",
        out.status, out.stdout, out.stderr
    )
}

// ---------------------------------------------------------------------------
// CNI networks

#[derive(Debug, Default)]
struct MountPoints {
    users: usize,
    /// Directories created for the mount points, parents first.
    created: Vec<PathBuf>,
}

static MOUNT_POINTS: Mutex<MountPoints> = Mutex::new(MountPoints {
    users: 0,
    created: Vec::new(),
});

/// Holds the bind-mount targets in place; the last holder of the process
/// removes the directories that were created for them.
#[derive(Debug)]
struct MountPointLease(());

impl MountPointLease {
    fn acquire() -> Result<MountPointLease> {
        let mut points = MOUNT_POINTS.lock().unwrap_or_else(|p| p.into_inner());
        if points.users == 0 {
            for target in [CNI_CONF_DIR, CNI_BIN_DIR, CNI_CACHE_DIR] {
                let mut chain: Vec<&Path> = Path::new(target).ancestors().collect();
                chain.reverse();
                for dir in chain {
                    if dir.exists() {
                        continue;
                    }
                    if let Err(err) = fs::create_dir(dir) {
                        let err = anyhow!("creating mount point {}: {err}", dir.display());
                        release(&mut points);
                        return Err(err);
                    }
                    points.created.push(dir.to_path_buf());
                }
            }
        }
        points.users += 1;
        Ok(MountPointLease(()))
    }
}

/// Removes the created mount points when nobody holds them.
fn release(points: &mut MountPoints) {
    if points.users > 0 {
        return;
    }
    for dir in std::mem::take(&mut points.created).iter().rev() {
        if let Err(err) = fs::remove_dir(dir) {
            eprintln!("containerd harness: removing {}: {err}", dir.display());
        }
    }
}

impl Drop for MountPointLease {
    fn drop(&mut self) {
        let mut points = MOUNT_POINTS.lock().unwrap_or_else(|p| p.into_inner());
        points.users -= 1;
        release(&mut points);
    }
}

/// A CNI configuration, its plugins and the node network namespace they run
/// in. Its directory holds `net.d/<conf_name>` (the only config), `bin/` (copies
/// of the plugins: nothing else is visible to ctr) and `cache/` (libcni's
/// `/var/lib/cni`: cached results, `results/<network>-<CNI_CONTAINERID>-<ifname>`).
#[derive(Debug)]
pub struct CniNetwork {
    dir: PathBuf,
    node_netns: PathBuf,
    conf_name: String,
    _mount_points: MountPointLease,
}

impl CniNetwork {
    /// Writes `conf` (conf or conflist JSON text) as `net.d/<conf_name>` and
    /// copies `plugins` into `bin/` under `dir` (created; removed on drop).
    /// `node_netns` is a network namespace path (`/run/netns/<name>`), not the
    /// root namespace: the host side of the pod network lives there.
    pub fn new(
        dir: impl AsRef<Path>,
        node_netns: impl AsRef<Path>,
        conf_name: &str,
        conf: &str,
        plugins: &[PathBuf],
    ) -> Result<CniNetwork> {
        let dir = dir.as_ref().to_path_buf();
        let node_netns = node_netns.as_ref().to_path_buf();
        ensure!(
            [".conf", ".conflist", ".json"]
                .iter()
                .any(|ext| conf_name.ends_with(ext))
                && !conf_name.contains('/'),
            "a CNI config file name ends with .conf, .conflist or .json: {conf_name:?}"
        );
        let ns = fs::metadata(&node_netns)
            .with_context(|| format!("node namespace {}", node_netns.display()))?;
        let root = fs::metadata("/proc/self/ns/net")?;
        ensure!(
            (ns.dev(), ns.ino()) != (root.dev(), root.ino()),
            "{} is this process's own network namespace; CNI runs in a node namespace",
            node_netns.display()
        );
        let lease = MountPointLease::acquire()?;
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let net = CniNetwork {
            dir,
            node_netns,
            conf_name: conf_name.to_string(),
            _mount_points: lease,
        };
        for sub in ["net.d", "bin", "cache"] {
            fs::create_dir_all(net.dir.join(sub))?;
        }
        fs::write(net.conf_dir().join(conf_name), conf)?;
        for plugin in plugins {
            let name = plugin
                .file_name()
                .ok_or_else(|| anyhow!("plugin path {} has no file name", plugin.display()))?;
            let to = net.bin_dir().join(name);
            fs::copy(plugin, &to)
                .with_context(|| format!("copying {} to {}", plugin.display(), to.display()))?;
        }
        Ok(net)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What ctr sees as `/etc/cni/net.d`.
    pub fn conf_dir(&self) -> PathBuf {
        self.dir.join("net.d")
    }

    /// What ctr sees as `/opt/cni/bin` (and `/usr/lib/cni`).
    pub fn bin_dir(&self) -> PathBuf {
        self.dir.join("bin")
    }

    /// What libcni sees as `/var/lib/cni`.
    pub fn cache_dir(&self) -> PathBuf {
        self.dir.join("cache")
    }

    pub fn conf_path(&self) -> PathBuf {
        self.conf_dir().join(&self.conf_name)
    }

    pub fn node_netns(&self) -> &Path {
        &self.node_netns
    }

    /// Replaces the config; containers started from now on use it.
    pub fn set_conf(&self, conf: &str) -> Result<()> {
        Ok(fs::write(self.conf_path(), conf)?)
    }

    /// `args` in the node namespace and a private mount namespace where the CNI
    /// paths are bind mounts of this network's directories.
    pub fn command(&self, args: &[String]) -> Command {
        const SCRIPT: &str = r#"set -e
mount --bind "$1" /etc/cni/net.d
mount --bind "$2" /opt/cni/bin
if [ -d /usr/lib/cni ]; then mount --bind "$2" /usr/lib/cni; fi
mount --bind "$3" /var/lib/cni
shift 3
exec "$@""#;
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.node_netns.display()))
            .args(["--", "unshare", "--mount", "--propagation", "private"])
            .args(["--", "sh", "-c", SCRIPT, "sh"])
            .arg(self.conf_dir())
            .arg(self.bin_dir())
            .arg(self.cache_dir())
            .args(args);
        cmd
    }

    /// libcni's cached ADD results (one per attachment still present), as
    /// `(cache file name, entry)`; an entry has `containerId`, `ifName`,
    /// `networkName`, `result`. DEL removes the entry.
    pub fn cached_results(&self) -> Result<Vec<(String, Value)>> {
        let dir = self.cache_dir().join("results");
        let Ok(entries) = fs::read_dir(&dir) else {
            return Ok(Vec::new());
        };
        let mut found = Vec::new();
        for entry in entries {
            let entry = entry?;
            let text = fs::read_to_string(entry.path())?;
            let value: Value = serde_json::from_str(&text)
                .with_context(|| format!("parsing {}", entry.path().display()))?;
            found.push((entry.file_name().to_string_lossy().into_owned(), value));
        }
        found.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(found)
    }
}

// ---------------------------------------------------------------------------
// Containers

/// A container started by [`Containerd::run`]: its ctr runs in the foreground
/// and runs CNI DEL when the task ends. Dropping it kills the task, waits for
/// ctr, and removes what is left of the container.
#[derive(Debug)]
pub struct RunningContainer<'a> {
    ctd: &'a Containerd,
    net: &'a CniNetwork,
    id: String,
    ctr: Option<Child>,
    task_pid: u32,
    stdout: PathBuf,
    stderr: PathBuf,
    next_exec: AtomicU32,
}

impl RunningContainer<'_> {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// What the plugins get as `CNI_CONTAINERID`: `<namespace>-<id>`.
    pub fn cni_container_id(&self) -> String {
        format!("{}-{}", self.ctd.namespace, self.id)
    }

    /// The task's PID 1, in the root PID namespace.
    pub fn task_pid(&self) -> u32 {
        self.task_pid
    }

    /// The container's network namespace (what the plugins got as `CNI_NETNS`).
    pub fn netns_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.task_pid))
    }

    /// A host program in the container's network namespace (nsenter).
    pub fn host_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.netns_path().display()))
            .arg("--")
            .args(args);
        cmd
    }

    /// `ctr task exec` of `args` in the container, with [`CTR_TIMEOUT`].
    pub fn exec(&self, args: &[&str]) -> Result<CmdOutput> {
        self.exec_timeout(args, CTR_TIMEOUT)
    }

    /// `ctr task exec`; killed after `timeout`. A non-zero exit is not an error.
    pub fn exec_timeout(&self, args: &[&str], timeout: Duration) -> Result<CmdOutput> {
        let exec_id = format!(
            "{}-exec{}",
            self.id,
            self.next_exec.fetch_add(1, Ordering::Relaxed)
        );
        let fifo = self.ctd.dir.join("fifo").display().to_string();
        let mut cmd_args = vec!["task", "exec", "--fifo-dir", &fifo, "--exec-id", &exec_id];
        cmd_args.push(&self.id);
        cmd_args.extend_from_slice(args);
        run(&mut self.ctd.ctr(&cmd_args), timeout)
    }

    /// This container's entry in libcni's result cache (`result` is what the
    /// plugin chain returned for ADD).
    pub fn cni_cache_entry(&self) -> Result<Value> {
        let want = self.cni_container_id();
        self.net
            .cached_results()?
            .into_iter()
            .map(|(_, v)| v)
            .find(|v| v["containerId"] == want.as_str())
            .ok_or_else(|| anyhow!("no cached CNI result for {want}"))
    }

    /// The ADD result.
    pub fn cni_result(&self) -> Result<Value> {
        Ok(self.cni_cache_entry()?["result"].clone())
    }

    /// The first IPv4 address of the ADD result.
    pub fn ipv4(&self) -> Result<Ipv4Addr> {
        let result = self.cni_result()?;
        result["ips"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|ip| ip["address"].as_str())
            .filter_map(|cidr| cidr.split('/').next()?.parse::<Ipv4Addr>().ok())
            .next()
            .ok_or_else(|| anyhow!("no IPv4 address in the CNI result {result}"))
    }

    /// Whether ctr (and so the container) still runs.
    pub fn is_running(&mut self) -> bool {
        match self.ctr.as_mut() {
            Some(ctr) => matches!(ctr.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// What ctr printed so far (the container's stdout/stderr and ctr's errors).
    pub fn output_so_far(&self) -> (String, String) {
        (
            fs::read_to_string(&self.stdout).unwrap_or_default(),
            fs::read_to_string(&self.stderr).unwrap_or_default(),
        )
    }

    /// SIGKILLs the task and waits for ctr to run DEL and exit; returns ctr's
    /// output (status 137 for a killed task).
    pub fn kill(mut self) -> Result<CmdOutput> {
        self.finish(true, RUN_TIMEOUT)
    }

    /// Waits up to `timeout` for the command to end by itself (then SIGKILLs
    /// it); returns ctr's output, after DEL.
    pub fn wait(mut self, timeout: Duration) -> Result<CmdOutput> {
        let ctr = self.ctr.as_mut().expect("ctr runs until finish");
        let ended = wait_until(ctr, Instant::now() + timeout)?.is_some();
        let out = self.finish(!ended, RUN_TIMEOUT)?;
        ensure!(
            ended,
            "container {} did not end within {timeout:?}:\n{}",
            self.id,
            format_output(&out)
        );
        Ok(out)
    }

    /// Kills the task if asked, waits for ctr (SIGKILLing ctr itself after
    /// `timeout`, which skips DEL), removes what is left of the container.
    fn finish(&mut self, kill: bool, timeout: Duration) -> Result<CmdOutput> {
        let Some(mut ctr) = self.ctr.take() else {
            bail!("container {} was already finished", self.id);
        };
        let mut errors = Vec::new();
        if kill && ctr.try_wait()?.is_none() {
            let _ = run(
                &mut self.ctd.ctr(&["task", "kill", "-s", "SIGKILL", &self.id]),
                CTR_TIMEOUT,
            );
        }
        let status = match wait_until(&mut ctr, Instant::now() + timeout)? {
            Some(status) => status,
            None => {
                errors.push(format!(
                    "ctr of {} did not exit within {timeout:?}; killed it (no CNI DEL)",
                    self.id
                ));
                // Our own unreaped child: the PID still names it.
                let _ = ctr.kill();
                ctr.wait()?
            }
        };
        // A failed ADD leaves the container CREATED even with --rm.
        if let Err(err) = self.ctd.remove_container(&self.id) {
            errors.push(format!("{err:#}"));
        }
        let (stdout, stderr) = self.output_so_far();
        let out = CmdOutput {
            status,
            stdout,
            stderr,
        };
        if !errors.is_empty() {
            bail!("{}\n{}", errors.join("\n"), format_output(&out));
        }
        Ok(out)
    }
}

impl Drop for RunningContainer<'_> {
    fn drop(&mut self) {
        if self.ctr.is_some() {
            if let Err(err) = self.finish(true, RUN_TIMEOUT) {
                eprintln!("containerd harness: {err:#}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids_follow_containerd_rules() {
        assert!(valid_id("c1"));
        assert!(valid_id("pod-a.b_c"));
        assert!(!valid_id(""));
        assert!(!valid_id("-a"));
        assert!(!valid_id("a--b"));
        assert!(!valid_id("a/b"));
    }

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape_mountinfo(r"/tmp/a\040b"), "/tmp/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }

    #[test]
    fn the_busybox_image_is_deterministic_and_well_formed() {
        if !Path::new(BUSYBOX_BIN).is_file() {
            eprintln!("skipping: {BUSYBOX_BIN} missing (scripts/install-deps.sh)");
            return;
        }
        let scratch = ScratchDir::new("image-test").unwrap();
        let (a, b) = (scratch.path().join("a.tar"), scratch.path().join("b.tar"));
        assert_eq!(build_busybox_image(&a).unwrap(), BUSYBOX_IMAGE);
        build_busybox_image(&b).unwrap();
        let bytes = fs::read(&a).unwrap();
        assert_eq!(bytes, fs::read(&b).unwrap());

        let mut archive = tar::Archive::new(&bytes[..]);
        let mut files = std::collections::BTreeMap::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().display().to_string();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
            files.insert(path, data);
        }
        let manifest: Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
        assert_eq!(manifest[0]["RepoTags"][0], BUSYBOX_IMAGE);
        let config_name = manifest[0]["Config"].as_str().unwrap();
        let layer_name = manifest[0]["Layers"][0].as_str().unwrap();
        let config: Value = serde_json::from_slice(&files[config_name]).unwrap();
        let layer = &files[layer_name];
        assert_eq!(
            config["rootfs"]["diff_ids"][0],
            format!("sha256:{}", sha256_hex(layer))
        );
        assert_eq!(
            config_name,
            format!("{}.json", sha256_hex(&files[config_name]))
        );

        let mut layer = tar::Archive::new(&layer[..]);
        let mut links = BTreeSet::new();
        for entry in layer.entries().unwrap() {
            let entry = entry.unwrap();
            if entry.header().entry_type() == tar::EntryType::Symlink {
                assert_eq!(entry.link_name().unwrap().unwrap(), Path::new("busybox"));
                links.insert(entry.path().unwrap().display().to_string());
            }
        }
        for applet in [
            "sh", "sleep", "ping", "ip", "ifconfig", "nc", "wget", "httpd", "cat", "ls", "hostname",
        ] {
            assert!(links.contains(&format!("bin/{applet}")), "{applet}");
        }
    }

    #[test]
    fn busybox_from_busybox_static_has_no_interpreter() {
        if Path::new(BUSYBOX_BIN).is_file() {
            assert!(!elf_has_interpreter(Path::new(BUSYBOX_BIN)).unwrap());
        }
        assert!(elf_has_interpreter(Path::new("/bin/ls")).unwrap());
    }
}
