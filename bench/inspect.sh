#!/usr/bin/env bash
# Benchmark of the offline pipeline (issue 2): records real traffic (wrk -> nginx on
# loopback, tcpdump writing the file), then times on that same file, in one run:
#   shadowtap inspect, tshark -Y http.request, tcpdump -r (bare read).
# Prints requests/s, MB/s, peak RSS and the ratios. Bounded: one recording of SECONDS.
# Usage: bench/inspect.sh [SECONDS] (default 10): record, then time.
#        bench/inspect.sh CAPTURE.pcap: time on an earlier recording (before/after
#        comparisons on the same bytes; the port is still 18080).
# Needs .ci/setup; run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
out=bench-out
mkdir -p "$out"
port=18080
cargo build --release -q -p shadowtap
bin=target/release/shadowtap

if [ -f "${1:-}" ]; then
  cap=$1
  served=0
else
  secs=${1:-10}
  conf=$(mktemp -d)
  cat >"$conf/nginx.conf" <<NGX
worker_processes 1;
pid $conf/nginx.pid;
error_log $conf/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  server {
    listen 127.0.0.1:$port;
    location / { return 200 "ok\n"; }
  }
}
NGX
  nginx -c "$conf/nginx.conf"
  trap 'nginx -c "$conf/nginx.conf" -s stop 2>/dev/null || true; rm -rf "$conf"' EXIT

  cap="$out/wrk-nginx.pcap"
  tcpdump -q -i lo -s 0 -B 262144 -w "$cap" "tcp port $port" 2>"$out/tcpdump.log" &
  tpid=$!
  sleep 1
  wrk -t2 -c32 -d"${secs}s" "http://127.0.0.1:$port/bench?x=1" >"$out/wrk.txt"
  sleep 1
  kill -INT $tpid
  wait $tpid || true
  grep -E "captured|dropped" "$out/tcpdump.log" || true
  served=$(awk '/requests in/ {print $1}' "$out/wrk.txt")
fi
bytes=$(stat -c %s "$cap")
half="$out/half.pcap"
total_pkts=$(capinfos -c -M "$cap" | awk '/Number of packets/ {print $NF}')
# -F pcap: the same format as the whole file, so the two runs compare.
editcap -F pcap -r "$cap" "$half" "1-$((total_pkts / 2))" >/dev/null

# measure NAME CMD...: one run; "seconds peak-RSS-KiB user-s sys-s" in $out/NAME.time.
# Fails if CMD fails.
measure() {
  local name=$1
  shift
  /usr/bin/time -f "%e %M %U %S" -o "$out/$name.time" "$@" >"$out/$name.stdout" 2>"$out/$name.stderr"
}
measure shadowtap "$bin" inspect --port "$port" "$cap"
measure shadowtap-half "$bin" inspect --port "$port" "$half"
# tshark only dissects HTTP on its well-known ports unless told; 18080 is not one.
measure tshark tshark -n -r "$cap" -d "tcp.port==$port,http" -Y http.request \
  -T fields -e http.request.uri
measure tcpdump tcpdump -r "$cap" -w /dev/null
read -r t_st rss_st user_st sys_st <"$out/shadowtap.time"
read -r t_st_half rss_st_half _ _ <"$out/shadowtap-half.time"
read -r t_ts rss_ts _ _ <"$out/tshark.time"
read -r t_td rss_td _ _ <"$out/tcpdump.time"
# Complete requests: inspect prints a line for the others too, with their outcome.
found=$(grep -c '"outcome":"complete"' "$out/shadowtap.stdout" || true)
found_ts=$(wc -l <"$out/tshark.stdout")

python3 - "$served" "$found" "$found_ts" "$bytes" "$total_pkts" "$t_st" "$rss_st" "$t_st_half" \
  "$rss_st_half" "$t_ts" "$rss_ts" "$t_td" "$rss_td" "$user_st" "$sys_st" <<'PY' | tee "$out/inspect.md"
import sys
served, found, found_ts, size, pkts = map(int, sys.argv[1:6])
t_st, rss_st, t_half, rss_half, t_ts, rss_ts, t_td, rss_td, user_st, sys_st = map(
    float, sys.argv[6:]
)
mb = size / 1e6
def row(name, t, rss, reqs):
    t = max(t, 0.01)
    return f"| {name} | {t:.2f} | {reqs / t:,.0f} | {mb / t:,.1f} | {rss / 1024:,.1f} |"
wrk = f"wrk served {served:,} requests; " if served else ""
print(f"capture: {mb:.1f} MB, {pkts:,} packets; {wrk}shadowtap found {found:,}, tshark found {found_ts:,}")
print()
print("| reader | seconds | requests/s | MB/s | peak RSS MiB |")
print("|---|---:|---:|---:|---:|")
print(row("shadowtap inspect", t_st, rss_st, found))
print(row("tshark -Y http.request", t_ts, rss_ts, found_ts))
print(row("tcpdump -r -w /dev/null (bare read)", t_td, rss_td, found))
print()
print(f"shadowtap vs tshark: {t_ts / max(t_st, 0.01):.1f}x faster (goal >= 100x)")
print(f"shadowtap vs tcpdump bare read: {t_st / max(t_td, 0.01):.2f}x its time (goal <= 3x)")
print(f"peak RSS, half file -> whole file: {rss_half/1024:.1f} -> {rss_st/1024:.1f} MiB")
# inspect reads on one thread and frames and prints on another: its CPU time, next to
# the wall time above, shows what the second core adds.
print(f"shadowtap CPU time: {user_st + sys_st:.2f} s (user {user_st:.2f}, sys {sys_st:.2f}) "
      f"for {t_st:.2f} s wall")
PY
