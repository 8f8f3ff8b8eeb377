#!/usr/bin/env python3
"""A minimal MCP server for the MCP benchmark (bench/mcp_bench.py): the
Streamable HTTP transport's request/response path and nothing else, on the
Python standard library, so that the server's own time per call is small and
steady next to what the gateway adds.

Usage: python3 mcp_upstream.py --port PORT [--sse]

POST /mcp takes one JSON-RPC message: `initialize` (answered with a new
`Mcp-Session-Id`), `notifications/*` (202), `ping`, `tools/list` (one tool,
`echo(text)`) and `tools/call` of `echo` (the text back as text content).
Requests after `initialize` must carry a session id it issued (else 404).
Answers are one JSON body, or with --sse one server-sent event (as the
official SDK answers by default). DELETE /mcp ends a session; GET /healthz
answers 200. Keep-alive HTTP/1.1, one thread per connection, TCP_NODELAY, and
each answer written in one send.
"""

import argparse
import json
import os
import socket
import socketserver
import sys
import threading
from http.server import BaseHTTPRequestHandler

ECHO = {
    "name": "echo",
    "description": "Echo text.",
    "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
}
VERSION = "2025-11-25"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "mcp-bench-upstream"
    sessions = set()
    lock = threading.Lock()
    sse = False

    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, *args):
        pass

    def answer(self, status, body=b"", content_type="application/json", extra=()):
        head = [f"HTTP/1.1 {status} {self.responses.get(status, ('',))[0]}"]
        head += [f"content-type: {content_type}", f"content-length: {len(body)}"]
        head += [f"{k}: {v}" for k, v in extra]
        self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)

    def message(self, status, msg, extra=()):
        data = json.dumps(msg, separators=(",", ":")).encode()
        if self.sse:
            self.answer(status, b"event: message\ndata: " + data + b"\n\n", "text/event-stream", extra)
        else:
            self.answer(status, data, "application/json", extra)

    def do_GET(self):
        if self.path == "/healthz":
            self.answer(200, b"ok\n", "text/plain")
        else:
            self.answer(405, extra=[("allow", "POST, DELETE")])

    def do_DELETE(self):
        with self.lock:
            self.sessions.discard(self.headers.get("mcp-session-id"))
        self.answer(200)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        if self.path != "/mcp":
            return self.answer(404)
        try:
            msg = json.loads(body)
        except ValueError:
            return self.message(400, {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "parse error"}})
        method, rid = msg.get("method"), msg.get("id")
        if method == "initialize":
            session = os.urandom(16).hex()
            with self.lock:
                self.sessions.add(session)
            asked = (msg.get("params") or {}).get("protocolVersion") or VERSION
            result = {"protocolVersion": asked, "capabilities": {"tools": {"listChanged": False}},
                      "serverInfo": {"name": "mcp-bench-upstream", "version": "1.0.0"}}
            return self.message(200, {"jsonrpc": "2.0", "id": rid, "result": result}, [("mcp-session-id", session)])
        with self.lock:
            known = self.headers.get("mcp-session-id") in self.sessions
        if not known:
            return self.message(404, {"jsonrpc": "2.0", "id": rid, "error": {"code": -32600, "message": "Session not found"}})
        if rid is None:
            return self.answer(202)
        if method == "ping":
            result = {}
        elif method == "tools/list":
            result = {"tools": [ECHO]}
        elif method == "tools/call":
            params = msg.get("params") or {}
            text = (params.get("arguments") or {}).get("text")
            if params.get("name") != "echo" or not isinstance(text, str):
                result = {"content": [{"type": "text", "text": "unknown tool or bad arguments"}], "isError": True}
            else:
                result = {"content": [{"type": "text", "text": text}], "isError": False}
        else:
            err = {"code": -32601, "message": f"method not found: {method}"}
            return self.message(200, {"jsonrpc": "2.0", "id": rid, "error": err})
        return self.message(200, {"jsonrpc": "2.0", "id": rid, "result": result})


class Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--sse", action="store_true", help="answer requests with one server-sent event")
    args = ap.parse_args()
    Handler.sse = args.sse
    with Server(("127.0.0.1", args.port), Handler) as srv:
        print("READY", flush=True)
        srv.serve_forever()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(0)
