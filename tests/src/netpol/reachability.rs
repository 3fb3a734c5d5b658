//! Expected and observed reachability between the model's pods, as upstream's
//! netpol suite keeps it (`reachability.go`, `truthtable.go`): a square table
//! of booleans, row = from, column = to, built from a default plus ordered
//! overrides, compared with loopback ignored and printed as an X/. matrix.

use anyhow::{bail, ensure, Context, Result};

/// An n x n table of booleans over pod names (`x/a`), row = from, column = to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TruthTable {
    pods: Vec<String>,
    values: Vec<Vec<bool>>,
}

impl TruthTable {
    pub fn new(pods: &[String], value: bool) -> TruthTable {
        TruthTable {
            pods: pods.to_vec(),
            values: vec![vec![value; pods.len()]; pods.len()],
        }
    }

    pub fn pods(&self) -> &[String] {
        &self.pods
    }

    fn index(&self, pod: &str) -> Result<usize> {
        self.pods
            .iter()
            .position(|p| p == pod)
            .with_context(|| format!("no pod {pod} in the model ({})", self.pods.join(", ")))
    }

    pub fn get(&self, from: usize, to: usize) -> bool {
        self.values[from][to]
    }

    pub fn set(&mut self, from: usize, to: usize, value: bool) {
        self.values[from][to] = value;
    }

    /// The cell by pod names.
    pub fn at(&self, from: &str, to: &str) -> Result<bool> {
        Ok(self.values[self.index(from)?][self.index(to)?])
    }

    /// Sets every cell whose from-pod matches `from` and to-pod matches `to`
    /// (upstream's `ExpectPeer`; `Expect`, `ExpectAllIngress` and
    /// `ExpectAllEgress` are the special cases of one pod, and any pod).
    pub fn set_peers(&mut self, from: &Peer, to: &Peer, value: bool) -> Result<()> {
        let mut any = (false, false);
        for f in 0..self.pods.len() {
            if !from.matches(&self.pods[f]) {
                continue;
            }
            any.0 = true;
            for t in 0..self.pods.len() {
                if to.matches(&self.pods[t]) {
                    any.1 = true;
                    self.values[f][t] = value;
                }
            }
        }
        ensure!(
            any.0 && any.1,
            "{from} -> {to} selects no pair of pods ({})",
            self.pods.join(", ")
        );
        Ok(())
    }

    /// Upstream's PrettyPrint: a header of the to-pods, then one line per
    /// from-pod; `.` reachable, `X` not, tab separated.
    pub fn pretty(&self) -> String {
        let mut text = String::from("-");
        for to in &self.pods {
            text.push('\t');
            text.push_str(to);
        }
        for (f, from) in self.pods.iter().enumerate() {
            text.push('\n');
            text.push_str(from);
            for t in 0..self.pods.len() {
                text.push('\t');
                text.push(if self.values[f][t] { '.' } else { 'X' });
            }
        }
        text
    }
}

/// A pod pattern: `*` any pod, `x` or `x/*` every pod of namespace x, `*/a`
/// pod a of every namespace, `x/a` one pod (upstream's `Peer{Namespace, Pod}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub namespace: Option<String>,
    pub pod: Option<String>,
}

impl Peer {
    pub fn parse(text: &str) -> Result<Peer> {
        let any = |s: &str| if s == "*" { None } else { Some(s.to_string()) };
        let text = text.trim();
        ensure!(!text.is_empty(), "an empty pod pattern");
        Ok(match text.split_once('/') {
            Some((ns, pod)) => {
                ensure!(
                    !ns.is_empty() && !pod.is_empty() && !pod.contains('/'),
                    "pod pattern {text:?}: expected *, ns, ns/pod, ns/* or */pod"
                );
                Peer {
                    namespace: any(ns),
                    pod: any(pod),
                }
            }
            None => Peer {
                namespace: any(text),
                pod: None,
            },
        })
    }

    pub fn matches(&self, pod: &str) -> bool {
        let (ns, name) = pod.split_once('/').unwrap_or(("", pod));
        self.namespace.as_deref().is_none_or(|n| n == ns)
            && self.pod.as_deref().is_none_or(|p| p == name)
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}",
            self.namespace.as_deref().unwrap_or("*"),
            self.pod.as_deref().unwrap_or("*")
        )
    }
}

/// One override of an expectation: `allow FROM -> TO` or `deny FROM -> TO`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    pub allow: bool,
    pub from: Peer,
    pub to: Peer,
}

impl Override {
    pub fn parse(text: &str) -> Result<Override> {
        let (verb, rest) = text
            .trim()
            .split_once(char::is_whitespace)
            .with_context(|| format!("expectation {text:?}: expected `allow|deny FROM -> TO`"))?;
        let allow = match verb {
            "allow" => true,
            "deny" => false,
            other => bail!("expectation {text:?}: {other:?} is neither allow nor deny"),
        };
        let (from, to) = rest
            .split_once("->")
            .with_context(|| format!("expectation {text:?}: no `->`"))?;
        Ok(Override {
            allow,
            from: Peer::parse(from).with_context(|| format!("expectation {text:?}"))?,
            to: Peer::parse(to).with_context(|| format!("expectation {text:?}"))?,
        })
    }
}

