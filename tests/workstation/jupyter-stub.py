#!/usr/bin/python3
"""A stand-in for a Jupyter server in the workstation tests: the REST API's documented JSON
(jupyter-server's "REST API" page: GET /api/status, /api/kernels, /api/terminals, token
authentication) and the kernel channels' WebSocket opening handshake (RFC 6455).

usage: jupyter-stub.py PORT STATE_FILE TOKEN

STATE_FILE (JSON, read on every request, so tests change the answers while it runs):
  {"status": 200, "delay": 0.0, "kernels": [...], "terminals": [...]}
"""
import base64
import hashlib
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT, STATE, TOKEN = int(sys.argv[1]), sys.argv[2], sys.argv[3]
STARTED = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def state():
    try:
        with open(STATE) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        sys.stderr.write("jupyter-stub: " + (fmt % args) + "\n")

    def reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        s = state()
        time.sleep(float(s.get("delay", 0)))
        if self.headers.get("Authorization") != "token " + TOKEN:
            return self.reply(403, {"message": "Forbidden"})
        path = self.path.split("?")[0]
        if path == "/api/status" and s.get("status", 200) != 200:
            return self.reply(s["status"], {"message": "stub error"})
        kernels, terminals = s.get("kernels", []), s.get("terminals", [])
        if path == "/api/status":
            return self.reply(200, {"started": STARTED, "last_activity": STARTED,
                                    "connections": sum(k.get("connections", 0) for k in kernels),
                                    "kernels": len(kernels)})
        if path == "/api/kernels":
            return self.reply(200, kernels)
        if path == "/api/terminals":
            return self.reply(200, terminals)
        if path.startswith("/api/kernels/") and path.endswith("/channels"):
            return self.websocket()
        return self.reply(404, {"message": "Not Found"})

    def websocket(self):
        key = self.headers.get("Sec-WebSocket-Key", "")
        if self.headers.get("Upgrade", "").lower() != "websocket" or not key:
            return self.reply(400, {"message": "a WebSocket upgrade expected"})
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        # Wait for the client's close frame, answer with ours, and end.
        self.rfile.read(2)
        self.wfile.write(b"\x88\x00")
        self.wfile.flush()
        self.close_connection = True


ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
