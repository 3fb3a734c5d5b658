//! Flows in the lab, read back with `sluice observe` from the agent's Hubble
//! socket, as a person debugging the cluster would:
//!
//! - a connection a CiliumNetworkPolicy denies is a DROPPED flow with
//!   Hubble's drop reason (POLICY_DENY for an explicit deny rule,
//!   POLICY_DENIED when no rule allows it) and the policy's name, also in the
//!   compact output with `--print-policy-names`;
//! - a DNS query on a DNS-inspected flow is an L7 flow with `l7.dns.query`,
//!   found with `--type l7` and `--protocol dns`;
//! - a connection to a ClusterIP shows the service and the translation
//!   (backend in `IP.destination`, frontend in `sluice.original`), a trace
//!   with `trace_reason` NEW and `is_reply` false, and the reply with
//!   `is_reply` true;
//! - `--from-pod`, `--to-pod`, `--port`, `--verdict`, `--not` and a
//!   combination return only the flows they match.
//!
//! One lab (tests/src/observe/lab.rs) shared by the tests of this binary.
//! Run as root: `cargo test --release -p sluice-tests --test observe_flows`.

use anyhow::{ensure, Result};
use serde_json::Value;
use sluice_tests::netpol::shared::SharedLab;
use sluice_tests::observe::lab::{
    ObserveLab, ObserveLabOptions, CLIENT, DNS, DNS_ANSWER, INTRUDER, SERVICE_NAME, SERVICE_PORT,
    WEB, WEB_DENIED_PORT, WEB_POLICY, WEB_PORT,
};
use sluice_tests::observe::observer::{
    observe_json, observe_text, policy_names, port, summaries, text, wait_for_flow,
};
use sluice_tests::observe::traffic::{dns_query, tcp_connect, Connect};
use sluice_tests::service_checks::{root_or_skip, Checks};

static LAB: SharedLab<ObserveLab> = SharedLab::new();

fn with_lab(test: &str, body: impl FnOnce(&ObserveLab)) {
    if !root_or_skip(test) {
        return;
    }
    let options = ObserveLabOptions {
        http: None,
        policies: true,
        dns_server: true,
    };
    LAB.run(
        || ObserveLab::start(&options).unwrap_or_else(|e| panic!("observe lab up: {e:#}")),
        |lab| body(lab),
    )
}

fn ip_text(lab: &ObserveLab, pod: usize) -> String {
    lab.ip(pod).to_string()
}

#[test]
fn a_denied_connection_is_a_dropped_flow_with_its_reason_and_policy_name() {
    let test = "a_denied_connection_is_a_dropped_flow_with_its_reason_and_policy_name";
    with_lab(test, |o| {
        let lab = &o.lab;
        let web = o.ip(WEB);
        let mut checks = Checks::new();
        checks.run(
            "the client's connect to web:80 and the intruder's to web:8080 are dropped",
            || {
                let denied = tcp_connect(lab, CLIENT, web, WEB_DENIED_PORT)?;
                ensure!(denied == Connect::Timeout, "client -> web:80: {denied:?}");
                let intruder = tcp_connect(lab, INTRUDER, web, WEB_PORT)?;
                ensure!(
                    intruder == Connect::Timeout,
                    "intruder -> web:8080: {intruder:?}"
                );
                Ok(())
            },
        );
        checks.run(
            "an explicit deny rule: DROPPED, POLICY_DENY, ingress_denied_by web-ingress",
            || {
                let args = [
                    "--all",
                    "--verdict",
                    "DROPPED",
                    "--from-pod",
                    "default/client",
                ];
                let flows = wait_for_flow(lab, &args, "client -> web:80 denied", |f| {
                    is_drop_event(f)
                        && text(f, &["IP", "destination"]) == web.to_string()
                        && port(f, "destination_port") == Some(WEB_DENIED_PORT)
                })?;
                let flow = flows
                    .iter()
                    .find(|f| {
                        is_drop_event(f) && port(f, "destination_port") == Some(WEB_DENIED_PORT)
                    })
                    .expect("found above");
                expect_policy_drop(flow, "POLICY_DENY", "ingress_denied_by", WEB_POLICY)?;
                ensure!(text(flow, &["source", "pod_name"]) == "client", "{flow}");
                ensure!(text(flow, &["destination", "pod_name"]) == "web", "{flow}");
                ensure!(text(flow, &["IP", "ipVersion"]) == "IPv4", "{flow}");
                ensure!(
                    flow["l4"]["TCP"]["flags"]["SYN"] == true,
                    "not the SYN: {flow}"
                );
                ensure!(
                    flows.iter().all(|f| text(f, &["verdict"]) == "DROPPED"
                        && text(f, &["source", "pod_name"]) == "client"),
                    "--verdict DROPPED --from-pod default/client returned others:\n{}",
                    summaries(&flows)
                );
                Ok(())
            },
        );
        checks.run(
            "no allow rule: DROPPED, POLICY_DENIED, the policy named all the same",
            || {
                let args = [
                    "--all",
                    "--verdict",
                    "DROPPED",
                    "--from-pod",
                    "default/intruder",
                ];
                let flows = wait_for_flow(lab, &args, "intruder -> web:8080 denied", |f| {
                    is_drop_event(f) && port(f, "destination_port") == Some(WEB_PORT)
                })?;
                let flow = flows
                    .iter()
                    .find(|f| is_drop_event(f) && port(f, "destination_port") == Some(WEB_PORT))
                    .expect("found above");
                expect_policy_drop(flow, "POLICY_DENIED", "ingress_denied_by", WEB_POLICY)
            },
        );
        checks.run(
            "compact output names the policy with --print-policy-names only",
            || {
                let base = [
                    "--all",
                    "--verdict",
                    "DROPPED",
                    "--from-pod",
                    "default/client",
                ];
                let mut with_names = base.to_vec();
                with_names.push("--print-policy-names");
                let named = observe_text(lab, &with_names)?;
                let line = named
                    .lines()
                    .find(|l| l.contains(&format!(":{WEB_DENIED_PORT}")) && l.contains("DROPPED"))
                    .ok_or_else(|| anyhow::anyhow!("no DROPPED line to port 80 in:\n{named}"))?;
                ensure!(line.contains(WEB_POLICY), "no policy name in {line:?}");
                let plain = observe_text(lab, &base)?;
                ensure!(
                    !plain.contains(WEB_POLICY),
                    "without --print-policy-names the policy is printed:\n{plain}"
                );
                Ok(())
            },
        );
        checks.finish();
    });
}

