//! Real programs in pods: ping and iperf3, with their output parsed.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};

use crate::lab::Lab;

/// Port of the lab's iperf3 servers.
pub const IPERF3_PORT: u16 = 5201;

/// Most echo requests one ping may send (0.2 s apart).
pub const MAX_PING_COUNT: u32 = 1000;
/// Longest iperf3 run the lab starts.
pub const MAX_IPERF3_SECONDS: u32 = 300;

/// What `ping` reported.
#[derive(Debug, Clone, PartialEq)]
pub struct PingResult {
    pub sent: u32,
    pub received: u32,
    /// min/avg/max round trip in milliseconds; absent when nothing came back.
    pub rtt_ms: Option<Rtt>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rtt {
    pub min: f64,
    pub avg: f64,
    pub max: f64,
}

impl PingResult {
    /// Every request was answered.
    pub fn all_received(&self) -> bool {
        self.sent > 0 && self.received == self.sent
    }
}

/// Parses iputils ping's summary (`-q` or not).
pub fn parse_ping(output: &str) -> Result<PingResult> {
    let summary = output
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .ok_or_else(|| anyhow!("no summary line in ping output: {output:?}"))?;
    // "3 packets transmitted, 3 received, 0% packet loss, time 2003ms"
    let mut fields = summary.split(',').map(str::trim);
    let number = |field: Option<&str>, what: &str| -> Result<u32> {
        field
            .and_then(|f| f.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| anyhow!("no {what} count in {summary:?}"))
    };
    let sent = number(fields.next(), "transmitted")?;
    let received = number(fields.next(), "received")?;
    // "rtt min/avg/max/mdev = 0.040/0.052/0.064/0.010 ms"
    let rtt_ms = output
        .lines()
        .find(|l| l.starts_with("rtt ") || l.starts_with("round-trip "))
        .and_then(|l| l.split_once('=').map(|(_, v)| v.trim()))
        .and_then(|v| {
            let mut parts = v.split_whitespace().next()?.split('/');
            let mut next = || parts.next()?.parse::<f64>().ok();
            Some(Rtt {
                min: next()?,
                avg: next()?,
                max: next()?,
            })
        });
    Ok(PingResult {
        sent,
        received,
        rtt_ms,
    })
}

/// What one iperf3 TCP run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Iperf3Result {
    /// Seconds the test ran.
    pub seconds: f64,
    pub sent_bits_per_second: f64,
    pub received_bits_per_second: f64,
    /// TCP retransmissions on the sender, when iperf3 reports them.
    pub retransmits: Option<u64>,
}

/// Parses `iperf3 --json` output of a TCP client.
pub fn parse_iperf3(json: &str) -> Result<Iperf3Result> {
    let doc: serde_json::Value = serde_json::from_str(json).context("iperf3 output is not JSON")?;
    if let Some(err) = doc["error"].as_str() {
        bail!("iperf3: {err}");
    }
    let end = &doc["end"];
    let number = |v: &serde_json::Value, what: &str| {
        v.as_f64()
            .ok_or_else(|| anyhow!("iperf3 JSON has no {what}"))
    };
    let sent = &end["sum_sent"];
    let received = &end["sum_received"];
    Ok(Iperf3Result {
        seconds: number(&received["seconds"], "end.sum_received.seconds")?,
        sent_bits_per_second: number(&sent["bits_per_second"], "end.sum_sent.bits_per_second")?,
        received_bits_per_second: number(
            &received["bits_per_second"],
            "end.sum_received.bits_per_second",
        )?,
        retransmits: sent["retransmits"].as_u64(),
    })
}

impl Lab {
    /// `count` echo requests from pod `from` to `to`, 0.2 s apart, waiting at
    /// most 1 s for the last reply. Loss is a result, not an error.
    pub fn ping(&self, from: usize, to: IpAddr, count: u32) -> Result<PingResult> {
        let netns = self.pod(from)?.netns.clone();
        self.ping_in(&netns, &format!("pod {from}"), to, count)
    }

    /// Like [`Lab::ping`], from the outside namespace of a lab built
    /// [`with_outside`](crate::LabSpec::with_outside).
    pub fn ping_from_outside(&self, to: IpAddr, count: u32) -> Result<PingResult> {
        let netns = self
            .outside_netns()
            .ok_or_else(|| anyhow::anyhow!("lab {} has no outside namespace", self.prefix()))?
            .to_string();
        self.ping_in(&netns, "the outside", to, count)
    }

