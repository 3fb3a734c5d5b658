"""A small stand-in for upstream Kubernetes e2e's `agnhost netexec`.

Upstream e2e tests run `agnhost netexec` in their backend pods; the lab has no
container images, so this script answers the same questions on the same paths:

  HTTP  GET /hostname           -> the pod's name
        GET /clientip           -> the client's address as seen here, "ip:port"
                                   ("[ip]:port" for IPv6, like Go's RemoteAddr)
        GET /echo?msg=X         -> X
        GET /dial?host=H&port=P&request=R&protocol=http|udp
                                -> {"responses": [answer of H:P to R]}
  UDP   "hostname" | "clientip" | "echo X" -> the same answers

Every socket is dual-stack ("::" with IPV6_V6ONLY off); IPv4 clients are shown
without the ::ffff: prefix. "ready" is printed once every socket is bound, so
the lab can wait for it.
"""

import argparse
import http.server
import json
import socket
import socketserver
import sys
import threading
import urllib.parse
import urllib.request


def client_text(addr):
    host, port = addr[0], addr[1]
    if host.startswith("::ffff:"):
        host = host[len("::ffff:"):]
    if ":" in host:
        return "[%s]:%d" % (host, port)
    return "%s:%d" % (host, port)


def answer(name, request, client):
    if request == "hostname":
        return name
    if request == "clientip":
        return client_text(client)
    if request.startswith("echo "):
        return request[len("echo "):]
    return "unknown request %r" % request


def dial(query):
    host = query.get("host", [""])[0]
    port = int(query.get("port", ["0"])[0])
    request = query.get("request", ["hostname"])[0]
    protocol = query.get("protocol", ["http"])[0]
    try:
        if protocol == "udp":
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            with socket.socket(family, socket.SOCK_DGRAM) as s:
                s.settimeout(3)
                s.sendto(request.encode(), (host, port))
                data, _ = s.recvfrom(65535)
                return {"responses": [data.decode()]}
        shown = "[%s]" % host if ":" in host else host
        url = "http://%s:%d/%s" % (shown, port, request.lstrip("/"))
        with urllib.request.urlopen(url, timeout=3) as reply:
            return {"responses": [reply.read().decode()]}
    except OSError as err:
        return {"errors": [str(err)]}


class DualStackHttpServer(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def http_handler(name):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def do_GET(self):
            parsed = urllib.parse.urlparse(self.path)
            query = urllib.parse.parse_qs(parsed.query)
            if parsed.path == "/hostname":
                body = name
            elif parsed.path == "/clientip":
                body = client_text(self.client_address)
            elif parsed.path == "/echo":
                body = query.get("msg", [""])[0]
            elif parsed.path == "/dial":
                body = json.dumps(dial(query), separators=(",", ":"))
            else:
                self.send_error(404)
                return
            data = body.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, fmt, *args):
            sys.stderr.write("http %s %s\n" % (client_text(self.client_address), fmt % args))

    return Handler


def serve_udp(name, port):
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind(("::", port))

    def loop():
        while True:
            data, client = sock.recvfrom(65535)
            reply = answer(name, data.decode(errors="replace").strip(), client)
            sock.sendto(reply.encode(), client)

    threading.Thread(target=loop, daemon=True).start()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--http", type=int, action="append", default=[])
    parser.add_argument("--udp", type=int, action="append", default=[])
    args = parser.parse_args()
    servers = []
    for port in args.http:
        server = DualStackHttpServer(("::", port), http_handler(args.name))
        servers.append(server)
        threading.Thread(target=server.serve_forever, daemon=True).start()
    for port in args.udp:
        serve_udp(args.name, port)
    print("ready", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
