//! Sluice's Hubble flow model against Hubble's `-o json` shapes: each file in
//! data/hubble is a GetFlowsResponse line as Hubble prints it; it must
//! deserialize into our types and serialize back to the same JSON, key by
//! key, minus the fields Sluice does not model (listed here).

use serde_json::Value;
use sluice_api::hubble::GetFlowsResponse;

/// Hubble fields Sluice does not produce (and so does not model).
const NOT_MODELLED: &[&str] = &["emitter"];

fn load(name: &str) -> Value {
    let path = format!("{}/tests/data/hubble/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Compares two JSON values key by key, naming the path of the first
/// difference.
fn same(path: &str, ours: &Value, theirs: &Value) {
    match (ours, theirs) {
        (Value::Object(a), Value::Object(b)) => {
            for key in b.keys() {
                assert!(a.contains_key(key), "{path}.{key}: missing in ours");
            }
            for (key, value) in a {
                let Some(other) = b.get(key) else {
                    panic!("{path}.{key}: ours has it ({value}), Hubble's does not");
                };
                same(&format!("{path}.{key}"), value, other);
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            assert_eq!(a.len(), b.len(), "{path}: length");
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                same(&format!("{path}[{i}]"), x, y);
            }
        }
        _ => assert_eq!(ours, theirs, "{path}"),
    }
}

fn round_trip(name: &str) -> GetFlowsResponse {
    let mut theirs = load(name);
    for key in NOT_MODELLED {
        theirs["flow"].as_object_mut().unwrap().remove(*key);
    }
    let response: GetFlowsResponse =
        serde_json::from_value(theirs.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
    let ours = serde_json::to_value(&response).unwrap();
    same(name, &ours, &theirs);
    response
}

#[test]
fn trace_to_endpoint_syn_round_trips() {
    let r = round_trip("trace_to_endpoint_syn.json");
    let flow = r.flow.unwrap();
    assert_eq!(flow.trace_observation_point, "TO_ENDPOINT");
    assert!(flow.l4.unwrap().tcp.unwrap().flags.unwrap().SYN);
    assert_eq!(flow.is_reply, Some(false));
    assert_eq!(flow.source.unwrap().id, 321);
}

#[test]
fn policy_denied_drop_round_trips() {
    let flow = round_trip("drop_policy_denied.json").flow.unwrap();
    assert_eq!(flow.drop_reason_desc, "POLICY_DENIED");
    assert_eq!(flow.drop_reason, 133);
    assert_eq!(flow.egress_denied_by[0].kind, "CiliumNetworkPolicy");
    assert_eq!(flow.event_type.unwrap().sub_type, 133);
    // A remote destination has no endpoint ID: Hubble leaves ID out.
    assert_eq!(flow.destination.unwrap().id, 0);
}

#[test]
fn policy_verdict_round_trips() {
    let flow = round_trip("policy_verdict_allowed.json").flow.unwrap();
    assert_eq!(flow.policy_match_type, 1);
    assert_eq!(flow.ingress_allowed_by[0].name, "web-ingress");
    // No conntrack view on a policy verdict: is_reply is absent, not false.
    assert_eq!(flow.is_reply, None);
}

#[test]
fn dns_request_and_response_round_trip() {
    let flow = round_trip("l7_dns_request.json").flow.unwrap();
    assert_eq!(flow.flow_type, "L7");
    assert_eq!(flow.l7.unwrap().dns.unwrap().query, "example.com.");
    let flow = round_trip("l7_dns_response.json").flow.unwrap();
    let l7 = flow.l7.unwrap();
    assert_eq!(
        (l7.l7_type.as_str(), l7.latency_ns),
        ("RESPONSE", 10_000_000)
    );
    assert_eq!(l7.dns.unwrap().ips, ["93.184.215.14"]);
}

#[test]
fn a_default_flow_prints_only_hubbles_required_fields() {
    let flow = sluice_api::hubble::Flow {
        time: "2026-11-28T02:11:20.000000000Z".into(),
        verdict: "FORWARDED".into(),
        flow_type: "L3_L4".into(),
        ..Default::default()
    };
    assert_eq!(
        serde_json::to_value(&flow).unwrap(),
        serde_json::json!({"time": "2026-11-28T02:11:20.000000000Z", "verdict": "FORWARDED", "Type": "L3_L4"})
    );
}
