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

/// Which forwarded frames become trace events (Cilium's
/// `--monitor-aggregation` flag and level names). Drops, policy verdicts and
/// DNS events are emitted at every level; see
/// [`crate::flow_record::event_kinds`] for the exact rule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MonitorAggregation {
    /// Every forwarded frame.
    None,
    /// New flows and TCP SYN/FIN/RST frames (the same rule as `medium` here).
    Low,
    /// New flows and TCP SYN/FIN/RST frames (SYN-ACK: the first TCP reply).
    #[default]
    Medium,
    /// New flows only.
    Maximum,
}

#[derive(Clone, Debug, Parser)]
#[command(
    name = "sluice-engine",
    about = "Sluice packet engine: AF_XDP workers on pinned cores"
)]
pub struct EngineConfig {
    /// Node state (gateway and endpoints) as JSON; re-read on `reload`.
    /// With --api-socket too, it is the state served until an agent sends one.
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// Unix socket (mode 0600) on which the agent sends the node state
    /// (sluice-api engine protocol). Without --state the engine starts with no
    /// endpoints and waits for an agent.
    #[arg(long)]
    pub api_socket: Option<PathBuf>,
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
    /// Connection-tracking entries (each flow takes two), shared by all workers;
    /// allocated up front. Under pressure flows are evicted, then new ones refused.
    #[arg(long, default_value_t = sluice_conntrack::DEFAULT_CAPACITY)]
    pub ct_capacity: usize,
    /// Unix socket (mode 0600) serving flow events, lost-event reports and
    /// counters as newline-delimited JSON (sluice-api events protocol).
    /// Workers build events only while a subscriber is connected.
    #[arg(long)]
    pub events_socket: Option<PathBuf>,
    /// Which forwarded frames are reported as trace events.
    #[arg(long, value_enum, default_value_t = MonitorAggregation::Medium)]
    pub monitor_aggregation: MonitorAggregation,
    /// Flow events each worker can queue for the events thread; events that
    /// do not fit are counted as lost, never waited for.
    #[arg(long, default_value_t = 8192)]
    pub events_queue_size: usize,
}

impl EngineConfig {
    /// Checks what clap cannot: the engine needs a source for its node state.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.state.is_none() && self.api_socket.is_none() {
            anyhow::bail!(
                "no node state source: give --state <file> (a node state JSON file), \
                 --api-socket <path> (an agent sends the state), or both"
            );
        }
        if self.workers == 0 {
            anyhow::bail!("--workers must be at least 1");
        }
        if self.ct_capacity < 1024 {
            anyhow::bail!("--ct-capacity must be at least 1024 entries");
        }
        if self.events_queue_size == 0 {
            anyhow::bail!("--events-queue-size must be at least 1 event");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_file_or_an_api_socket_is_required() {
        let none = EngineConfig::parse_from(["sluice-engine"]);
        let err = none.validate().unwrap_err().to_string();
        assert!(
            err.contains("--state") && err.contains("--api-socket"),
            "{err}"
        );
        for args in [
            &["sluice-engine", "--state", "s.json"][..],
            &["sluice-engine", "--api-socket", "a.sock"][..],
            &[
                "sluice-engine",
                "--state",
                "s.json",
                "--api-socket",
                "a.sock",
            ][..],
        ] {
            EngineConfig::parse_from(args).validate().unwrap();
        }
    }

    #[test]
    fn events_flags_parse_with_cilium_level_names() {
        let config = EngineConfig::parse_from(["sluice-engine", "--state", "s.json"]);
        assert_eq!(config.monitor_aggregation, MonitorAggregation::Medium);
        assert_eq!(config.events_queue_size, 8192);
        assert_eq!(config.events_socket, None);
        for (name, level) in [
            ("none", MonitorAggregation::None),
            ("low", MonitorAggregation::Low),
            ("medium", MonitorAggregation::Medium),
            ("maximum", MonitorAggregation::Maximum),
        ] {
            let config = EngineConfig::parse_from([
                "sluice-engine",
                "--state",
                "s.json",
                "--monitor-aggregation",
                name,
                "--events-socket",
                "e.sock",
            ]);
            assert_eq!(config.monitor_aggregation, level);
            assert_eq!(config.events_socket, Some(PathBuf::from("e.sock")));
        }
        let zero = EngineConfig::parse_from([
            "sluice-engine",
            "--state",
            "s.json",
            "--events-queue-size",
            "0",
        ]);
        let err = zero.validate().unwrap_err().to_string();
        assert!(err.contains("--events-queue-size"), "{err}");
    }
}
