"""Stage server for the live tests: answers 200 to everything and appends one JSON line per
request to a log (Host, method, target, framing, body length and SHA-256), so a test can
check what the shadow copies looked like. Standard library only; decodes chunked bodies
itself because http.server does not."""
import hashlib
import http.server
import json
import sys
import threading

LOG_LOCK = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            body = bytearray()
            while True:
                size_line = self.rfile.readline()
                size = int(size_line.split(b";")[0].strip(), 16)
                if size == 0:
                    # Trailers end with an empty line.
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(body), "chunked"
                body += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length", "0") or "0")
        return self.rfile.read(length), "length"

    def handle_any(self):
        body, framing = self.read_body()
        entry = {
            "host": self.headers.get("Host"),
            "method": self.command,
            "target": self.path,
            "framing": framing,
            "len": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
        }
        with LOG_LOCK:
            with open(self.server.log_path, "a") as log:
                log.write(json.dumps(entry) + "\n")
        reply = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = handle_any


def main():
    addr, port, log_path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    server = http.server.ThreadingHTTPServer((addr, port), Handler)
    server.daemon_threads = True
    server.log_path = log_path
    open(log_path, "a").close()
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
