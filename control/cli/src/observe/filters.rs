//! Filter flags -> Hubble `FlowFilter`s, the way `hubble observe` builds
//! them (Hubble `cmd/observe/flows_filter.go`): `--from-X` and `--to-X` set
//! the source or destination field of both filters, `--X` sets the source
//! field of the left filter and the destination field of the right one (so
//! the request matches either direction), `--not` sends the next filter flag
//! to the blacklist, and `-n ns` (`-A`: any namespace) restricts pods or
//! services to `ns/` on the source side of the left filter and the
//! destination side of the right one. Identical left and right filters are
//! sent once.

use sluice_api::hubble::{drop_reason, event_type, filter::VERDICTS, EventTypeFilter, FlowFilter};

/// Flags that may not be given together in one list (Hubble's conflict
/// groups, for the flags Sluice has).
const CONFLICTS: &[&[&str]] = &[
    &["from-ip", "ip", "namespace", "all-namespaces"],
    &["from-ip", "ip", "from-pod", "pod"],
    &["to-ip", "ip", "namespace", "all-namespaces"],
    &["to-ip", "ip", "to-pod", "pod"],
    &["to-pod", "namespace", "all-namespaces"],
    &["from-pod", "namespace", "all-namespaces"],
    &["to-service", "namespace", "all-namespaces"],
    &["from-service", "namespace", "all-namespaces"],
    &["label", "from-label"],
    &["label", "to-label"],
    &["service", "from-service"],
    &["service", "to-service"],
    &["port", "to-port"],
    &["port", "from-port"],
    &["identity", "to-identity"],
    &["identity", "from-identity"],
];

/// Reserved identity names `--identity` takes (Cilium's numbers).
pub const RESERVED_IDENTITIES: &[(&str, u32)] = &[
    ("unknown", 0),
    ("host", 1),
    ("world", 2),
    ("unmanaged", 3),
    ("health", 4),
    ("init", 5),
    ("remote-node", 6),
    ("kube-apiserver", 7),
    ("ingress", 8),
    ("world-ipv4", 9),
    ("world-ipv6", 10),
];

/// One side of the request (whitelist or blacklist) while flags are read.
#[derive(Debug, Default)]
struct Tracker {
    left: Option<FlowFilter>,
    right: Option<FlowFilter>,
    namespaces: Vec<String>,
    changed: Vec<String>,
}

impl Tracker {
    fn left(&mut self) -> &mut FlowFilter {
        self.left.get_or_insert_with(FlowFilter::default)
    }

    fn right(&mut self) -> &mut FlowFilter {
        self.right.get_or_insert_with(FlowFilter::default)
    }

    fn both(&mut self, update: impl Fn(&mut FlowFilter)) {
        update(self.left());
        update(self.right());
    }

    fn split(&mut self, left: impl Fn(&mut FlowFilter), right: impl Fn(&mut FlowFilter)) {
        left(self.left());
        right(self.right());
    }

    fn track(&mut self, name: &str) -> Result<(), String> {
        if !self.changed.iter().any(|c| c == name) {
            self.changed.push(name.to_string());
        }
        for group in CONFLICTS {
            let set: Vec<&&str> = group
                .iter()
                .filter(|f| self.changed.iter().any(|c| c == **f))
                .collect();
            if set.len() > 1 {
                return Err(format!(
                    "filters --{} and --{} cannot be combined",
                    set[0], set[1]
                ));
            }
        }
        Ok(())
    }

