//! `sluice conntrack list|flush` -> the engine's stats socket: one line
//! `conntrack list <CtFilter as JSON>` or `conntrack flush <CtFilter as JSON>`,
//! answered with [`CtListAnswer`], [`CtFlushAnswer`] or `{"error": "..."}`.
//! One definition for the engine (which filters its table) and the CLI.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Which connections a list or flush covers: every field that is set must
/// match (on the original direction's key); nothing set matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CtFilter {
    #[serde(default)]
    pub src: Option<IpAddr>,
    #[serde(default)]
    pub dst: Option<IpAddr>,
    #[serde(default)]
    pub src_port: Option<u16>,
    #[serde(default)]
    pub dst_port: Option<u16>,
    /// IP protocol number (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6).
    #[serde(default)]
    pub protocol: Option<u8>,
    /// Connections balanced to this service (`Service.id`).
    #[serde(default)]
    pub service_id: Option<u32>,
    /// At most this many entries in a list answer (then `truncated`).
    #[serde(default)]
    pub limit: Option<u32>,
}

impl CtFilter {
    /// The request line for the stats socket (`verb` is `list` or `flush`).
    pub fn request_line(&self, verb: &str) -> String {
        // A struct of options and numbers always serializes.
        let json = serde_json::to_string(self).unwrap_or_else(|_| "{}".into());
        format!("conntrack {verb} {json}")
    }
}

/// A connection's key as the engine stores it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CtKey {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    pub protocol: u8,
}

/// Address rewrites applied to packets of this direction (`addr:port`, or `[v6]:port`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CtRewrites {
    #[serde(default)]
    pub src: Option<String>,
    #[serde(default)]
    pub dst: Option<String>,
}

/// TCP state by name, or whether a reply was seen for other protocols.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CtState {
    Tcp(String),
    Replied,
    Unreplied,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CtEntry {
    /// `original` or `reply`.
    pub direction: String,
    #[serde(default)]
    pub rewrites: CtRewrites,
    pub state: CtState,
    #[serde(default)]
    pub service_id: Option<u32>,
    #[serde(default)]
    pub backend_id: Option<u32>,
    #[serde(default)]
    pub flags: u32,
    #[serde(default)]
    pub policy: u32,
    pub created_ns: u64,
    pub last_seen_ns: u64,
    /// When the entry times out if idle (engine clock); absent when the engine
    /// does not say, and the CLI then shows the idle time instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ns: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CtListItem {
    pub key: CtKey,
    pub entry: CtEntry,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CtListAnswer {
    pub entries: Vec<CtListItem>,
    /// More entries matched than `limit`.
    #[serde(default)]
    pub truncated: bool,
    /// The engine's clock when it answered (the timestamps' clock).
    pub now_ns: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CtFlushAnswer {
    pub flushed: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_line_is_the_documented_json() {
        let f = CtFilter {
            src: Some("10.0.0.1".parse().unwrap()),
            dst_port: Some(80),
            protocol: Some(6),
            limit: Some(1000),
            ..CtFilter::default()
        };
        assert_eq!(
            f.request_line("list"),
            r#"conntrack list {"src":"10.0.0.1","dst":null,"src_port":null,"dst_port":80,"protocol":6,"service_id":null,"limit":1000}"#
        );
        let parsed: CtFilter = serde_json::from_str(r#"{"dst_port":80}"#).unwrap();
        assert_eq!(parsed.dst_port, Some(80));
        assert_eq!(parsed.src, None);
    }

    #[test]
    fn a_list_answer_in_the_documented_form_parses() {
        let text = r#"{"entries":[{"key":{"src":"10.200.0.2","dst":"10.96.0.10","src_port":40000,"dst_port":80,"protocol":6},
            "entry":{"direction":"original","rewrites":{"src":null,"dst":"10.200.0.5:8080"},"state":{"tcp":"ESTABLISHED"},
            "service_id":3,"backend_id":7,"flags":1,"policy":0,"created_ns":5,"last_seen_ns":9}},
            {"key":{"src":"10.200.0.2","dst":"1.1.1.1","src_port":1,"dst_port":53,"protocol":17},
            "entry":{"direction":"reply","rewrites":{"src":null,"dst":null},"state":"unreplied",
            "service_id":null,"backend_id":null,"flags":0,"policy":0,"created_ns":5,"last_seen_ns":9}}],
            "truncated":false,"now_ns":123}"#;
        let answer: CtListAnswer = serde_json::from_str(text).unwrap();
        assert_eq!(answer.entries.len(), 2);
        assert_eq!(
            answer.entries[0].entry.state,
            CtState::Tcp("ESTABLISHED".into())
        );
        assert_eq!(answer.entries[1].entry.state, CtState::Unreplied);
        assert_eq!(answer.entries[0].entry.backend_id, Some(7));
    }
}