/// A drop event (Hubble event type 1), not the policy verdict (type 5) a
/// policy drop also makes.
fn is_drop_event(flow: &Value) -> bool {
    flow["event_type"]["type"] == 1
}

/// A policy drop as Hubble shows it: verdict, drop reason name and number,
/// event type 1, the policy in `field`.
fn expect_policy_drop(flow: &Value, reason: &str, field: &str, policy: &str) -> Result<()> {
    ensure!(text(flow, &["verdict"]) == "DROPPED", "{flow}");
    ensure!(
        text(flow, &["drop_reason_desc"]) == reason,
        "drop_reason_desc is not {reason}: {flow}"
    );
    let number = match reason {
        "POLICY_DENIED" => 133,
        _ => 181,
    };
    ensure!(
        flow["drop_reason"] == number,
        "drop_reason is not {number}: {flow}"
    );
    ensure!(flow["event_type"]["type"] == 1, "not a drop event: {flow}");
    ensure!(text(flow, &["Type"]) == "L3_L4", "{flow}");
    ensure!(text(flow, &["traffic_direction"]) == "INGRESS", "{flow}");
    let names = policy_names(flow, field);
    ensure!(
        names.iter().any(|n| n == policy),
        "{field} does not name {policy}: {names:?} in {flow}"
    );
    ensure!(
        flow[field][0]["namespace"] == "default" && flow[field][0]["kind"] == "CiliumNetworkPolicy",
        "{field}: {}",
        flow[field]
    );
    Ok(())
}