    fn into_filters(mut self) -> Vec<FlowFilter> {
        if self.left.is_none() && self.right.is_none() && self.namespaces.is_empty() {
            return Vec::new();
        }
        let mut left = self.left.take().unwrap_or_default();
        let mut right = self.right.take().unwrap_or_default();
        if !self.namespaces.is_empty() {
            if left.source_pod.is_empty() && left.source_service.is_empty() {
                left.source_pod = vec![String::new()];
            }
            left.source_pod = with_namespaces(&left.source_pod, &self.namespaces);
            left.source_service = with_namespaces(&left.source_service, &self.namespaces);
            if right.destination_pod.is_empty() && right.destination_service.is_empty() {
                right.destination_pod = vec![String::new()];
            }
            right.destination_pod = with_namespaces(&right.destination_pod, &self.namespaces);
            right.destination_service =
                with_namespaces(&right.destination_service, &self.namespaces);
        }
        if left == right {
            vec![left]
        } else {
            vec![left, right]
        }
    }
}

/// `name` -> `ns/name` for each namespace, unless it already has one.
fn with_namespaces(names: &[String], namespaces: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for name in names {
        if name.contains('/') {
            out.push(name.clone());
        } else {
            out.extend(namespaces.iter().map(|ns| format!("{ns}/{name}")));
        }
    }
    out
}

fn parse_identity(value: &str) -> Result<u32, String> {
    if let Some((_, n)) = RESERVED_IDENTITIES.iter().find(|(name, _)| *name == value) {
        return Ok(*n);
    }
    value.parse().map_err(|_| {
        let names: Vec<&str> = RESERVED_IDENTITIES.iter().map(|(n, _)| *n).collect();
        format!("invalid security identity {value:?}, expected one of {names:?} or a numeric value")
    })
}

fn parse_type(value: &str) -> Result<EventTypeFilter, String> {
    let (name, sub) = match value.split_once(':') {
        Some((name, sub)) => (name, Some(sub)),
        None => (value, None),
    };
    let event_type = match event_type::type_number(name) {
        Some(t) => t,
        None => name.parse().map_err(|_| {
            format!("unable to parse type {name:?}, not a known type name or a number")
        })?,
    };
    let mut filter = EventTypeFilter {
        event_type,
        ..Default::default()
    };
    if let Some(sub) = sub {
        let named = (event_type == event_type::TRACE)
            .then(|| event_type::trace_point_number(sub))
            .flatten();
        filter.sub_type = match named {
            Some(s) => s,
            None => sub.parse().map_err(|_| {
                format!(
                    "unable to parse event sub-type {sub:?}, not a known sub-type name or a number"
                )
            })?,
        };
        filter.match_sub_type = true;
    }
    Ok(filter)
}

/// Builds the whitelist and blacklist from filter flags in command-line
/// order: `(flag name without dashes, value)`; `not` has an empty value.
pub fn build(flags: &[(String, String)]) -> Result<(Vec<FlowFilter>, Vec<FlowFilter>), String> {
    let mut whitelist = Tracker::default();
    let mut blacklist = Tracker::default();
    let mut negate = false;
    for (name, value) in flags {
        if name == "not" {
            if negate {
                return Err("consecutive --not statements".into());
            }
            negate = true;
            continue;
        }
        let tracker = if std::mem::take(&mut negate) {
            &mut blacklist
        } else {
            &mut whitelist
        };
        tracker.track(name)?;
        apply(tracker, name, value)?;
    }
    if negate {
        return Err("--not must be followed by a filter flag".into());
    }
    Ok((whitelist.into_filters(), blacklist.into_filters()))
}

