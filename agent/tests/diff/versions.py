"""Two versions of one small JSON service for the response-comparison tests
(agent/tests/diff_replay.rs): v1 plays production, v2 the candidate in staging, and
v2 differs on purpose:

  GET /same           identical answers
  GET /user           v2 renames the user: $.user.name differs
  GET /status         v2 answers 500 where v1 answers 200
  GET /slow           v2 takes 150 ms longer, same answer
  GET /random         both answer a random $.nonce (noise) beside a fixed field
  GET /users/<n>      identical, so the route template GET /users/{id} matches

Usage: versions.py PORT v1|v2 [ADDRESS]   (ADDRESS: 127.0.0.1 by default)
"""
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    version = "v1"

    def log_message(self, *args):
        pass

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        v2 = self.version == "v2"
        path = self.path.split("?")[0]
        if path == "/same":
            self.answer(200, {"ok": True, "items": [1, 2, 3]})
        elif path == "/user":
            self.answer(200, {"user": {"name": "bob" if v2 else "alice", "id": 7}})
        elif path == "/status":
            self.answer(500 if v2 else 200, {"ok": not v2})
        elif path == "/slow":
            if v2:
                time.sleep(0.15)
            self.answer(200, {"ok": True})
        elif path == "/random":
            self.answer(200, {"nonce": os.urandom(8).hex(), "fixed": "x"})
        elif path.startswith("/users/"):
            self.answer(200, {"id": path.rsplit("/", 1)[1]})
        else:
            self.answer(404, {"error": "no such route"})


def main():
    port, version = int(sys.argv[1]), sys.argv[2]
    address = sys.argv[3] if len(sys.argv) > 3 else "127.0.0.1"
    Handler.version = version
    server = ThreadingHTTPServer((address, port), Handler)
    print("listening", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
