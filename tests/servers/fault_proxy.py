"""A fault-injecting HTTP proxy for the remote-verification tests (runs in a thread of the test process).

Each request consumes the next entry of ``plan`` (then "ok" forever): ``ok`` forwards the request to the
upstream server and relays the reply; ``503`` answers HTTP 503 at once; ``502html`` answers 502 with an HTML
body (a gateway's error page); ``delay`` waits ``delay_s`` seconds (longer than the client's timeout) before
forwarding; ``drop`` closes the connection without a reply; ``truncate`` sends a 200 whose body stops halfway
(its Content-Length promises more); ``garbage`` answers 200 with a body that is not JSON.
``points_forwarded`` counts the points of the requests that reached the upstream server.
"""

import http.client
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit


class FaultProxy:
    def __init__(self, upstream: str, plan=(), delay_s: float = 2.0) -> None:
        u = urlsplit(upstream)
        self.upstream_host, self.upstream_port = u.hostname, u.port
        self.plan = list(plan)
        self.delay_s = delay_s
        self.points_forwarded = 0
        self.requests = 0
        self.faults_served = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _send(self, status, body, ctype="application/json", length=None):
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body) if length is None else length))
                self.end_headers()
                self.wfile.write(body)
                self.wfile.flush()

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with proxy._lock:
                    proxy.requests += 1
                    fault = proxy.plan.pop(0) if proxy.plan else "ok"
                    if fault != "ok":
                        proxy.faults_served.append(fault)
                if fault == "503":
                    return self._send(503, b'{"error": "overloaded"}')
                if fault == "502html":
                    return self._send(502, b"<html><body>Bad Gateway</body></html>", "text/html")
                if fault == "garbage":
                    return self._send(200, b"\x00\xffnot json at all{", "application/json")
                if fault == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if fault == "delay":
                    time.sleep(proxy.delay_s)
                status, reply = proxy._forward(self.path, body, dict(self.headers))
                if fault == "truncate":
                    self.close_connection = True
                    return self._send(200, reply[: len(reply) // 2], length=len(reply))
                self._send(status, reply)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def _forward(self, path, body, headers):
        try:
            payload = json.loads(body)
            n = len(payload["instances"]) if "instances" in payload else payload["inputs"][0]["shape"][0]
        except Exception:
            n = 0
        conn = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=60)
        try:
            conn.request(
                "POST", path, body=body, headers={"Content-Type": headers.get("Content-Type", "application/json")}
            )
            r = conn.getresponse()
            data = r.read()
        finally:
            conn.close()
        with self._lock:
            self.points_forwarded += n
        return r.status, data

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