    fn ping_in(&self, netns: &str, from: &str, to: IpAddr, count: u32) -> Result<PingResult> {
        ensure!(
            (1..=MAX_PING_COUNT).contains(&count),
            "ping count must be 1 to {MAX_PING_COUNT}"
        );
        let family = if to.is_ipv6() { "-6" } else { "-4" };
        let count_text = count.to_string();
        let target = to.to_string();
        // Exactly `count` requests; after the last, at most 1 s for its reply.
        #[rustfmt::skip]
        let args = [
            "ping", family, "-n", "-q", "-c", &count_text, "-i", "0.2", "-W", "1", &target,
        ];
        let timeout = Duration::from_secs(u64::from(count / 5 + 10));
        let out = self.exec_in(netns, &args, timeout)?;
        // iputils: 0 all answered, 1 some lost, 2 error (bad address, no route...).
        if out.status.code() == Some(2) || !out.stdout.contains("packets transmitted") {
            bail!(
                "ping from {from} to {to} failed ({}): {}{}",
                out.status,
                out.stdout.trim(),
                out.stderr.trim()
            );
        }
        parse_ping(&out.stdout)
    }

    /// Starts a one-off iperf3 server (`-1`) in `pod` on [`IPERF3_PORT`] and waits
    /// until it listens. The lab stops it at teardown if it is still running.
    pub fn iperf3_server(&self, pod: usize) -> Result<u32> {
        let port = IPERF3_PORT.to_string();
        let log = format!("iperf3-server-p{pod}");
        let pid = self.spawn(pod, &log, &["iperf3", "-s", "-1", "-p", &port])?;
        let deadline = Instant::now() + Duration::from_secs(5);
        let filter = format!("sport = :{port}");
        loop {
            let listening = self.exec(pod, &["ss", "-H", "-l", "-t", "-n", &filter])?;
            if !listening.stdout.trim().is_empty() {
                return Ok(pid);
            }
            if !self.process_running(pid)? {
                bail!(
                    "iperf3 server in pod {pod} exited\n{}",
                    self.log_tail(&log, 10)
                );
            }
            if Instant::now() >= deadline {
                bail!("iperf3 server in pod {pod} is not listening after 5 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// One TCP stream from pod `from` to an iperf3 server at `to` for `seconds`.
    pub fn iperf3_client(&self, from: usize, to: IpAddr, seconds: u32) -> Result<Iperf3Result> {
        ensure!(
            (1..=MAX_IPERF3_SECONDS).contains(&seconds),
            "iperf3 time must be 1 to {MAX_IPERF3_SECONDS} s"
        );
        let port = IPERF3_PORT.to_string();
        let time = seconds.to_string();
        let target = to.to_string();
        #[rustfmt::skip]
        let args = [
            "iperf3", "-c", &target, "-p", &port, "-t", &time, "--json",
            "--connect-timeout", "3000",
        ];
        let timeout = Duration::from_secs(u64::from(seconds) + 15);
        let out = self.exec_timeout(from, &args, timeout)?;
        parse_iperf3(&out.stdout).with_context(|| {
            format!(
                "iperf3 from pod {from} to {to} ({}){}",
                out.status,
                if out.stderr.trim().is_empty() {
                    String::new()
                } else {
                    format!(": {}", out.stderr.trim())
                }
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_summary_with_replies() {
        let out = "PING 10.200.0.12 (10.200.0.12) 56(84) bytes of data.\n\n\
                   --- 10.200.0.12 ping statistics ---\n\
                   3 packets transmitted, 3 received, 0% packet loss, time 404ms\n\
                   rtt min/avg/max/mdev = 0.041/0.058/0.087/0.020 ms\n";
        let r = parse_ping(out).unwrap();
        assert_eq!((r.sent, r.received), (3, 3));
        assert!(r.all_received());
        let rtt = r.rtt_ms.unwrap();
        assert_eq!((rtt.min, rtt.avg, rtt.max), (0.041, 0.058, 0.087));
    }

    #[test]
    fn ping_summary_with_total_loss_and_errors() {
        let out = "--- fd00:200::12 ping statistics ---\n\
                   3 packets transmitted, 0 received, +3 errors, 100% packet loss, time 2040ms\n";
        let r = parse_ping(out).unwrap();
        assert_eq!((r.sent, r.received, r.rtt_ms), (3, 0, None));
        assert!(!r.all_received());
    }

    #[test]
    fn ping_without_summary_is_an_error() {
        assert!(parse_ping("ping: connect: Network is unreachable\n").is_err());
    }

    #[test]
    fn iperf3_json() {
        let json = r#"{"start":{},"intervals":[],"end":{
            "sum_sent":{"seconds":2.0,"bytes":1,"bits_per_second":2.5e10,"retransmits":7},
            "sum_received":{"seconds":2.001,"bytes":1,"bits_per_second":2.4e10}}}"#;
        let r = parse_iperf3(json).unwrap();
        assert_eq!(r.sent_bits_per_second, 2.5e10);
        assert_eq!(r.received_bits_per_second, 2.4e10);
        assert_eq!(r.retransmits, Some(7));
        assert_eq!(r.seconds, 2.001);
    }

    #[test]
    fn iperf3_error_is_reported() {
        let json = r#"{"start":{},"intervals":[],"end":{},
            "error":"unable to connect to server: Connection refused"}"#;
        let err = parse_iperf3(json).unwrap_err();
        assert!(err.to_string().contains("Connection refused"), "{err}");
    }
}
