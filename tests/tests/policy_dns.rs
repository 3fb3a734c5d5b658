//! DNS policy in the lab, through the real engine, agent and sluice-cni:
//! dnsmasq in pod 2 answers for names of the outside namespace's address
//! (TTL 3 s), pod 1's egress is limited by a CiliumNetworkPolicy to DNS on
//! pod 2 with `rules.dns` matchPattern `*.allowed.test`, plus TCP 80 to
//! `toFQDNs` matchName `www.allowed.test`.
//!
//! - www.allowed.test is answered (UDP and TCP); denied.test gets REFUSED
//!   from the engine (dnsmasq never sees it: its query log says so).
//! - HTTP to the outside address fails before the lookup, works after it,
//!   and fails again once the answer's TTL ran out.
//! - With the agent stopped the engine keeps enforcing: a lookup still opens
//!   the address (a second outside address, for a name with a 60 s TTL), a
//!   denied name is still refused; after the agent is back, what the engine
//!   learnt (the FQDN cache) is still there.
//!
//! Run as root with `sluice-engine`, `sluice-agent`, `sluice-cni` and
//! `sluice` built in the same target directory and profile.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};
use sluice_lab::services::{Place, Reply, PYTHON};
use sluice_lab::{Lab, OUTSIDE_IPV4};

/// A second address of the outside namespace, for the name with a long TTL.
const OUTSIDE_LONG: Ipv4Addr = Ipv4Addr::new(192, 168, 254, 3);
/// Its TTL: longer than two agent restarts.
const LONG_TTL_S: u64 = 60;
use sluice_tests::service_checks::{root_or_skip, service_lab, Checks};

/// dnsmasq's `--local-ttl`: short, so the test can wait it out.
const TTL_S: u64 = 3;
const CLIENT: usize = 1;
const DNS_POD: usize = 2;

/// A stub resolver: one A query for `name` to `server` port 53 over UDP or
/// TCP; prints `RCODE <n> <addresses>` or `TIMEOUT`.
const RESOLVE: &str = r#"import random,socket,struct,sys
server,name,proto,wait=sys.argv[1],sys.argv[2],sys.argv[3],float(sys.argv[4])
qid=random.randrange(65536)
q=struct.pack('>HHHHHH',qid,0x0100,1,0,0,0)+b''.join(bytes([len(l)])+l.encode() for l in name.split('.'))+b'\0'+struct.pack('>HH',1,1)
family=socket.AF_INET6 if ':' in server else socket.AF_INET
try:
    if proto=='tcp':
        s=socket.socket(family,socket.SOCK_STREAM);s.settimeout(wait);s.connect((server,53))
        s.sendall(struct.pack('>H',len(q))+q)
        b=b''
        while len(b)<2 or len(b)<2+struct.unpack('>H',b[:2])[0]:
            c=s.recv(4096)
            if not c: break
            b+=c
        r=b[2:]
    else:
        s=socket.socket(family,socket.SOCK_DGRAM);s.settimeout(wait);s.connect((server,53))
        s.send(q);r=s.recv(4096)
except (socket.timeout,TimeoutError):
    print('TIMEOUT');sys.exit(0)
rid,flags,qd,an,ns,ar=struct.unpack('>HHHHHH',r[:12])
if rid!=qid:
    print('BADID');sys.exit(0)
def skip(o):
    while True:
        n=r[o]
        if n>=0xc0: return o+2
        if n==0: return o+1
        o+=n+1
o=12
for _ in range(qd): o=skip(o)+4
ips=[]
for _ in range(an):
    o=skip(o);t,c,ttl,n=struct.unpack('>HHIH',r[o:o+10]);o+=10
    if t==1 and n==4: ips.append(socket.inet_ntoa(r[o:o+4]))
    o+=n
print('RCODE',flags&15,','.join(ips))
"#;

/// What a lookup got.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Lookup {
    Answer { rcode: u8, addresses: Vec<IpAddr> },
    Timeout,
}

const NOERROR: u8 = 0;
const REFUSED: u8 = 5;

