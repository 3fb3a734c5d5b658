//! Errors as the CNI spec reports them: a code, a message, details.
//!
//! Codes 1-99 are the spec's; 100 and up are this plugin's own:
//!
//! | code | meaning |
//! | --- | --- |
//! | 100 | the pod CIDR has no free address (agent: exhausted) |
//! | 101 | the agent refused the request (invalid, internal, protocol version) |
//! | 102 | an interface of the name to create already exists |
//! | 103 | configuring links, addresses or routes failed |
//! | 104 | CHECK found the attachment not as ADD left it |
//! | 105 | the agent answered something this plugin does not understand |

use serde::Serialize;

use crate::version::SUPPORTED_VERSIONS;

pub const CODE_INCOMPATIBLE_VERSION: u32 = 1;
pub const CODE_UNSUPPORTED_FIELD: u32 = 2;
pub const CODE_UNKNOWN_CONTAINER: u32 = 3;
pub const CODE_INVALID_ENV: u32 = 4;
pub const CODE_IO: u32 = 5;
pub const CODE_DECODE: u32 = 6;
pub const CODE_INVALID_CONFIG: u32 = 7;
pub const CODE_TRY_AGAIN: u32 = 11;
pub const CODE_UNAVAILABLE: u32 = 50;
pub const CODE_EXHAUSTED: u32 = 100;
pub const CODE_AGENT_REFUSED: u32 = 101;
pub const CODE_INTERFACE_EXISTS: u32 = 102;
pub const CODE_NETLINK: u32 = 103;
pub const CODE_CHECK_FAILED: u32 = 104;
pub const CODE_AGENT_PROTOCOL: u32 = 105;

#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("incompatible CNI version {given:?}: supported are {}", SUPPORTED_VERSIONS.join(", "))]
    IncompatibleVersion { given: String },
    #[error("config version {version} does not allow {command} (needs {needs} or later)")]
    CommandNotInVersion {
        version: String,
        command: &'static str,
        needs: &'static str,
    },
    #[error("unsupported field in network configuration: {key}={value}")]
    UnsupportedField { key: String, value: String },
    #[error("{0}")]
    UnknownContainer(String),
    /// The message names every offending variable.
    #[error("{0}")]
    InvalidEnv(String),
    #[error("{0}")]
    Io(String),
    #[error("{0}")]
    Decode(String),
    #[error("{0}")]
    InvalidConfig(String),
    #[error("{0}")]
    TryAgain(String),
    /// STATUS: the plugin cannot serve ADD now.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Exhausted(String),
    #[error("{0}")]
    AgentRefused(String),
    #[error("{0}")]
    InterfaceExists(String),
    #[error("{0}")]
    Netlink(String),
    #[error("{0}")]
    CheckFailed(String),
    #[error("{0}")]
    AgentProtocol(String),
}

impl CniError {
    pub fn code(&self) -> u32 {
        match self {
            CniError::IncompatibleVersion { .. } | CniError::CommandNotInVersion { .. } => {
                CODE_INCOMPATIBLE_VERSION
            }
            CniError::UnsupportedField { .. } => CODE_UNSUPPORTED_FIELD,
            CniError::UnknownContainer(_) => CODE_UNKNOWN_CONTAINER,
            CniError::InvalidEnv(_) => CODE_INVALID_ENV,
            CniError::Io(_) => CODE_IO,
            CniError::Decode(_) => CODE_DECODE,
            CniError::InvalidConfig(_) => CODE_INVALID_CONFIG,
            CniError::TryAgain(_) => CODE_TRY_AGAIN,
            CniError::Unavailable(_) => CODE_UNAVAILABLE,
            CniError::Exhausted(_) => CODE_EXHAUSTED,
            CniError::AgentRefused(_) => CODE_AGENT_REFUSED,
            CniError::InterfaceExists(_) => CODE_INTERFACE_EXISTS,
            CniError::Netlink(_) => CODE_NETLINK,
            CniError::CheckFailed(_) => CODE_CHECK_FAILED,
            CniError::AgentProtocol(_) => CODE_AGENT_PROTOCOL,
        }
    }

