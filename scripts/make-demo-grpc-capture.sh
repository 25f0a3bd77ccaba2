#!/usr/bin/env bash
# Re-records agent/assets/demo-grpc.pcap, the HTTP/2 part `shadowtap demo` replays: the
# helloworld Greeter of agent/tests/grpc (grpcio) on 127.0.0.1:18000, and a grpcio client
# that calls SayHello twice on one channel with `:authority grpc-hello.example.cn:8000`,
# recorded by tcpdump on lo. Needs .ci/setup (grpcio, grpcio-tools, tcpdump).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-agent/assets/demo-grpc.pcap}
python3 agent/tests/grpc/greeter_server.py 127.0.0.1:18000 v1 >/dev/null 2>&1 & spid=$!
sleep 2
tcpdump -q -i lo -s 0 --immediate-mode -U -w "$out" 'tcp port 18000' >/dev/null 2>&1 & tpid=$!
sleep 1
python3 - <<'PY'
import grpc
channel = grpc.insecure_channel(
    "127.0.0.1:18000", options=[("grpc.default_authority", "grpc-hello.example.cn:8000")]
)
say = channel.unary_unary("/helloworld.Greeter/SayHello")
# HelloRequest { name } as protobuf bytes: field 1, length-delimited.
for name in (b"ada", b"grace"):
    reply = say(b"\x0a" + bytes([len(name)]) + name, metadata=(("x-demo", "1"),), timeout=5)
    print(reply)
channel.close()
PY
sleep 1
kill -INT $tpid
kill $spid
wait 2>/dev/null || true
ls -l "$out"