fn lookup(lab: &Lab, server: IpAddr, name: &str, tcp: bool) -> Result<Lookup> {
    let server_text = server.to_string();
    let proto = if tcp { "tcp" } else { "udp" };
    let out = lab.exec_at(
        Place::Pod(CLIENT),
        &[PYTHON, "-c", RESOLVE, &server_text, name, proto, "2"],
        Duration::from_secs(10),
    )?;
    let text = out.stdout.trim();
    if text == "TIMEOUT" {
        return Ok(Lookup::Timeout);
    }
    let mut words = text.split_whitespace();
    match (words.next(), words.next()) {
        (Some("RCODE"), Some(rcode)) => Ok(Lookup::Answer {
            rcode: rcode.parse().context("rcode")?,
            addresses: words
                .next()
                .unwrap_or("")
                .split(',')
                .filter(|a| !a.is_empty())
                .map(|a| a.parse().context("address"))
                .collect::<Result<_>>()?,
        }),
        _ => bail!(
            "resolver for {name} over {proto}: {text:?} {}",
            out.stderr.trim()
        ),
    }
}

fn expect_answer(lab: &Lab, server: IpAddr, name: &str, tcp: bool, addr: Ipv4Addr) -> Result<()> {
    let got = lookup(lab, server, name, tcp)?;
    let want = Lookup::Answer {
        rcode: NOERROR,
        addresses: vec![addr.into()],
    };
    ensure!(
        got == want,
        "{name} (tcp {tcp}): got {got:?}, expected {want:?}"
    );
    Ok(())
}

fn expect_refused(lab: &Lab, server: IpAddr, name: &str, tcp: bool) -> Result<()> {
    let got = lookup(lab, server, name, tcp)?;
    ensure!(
        got == Lookup::Answer {
            rcode: REFUSED,
            addresses: vec![]
        },
        "{name} (tcp {tcp}): got {got:?}, expected REFUSED"
    );
    Ok(())
}

/// HTTP from the client pod to the outside server at `addr`: answered when
/// `works`, else not answered (the policy drops it).
fn expect_http(lab: &Lab, addr: Ipv4Addr, works: bool, what: &str) -> Result<()> {
    let reply = lab.http_get(Place::Pod(CLIENT), addr.into(), 80, "/hostname")?;
    match (&reply, works) {
        (Reply::Answer(text), true) if text == "outside" => Ok(()),
        (Reply::Answer(_), false) => {
            bail!("{what}: HTTP to {addr} answered {reply:?}, expected no answer")
        }
        (_, false) => Ok(()),
        _ => bail!("{what}: HTTP to {addr} got {reply:?}, expected the outside server"),
    }
}

/// The CiliumNetworkPolicy of the test: pod 1 may ask pod 2 for names under
/// allowed.test (port 53, UDP and TCP) and reach www.allowed.test on TCP 80.
fn policy() -> Value {
    json!({
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": "dns-client", "namespace": "default"},
        "spec": {
            "endpointSelector": {"matchLabels": {"app": format!("pod{CLIENT}")}},
            "egress": [
                {
                    "toEndpoints": [{"matchLabels": {"app": format!("pod{DNS_POD}")}}],
                    "toPorts": [{
                        "ports": [{"port": "53", "protocol": "ANY"}],
                        "rules": {"dns": [{"matchPattern": "*.allowed.test"}]},
                    }],
                },
                {
                    "toFQDNs": [
                        {"matchName": "www.allowed.test"},
                        {"matchName": "long.allowed.test"},
                    ],
                    "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}],
                },
            ],
        },
    })
}