/// Expected against observed, with upstream's summary.
#[derive(Debug, Clone)]
pub struct Comparison {
    pub expected: TruthTable,
    pub observed: TruthTable,
    /// Cells where both agree (`true`); loopback cells count as agreeing.
    pub agree: TruthTable,
    pub wrong: usize,
    pub right: usize,
    pub ignored: usize,
}

impl Comparison {
    /// Compares; with `ignore_loopback` a pod's probe of itself never fails
    /// (upstream: policy on loopback is undefined).
    pub fn new(expected: &TruthTable, observed: &TruthTable, ignore_loopback: bool) -> Comparison {
        assert_eq!(expected.pods, observed.pods, "tables over different pods");
        let n = expected.pods.len();
        let mut agree = TruthTable::new(&expected.pods, true);
        let (mut wrong, mut right, mut ignored) = (0, 0, 0);
        for f in 0..n {
            for t in 0..n {
                let same = expected.get(f, t) == observed.get(f, t);
                agree.set(f, t, same);
                if ignore_loopback && f == t {
                    ignored += 1;
                    agree.set(f, t, true);
                } else if same {
                    right += 1;
                } else {
                    wrong += 1;
                }
            }
        }
        Comparison {
            expected: expected.clone(),
            observed: observed.clone(),
            agree,
            wrong,
            right,
            ignored,
        }
    }

    /// Upstream's PrintSummary(true, true, true).
    pub fn report(&self) -> String {
        format!(
            "reachability: correct:{}, incorrect:{}, ignored (loopback):{}, result={}\n\n\
             expected:\n\n{}\n\nobserved:\n\n{}\n\ncomparison:\n\n{}\n",
            self.right,
            self.wrong,
            self.ignored,
            self.wrong == 0,
            self.expected.pretty(),
            self.observed.pretty(),
            self.agree.pretty()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pods() -> Vec<String> {
        ["x/a", "x/b", "y/a", "y/b"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    #[test]
    fn peers_match_like_upstream() {
        let p = Peer::parse("*").unwrap();
        assert!(p.matches("x/a") && p.matches("z/c"));
        let p = Peer::parse("x").unwrap();
        assert!(p.matches("x/b") && !p.matches("y/b"));
        assert_eq!(Peer::parse("x/*").unwrap(), p);
        let p = Peer::parse("*/a").unwrap();
        assert!(p.matches("y/a") && !p.matches("y/b"));
        let p = Peer::parse("y/b").unwrap();
        assert!(p.matches("y/b") && !p.matches("x/b"));
        assert!(Peer::parse("x/a/b").is_err());
        assert!(Peer::parse("/a").is_err());
    }

    #[test]
    fn overrides_apply_in_order() {
        // default-deny-ingress in x, then x/b -> x/a allowed again.
        let mut t = TruthTable::new(&pods(), true);
        for rule in ["deny * -> x", "allow x/b -> x/a"] {
            let o = Override::parse(rule).unwrap();
            t.set_peers(&o.from, &o.to, o.allow).unwrap();
        }
        assert!(!t.at("y/a", "x/a").unwrap());
        assert!(!t.at("x/a", "x/b").unwrap());
        assert!(t.at("x/b", "x/a").unwrap());
        assert!(t.at("x/a", "y/b").unwrap());
        assert!(Override::parse("block x -> y").is_err());
        assert!(Override::parse("deny x y").is_err());
        let o = Override::parse("deny z -> x").unwrap();
        assert!(
            t.set_peers(&o.from, &o.to, false).is_err(),
            "z has no pods here"
        );
    }

    #[test]
    fn comparison_ignores_loopback_and_prints_upstreams_matrix() {
        let expected = TruthTable::new(&pods(), true);
        let mut observed = expected.clone();
        observed.set(0, 0, false); // loopback: ignored
        observed.set(2, 0, false); // y/a -> x/a: wrong
        let c = Comparison::new(&expected, &observed, true);
        assert_eq!((c.right, c.wrong, c.ignored), (11, 1, 4));
        assert_eq!(
            c.observed.pretty(),
            "-\tx/a\tx/b\ty/a\ty/b\nx/a\tX\t.\t.\t.\nx/b\t.\t.\t.\t.\ny/a\tX\t.\t.\t.\ny/b\t.\t.\t.\t."
        );
        assert!(c.agree.at("x/a", "x/a").unwrap());
        assert!(!c.agree.at("y/a", "x/a").unwrap());
        assert!(c.report().contains("incorrect:1"));
        let strict = Comparison::new(&expected, &observed, false);
        assert_eq!(strict.wrong, 2);
    }
}
