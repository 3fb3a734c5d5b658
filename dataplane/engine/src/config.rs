//! Engine command line and configuration.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

/// How a worker waits when its sockets have nothing to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WaitMode {
    /// Spin on the rings: lowest latency, one core at 100%.
    Busy,
    /// Sleep in epoll on the sockets after an empty loop: idle-friendly.
    Idle,
}

/// XDP attach mode for the steering programs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum XdpAttach {
    /// Driver (native) mode; veth supports it.
    Native,
    /// Generic (skb) mode, for drivers without native XDP.
    Skb,
}

#[derive(Clone, Debug, Parser)]
#[command(
    name = "sluice-engine",
    about = "Sluice packet engine: AF_XDP workers on pinned cores"
)]
pub struct EngineConfig {
    /// Node state (gateway and endpoints) as JSON; re-read on `reload`.
    #[arg(long)]
    pub state: PathBuf,
    /// Unix socket serving `stats` and `reload`.
    #[arg(long, default_value = "/run/sluice/engine.sock")]
    pub stats_socket: PathBuf,
    /// Number of worker threads; worker N serves rx queue N of every interface.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Cores to pin workers to, comma separated (default: the last cores of the machine).
    #[arg(long, value_delimiter = ',')]
    pub cores: Vec<usize>,
    #[arg(long, value_enum, default_value_t = WaitMode::Idle)]
    pub mode: WaitMode,
    #[arg(long, value_enum, default_value_t = XdpAttach::Native)]
    pub xdp_mode: XdpAttach,
    /// UMEM frames per worker (shared by all of the worker's sockets); must
    /// cover every socket's fill ring plus the frames in flight.
    #[arg(long, default_value_t = 8192)]
    pub frames: u32,
    /// Entries in each socket's rx, tx, fill and completion rings (a power of two).
    #[arg(long, default_value_t = 2048)]
    pub ring_size: u32,
    /// Do not try 2 MiB hugepages for the UMEM.
    #[arg(long)]
    pub no_hugepages: bool,
    /// Frames taken from one socket per loop.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
}
