//! Agent -> engine: the desired node state, as a snapshot then deltas.
//!
//! ```text
//! agent                                   engine (listens on --api-socket)
//!   Hello{protocol, agent}          ->
//!                                   <-    Welcome{protocol, engine, applied_generation}
//!                                         (or Refused{reason}, then close)
//!   Snapshot{generation, state}     ->
//!                                   <-    Ack{generation, outcome}
//!   Delta{generation, base, changes}->
//!                                   <-    Ack{generation, outcome}
//! ```
//!
//! Generations are the agent's and strictly increase. A delta applies only on
//! top of `base`, the generation the engine applied last; otherwise the engine
//! refuses it with [`Outcome::Refused`] and keeps its state, and the agent sends a
//! snapshot. A refused snapshot or delta leaves the engine's state untouched
//! (nothing half-applied). When the agent goes away the engine keeps forwarding
//! on its last applied state; a reconnecting agent starts a new generation above
//! `applied_generation` from the Welcome and sends a snapshot, which the engine
//! applies as a difference, so interfaces and flows that did not change are not
//! touched.

use serde::{Deserialize, Serialize};
use sluice_tables::NodeState;

use crate::Change;

/// Version of this protocol. Both sides refuse a peer that speaks another.
pub const ENGINE_PROTOCOL_VERSION: u32 = 1;

// One message per generation, built and parsed once: the size of the Snapshot
// variant (a whole NodeState) costs nothing worth a Box in every match.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentToEngine {
    Hello {
        protocol: u32,
        /// Who is connecting, for logs (`sluice-agent 0.1.0 node-a`).
        agent: String,
    },
    Snapshot {
        generation: u64,
        state: NodeState,
    },
    Delta {
        generation: u64,
        base: u64,
        changes: Vec<Change>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EngineToAgent {
    Welcome {
        protocol: u32,
        /// `sluice-engine <version>`.
        engine: String,
        /// The agent generation the engine runs on (0: none yet).
        applied_generation: u64,
    },
    /// The connection is refused (for example a protocol version mismatch);
    /// the engine closes it after this message.
    Refused {
        reason: String,
    },
    Ack {
        generation: u64,
        outcome: Outcome,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Outcome {
    Applied,
    /// Not applied; the engine keeps the state it had. The reason names what
    /// was wrong (the endpoint, the field).
    Refused {
        reason: String,
    },
}

/// The message either side gives when the peer speaks another version.
pub fn version_mismatch(side: &str, ours: u32, theirs: u32) -> String {
    format!(
        "engine API version mismatch: {side} speaks version {ours}, the peer speaks version {theirs}; \
         run an agent and an engine from the same release"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_tagged_json() {
        let hello = AgentToEngine::Hello {
            protocol: ENGINE_PROTOCOL_VERSION,
            agent: "a".into(),
        };
        let text = serde_json::to_string(&hello).unwrap();
        assert_eq!(text, r#"{"type":"hello","protocol":1,"agent":"a"}"#);
        let ack = EngineToAgent::Ack {
            generation: 3,
            outcome: Outcome::Refused { reason: "x".into() },
        };
        let text = serde_json::to_string(&ack).unwrap();
        assert_eq!(
            text,
            r#"{"type":"ack","generation":3,"outcome":{"result":"refused","reason":"x"}}"#
        );
        assert_eq!(serde_json::from_str::<EngineToAgent>(&text).unwrap(), ack);
    }

    #[test]
    fn mismatch_names_both_versions() {
        let m = version_mismatch("the engine", 1, 2);
        assert!(m.contains("version 1") && m.contains("version 2"), "{m}");
    }
}
