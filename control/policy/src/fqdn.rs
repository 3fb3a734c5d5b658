//! DNS names and patterns as policies write them (`matchName` and
//! `matchPattern`, in `toFQDNs` and in `toPorts[].rules.dns`): validation
//! and the canonical form the engine compares with, lowercase and without
//! the trailing dot (DNS names compare case-insensitively). Matching itself
//! is `sluice_tables::policy`.
//!
//! Cilium's rules (`pkg/fqdn/matchpattern`, `pkg/policy/api/fqdn.go`):
//! letters, digits, `-`, `_` and `.`, plus `*` in patterns; at most 255
//! characters. A `*` matches zero or more DNS characters within one label;
//! a pattern of only `*` matches every name; a leading `**.` matches one or
//! more labels. Empty labels (`a..b`, `.a`) are refused here: no query
//! carries one, so such a rule could never match.

/// The longest name or pattern Cilium accepts.
pub const MAX_LENGTH: usize = 255;

/// Validates a `matchName` and returns its canonical form.
pub fn normalize_name(name: &str) -> Result<String, String> {
    normalize(name, false)
}

/// Validates a `matchPattern` and returns its canonical form.
pub fn normalize_pattern(pattern: &str) -> Result<String, String> {
    normalize(pattern, true)
}

fn normalize(text: &str, pattern: bool) -> Result<String, String> {
    if text.is_empty() {
        return Err("is empty".into());
    }
    if text.len() > MAX_LENGTH {
        return Err(format!("{text:?} is longer than {MAX_LENGTH} characters"));
    }
    if let Some(c) = text.chars().find(|&c| !allowed(c, pattern)) {
        return Err(if c == '*' {
            format!("{text:?}: a matchName cannot contain '*' (wildcards need matchPattern)")
        } else {
            let wildcard = if pattern { ", '*'" } else { "" };
            format!(
                "{text:?} has {c:?}, which a DNS name cannot have \
                 (allowed: a-z, 0-9, '-', '_', '.'{wildcard})"
            )
        });
    }
    let lower = text.to_ascii_lowercase();
    let canonical = lower.strip_suffix('.').unwrap_or(&lower);
    if canonical.is_empty() {
        return Err(format!("{text:?} has no label"));
    }
    if canonical.split('.').any(str::is_empty) {
        return Err(format!("{text:?} has an empty label"));
    }
    Ok(canonical.to_string())
}

fn allowed(c: char, pattern: bool) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') || (pattern && c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_lowercased_without_the_trailing_dot() {
        assert_eq!(normalize_name("WWW.Cilium.IO.").unwrap(), "www.cilium.io");
        assert_eq!(
            normalize_name("_sip._udp.example.com").unwrap(),
            "_sip._udp.example.com"
        );
        assert_eq!(normalize_pattern("*.Cilium.io").unwrap(), "*.cilium.io");
        assert_eq!(normalize_pattern("*").unwrap(), "*");
        assert_eq!(normalize_pattern("*.").unwrap(), "*");
        assert_eq!(normalize_pattern("**.cilium.io").unwrap(), "**.cilium.io");
        assert_eq!(
            normalize_pattern("sub*.cilium.io").unwrap(),
            "sub*.cilium.io"
        );
    }

    #[test]
    fn bad_names_say_why() {
        assert_eq!(normalize_name("").unwrap_err(), "is empty");
        assert_eq!(
            normalize_name("*.cilium.io").unwrap_err(),
            "\"*.cilium.io\": a matchName cannot contain '*' (wildcards need matchPattern)"
        );
        assert_eq!(
            normalize_name("a b.io").unwrap_err(),
            "\"a b.io\" has ' ', which a DNS name cannot have (allowed: a-z, 0-9, '-', '_', '.')"
        );
        assert_eq!(
            normalize_pattern("a/b").unwrap_err(),
            "\"a/b\" has '/', which a DNS name cannot have (allowed: a-z, 0-9, '-', '_', '.', '*')"
        );
        assert_eq!(
            normalize_name("a..b").unwrap_err(),
            "\"a..b\" has an empty label"
        );
        assert_eq!(
            normalize_name(".a").unwrap_err(),
            "\".a\" has an empty label"
        );
        assert_eq!(
            normalize_name("a.b..").unwrap_err(),
            "\"a.b..\" has an empty label"
        );
        assert_eq!(normalize_name(".").unwrap_err(), "\".\" has no label");
        let long = format!("{}.io", "a".repeat(253));
        assert!(normalize_name(&long)
            .unwrap_err()
            .ends_with("is longer than 255 characters"));
        assert!(normalize_name(&long[1..]).is_ok());
    }
}