    /// What the code means in general, for `details`.
    pub fn description(&self) -> &'static str {
        describe(self.code())
    }

    /// Adds context after the message, keeping the code.
    pub fn context(self, note: impl std::fmt::Display) -> CniError {
        let note = note.to_string();
        match self {
            CniError::UnknownContainer(m) => CniError::UnknownContainer(format!("{m}; {note}")),
            CniError::InvalidEnv(m) => CniError::InvalidEnv(format!("{m}; {note}")),
            CniError::Io(m) => CniError::Io(format!("{m}; {note}")),
            CniError::Decode(m) => CniError::Decode(format!("{m}; {note}")),
            CniError::InvalidConfig(m) => CniError::InvalidConfig(format!("{m}; {note}")),
            CniError::TryAgain(m) => CniError::TryAgain(format!("{m}; {note}")),
            CniError::Unavailable(m) => CniError::Unavailable(format!("{m}; {note}")),
            CniError::Exhausted(m) => CniError::Exhausted(format!("{m}; {note}")),
            CniError::AgentRefused(m) => CniError::AgentRefused(format!("{m}; {note}")),
            CniError::InterfaceExists(m) => CniError::InterfaceExists(format!("{m}; {note}")),
            CniError::Netlink(m) => CniError::Netlink(format!("{m}; {note}")),
            CniError::CheckFailed(m) => CniError::CheckFailed(format!("{m}; {note}")),
            CniError::AgentProtocol(m) => CniError::AgentProtocol(format!("{m}; {note}")),
            other @ (CniError::IncompatibleVersion { .. }
            | CniError::CommandNotInVersion { .. }
            | CniError::UnsupportedField { .. }) => other,
        }
    }
}

/// The spec's wording for its codes, and ours for 100+.
pub fn describe(code: u32) -> &'static str {
    match code {
        CODE_INCOMPATIBLE_VERSION => "Incompatible CNI version",
        CODE_UNSUPPORTED_FIELD => "Unsupported field in network configuration",
        CODE_UNKNOWN_CONTAINER => "Container unknown or does not exist",
        CODE_INVALID_ENV => "Invalid necessary environment variables",
        CODE_IO => "I/O failure",
        CODE_DECODE => "Failed to decode content",
        CODE_INVALID_CONFIG => "Invalid network config",
        CODE_TRY_AGAIN => "Try again later",
        CODE_UNAVAILABLE => "The plugin is not available",
        CODE_EXHAUSTED => "No free address in the pod CIDR",
        CODE_AGENT_REFUSED => "The Sluice agent refused the request",
        CODE_INTERFACE_EXISTS => "Interface already exists",
        CODE_NETLINK => "Configuring the network interfaces failed",
        CODE_CHECK_FAILED => "The attachment is not as ADD left it",
        CODE_AGENT_PROTOCOL => "Unexpected answer from the Sluice agent",
        _ => "Plugin error",
    }
}

/// The error result structure, identical in every supported version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ErrorReply {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl ErrorReply {
    /// `cni_version` is the config's as given (even an unsupported one, as the
    /// spec asks), or the newest when the config could not be read.
    pub fn new(cni_version: &str, error: &CniError) -> ErrorReply {
        ErrorReply {
            cni_version: cni_version.to_string(),
            code: error.code(),
            msg: error.to_string(),
            details: error.description().to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_the_specs() {
        let cases: Vec<(CniError, u32)> = vec![
            (
                CniError::IncompatibleVersion {
                    given: "0.2.0".into(),
                },
                1,
            ),
            (
                CniError::CommandNotInVersion {
                    version: "0.3.1".into(),
                    command: "CHECK",
                    needs: "0.4.0",
                },
                1,
            ),
            (
                CniError::UnsupportedField {
                    key: "ipam".into(),
                    value: "{}".into(),
                },
                2,
            ),
            (CniError::UnknownContainer(String::new()), 3),
            (CniError::InvalidEnv(String::new()), 4),
            (CniError::Io(String::new()), 5),
            (CniError::Decode(String::new()), 6),
            (CniError::InvalidConfig(String::new()), 7),
            (CniError::TryAgain(String::new()), 11),
            (CniError::Unavailable(String::new()), 50),
            (CniError::Exhausted(String::new()), 100),
            (CniError::AgentRefused(String::new()), 101),
            (CniError::InterfaceExists(String::new()), 102),
            (CniError::Netlink(String::new()), 103),
            (CniError::CheckFailed(String::new()), 104),
            (CniError::AgentProtocol(String::new()), 105),
        ];
        for (error, code) in cases {
            assert_eq!(error.code(), code, "{error:?}");
        }
    }

    #[test]
    fn error_reply_has_exactly_the_specs_keys() {
        let e = CniError::InvalidEnv("required environment variables missing: CNI_NETNS".into());
        let v = serde_json::to_value(ErrorReply::new("1.0.0", &e)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "cniVersion": "1.0.0",
                "code": 4,
                "msg": "required environment variables missing: CNI_NETNS",
                "details": "Invalid necessary environment variables",
            })
        );
    }

    #[test]
    fn context_keeps_the_code() {
        let e = CniError::Netlink("route add failed".into()).context("rolled back");
        assert_eq!(e.code(), 103);
        assert_eq!(e.to_string(), "route add failed; rolled back");
        let unsupported = CniError::UnsupportedField {
            key: "ipam".into(),
            value: "x".into(),
        };
        assert_eq!(unsupported.context("ignored").code(), 2);
    }
}
