//! DNS name selectors as Cilium matches them: `matchName` (toFQDNs and
//! `rules.dns`) and `matchPattern` with Cilium's wildcards (its
//! `pkg/fqdn/matchpattern`, 1.16 and later):
//! * names and selectors compare ASCII case-insensitively and without the
//!   trailing root dot;
//! * `*` inside a pattern matches zero or more DNS characters (letters,
//!   digits, `-`, `_`) but never `.`: `*.cilium.io` matches `sub.cilium.io`,
//!   not `cilium.io` nor `a.sub.cilium.io`; `part*ial.com` matches
//!   `partial.com`;
//! * a pattern made of `*` only (`*`, `**`, optionally with a trailing dot)
//!   matches every name made of DNS characters, and the root;
//! * a leading `**.` (two or more stars, then a dot) matches one or more
//!   whole labels: `**.cilium.io` matches `app.cilium.io` and
//!   `test.app.cilium.io`, not `cilium.io`.
//!
//! A name with a byte outside the DNS characters (or an empty label) matches
//! no pattern: a valid selector holds only DNS characters, dots and stars,
//! and Cilium sees such bytes escaped (`\.`, `\032`), which no selector
//! matches either. Matching walks the bytes in place: no allocation, no
//! regular expression.

use crate::policy::{DnsRules, DnsSelector};

impl DnsSelector {
    /// Whether `name` (presentation form: labels joined by `.`, a trailing
    /// dot allowed) is selected.
    pub fn matches(&self, name: &[u8]) -> bool {
        let name = without_root_dot(name);
        match self {
            DnsSelector::MatchName(expected) => {
                without_root_dot(expected.trim().as_bytes()).eq_ignore_ascii_case(name)
            }
            DnsSelector::MatchPattern(pattern) => {
                pattern_matches(without_root_dot(pattern.trim().as_bytes()), name)
            }
        }
    }
}

impl DnsRules {
    /// Whether a query for `name` is allowed: any selector matches (an empty
    /// list allows nothing).
    pub fn allows(&self, name: &[u8]) -> bool {
        self.allow.iter().any(|selector| selector.matches(name))
    }
}

/// Letters, digits, `-` and `_`: what `*` stands for (Cilium's
/// `[-a-zA-Z0-9_]`), and the only bytes a selectable label holds.
fn is_dns_char(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_'
}

fn without_root_dot(name: &[u8]) -> &[u8] {
    name.strip_suffix(b".").unwrap_or(name)
}

/// The root (empty) or labels of DNS characters, none empty.
fn is_selectable(name: &[u8]) -> bool {
    name.is_empty()
        || name
            .split(|&b| b == b'.')
            .all(|label| !label.is_empty() && label.iter().all(|&b| is_dns_char(b)))
}

/// `pattern` and `name` without their root dots.
fn pattern_matches(pattern: &[u8], name: &[u8]) -> bool {
    if !is_selectable(name) {
        return false;
    }
    if !pattern.is_empty() && pattern.iter().all(|&b| b == b'*') {
        return true;
    }
    let stars = pattern.iter().take_while(|&&b| b == b'*').count();
    if stars >= 2 && pattern.get(stars) == Some(&b'.') {
        // One or more whole labels, then the rest of the pattern: try every
        // dot of the name as the end of the wildcard labels.
        let rest = &pattern[stars + 1..];
        return name
            .iter()
            .enumerate()
            .filter(|&(_, &b)| b == b'.')
            .any(|(dot, _)| labels_match(rest, &name[dot + 1..]));
    }
    labels_match(pattern, name)
}

/// Label by label: a `*` never spans a dot, so the pattern's labels and the
/// name's pair up one to one.
fn labels_match(pattern: &[u8], name: &[u8]) -> bool {
    let mut patterns = pattern.split(|&b| b == b'.');
    let mut labels = name.split(|&b| b == b'.');
    loop {
        match (patterns.next(), labels.next()) {
            (None, None) => return true,
            (Some(p), Some(l)) if label_matches(p, l) => {}
            _ => return false,
        }
    }
}

