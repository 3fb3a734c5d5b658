//! Traffic the observe tests make, with real sockets in the pods: TCP
//! connects with a short deadline (a policy drop costs one second, not curl's
//! three), counted UDP datagrams, and DNS A queries.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use sluice_lab::services::{Place, PYTHON};
use sluice_lab::Lab;

/// One TCP connect with a 1 s deadline; on success one HTTP GET of `/` is
/// sent and the answer read, so the connection carries data and a FIN.
/// Prints `OPEN`, `REFUSED` or `TIMEOUT`.
const TCP_CONNECT: &str = r#"import socket,sys
host,port=sys.argv[1],int(sys.argv[2])
try:
    s=socket.create_connection((host,port),timeout=1)
except ConnectionRefusedError:
    print('REFUSED');sys.exit(0)
except (socket.timeout,TimeoutError):
    print('TIMEOUT');sys.exit(0)
s.settimeout(2)
s.sendall(b'GET / HTTP/1.0\r\nHost: x\r\n\r\n')
try:
    while s.recv(4096): pass
except (socket.timeout,TimeoutError):
    pass
s.close()
print('OPEN')
"#;

/// `count` UDP datagrams from one socket (one source port), no answer awaited.
const UDP_SEND: &str = r#"import socket,sys,time
host,port,count=sys.argv[1],int(sys.argv[2]),int(sys.argv[3])
s=socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET,socket.SOCK_DGRAM)
for i in range(count):
    s.sendto(b'observe %d'%i,(host,port));time.sleep(0.02)
print('SENT',count)
"#;

/// One DNS A query over UDP; prints `RCODE <n> <addresses,>` or `TIMEOUT`.
const DNS_QUERY: &str = r#"import random,socket,struct,sys
server,name=sys.argv[1],sys.argv[2]
qid=random.randrange(65536)
q=struct.pack('>HHHHHH',qid,0x0100,1,0,0,0)+b''.join(bytes([len(l)])+l.encode() for l in name.split('.'))+b'\0'+struct.pack('>HH',1,1)
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.settimeout(2)
try:
    s.sendto(q,(server,53));r=s.recv(4096)
except (socket.timeout,TimeoutError):
    print('TIMEOUT');sys.exit(0)
flags,qd,an=struct.unpack('>HHH',r[2:8])
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

/// What a TCP connect got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connect {
    Open,
    Refused,
    Timeout,
}

/// A TCP connect (and one HTTP GET when it opens) from pod `from` to `addr:port`.
pub fn tcp_connect(lab: &Lab, from: usize, addr: IpAddr, port: u16) -> Result<Connect> {
    let (host, port_text) = (addr.to_string(), port.to_string());
    let out = lab.exec_at(
        Place::Pod(from),
        &[PYTHON, "-c", TCP_CONNECT, &host, &port_text],
        Duration::from_secs(10),
    )?;
    match out.stdout.trim() {
        "OPEN" => Ok(Connect::Open),
        "REFUSED" => Ok(Connect::Refused),
        "TIMEOUT" => Ok(Connect::Timeout),
        other => bail!(
            "tcp connect from pod {from} to {host}:{port}: {other:?} {}",
            out.stderr.trim()
        ),
    }
}

/// `count` UDP datagrams from pod `from` to `addr:port`.
pub fn udp_send(lab: &Lab, from: usize, addr: IpAddr, port: u16, count: u32) -> Result<()> {
    let (host, port_text, count_text) = (addr.to_string(), port.to_string(), count.to_string());
    let out = lab.exec_at(
        Place::Pod(from),
        &[PYTHON, "-c", UDP_SEND, &host, &port_text, &count_text],
        Duration::from_secs(10),
    )?;
    if out.stdout.trim() != format!("SENT {count}") {
        bail!(
            "udp from pod {from} to {host}:{port}: {:?} {}",
            out.stdout.trim(),
            out.stderr.trim()
        );
    }
    Ok(())
}

/// An A query for `name` from pod `from` to `server`: (rcode, addresses).
pub fn dns_query(lab: &Lab, from: usize, server: IpAddr, name: &str) -> Result<(u8, Vec<IpAddr>)> {
    let server_text = server.to_string();
    let out = lab.exec_at(
        Place::Pod(from),
        &[PYTHON, "-c", DNS_QUERY, &server_text, name],
        Duration::from_secs(10),
    )?;
    let text = out.stdout.trim();
    let mut words = text.split_whitespace();
    match (words.next(), words.next()) {
        (Some("RCODE"), Some(rcode)) => {
            let addresses = words
                .next()
                .unwrap_or("")
                .split(',')
                .filter(|a| !a.is_empty())
                .map(|a| a.parse().with_context(|| format!("answer address {a:?}")))
                .collect::<Result<_>>()?;
            Ok((rcode.parse().context("rcode")?, addresses))
        }
        _ => bail!(
            "DNS query for {name} from pod {from} to {server}: {text:?} {}",
            out.stderr.trim()
        ),
    }
}
