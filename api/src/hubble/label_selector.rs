//! Hubble's label selectors over an endpoint's labels (`--label`,
//! `--from-label`, `--to-label`).
//!
//! A selector is a Kubernetes label selector (`k=v`, `k==v`, `k!=v`, `k`,
//! `!k`, `k in (a,b)`, `k notin (a,b)`, comma = AND) whose keys may carry a
//! label source: `k8s:app=web` matches only the label `k8s:app=web`, while
//! `app=web` matches `app=web` from any source (`k8s:`, `container:`, ...).
//! `reserved:world` is an existence test on the reserved label `world`.

/// An endpoint label as Hubble prints it: `source:key=value` (`k8s:app=web`,
/// `reserved:world`); a label without a source is treated as source `any`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Label<'a> {
    source: &'a str,
    key: &'a str,
    value: &'a str,
}

fn split_source(text: &str) -> (&str, &str) {
    match text.split_once(':') {
        Some((source, rest)) => (source, rest),
        None => ("any", text),
    }
}

fn parse_label(text: &str) -> Label<'_> {
    let (source, rest) = split_source(text);
    let (key, value) = rest.split_once('=').unwrap_or((rest, ""));
    Label { source, key, value }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Operator {
    Exists,
    DoesNotExist,
    In(Vec<String>),
    NotIn(Vec<String>),
}

/// One requirement of a selector (`k8s:app in (a,b)`).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Requirement {
    source: String,
    key: String,
    operator: Operator,
}

impl Requirement {
    fn values_of<'a>(&'a self, labels: &'a [Label<'a>]) -> impl Iterator<Item = &'a str> + 'a {
        labels
            .iter()
            .filter(|l| l.key == self.key && (self.source == "any" || l.source == self.source))
            .map(|l| l.value)
    }

    fn matches(&self, labels: &[Label<'_>]) -> bool {
        let mut values = self.values_of(labels).peekable();
        match &self.operator {
            Operator::Exists => values.peek().is_some(),
            Operator::DoesNotExist => values.peek().is_none(),
            Operator::In(set) => values.any(|v| set.iter().any(|s| s == v)),
            Operator::NotIn(set) => values.all(|v| set.iter().all(|s| s != v)),
        }
    }
}

/// A parsed label selector: every requirement must hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// Parses `text`; the error names the selector and what is wrong.
    pub fn parse(text: &str) -> Result<LabelSelector, String> {
        let bad = |why: &str| format!("label selector {text:?}: {why}");
        let mut requirements = Vec::new();
        for part in split_top_level(text) {
            let part = part.trim();
            if part.is_empty() {
                return Err(bad("empty requirement"));
            }
            requirements.push(parse_requirement(part).map_err(|why| bad(&why))?);
        }
        Ok(LabelSelector { requirements })
    }

    /// Whether the endpoint labels (`k8s:app=web`, ...) satisfy the selector.
    pub fn matches<S: AsRef<str>>(&self, labels: &[S]) -> bool {
        let parsed: Vec<Label<'_>> = labels.iter().map(|l| parse_label(l.as_ref())).collect();
        self.requirements.iter().all(|r| r.matches(&parsed))
    }
}

/// Splits on commas outside parentheses.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn requirement(key_text: &str, operator: Operator) -> Result<Requirement, String> {
    let key_text = key_text.trim();
    if key_text.is_empty() || key_text.contains(char::is_whitespace) {
        return Err(format!("bad key {key_text:?}"));
    }
    let (source, key) = split_source(key_text);
    if key.is_empty() || source.is_empty() {
        return Err(format!("bad key {key_text:?}"));
    }
    Ok(Requirement {
        source: source.to_string(),
        key: key.to_string(),
        operator,
    })
}

fn parse_set(text: &str) -> Result<Vec<String>, String> {
    let inner = text
        .trim()
        .strip_prefix('(')
        .and_then(|t| t.strip_suffix(')'))
        .ok_or_else(|| format!("expected a parenthesised value list, got {text:?}"))?;
    Ok(inner.split(',').map(|v| v.trim().to_string()).collect())
}

fn parse_requirement(part: &str) -> Result<Requirement, String> {
    if let Some(key) = part.strip_prefix('!') {
        return requirement(key, Operator::DoesNotExist);
    }
    if let Some((key, value)) = part.split_once("!=") {
        return requirement(key, Operator::NotIn(vec![value.trim().to_string()]));
    }
    if let Some((key, value)) = part.split_once("==").or_else(|| part.split_once('=')) {
        return requirement(key, Operator::In(vec![value.trim().to_string()]));
    }
    if let Some((key, set)) = part.split_once(" notin ") {
        return requirement(key, Operator::NotIn(parse_set(set)?));
    }
    if let Some((key, set)) = part.split_once(" in ") {
        return requirement(key, Operator::In(parse_set(set)?));
    }
    requirement(part, Operator::Exists)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEB: &[&str] = &[
        "k8s:app=web",
        "k8s:io.kubernetes.pod.namespace=shop",
        "container:tier=front",
    ];

    fn matches(selector: &str, labels: &[&str]) -> bool {
        LabelSelector::parse(selector).unwrap().matches(labels)
    }

    #[test]
    fn sources_are_optional_in_selectors_and_exact_when_given() {
        assert!(matches("app=web", WEB));
        assert!(matches("k8s:app=web", WEB));
        assert!(!matches("container:app=web", WEB));
        assert!(matches("tier=front", WEB));
        assert!(!matches("k8s:tier=front", WEB));
        assert!(!matches("app=db", WEB));
        assert!(matches("reserved:world", &["reserved:world"]));
        assert!(!matches("reserved:world", &["reserved:host"]));
        assert!(matches("world", &["reserved:world"]));
    }

    #[test]
    fn operators_follow_kubernetes_selectors() {
        assert!(matches("app in (db, web)", WEB));
        assert!(!matches("app in (db,cache)", WEB));
        assert!(matches("app notin (db)", WEB));
        assert!(!matches("app notin (db,web)", WEB));
        assert!(matches("app!=db", WEB));
        assert!(!matches("app!=web", WEB));
        assert!(matches("missing!=x", WEB));
        assert!(matches("!missing", WEB));
        assert!(!matches("!app", WEB));
        assert!(matches("app", WEB));
        assert!(matches("app==web", WEB));
        assert!(matches("app=web,tier=front", WEB));
        assert!(!matches("app=web,tier=back", WEB));
        assert!(matches(
            "app in (web,db),k8s:io.kubernetes.pod.namespace=shop",
            WEB
        ));
    }

    #[test]
    fn bad_selectors_name_themselves() {
        let err = LabelSelector::parse("app in web").unwrap_err();
        assert!(err.contains("app in web"), "{err}");
        assert!(LabelSelector::parse("a=b,").is_err());
        assert!(LabelSelector::parse("").is_err());
    }
}