/// Glob match of one label: `*` (runs of them count as one) matches any run
/// of the label's bytes, which are DNS characters (checked by the caller).
/// Linear backtracking: on a mismatch only the last star is extended.
fn label_matches(pattern: &[u8], label: &[u8]) -> bool {
    let (mut p, mut l) = (0, 0);
    let mut last_star: Option<(usize, usize)> = None;
    while l < label.len() {
        match pattern.get(p) {
            Some(b'*') => {
                last_star = Some((p, l));
                p += 1;
            }
            Some(&c) if c.eq_ignore_ascii_case(&label[l]) => {
                p += 1;
                l += 1;
            }
            _ => match last_star {
                Some((star, taken)) => {
                    p = star + 1;
                    l = taken + 1;
                    last_star = Some((star, taken + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p.min(pattern.len())..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(p: &str) -> DnsSelector {
        DnsSelector::MatchPattern(p.to_string())
    }

    fn check(selector: &DnsSelector, accept: &[&str], reject: &[&str]) {
        for name in accept {
            assert!(
                selector.matches(name.as_bytes()),
                "{selector:?} should match {name:?}"
            );
        }
        for name in reject {
            assert!(
                !selector.matches(name.as_bytes()),
                "{selector:?} should not match {name:?}"
            );
        }
    }

    #[test]
    fn match_name_is_exact_case_insensitive_and_ignores_the_root_dot() {
        let selector = DnsSelector::MatchName("www.Allowed.test".to_string());
        check(
            &selector,
            &["www.allowed.test", "WWW.ALLOWED.TEST.", "www.allowed.test."],
            &[
                "allowed.test",
                "a.www.allowed.test",
                "www.allowed.tes",
                "www-allowed.test",
                "",
            ],
        );
        let rooted = DnsSelector::MatchName("cilium.io.".to_string());
        check(&rooted, &["cilium.io", "cilium.io."], &["cilium.io.."]);
    }

    /// Cilium's own cases (matchpattern_test.go), plus the 1.16 `**.` prefix
    /// (docs: "`**.cilium.io` matches `app.cilium.io` and
    /// `test.app.cilium.io` but not `cilium.io`").
    #[test]
    fn match_pattern_follows_cilium() {
        check(
            &pattern("cilium.io."),
            &["cilium.io.", "Cilium.IO"],
            &["", "anysub.cilium.io.", "anysub.ci.io."],
        );
        check(
            &pattern("*.cilium.io"),
            &["anysub.cilium.io.", "_srv.cilium.io", "a-b.cilium.io"],
            &[
                "",
                "cilium.io.",
                "anysub.ci.io.",
                "sub.sub.cilium.io",
                "anysub.ciliumandmore.io.",
            ],
        );
        check(
            &pattern("*.ci*.io."),
            &[
                "anysub.cilium.io.",
                "anysub.ci.io.",
                "anysub.ciliumandmore.io.",
            ],
            &["", "cilium.io.", "a.b.ci.io"],
        );
        check(
            &pattern("part*ial.com"),
            &["partial.com", "part-extra-ial.com", "PARTxIAL.com"],
            &["parial.com", "part.ial.com", "x.partial.com"],
        );
        check(
            &pattern("*"),
            &[
                ".",
                "",
                "io.",
                "cilium.io.",
                "svc.cluster.local.",
                "_foobar._tcp.cilium.io.",
            ],
            &[".io.", ".cilium.io.", "a..b", "sp ace.io", "a\\.b.io"],
        );
        for all in ["**", "*.", "***."] {
            check(&pattern(all), &["", "a.b.c.d", "x."], &["a..b"]);
        }
        check(&pattern("."), &[".", ""], &["io.", "a"]);
        check(
            &pattern("*.*.cilium.io."),
            &["_foobar._tcp.cilium.io."],
            &["", "a.cilium.io", "a.b.c.cilium.io"],
        );
        check(
            &pattern("**.cilium.io"),
            &["app.cilium.io", "test.app.cilium.io", "a.b.c.d.cilium.io."],
            &["cilium.io", ".cilium.io", "app.cilium.iox", "appcilium.io"],
        );
        check(
            &pattern("***.*.io"),
            &["a.b.io", "a.b.c.io"],
            &["b.io", "io"],
        );
        // Stars not followed by a dot are one ordinary wildcard.
        check(&pattern("**a.io"), &["a.io", "xya.io"], &["x.a.io"]);
        check(
            &pattern("a.**.io"),
            &["a.x.io", "a.xyz.io"],
            &["a.x.y.io", "b.x.io"],
        );
    }

    #[test]
    fn names_with_bytes_outside_the_dns_characters_match_no_pattern() {
        // The wire decoder writes such bytes as `\`; Cilium escapes them.
        for name in ["a\\b.allowed.test", "a b.allowed.test", "a*.allowed.test"] {
            assert!(
                !pattern("*.allowed.test").matches(name.as_bytes()),
                "{name}"
            );
            assert!(!pattern("*").matches(name.as_bytes()), "{name}");
            assert!(!pattern("**.test").matches(name.as_bytes()), "{name}");
        }
        assert!(!pattern("*.test").matches(&[0xc3, 0xa9, b'.', b't', b'e', b's', b't']));
    }

    #[test]
    fn dns_rules_allow_when_any_selector_matches() {
        let rules = DnsRules {
            allow: vec![
                DnsSelector::MatchName("exact.test".to_string()),
                pattern("*.allowed.test"),
            ],
        };
        assert!(rules.allows(b"exact.test."));
        assert!(rules.allows(b"www.allowed.test"));
        assert!(!rules.allows(b"denied.test"));
        assert!(!DnsRules::default().allows(b"exact.test"));
    }

    /// A name built from a pattern (each `*` replaced by random DNS
    /// characters, a `**.` prefix by one to three random labels) matches the
    /// pattern, in any letter case; changing one literal character of it, or
    /// putting a dot where a star stood, makes it miss. Seeded, so a failure
    /// repeats.
    #[test]
    fn names_generated_from_a_pattern_match_it() {
        use rand::rngs::Xoshiro256PlusPlus;
        use rand::{RngExt, SeedableRng};
        const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_";
        const PATTERN_CHARS: &[u8] = b"abcxyz019-_*";
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(6);
        let random_run = |rng: &mut Xoshiro256PlusPlus, min: usize, max: usize| -> Vec<u8> {
            let n = rng.random_range(min..=max);
            (0..n)
                .map(|_| CHARS[rng.random_range(0..CHARS.len())])
                .collect()
        };
        for case in 0..2000 {
            // 1-4 labels of 1-6 pattern characters, optionally a `**.` prefix.
            let labels = rng.random_range(1..=4);
            let mut pattern_text = Vec::new();
            let multi = rng.random_bool(0.3);
            if multi {
                pattern_text.extend_from_slice(b"**.");
            }
            for i in 0..labels {
                if i > 0 {
                    pattern_text.push(b'.');
                }
                let len = rng.random_range(1..=6);
                for _ in 0..len {
                    pattern_text.push(PATTERN_CHARS[rng.random_range(0..PATTERN_CHARS.len())]);
                }
            }
            // All stars is the match-all pattern, and a first label of two
            // or more stars is the `**.` prefix: not what this case built.
            let leading = pattern_text.iter().take_while(|&&b| b == b'*').count();
            if pattern_text.iter().all(|&b| b == b'*' || b == b'.')
                || (!multi && leading >= 2 && pattern_text.get(leading) == Some(&b'.'))
            {
                continue;
            }
            let mut name = Vec::new();
            let mut star_positions = Vec::new();
            let mut literal_positions = Vec::new();
            let body = if multi {
                for l in 0..rng.random_range(1..=3) {
                    if l > 0 {
                        name.push(b'.');
                    }
                    name.extend(random_run(&mut rng, 1, 5));
                }
                name.push(b'.');
                &pattern_text[3..]
            } else {
                &pattern_text[..]
            };
            for &c in body {
                match c {
                    b'*' => {
                        star_positions.push(name.len());
                        name.extend(random_run(&mut rng, 0, 4));
                    }
                    c => {
                        if c != b'.' {
                            literal_positions.push(name.len());
                        }
                        let c = if rng.random_bool(0.5) {
                            c.to_ascii_uppercase()
                        } else {
                            c
                        };
                        name.push(c);
                    }
                }
            }
            // A star that took nothing inside an otherwise empty label would
            // make an empty label; such names are not names.
            if name.split(|&b| b == b'.').any(|label| label.is_empty()) {
                continue;
            }
            let selector =
                DnsSelector::MatchPattern(String::from_utf8(pattern_text.clone()).unwrap());
            let shown = String::from_utf8_lossy(&name).into_owned();
            assert!(
                selector.matches(&name),
                "case {case}: {selector:?} should match {shown:?}"
            );
            let mut rooted = name.clone();
            rooted.push(b'.');
            assert!(
                selector.matches(&rooted),
                "case {case}: {selector:?} with root dot"
            );
            // A dot where a star stood adds a label: no match (the star's
            // label keeps at least one byte on each side only if it had some).
            if let Some(&at) = star_positions.first() {
                let mut dotted = name.clone();
                dotted.insert(at, b'.');
                dotted.insert(at, b'q');
                dotted.insert(at + 2, b'q');
                if !multi {
                    assert!(
                        !selector.matches(&dotted),
                        "case {case}: {selector:?} matched {:?}",
                        String::from_utf8_lossy(&dotted)
                    );
                }
            }
            // A changed literal: only a miss when no star could absorb it.
            if star_positions.is_empty() && !multi {
                if let Some(&at) = literal_positions.first() {
                    let mut changed = name.clone();
                    changed[at] = if changed[at] == b'~' { b'^' } else { b'~' };
                    assert!(
                        !selector.matches(&changed),
                        "case {case}: changed literal matched"
                    );
                    changed[at] = if name[at].eq_ignore_ascii_case(&b'q') {
                        b'r'
                    } else {
                        b'q'
                    };
                    assert!(
                        !selector.matches(&changed),
                        "case {case}: {selector:?} changed literal matched {:?}",
                        String::from_utf8_lossy(&changed)
                    );
                }
            }
        }
    }
}
