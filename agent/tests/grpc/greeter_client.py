"""helloworld.Greeter client for the gRPC end-to-end tests (agent/tests/grpc_live.rs).

    greeter_client.py TARGET [--authority A] [--tag T] [--large BYTES] [--two-phase]

Makes every call kind (unary small and large, client streaming, server streaming,
bidi) on a channel to TARGET (host:port) with `grpc.default_authority` A (default
grpc-hello.example.cn:8000), and prints one JSON line per call as it ends:

    {"id", "phase", "channel", "method", "status", "replies",
     "metadata": [[key, value], ...],       # what it sent; -bin values as base64
     "messages": [{"len", "sha256"}, ...]}  # each request message as serialized

Every call carries `x-call-id` (unique: TAG-PHASE-KIND), an ascii key `x-trace-tag` and
a binary `x-trace-bin` (bytes with NUL, 0xff and non-UTF-8 sequences). Large messages are
BYTES of pseudo-random payload (default 1 MiB + 4 KiB).

--two-phase: open channel A, make the calls (phase "early"), print READY, wait for a line
on stdin, make the calls again on the SAME channel (phase "late"), then open a new
channel B (its own TCP connection) and make them there (phase "fresh"). Exits
non-zero if any call fails.

--rolling N [--interval-ms MS]: open channel A, make the calls (phase "early"), print
READY, wait for a line on stdin, then make N unary calls on channel A, one every MS ms
(phase "rolling"). grpcio moves the channel to a new connection when the server
recycles the old one (grpc.max_connection_age_ms), so the calls span connections.
"""
import argparse
import base64
import hashlib
import json
import os
import random
import sys
import time

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stubs  # noqa: E402

pb2, pb2_grpc = stubs.load()

MAX_MESSAGE = 16 * 1024 * 1024
SERVICE = "/helloworld.Greeter/"
TIMEOUT = 30


def payload(seed, size):
    return random.Random(seed).randbytes(size)


def trace_bin(call_id):
    return b"\x00\xff\xfe\x80bin\x00" + hashlib.sha256(call_id.encode()).digest()[:8] + b"\xc3("


def metadata_for(call_id):
    return (
        ("x-call-id", call_id),
        ("x-trace-tag", f"ascii value for {call_id}"),
        ("x-trace-bin", trace_bin(call_id)),
    )


def shown(metadata):
    return [
        [k, base64.b64encode(v).decode("ascii") if k.endswith("-bin") else v]
        for k, v in metadata
    ]


def digests(messages):
    out = []
    for m in messages:
        raw = m.SerializeToString()
        out.append({"len": len(raw), "sha256": hashlib.sha256(raw).hexdigest()})
    return out


def open_channel(target, authority):
    return grpc.insecure_channel(
        target,
        options=[
            ("grpc.default_authority", authority),
            ("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.max_send_message_length", MAX_MESSAGE),
            # A retried call would reach prod twice; the tests count copies exactly.
            ("grpc.enable_retries", 0),
            # grpcio shares connections between channels with the same arguments (a
            # global subchannel pool); a new channel must open a new connection.
            ("grpc.use_local_subchannel_pool", 1),
        ],
    )


def run_calls(stub, tag, phase, channel, large):
    def report(call_id, method, requests, metadata, replies):
        print(
            json.dumps(
                {
                    "id": call_id,
                    "phase": phase,
                    "channel": channel,
                    "method": SERVICE + method,
                    "status": "OK",
                    "replies": replies,
                    "metadata": shown(metadata),
                    "messages": digests(requests),
                }
            ),
            flush=True,
        )

    def req(call_id, i, size=0):
        return pb2.HelloRequest(name=f"{call_id}#{i}", payload=payload(f"{call_id}#{i}", size))

    prefix = f"{tag}-{phase}"

    call_id = f"{prefix}-unary"
    md = metadata_for(call_id)
    r = req(call_id, 0, 16)
    stub.SayHello(r, metadata=md, timeout=TIMEOUT)
    report(call_id, "SayHello", [r], md, 1)

    call_id = f"{prefix}-unary-large"
    md = metadata_for(call_id)
    r = req(call_id, 0, large)
    stub.SayHello(r, metadata=md, timeout=TIMEOUT)
    report(call_id, "SayHello", [r], md, 1)

    call_id = f"{prefix}-client-stream"
    md = metadata_for(call_id)
    rs = [req(call_id, 0, 10), req(call_id, 1, large), req(call_id, 2, 0), req(call_id, 3, 4000)]
    stub.SayHelloClientStream(iter(rs), metadata=md, timeout=TIMEOUT)
    report(call_id, "SayHelloClientStream", rs, md, 1)

    call_id = f"{prefix}-server-stream"
    md = metadata_for(call_id)
    r = req(call_id, 0, 100)
    n = sum(1 for _ in stub.SayHelloServerStream(r, metadata=md, timeout=TIMEOUT))
    report(call_id, "SayHelloServerStream", [r], md, n)

    call_id = f"{prefix}-bidi"
    md = metadata_for(call_id)
    rs = [req(call_id, 0, 1), req(call_id, 1, 70_000), req(call_id, 2, large), req(call_id, 3, 3)]
    n = sum(1 for _ in stub.SayHelloBidi(iter(rs), metadata=md, timeout=TIMEOUT))
    report(call_id, "SayHelloBidi", rs, md, n)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("target")
    p.add_argument("--authority", default="grpc-hello.example.cn:8000")
    p.add_argument("--tag", default="c")
    p.add_argument("--large", type=int, default=(1 << 20) + 4096)
    p.add_argument("--two-phase", action="store_true")
    p.add_argument("--rolling", type=int, default=0)
    p.add_argument("--interval-ms", type=int, default=100)
    a = p.parse_args()
    with open_channel(a.target, a.authority) as ch:
        stub = pb2_grpc.GreeterStub(ch)
        if a.rolling:
            run_calls(stub, a.tag, "early", "A", a.large)
            print("READY", flush=True)
            if not sys.stdin.readline():
                sys.exit("stdin closed before the go line")
            for i in range(a.rolling):
                call_id = f"{a.tag}-rolling-{i}"
                md = metadata_for(call_id)
                r = pb2.HelloRequest(name=call_id)
                stub.SayHello(r, metadata=md, timeout=TIMEOUT)
                print(
                    json.dumps(
                        {
                            "id": call_id,
                            "phase": "rolling",
                            "channel": "A",
                            "method": SERVICE + "SayHello",
                            "status": "OK",
                            "replies": 1,
                            "metadata": shown(md),
                            "messages": digests([r]),
                        }
                    ),
                    flush=True,
                )
                time.sleep(a.interval_ms / 1000)
            return
        if not a.two_phase:
            run_calls(stub, a.tag, "new", "A", a.large)
            return
        run_calls(stub, a.tag, "early", "A", a.large)
        print("READY", flush=True)
        if not sys.stdin.readline():
            sys.exit("stdin closed before the go line")
        run_calls(stub, a.tag, "late", "A", a.large)
        with open_channel(a.target, a.authority) as ch2:
            run_calls(pb2_grpc.GreeterStub(ch2), a.tag, "fresh", "B", a.large)


if __name__ == "__main__":
    main()
