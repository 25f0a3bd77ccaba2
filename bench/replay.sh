#!/usr/bin/env bash
# Benchmark of `shadowtap replay` (issue 3): records real traffic (wrk -> nginx on
# loopback, tcpdump writing the file, at least 100k requests), then in one run:
#   shadowtap replay --speed max of that capture into the same nginx (replay waits for
#   queue room, so nothing is dropped), and wrk against the same URL for about as long.
# Prints requests/s delivered, CPU per request, requests lost (seen - replayed, must be
# 0), peak RSS, and the ratio shadowtap/wrk (goal >= 50%). Bounded: one recording of
# SECONDS (default 10), loopback only.
# Usage: bench/replay.sh [SECONDS]. Needs .ci/setup; run as root (tcpdump).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
min_requests=100000
out=bench-out
mkdir -p "$out"
port=18081
cargo build --release -q -p shadowtap
bin=target/release/shadowtap

conf=$(mktemp -d)
cat >"$conf/nginx.conf" <<NGX
worker_processes 1;
pid $conf/nginx.pid;
error_log $conf/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  keepalive_requests 100000;
  server {
    listen 127.0.0.1:$port;
    location / { return 200 "ok\n"; }
  }
}
NGX
nginx -c "$conf/nginx.conf"
trap 'nginx -c "$conf/nginx.conf" -s stop 2>/dev/null || true; rm -rf "$conf"' EXIT
url="http://127.0.0.1:$port"

cap="$out/replay-wrk-nginx.pcap"
tcpdump -q -i lo -s 0 -B 262144 -w "$cap" "tcp port $port" 2>"$out/replay-tcpdump.log" &
tpid=$!
sleep 1
wrk -t2 -c32 -d"${secs}s" "$url/bench?x=1" >"$out/replay-wrk-record.txt"
sleep 1
kill -INT $tpid
wait $tpid || true
grep -E "captured|dropped" "$out/replay-tcpdump.log" || true
recorded=$(awk '/requests in/ {print $1}' "$out/replay-wrk-record.txt")
if [ "$recorded" -lt "$min_requests" ]; then
  echo "only $recorded requests recorded in ${secs}s (need $min_requests): rerun with more seconds" >&2
  exit 1
fi

# replay NAME ARGS...: one timed replay; prints "wall user sys rss seen replayed queue_full".
replay() {
  local name=$1; shift
  /usr/bin/time -f "%e %U %S %M" -o "$out/$name.time" \
    "$bin" replay --speed max --port "$port" --target "$url" "$@" "$cap" \
    >"$out/$name.stdout" 2>"$out/$name.stderr"
  read -r wall user sys rss <"$out/$name.time"
  local seen replayed qfull
  seen=$(awk '/requests seen/ { for (i = 2; i <= NF; i++) if ($i ~ /^requests?$/ && $(i+1) == "seen") print $(i-1) }' "$out/$name.stdout")
  replayed=$(awk '$1 == "replayed" && $2 ~ /xx$/ { s += $3 } END { print s + 0 }' "$out/$name.stdout")
  qfull=$(awk '$1 == "queue_full" { print $2 } END { }' "$out/$name.stdout")
  echo "$wall $user $sys $rss $seen $replayed ${qfull:-0}"
}

read -r d_wall d_user d_sys d_rss d_seen d_replayed d_qfull < <(replay replay-default)
cat "$out/replay-default.stdout"

# wrk for about as long as the default replay took (at least 1 s).
wrk_secs=$(python3 -c "import math,sys; print(max(1, math.ceil(float(sys.argv[1]))))" "$d_wall")
wrk -t2 -c32 -d"${wrk_secs}s" "$url/bench?x=1" >"$out/replay-wrk.txt"
wrk_rps=$(awk '/Requests\/sec/ {print $2}' "$out/replay-wrk.txt")

python3 - "$recorded" "$wrk_secs" "$wrk_rps" \
  "$d_wall" "$d_user" "$d_sys" "$d_rss" "$d_seen" "$d_replayed" "$d_qfull" \
  <<'PY' | tee "$out/replay.md"
import sys
recorded, wrk_secs = int(sys.argv[1]), int(sys.argv[2])
wrk_rps = float(sys.argv[3])
def run(a):
    wall, user, sys_, rss = map(float, a[:4])
    seen, replayed, qfull = map(int, a[4:7])
    return dict(wall=max(wall, 0.01), cpu=user + sys_, rss=rss, seen=seen, replayed=replayed, qfull=qfull)
d = run(sys.argv[4:11])
print(f"capture: wrk -> nginx recorded {recorded:,} requests")
print()
print("| run | wall s | requests seen | replayed | lost | queue_full | requests/s delivered | CPU us/request | peak RSS MiB |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for name, r in (("shadowtap replay --speed max", d),):
    rps = r["replayed"] / r["wall"]
    cpu = r["cpu"] * 1e6 / max(r["replayed"], 1)
    print(f"| {name} | {r['wall']:.2f} | {r['seen']:,} | {r['replayed']:,} | {r['seen'] - r['replayed']:,} | {r['qfull']:,} | {rps:,.0f} | {cpu:.1f} | {r['rss'] / 1024:.1f} |")
print(f"| wrk -t2 -c32 -d{wrk_secs}s | {wrk_secs} | - | - | - | - | {wrk_rps:,.0f} | - | - |")
print()
lost = d["seen"] - d["replayed"]
print(f"shadowtap/wrk: {d['replayed'] / d['wall'] / wrk_rps:.0%} (goal >= 50%); lost {lost:,} (goal 0)")
PY