fn apply(t: &mut Tracker, name: &str, value: &str) -> Result<(), String> {
    let v = value.to_string();
    match name {
        "pod" => t.split(
            |f| f.source_pod.push(v.clone()),
            |f| f.destination_pod.push(v.clone()),
        ),
        "from-pod" => t.both(|f| f.source_pod.push(v.clone())),
        "to-pod" => t.both(|f| f.destination_pod.push(v.clone())),
        "ip" => t.split(
            |f| f.source_ip.push(v.clone()),
            |f| f.destination_ip.push(v.clone()),
        ),
        "from-ip" => t.both(|f| f.source_ip.push(v.clone())),
        "to-ip" => t.both(|f| f.destination_ip.push(v.clone())),
        "label" => t.split(
            |f| f.source_label.push(v.clone()),
            |f| f.destination_label.push(v.clone()),
        ),
        "from-label" => t.both(|f| f.source_label.push(v.clone())),
        "to-label" => t.both(|f| f.destination_label.push(v.clone())),
        "service" => t.split(
            |f| f.source_service.push(v.clone()),
            |f| f.destination_service.push(v.clone()),
        ),
        "from-service" => t.both(|f| f.source_service.push(v.clone())),
        "to-service" => t.both(|f| f.destination_service.push(v.clone())),
        "port" => t.split(
            |f| f.source_port.push(v.clone()),
            |f| f.destination_port.push(v.clone()),
        ),
        "from-port" => t.both(|f| f.source_port.push(v.clone())),
        "to-port" => t.both(|f| f.destination_port.push(v.clone())),
        "identity" => {
            let id = parse_identity(value)?;
            t.split(
                |f| f.source_identity.push(id),
                |f| f.destination_identity.push(id),
            )
        }
        "from-identity" => {
            let id = parse_identity(value)?;
            t.both(|f| f.source_identity.push(id))
        }
        "to-identity" => {
            let id = parse_identity(value)?;
            t.both(|f| f.destination_identity.push(id))
        }
        "namespace" => t.namespaces.push(v),
        "all-namespaces" => t.namespaces.push(String::new()),
        "verdict" => {
            if !VERDICTS.contains(&value) {
                return Err(format!("invalid --verdict value: {value}"));
            }
            t.both(|f| f.verdict.push(v.clone()))
        }
        "drop-reason-desc" => {
            if drop_reason::hubble_number(value).is_none() {
                return Err(format!("invalid --drop-reason-desc value: {value}"));
            }
            t.both(|f| f.drop_reason_desc.push(v.clone()))
        }
        "type" => {
            let filter = parse_type(value)?;
            t.both(|f| f.event_type.push(filter.clone()))
        }
        "protocol" => t.both(|f| f.protocol.push(v.clone())),
        "traffic-direction" => {
            let direction = match value.to_ascii_lowercase().as_str() {
                "ingress" => "INGRESS",
                "egress" => "EGRESS",
                other => {
                    return Err(format!(
                        "{other}: invalid traffic direction, expected ingress or egress"
                    ))
                }
            };
            t.both(|f| f.traffic_direction.push(direction.to_string()))
        }
        "node-name" => t.both(|f| f.node_name.push(v.clone())),
        other => return Err(format!("--{other} is not a filter flag")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    fn white(list: &[(&str, &str)]) -> Vec<FlowFilter> {
        let (white, black) = build(&flags(list)).unwrap();
        assert!(black.is_empty());
        white
    }

    #[test]
    fn from_and_to_flags_set_one_filter() {
        let got = white(&[("from-pod", "shop/web"), ("to-port", "80")]);
        assert_eq!(
            got,
            vec![FlowFilter {
                source_pod: vec!["shop/web".into()],
                destination_port: vec!["80".into()],
                ..Default::default()
            }]
        );
    }

    #[test]
    fn either_side_flags_make_two_filters() {
        let got = white(&[("ip", "10.0.0.1"), ("protocol", "tcp")]);
        assert_eq!(
            got,
            vec![
                FlowFilter {
                    source_ip: vec!["10.0.0.1".into()],
                    protocol: vec!["tcp".into()],
                    ..Default::default()
                },
                FlowFilter {
                    destination_ip: vec!["10.0.0.1".into()],
                    protocol: vec!["tcp".into()],
                    ..Default::default()
                },
            ]
        );
        let got = white(&[("label", "app=web"), ("port", "53"), ("identity", "world")]);
        assert_eq!(got[0].source_label, ["app=web"]);
        assert_eq!(got[0].source_port, ["53"]);
        assert_eq!(got[0].source_identity, [2]);
        assert!(got[0].destination_label.is_empty());
        assert_eq!(got[1].destination_label, ["app=web"]);
        assert_eq!(got[1].destination_port, ["53"]);
        assert_eq!(got[1].destination_identity, [2]);
    }

    #[test]
    fn namespace_restricts_each_side() {
        // Hubble: `-n shop` alone is `shop/` as source (left) or destination (right).
        let got = white(&[("namespace", "shop")]);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].source_pod, ["shop/"]);
        assert!(got[0].destination_pod.is_empty());
        assert_eq!(got[1].destination_pod, ["shop/"]);
        // A service without a namespace is put in each namespace given,
        // and then stands for the pods of its side.
        let got = white(&[("namespace", "shop"), ("service", "db")]);
        assert!(got[0].source_pod.is_empty());
        assert_eq!(got[0].source_service, ["shop/db"]);
        assert!(got[1].destination_pod.is_empty());
        assert_eq!(got[1].destination_service, ["shop/db"]);
        assert_eq!(
            build(&flags(&[("namespace", "shop"), ("to-service", "db")])).unwrap_err(),
            "filters --to-service and --namespace cannot be combined"
        );
        let got = white(&[("all-namespaces", "")]);
        assert_eq!(got[0].source_pod, ["/"]);
    }

    #[test]
    fn not_negates_only_the_next_flag() {
        let (white, black) = build(&flags(&[
            ("not", ""),
            ("verdict", "DROPPED"),
            ("protocol", "udp"),
        ]))
        .unwrap();
        assert_eq!(white.len(), 1);
        assert_eq!(white[0].protocol, ["udp"]);
        assert!(white[0].verdict.is_empty());
        assert_eq!(black.len(), 1);
        assert_eq!(black[0].verdict, ["DROPPED"]);
        assert!(build(&flags(&[("not", ""), ("not", "")])).is_err());
        assert!(build(&flags(&[("not", "")])).is_err());
    }

    #[test]
    fn type_names_and_subtypes() {
        let got = white(&[("type", "trace:to-endpoint"), ("type", "drop")]);
        assert_eq!(
            got[0].event_type,
            [
                EventTypeFilter {
                    event_type: 4,
                    match_sub_type: true,
                    sub_type: 0
                },
                EventTypeFilter {
                    event_type: 1,
                    match_sub_type: false,
                    sub_type: 0
                }
            ]
        );
        let got = white(&[
            ("type", "policy-verdict"),
            ("type", "l7"),
            ("type", "trace:11"),
        ]);
        let types: Vec<(i32, bool, i32)> = got[0]
            .event_type
            .iter()
            .map(|t| (t.event_type, t.match_sub_type, t.sub_type))
            .collect();
        assert_eq!(types, [(5, false, 0), (129, false, 0), (4, true, 11)]);
        assert!(build(&flags(&[("type", "bogus")])).is_err());
    }

    #[test]
    fn values_are_checked_like_hubble() {
        assert!(build(&flags(&[("verdict", "dropped")])).is_err());
        assert!(build(&flags(&[("drop-reason-desc", "NOPE")])).is_err());
        assert!(build(&flags(&[("traffic-direction", "up")])).is_err());
        assert!(build(&flags(&[("identity", "nobody")])).is_err());
        assert_eq!(
            white(&[("traffic-direction", "Ingress")])[0].traffic_direction,
            ["INGRESS"]
        );
        let err = build(&flags(&[("label", "a=b"), ("from-label", "c=d")])).unwrap_err();
        assert_eq!(err, "filters --label and --from-label cannot be combined");
        assert!(build(&flags(&[("namespace", "a"), ("to-pod", "b")])).is_err());
        // The same flag twice is an OR within the field.
        let got = white(&[("verdict", "DROPPED"), ("verdict", "FORWARDED")]);
        assert_eq!(got[0].verdict, ["DROPPED", "FORWARDED"]);
    }
}
