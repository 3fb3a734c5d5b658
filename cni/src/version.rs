//! The CNI spec versions this plugin speaks, and what each one allows.
//!
//! A runtime hands the plugin a config in one version and expects the answer in
//! the same one: containerd 1.6 (libcni 1.1) refuses a 1.1.0 result, and 0.3.x /
//! 0.4.0 results still carry `ips[].version`. 0.3.0 differs from 0.3.1 only by a
//! typo fix in the spec, so it is supported with the same shapes.

use std::fmt;

/// Every version accepted in a config and listed by VERSION, oldest first.
pub const SUPPORTED_VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The newest version, used when the input names none we could read.
pub const LATEST: SpecVersion = SpecVersion::V1_1_0;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SpecVersion {
    V0_3_0,
    V0_3_1,
    V0_4_0,
    V1_0_0,
    V1_1_0,
}

impl SpecVersion {
    pub const ALL: [SpecVersion; 5] = [
        SpecVersion::V0_3_0,
        SpecVersion::V0_3_1,
        SpecVersion::V0_4_0,
        SpecVersion::V1_0_0,
        SpecVersion::V1_1_0,
    ];

    /// Exact match only: "1.0" or "v1.0.0" are not versions a runtime sends.
    pub fn parse(text: &str) -> Option<SpecVersion> {
        SpecVersion::ALL.into_iter().find(|v| v.as_str() == text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SpecVersion::V0_3_0 => "0.3.0",
            SpecVersion::V0_3_1 => "0.3.1",
            SpecVersion::V0_4_0 => "0.4.0",
            SpecVersion::V1_0_0 => "1.0.0",
            SpecVersion::V1_1_0 => "1.1.0",
        }
    }

    /// 0.3.x and 0.4.0 results tag each `ips[]` entry with `"version": "4"|"6"`;
    /// 1.0.0 removed the key.
    pub fn ips_carry_version(self) -> bool {
        self < SpecVersion::V1_0_0
    }

    /// 1.1.0 added `interfaces[].mtu` (and socketPath, pciID, route metrics).
    pub fn interfaces_carry_mtu(self) -> bool {
        self >= SpecVersion::V1_1_0
    }

    /// CHECK exists since 0.4.0.
    pub fn allows_check(self) -> bool {
        self >= SpecVersion::V0_4_0
    }

    /// STATUS and GC exist since 1.1.0.
    pub fn allows_status_and_gc(self) -> bool {
        self >= SpecVersion::V1_1_0
    }
}

impl fmt::Display for SpecVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_is_exact_and_round_trips() {
        for text in SUPPORTED_VERSIONS {
            assert_eq!(SpecVersion::parse(text).unwrap().as_str(), text);
        }
        for bad in ["", "0.2.0", "0.1.0", "1.0", "v1.0.0", "1.2.0", " 1.0.0"] {
            assert_eq!(SpecVersion::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn capabilities_follow_the_spec_history() {
        use SpecVersion::*;
        assert!(V0_3_0.ips_carry_version() && V0_3_1.ips_carry_version());
        assert!(V0_4_0.ips_carry_version());
        assert!(!V1_0_0.ips_carry_version() && !V1_1_0.ips_carry_version());
        assert!(!V0_3_1.allows_check() && V0_4_0.allows_check());
        assert!(!V1_0_0.allows_status_and_gc() && V1_1_0.allows_status_and_gc());
        assert!(!V1_0_0.interfaces_carry_mtu() && V1_1_0.interfaces_carry_mtu());
    }
}
