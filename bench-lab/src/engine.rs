//! Starting, querying and stopping sluice-engine inside the node namespace.
//!
//! Command line: `<engine> --state <run dir>/state.json --stats-socket <run dir>/engine.sock
//! --events-socket <run dir>/events.sock --workers <n> [extra args]`, run as `nsenter --net=/run/netns/<node> -- <engine> ...`;
//! with [`EngineOptions::api_socket`] also `--api-socket <run dir>/api.sock`, and
//! without [`EngineOptions::state_file`] no `--state` (the engine waits for an agent).
//! Stats protocol: connect to the unix socket, write `stats\n`, read JSON until EOF.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};

use crate::command;
use crate::lab::{Forwarding, Lab, Tracked};

/// Environment variable naming the engine binary, overriding the search.
pub const ENGINE_ENV: &str = "SLUICE_ENGINE";
/// File name of the engine binary in a cargo target directory.
pub const ENGINE_BIN: &str = "sluice-engine";
/// Log name (see [`Lab::log_tail`]) of the engine's output.
pub const ENGINE_LOG: &str = "engine";

/// How to start the engine.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// The engine binary; `None` means [`find_engine`].
    pub binary: Option<PathBuf>,
    /// Worker threads; `None` means one per veth queue (`LabSpec::queues`).
    pub workers: Option<u32>,
    /// Pass `--state <run dir>/state.json` (the lab's node state). Default: yes.
    pub state_file: bool,
    /// Pass `--api-socket <run dir>/api.sock` ([`Lab::api_socket`]), on which a
    /// test acts as the agent. Default: no.
    pub api_socket: bool,
    /// Appended after the lab's own arguments.
    pub extra_args: Vec<String>,
    /// How long the stats socket may take to accept a connection.
    pub start_timeout: Duration,
    /// How long the engine may take to exit after SIGTERM before SIGKILL
    /// (15 s: detaching XDP and closing AF_XDP sockets waits for kernel
    /// grace periods, which stretch on a loaded 2-CPU CI machine).
    pub stop_timeout: Duration,
}

impl Default for EngineOptions {
    fn default() -> EngineOptions {
        EngineOptions {
            binary: None,
            workers: None,
            state_file: true,
            api_socket: false,
            extra_args: Vec::new(),
            start_timeout: Duration::from_secs(15),
            stop_timeout: Duration::from_secs(15),
        }
    }
}

/// The engine binary: `$SLUICE_ENGINE`, else `sluice-engine` next to the
/// current executable, or one directory up (test binaries live in `deps/`).
pub fn find_engine() -> Result<PathBuf> {
    crate::binaries::find_binary((ENGINE_BIN, ENGINE_ENV))
}

impl Lab {
    /// `<run dir>/engine.sock`.
    pub fn stats_socket(&self) -> PathBuf {
        self.run_dir().join("engine.sock")
    }

    /// `<run dir>/api.sock`: the engine's agent API socket, when started with
    /// [`EngineOptions::api_socket`].
    pub fn api_socket(&self) -> PathBuf {
        self.run_dir().join("api.sock")
    }

    /// `<run dir>/events.sock`: the engine's flow events socket (every lab
    /// engine serves one; workers build events only while someone reads it).
    pub fn events_socket(&self) -> PathBuf {
        self.run_dir().join("events.sock")
    }

