"""helloworld.Greeter server for the gRPC end-to-end tests (agent/tests/grpc_live.rs).

    greeter_server.py LISTEN VERSION [RECORD] [--max-connection-age-ms MS]

LISTEN is host:port, VERSION a label put in replies (v1 in prod, v2 in stage). With
RECORD, every call appends one JSON line when it ends:

    {"version", "authority", "authority_source", "method", "peer",
     "metadata": [[key, value], ...],   # -bin values as base64 of the bytes received
     "messages": [{"len", "sha256"}, ...]}  # each request message as received

The request messages are taken as raw bytes (no deserializer), so their digests are of
exactly what arrived. `:authority`: grpcio's invocation_metadata() leaves out pseudo
headers, and a server interceptor's handler_call_details has only the method and the
metadata; grpc core keeps the authority in the call details (`host`, the `:authority` the
server received), which grpcio's ServicerContext holds as `_rpc_event.call_details`. That
attribute is private: if a grpcio version lacks it, `authority` is null and
`authority_source` says "unavailable", so a test fails loudly rather than passing blind.
Prints `ready HOST:PORT` once serving; SIGTERM/SIGINT stop it.
"""
import argparse
import base64
import hashlib
import json
import os
import signal
import sys
import threading
from concurrent import futures

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stubs  # noqa: E402

pb2, _ = stubs.load()

MAX_MESSAGE = 16 * 1024 * 1024
SERVICE = "helloworld.Greeter"
SERVER_STREAM_REPLIES = 3


def authority_of(context):
    try:
        host = context._rpc_event.call_details.host
    except AttributeError:
        return None, "unavailable"
    if isinstance(host, bytes):
        host = host.decode("utf-8", "replace")
    return host, "call_details.host"


def metadata_of(context):
    pairs = []
    for key, value in context.invocation_metadata() or ():
        if key.endswith("-bin"):
            if isinstance(value, str):
                value = value.encode("latin-1")
            value = base64.b64encode(value).decode("ascii")
        elif isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        pairs.append([key, value])
    return pairs


def digest(raw):
    return {"len": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}


class Recorder:
    def __init__(self, path, version):
        self.path = path
        self.version = version
        self.lock = threading.Lock()
        if path:
            open(path, "a").close()

    def record(self, context, method, messages):
        if not self.path:
            return
        authority, source = authority_of(context)
        entry = {
            "version": self.version,
            "authority": authority,
            "authority_source": source,
            "method": f"/{SERVICE}/{method}",
            "peer": context.peer(),
            "metadata": metadata_of(context),
            "messages": [digest(m) for m in messages],
        }
        line = json.dumps(entry) + "\n"
        with self.lock:
            with open(self.path, "a") as f:
                f.write(line)


def reply(version, raw):
    name = pb2.HelloRequest.FromString(raw).name
    return pb2.HelloReply(message=f"Hello {name} from {version}")


def handlers(version, recorder):
    def say_hello(raw, context):
        recorder.record(context, "SayHello", [raw])
        return reply(version, raw)

    def client_stream(request_iterator, context):
        raws = list(request_iterator)
        recorder.record(context, "SayHelloClientStream", raws)
        names = ",".join(pb2.HelloRequest.FromString(r).name for r in raws)
        return pb2.HelloReply(message=f"Hello {names} from {version}")

    def server_stream(raw, context):
        recorder.record(context, "SayHelloServerStream", [raw])
        for _ in range(SERVER_STREAM_REPLIES):
            yield reply(version, raw)

    def bidi(request_iterator, context):
        raws = []
        for raw in request_iterator:
            raws.append(raw)
            yield reply(version, raw)
        recorder.record(context, "SayHelloBidi", raws)

    ser = pb2.HelloReply.SerializeToString
    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "SayHello": grpc.unary_unary_rpc_method_handler(say_hello, None, ser),
            "SayHelloClientStream": grpc.stream_unary_rpc_method_handler(client_stream, None, ser),
            "SayHelloServerStream": grpc.unary_stream_rpc_method_handler(server_stream, None, ser),
            "SayHelloBidi": grpc.stream_stream_rpc_method_handler(bidi, None, ser),
        },
    )


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("listen")
    p.add_argument("version")
    p.add_argument("record", nargs="?")
    p.add_argument("--max-connection-age-ms", type=int, default=0)
    a = p.parse_args()
    options = [
        ("grpc.max_receive_message_length", MAX_MESSAGE),
        ("grpc.max_send_message_length", MAX_MESSAGE),
    ]
    if a.max_connection_age_ms > 0:
        options += [
            ("grpc.max_connection_age_ms", a.max_connection_age_ms),
            ("grpc.max_connection_age_grace_ms", 5000),
        ]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16), options=options)
    server.add_generic_rpc_handlers((handlers(a.version, Recorder(a.record, a.version)),))
    if server.add_insecure_port(a.listen) == 0:
        sys.exit(f"cannot listen on {a.listen}")
    server.start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(f"ready {a.listen}", flush=True)
    stop.wait()
    server.stop(1).wait()


if __name__ == "__main__":
    main()