/// Starts dnsmasq in the DNS pod: authoritative-style answers from
/// `--host-record` only (no upstream, no hosts file), every query logged.
fn start_dnsmasq(lab: &Lab, server: IpAddr) -> Result<u32> {
    let outside = OUTSIDE_IPV4.to_string();
    let listen = format!("--listen-address={server}");
    let ttl = format!("--local-ttl={TTL_S}");
    let mut records: Vec<String> = ["www.allowed.test", "other.allowed.test", "denied.test"]
        .iter()
        .map(|name| format!("--host-record={name},{outside}"))
        .collect();
    records.push(format!(
        "--host-record=long.allowed.test,{OUTSIDE_LONG},{LONG_TTL_S}"
    ));
    let mut args = vec![
        "dnsmasq",
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--bind-interfaces",
        &listen,
        "--port=53",
        "--user=root",
        "--pid-file=",
        "--log-queries",
        "--log-facility=-",
        &ttl,
    ];
    args.extend(records.iter().map(String::as_str));
    let pid = lab.spawn_at(Place::Pod(DNS_POD), "dnsmasq", &args)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let listening = lab.exec(DNS_POD, &["ss", "-H", "-l", "-u", "-n", "sport = :53"])?;
        if !listening.stdout.trim().is_empty() {
            return Ok(pid);
        }
        ensure!(
            lab.process_running(pid)?,
            "dnsmasq exited\n{}",
            lab.log_tail("dnsmasq", 20)
        );
        ensure!(
            Instant::now() < deadline,
            "dnsmasq not listening after 10 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether dnsmasq logged a query for `name`.
fn dnsmasq_saw(lab: &Lab, name: &str) -> bool {
    let log = lab.log_tail("dnsmasq", 1000);
    log.lines()
        .any(|line| line.contains("query[") && line.contains(name))
}

#[test]
fn dns_rules_refuse_names_and_to_fqdns_follows_the_answers() {
    if !root_or_skip("dns_rules_refuse_names_and_to_fqdns_follows_the_answers") {
        return;
    }
    let lab = service_lab(2, &[]);
    let server: IpAddr = lab.pod(DNS_POD).unwrap().ipv4.into();
    start_dnsmasq(&lab, server).expect("dnsmasq starts");
    lab.start_netexec(Place::Outside, "outside", &[80], &[])
        .expect("the outside HTTP server starts");

    lab.exec_at(
        Place::Outside,
        &[
            "ip",
            "addr",
            "add",
            &format!("{OUTSIDE_LONG}/24"),
            "dev",
            "eth0",
        ],
        Duration::from_secs(10),
    )
    .and_then(|out| {
        ensure!(out.status.success(), "ip addr add: {}", out.stderr);
        Ok(())
    })
    .expect("a second outside address");
    let www = OUTSIDE_IPV4;

    let mut checks = Checks::new();
    checks.run("without a policy the outside server and DNS answer", || {
        expect_http(&lab, www, true, "no policy")?;
        expect_http(&lab, OUTSIDE_LONG, true, "no policy")?;
        expect_answer(&lab, server, "denied.test", false, www)
    });
    lab.apply_manifest("dns-policy.yaml", &[policy()])
        .expect("the policy is applied");
    checks.run("with the policy, HTTP fails before any lookup", || {
        expect_http(&lab, www, false, "before the lookup")
    });
    checks.run(
        "a name the DNS rules allow is answered (UDP and TCP)",
        || {
            // No toFQDNs selector selects other.allowed.test: it opens nothing.
            expect_answer(&lab, server, "other.allowed.test", false, www)?;
            expect_answer(&lab, server, "other.allowed.test", true, www)?;
            expect_http(&lab, www, false, "after a lookup of another name")
        },
    );
    checks.run(
        "a name the DNS rules do not allow is refused by the engine",
        || {
            let before = lab.log_tail("dnsmasq", 1000).matches("denied.test").count();
            expect_refused(&lab, server, "denied.test", false)?;
            expect_refused(&lab, server, "denied.test", true)?;
            let after = lab.log_tail("dnsmasq", 1000).matches("denied.test").count();
            ensure!(after == before, "dnsmasq saw the refused queries");
            Ok(())
        },
    );
    checks.run(
        "after the lookup HTTP works, and stops after the TTL",
        || {
            expect_answer(&lab, server, "www.allowed.test", false, www)?;
            expect_http(&lab, www, true, "right after the lookup")?;
            std::thread::sleep(Duration::from_secs(TTL_S + 1));
            expect_http(&lab, www, false, "after the TTL")
        },
    );
    checks.run(
        "with the agent stopped the engine keeps enforcing and learning",
        || {
            lab.stop_agent()?;
            expect_refused(&lab, server, "denied.test", false)?;
            expect_http(
                &lab,
                OUTSIDE_LONG,
                false,
                "agent stopped, before the lookup",
            )?;
            expect_answer(&lab, server, "long.allowed.test", true, OUTSIDE_LONG)?;
            expect_http(&lab, OUTSIDE_LONG, true, "agent stopped, after the lookup")?;
            lab.start_agent()?;
            lab.wait_in_sync(Duration::from_secs(30))?;
            // What the engine learnt while the agent was away outlived the
            // agent's return (and its new snapshot): no new lookup here.
            expect_http(&lab, OUTSIDE_LONG, true, "after the agent came back")?;
            expect_http(&lab, www, false, "the expired name stays closed")
        },
    );
    checks.run("dnsmasq saw the allowed queries", || {
        ensure!(dnsmasq_saw(&lab, "www.allowed.test"));
        ensure!(dnsmasq_saw(&lab, "long.allowed.test"));
        ensure!(dnsmasq_saw(&lab, "other.allowed.test"));
        Ok(())
    });
    checks.finish();
}
