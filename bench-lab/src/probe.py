"""Connectivity probes for the network policy tests: many targets at once.

Usage: probe.py --timeout SECONDS [--bind ADDR] TARGET...

  tcp:ADDR:PORT   connect, GET /hostname over HTTP/1.0, read the answer
                  (the servers are bench-lab's netexec.py)
  udp:ADDR:PORT   send "hostname" (again every 0.5 s: UDP has no retransmission
                  of its own), wait for one datagram back
  icmp:ADDR       ICMP echo requests (one every 0.5 s), wait for a matching echo
                  reply (raw socket: the lab runs as root; IPv4 only)

ADDR is an IPv4 address or an IPv6 address in brackets. With --bind, every
probe leaves from that local address (a host with several addresses can act
as each of them). Every target is tried
in its own thread with the same deadline, so a run takes about one timeout
however many targets are silent. One JSON line per target, in argument order:
  {"target": T, "result": "answer", "answer": TEXT}
  {"target": T, "result": "refused"}   (TCP RST, ICMP port unreachable)
  {"target": T, "result": "timeout"}
  {"target": T, "result": "error", "error": TEXT}
"""

import argparse
import json
import os
import socket
import struct
import threading
import time

# UDP requests and ICMP echo requests are sent again this often (seconds).
UDP_RESEND = 0.5


def parse_target(text):
    kind, _, rest = text.partition(":")
    if kind == "icmp":
        return kind, rest.strip("[]"), 0
    host, _, port = rest.rpartition(":")
    return kind, host.strip("[]"), int(port)


def family_of(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def probe_tcp(host, port, deadline, bind):
    with socket.socket(family_of(host), socket.SOCK_STREAM) as s:
        if bind:
            s.bind((bind, 0))
        s.settimeout(max(deadline - time.monotonic(), 0.01))
        s.connect((host, port))
        s.sendall(b"GET /hostname HTTP/1.0\r\nHost: probe\r\n\r\n")
        data = b""
        while True:
            s.settimeout(max(deadline - time.monotonic(), 0.01))
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0]
    if b" 200 " not in status + b" ":
        raise OSError("HTTP answer %r" % status.decode(errors="replace"))
    return body.decode(errors="replace").strip()


def probe_udp(host, port, deadline, bind):
    with socket.socket(family_of(host), socket.SOCK_DGRAM) as s:
        if bind:
            s.bind((bind, 0))
        s.connect((host, port))
        while True:
            s.send(b"hostname")
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout()
            s.settimeout(min(left, UDP_RESEND))
            try:
                return s.recv(65535).decode(errors="replace").strip()
            except socket.timeout:
                if time.monotonic() >= deadline:
                    raise


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def echo_request(ident, seq):
    payload = b"sluice-probe"
    header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    return struct.pack("!BBHHH", 8, 0, checksum(header + payload), ident, seq) + payload


def probe_icmp(host, deadline, ident, bind):
    if family_of(host) != socket.AF_INET:
        raise OSError("icmp probes are IPv4 only")
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as s:
        if bind:
            s.bind((bind, 0))
        seq = 0
        while True:
            seq += 1
            s.sendto(echo_request(ident, seq), (host, 0))
            resend = min(time.monotonic() + UDP_RESEND, deadline)
            while time.monotonic() < resend:
                s.settimeout(max(resend - time.monotonic(), 0.01))
                try:
                    data, addr = s.recvfrom(65535)
                except socket.timeout:
                    break
                ihl = (data[0] & 0x0F) * 4
                kind, _, _, reply_id, _ = struct.unpack("!BBHHH", data[ihl:ihl + 8])
                if addr[0] == host and kind == 0 and reply_id == ident:
                    return "echo reply"
            if time.monotonic() >= deadline:
                raise socket.timeout()


def run(target, deadline, ident, bind):
    kind, host, port = parse_target(target)
    try:
        if kind == "tcp":
            answer = probe_tcp(host, port, deadline, bind)
        elif kind == "udp":
            answer = probe_udp(host, port, deadline, bind)
        elif kind == "icmp":
            answer = probe_icmp(host, deadline, ident, bind)
        else:
            return {"target": target, "result": "error", "error": "unknown probe %r" % kind}
        return {"target": target, "result": "answer", "answer": answer}
    except ConnectionRefusedError:
        return {"target": target, "result": "refused"}
    except socket.timeout:
        return {"target": target, "result": "timeout"}
    except OSError as err:
        return {"target": target, "result": "error", "error": str(err)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--timeout", type=float, required=True)
    parser.add_argument("--bind", default=None)
    parser.add_argument("targets", nargs="+")
    args = parser.parse_args()
    deadline = time.monotonic() + args.timeout
    results = [None] * len(args.targets)

    def work(i, target):
        # ICMP identifiers distinguish this run's threads (and other runs).
        ident = (os.getpid() * 64 + i) & 0xFFFF
        results[i] = run(target, deadline, ident, args.bind)

    threads = [threading.Thread(target=work, args=(i, t)) for i, t in enumerate(args.targets)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for result in results:
        print(json.dumps(result, separators=(",", ":")))


if __name__ == "__main__":
    main()