    /// Starts the engine in the node namespace and waits until its stats socket
    /// accepts a connection. Returns its PID.
    pub fn start_engine(&self, options: &EngineOptions) -> Result<u32> {
        ensure!(
            self.spec().mode == Forwarding::Engine,
            "lab {} forwards in the kernel; the engine runs only in engine mode",
            self.prefix()
        );
        let binary = match &options.binary {
            Some(path) => path.clone(),
            None => find_engine()?,
        };
        let socket = self.stats_socket();
        let workers = options.workers.unwrap_or(self.spec().queues).to_string();
        let binary_text = binary.display().to_string();
        let state = self.state_path().display().to_string();
        let socket_text = socket.display().to_string();
        let api_socket = self.api_socket();
        let api_socket_text = api_socket.display().to_string();
        let events_socket_text = self.events_socket().display().to_string();
        // A CNI lab's engine is always fed by the agent.
        let cni = self.spec().uses_cni();
        let (state_file, api) = if cni {
            (false, true)
        } else {
            (options.state_file, options.api_socket)
        };
        ensure!(
            state_file || api,
            "the engine needs a state file, an API socket, or both"
        );
        let mut args = vec![binary_text.as_str()];
        if state_file {
            args.extend(["--state", &state]);
        }
        if api {
            args.extend(["--api-socket", &api_socket_text]);
        }
        args.extend([
            "--stats-socket",
            &socket_text,
            "--events-socket",
            &events_socket_text,
            "--workers",
            &workers,
        ]);
        args.extend(options.extra_args.iter().map(String::as_str));

        let pid = {
            let mut inner = self.shared.lock()?;
            let wanted: Vec<String> = args.iter().map(|a| a.to_string()).collect();
            if cni {
                // The lab started one to wire its pods: keep it if it is the
                // one asked for, else replace it (the agent resyncs the new one).
                let same = inner.engine_args == wanted;
                if let Some(mut running) = inner.engine.take() {
                    if same {
                        let pid = running.child.id();
                        inner.engine = Some(running);
                        return Ok(pid);
                    }
                    command::terminate(&mut running.child, options.stop_timeout)?;
                }
            }
            ensure!(inner.engine.is_none(), "the engine is already running");
            inner.engine_args = wanted;
            let _ = std::fs::remove_file(&socket);
            let _ = std::fs::remove_file(&api_socket);
            let child = self.spawn_logged(self.node_netns(), ENGINE_LOG, &args)?;
            let pid = child.id();
            inner.engine = Some(Tracked {
                what: format!("engine (pid {pid})"),
                child,
            });
            pid
        };

        match self.wait_for_socket(&socket, options.start_timeout) {
            Ok(()) if cni && self.agent_pid().is_some() => {
                self.wait_in_sync(Duration::from_secs(30))?;
                Ok(pid)
            }
            Ok(()) => Ok(pid),
            Err(err) => {
                let _ = self.stop_engine_within(options.stop_timeout);
                Err(err.context(format!(
                    "starting `nsenter --net=/run/netns/{} -- {}`\n{}",
                    self.node_netns(),
                    args.join(" "),
                    self.engine_log_tail(40)
                )))
            }
        }
    }

    fn wait_for_socket(&self, socket: &Path, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let mut inner = self.shared.lock()?;
                let engine = inner
                    .engine
                    .as_mut()
                    .ok_or_else(|| anyhow!("the engine was stopped while starting"))?;
                if let Some(status) = engine.child.try_wait()? {
                    bail!("the engine exited ({status}) before its stats socket accepted a connection");
                }
            }
            if UnixStream::connect(socket).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "the engine's stats socket {} accepted no connection within {timeout:?}",
                    socket.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The PID of the running engine, if any.
    pub fn engine_pid(&self) -> Option<u32> {
        let inner = self.shared.lock().ok()?;
        inner.engine.as_ref().map(|t| t.child.id())
    }

    /// Stops the engine: SIGTERM, SIGKILL after [`EngineOptions::stop_timeout`]. `Ok(None)` if none ran.
    pub fn stop_engine(&self) -> Result<Option<ExitStatus>> {
        self.stop_engine_within(EngineOptions::default().stop_timeout)
    }

    fn stop_engine_within(&self, grace: Duration) -> Result<Option<ExitStatus>> {
        let mut inner = self.shared.lock()?;
        match inner.engine.take() {
            Some(mut engine) => Ok(Some(command::terminate(&mut engine.child, grace)?)),
            None => Ok(None),
        }
    }

    /// Asks the engine for its counters: `stats\n` in, JSON until EOF out.
    pub fn engine_stats(&self) -> Result<serde_json::Value> {
        let socket = self.stats_socket();
        let timeout = Some(Duration::from_secs(5));
        let mut stream = UnixStream::connect(&socket)
            .with_context(|| format!("connecting to {}", socket.display()))?;
        stream.set_read_timeout(timeout)?;
        stream.set_write_timeout(timeout)?;
        stream.write_all(b"stats\n")?;
        let mut reply = String::new();
        stream
            .read_to_string(&mut reply)
            .with_context(|| format!("reading stats from {}", socket.display()))?;
        serde_json::from_str(&reply)
            .with_context(|| format!("engine stats are not JSON: {:?}", truncate(&reply, 200)))
    }

    /// The last `lines` lines of the engine's stdout and stderr.
    pub fn engine_log_tail(&self, lines: usize) -> String {
        self.log_tail(ENGINE_LOG, lines)
    }
}

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((at, _)) => &text[..at],
        None => text,
    }
}