#[test]
fn a_dns_query_on_an_inspected_flow_is_an_l7_dns_flow() {
    with_lab("a_dns_query_on_an_inspected_flow_is_an_l7_dns_flow", |o| {
        let lab = &o.lab;
        let name = "www.observe.test";
        let mut checks = Checks::new();
        checks.run("dnsmasq answers the client", || {
            let answer = dns_query(lab, CLIENT, o.ip(DNS), name)?;
            ensure!(answer == (0, vec![DNS_ANSWER.into()]), "{answer:?}");
            Ok(())
        });
        checks.run(
            "--type l7 --protocol dns shows the query and the answer",
            || {
                let args = ["--all", "--type", "l7", "--protocol", "dns"];
                let query = format!("{name}.");
                let flows = wait_for_flow(lab, &args, "answering the query", |f| {
                    text(f, &["l7", "dns", "query"]) == query
                        && text(f, &["l7", "type"]) == "RESPONSE"
                })?;
                ensure!(
                    flows
                        .iter()
                        .all(|f| text(f, &["Type"]) == "L7" && f["l7"]["dns"].is_object()),
                    "--type l7 --protocol dns returned other flows:\n{}",
                    summaries(&flows)
                );
                let request = flows
                    .iter()
                    .find(|f| {
                        text(f, &["l7", "dns", "query"]) == query
                            && text(f, &["l7", "type"]) == "REQUEST"
                    })
                    .ok_or_else(|| {
                        anyhow::anyhow!("no REQUEST flow for {query}:\n{}", summaries(&flows))
                    })?;
                ensure!(
                    text(request, &["source", "pod_name"]) == "client",
                    "{request}"
                );
                ensure!(
                    text(request, &["destination", "pod_name"]) == "dns",
                    "{request}"
                );
                ensure!(request["event_type"]["type"] == 129, "{request}");
                ensure!(port(request, "destination_port") == Some(53), "{request}");
                let response = flows
                    .iter()
                    .find(|f| {
                        text(f, &["l7", "dns", "query"]) == query
                            && text(f, &["l7", "type"]) == "RESPONSE"
                    })
                    .expect("found above");
                let ips: Vec<&str> = response["l7"]["dns"]["ips"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                ensure!(
                    ips == [DNS_ANSWER.to_string()],
                    "answer ips {ips:?}: {response}"
                );
                Ok(())
            },
        );
        checks.run(
            "--protocol dns leaves out the L3/L4 flows, --protocol udp keeps them",
            || {
                let dns = observe_json(lab, &["--all", "--protocol", "dns"])?;
                ensure!(
                    !dns.is_empty() && dns.iter().all(|f| text(f, &["Type"]) == "L7"),
                    "{}",
                    summaries(&dns)
                );
                let udp = observe_json(lab, &["--all", "--protocol", "udp", "--to-port", "53"])?;
                ensure!(
                    udp.iter().any(|f| text(f, &["Type"]) == "L3_L4"),
                    "no L3/L4 flow of the DNS connection:\n{}",
                    summaries(&udp)
                );
                Ok(())
            },
        );
        checks.finish();
    });
}

#[test]
fn a_cluster_ip_connection_shows_the_service_and_its_translation() {
    with_lab(
        "a_cluster_ip_connection_shows_the_service_and_its_translation",
        |o| {
            let lab = &o.lab;
            let (web, frontend) = (ip_text(o, WEB), o.service_ip().to_string());
            let mut checks = Checks::new();
            checks.run("the client reaches web through the ClusterIP", || {
                let got = tcp_connect(lab, CLIENT, o.service_ip(), SERVICE_PORT)?;
                ensure!(got == Connect::Open, "{got:?}");
                Ok(())
            });
            checks.run(
                "the new connection: service, backend in IP, frontend in sluice.original",
                || {
                    let args = ["--all", "--from-pod", "default/client", "--to-ip", &web];
                    let is_new = |f: &Value| {
                        f["event_type"]["type"] == 4
                            && text(f, &["destination_service", "name"]) == SERVICE_NAME
                            && text(f, &["trace_reason"]) == "NEW"
                            && text(f, &["verdict"]) == "FORWARDED"
                    };
                    let flows = wait_for_flow(lab, &args, "NEW to the web service", is_new)?;
                    let flow = flows.iter().find(|f| is_new(f)).expect("found above");
                    ensure!(
                        text(flow, &["destination_service", "namespace"]) == "default",
                        "{flow}"
                    );
                    ensure!(text(flow, &["IP", "destination"]) == web, "{flow}");
                    ensure!(port(flow, "destination_port") == Some(WEB_PORT), "{flow}");
                    ensure!(
                        text(flow, &["sluice", "original", "destination"]) == frontend,
                        "{flow}"
                    );
                    ensure!(
                        flow["sluice"]["original"]["destination_port"] == u64::from(SERVICE_PORT),
                        "{flow}"
                    );
                    ensure!(flow["is_reply"] == false, "is_reply is not false: {flow}");
                    ensure!(flow["event_type"]["type"] == 4, "not a trace event: {flow}");
                    ensure!(text(flow, &["destination", "pod_name"]) == "web", "{flow}");
                    ensure!(
                        flows.iter().all(|f| text(f, &["IP", "destination"]) == web),
                        "--to-ip {web} returned other destinations:\n{}",
                        summaries(&flows)
                    );
                    Ok(())
                },
            );
            checks.run("the reply is a trace with is_reply true", || {
            let args = ["--all", "--to-pod", "default/client", "--verdict", "FORWARDED"];
            let client = ip_text(o, CLIENT);
            let is_reply = |f: &Value| {
                f["event_type"]["type"] == 4 && f["is_reply"] == true
                    && text(f, &["IP", "destination"]) == client
                    && (text(f, &["IP", "source"]) == frontend || text(f, &["IP", "source"]) == web)
                    && matches!(port(f, "source_port"), Some(p) if p == SERVICE_PORT || p == WEB_PORT)
            };
            let flows = wait_for_flow(lab, &args, "reply from the web service", is_reply)?;
            let reply = flows.iter().find(|f| is_reply(f)).expect("found above");
            ensure!(reply["event_type"]["type"] == 4, "{reply}");
            ensure!(reply["reply"] == true, "deprecated reply not set: {reply}");
            Ok(())
        });
            checks.finish();
        },
    );
}

#[test]
fn filters_return_only_the_flows_they_match() {
    with_lab("filters_return_only_the_flows_they_match", |o| {
        let lab = &o.lab;
        let web = o.ip(WEB);
        let got = tcp_connect(lab, CLIENT, web, WEB_PORT).expect("client -> web:8080");
        assert_eq!(got, Connect::Open, "client -> web:8080");
        let got = tcp_connect(lab, INTRUDER, web, WEB_PORT).expect("intruder -> web:8080");
        assert_eq!(got, Connect::Timeout, "intruder -> web:8080");
        dns_query(lab, CLIENT, o.ip(DNS), "api.observe.test").expect("a DNS query");
        wait_for_flow(
            lab,
            &["--all", "--from-pod", "default/intruder"],
            "from the intruder",
            |_| true,
        )
        .expect("the intruder's flow");
        let all = observe_json(lab, &["--all"]).expect("all flows");

        let src = |f: &Value| text(f, &["source", "pod_name"]).to_string();
        let dst = |f: &Value| text(f, &["destination", "pod_name"]).to_string();
        let has_port = |f: &Value, p: u16| {
            port(f, "source_port") == Some(p) || port(f, "destination_port") == Some(p)
        };
        type Check<'a> = (&'a [&'a str], Box<dyn Fn(&Value) -> bool + 'a>);
        let cases: Vec<Check> = vec![
            (
                &["--from-pod", "default/client"],
                Box::new(|f| src(f) == "client"),
            ),
            (&["--to-pod", "default/web"], Box::new(|f| dst(f) == "web")),
            (
                &["--pod", "default/intruder"],
                Box::new(|f| src(f) == "intruder" || dst(f) == "intruder"),
            ),
            (&["--port", "8080"], Box::new(|f| has_port(f, 8080))),
            (
                &["--verdict", "DROPPED"],
                Box::new(|f| text(f, &["verdict"]) == "DROPPED"),
            ),
            (
                &["--verdict", "FORWARDED"],
                Box::new(|f| text(f, &["verdict"]) == "FORWARDED"),
            ),
            (
                &["--not", "--verdict", "FORWARDED"],
                Box::new(|f| text(f, &["verdict"]) != "FORWARDED"),
            ),
            (
                &[
                    "--from-pod",
                    "default/intruder",
                    "--to-port",
                    "8080",
                    "--verdict",
                    "DROPPED",
                ],
                Box::new(|f| {
                    src(f) == "intruder"
                        && port(f, "destination_port") == Some(8080)
                        && text(f, &["verdict"]) == "DROPPED"
                }),
            ),
            (
                &[
                    "--from-pod",
                    "default/client",
                    "--not",
                    "--to-pod",
                    "default/web",
                ],
                Box::new(|f| src(f) == "client" && dst(f) != "web"),
            ),
        ];
        let mut checks = Checks::new();
        for (args, matches) in &cases {
            checks.run(&format!("sluice observe {}", args.join(" ")), || {
                let mut full = vec!["--all"];
                full.extend_from_slice(args);
                let got = observe_json(lab, &full)?;
                ensure!(
                    !got.is_empty(),
                    "nothing matched; all flows:\n{}",
                    summaries(&all)
                );
                let wrong: Vec<Value> = got.iter().filter(|f| !matches(f)).cloned().collect();
                ensure!(
                    wrong.is_empty(),
                    "flows that do not match:\n{}",
                    summaries(&wrong)
                );
                ensure!(
                    all.iter().any(|f| !matches(f)),
                    "every flow matches, so the filter was not tested:\n{}",
                    summaries(&all)
                );
                Ok(())
            });
        }
        checks.finish();
    });
}
