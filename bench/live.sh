#!/usr/bin/env bash
# Benchmark of live shadowing (issue 4): wrk in a `client` namespace drives nginx in a
# `prod` namespace over a veth pair; the agent runs in prod on that veth and shadows to a
# second nginx (the sink) on prod's loopback. In one run: agent off, eBPF at 100% and 10%,
# libpcap at 100% and 10%. Prints a markdown table with throughput and p99 latency as
# ratios to agent-off, completeness (requests replayed / requests wrk completed, 100% runs),
# drops by reason and agent CPU-us per request.
# Bounded: 5 wrk runs of SECONDS each (default 5) plus a few seconds of setup per run.
# Usage: [SHADOWTAP_BIN=path] bench/live.sh [SECONDS] [CONNECTIONS]. Needs .ci/setup; root.
# Addresses 10.78.1.0/24 exist only inside the namespaces this script creates.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
conns=${2:-32}
# SHADOWTAP_BIN skips the build (e.g. while cargo is busy with something else).
if [ -z "${SHADOWTAP_BIN:-}" ]; then
  cargo build --release -q -p shadowtap
fi
bin=${SHADOWTAP_BIN:-$PWD/target/release/shadowtap}

ns_c=stb-$$-client
ns_p=stb-$$-prod
work=$(mktemp -d)
cleanup() {
  for ns in "$ns_c" "$ns_p"; do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

ip netns add "$ns_c"
ip netns add "$ns_p"
ip -n "$ns_p" link set lo up
ip -n "$ns_c" link set lo up
ip -n "$ns_p" link add pc0 type veth peer name c0 netns "$ns_c"
ip -n "$ns_p" addr add 10.78.1.1/24 dev pc0
ip -n "$ns_c" addr add 10.78.1.2/24 dev c0
ip -n "$ns_p" link set pc0 up
ip -n "$ns_c" link set c0 up

# prod on the veth address, the sink on loopback (not watched by the agent).
cat >"$work/nginx.conf" <<NGX
worker_processes 1;
pid $work/nginx.pid;
error_log $work/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/body;
  proxy_temp_path $work/proxy;
  fastcgi_temp_path $work/fcgi;
  uwsgi_temp_path $work/uwsgi;
  scgi_temp_path $work/scgi;
  keepalive_requests 1000000;
  server {
    listen 10.78.1.1:8000;
    location / { return 200 "ok\n"; }
  }
  server {
    listen 127.0.0.1:9000;
    location / { return 200 "sunk\n"; }
  }
}
NGX
ip netns exec "$ns_p" nginx -c "$work/nginx.conf"
for _ in $(seq 50); do
  ip netns exec "$ns_c" curl -s -o /dev/null --max-time 1 http://10.78.1.1:8000/ && break
  sleep 0.1
done

clk_tck=$(getconf CLK_TCK)
rows=()

# wrk_run NAME -> sets rps, p99_ms, reqs
wrk_run() {
  local out="$work/wrk-$1.txt"
  timeout $((secs + 20)) ip netns exec "$ns_c" \
    wrk -t2 -c"$conns" -d"${secs}s" --latency http://10.78.1.1:8000/ >"$out"
  rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
  reqs=$(awk '/requests in/ {print $1}' "$out")
  # wrk prints p99 as e.g. 1.23ms, 850.00us or 1.02s.
  p99_ms=$(awk '$1 == "99%" {v=$2; u=v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v);
    if (u == "us") v /= 1000; else if (u == "s") v *= 1000; print v}' "$out")
}

# count LABEL FILE: sum of the summary rows starting with LABEL
count() {
  awk -v l="$1" 'substr($0, 1, 2) == "  " { line = $0; sub(/^ +/, "", line);
    if (index(line, l " ") == 1) { n = split(line, w, / +/); for (i = 1; i <= n; i++)
      if (w[i] ~ /^[0-9]+$/) { s += w[i]; break } } } END { print s + 0 }' "$2"
}

wrk_run off
base_rps=$rps
base_p99=$p99_ms
rows+=("| off | - | $(printf '%.0f' "$rps") | 1.00 | ${p99_ms} | 1.00 | - | - | - | - |")

for engine in ebpf pcap; do
  for pct in 100 10; do
    name="$engine-$pct"
    ip netns exec "$ns_p" "$bin" run --engine "$engine" --iface pc0 --port 8000 \
      --target http://127.0.0.1:9000 --percent "$pct" --drain-timeout 5s \
      >"$work/agent-$name.out" 2>"$work/agent-$name.err" &
    agent=$!
    for _ in $(seq 100); do
      grep -q -e 'eBPF classifier attached' -e 'libpcap capture open' "$work/agent-$name.err" && break
      kill -0 "$agent" 2>/dev/null || { cat "$work/agent-$name.err"; exit 1; }
      sleep 0.1
    done
    read -r -a stat_before < <(cut -d')' -f2- "/proc/$agent/stat")
    wrk_run "$name"
    # Copies still queued are part of the cost: let the agent catch up before sampling.
    sleep 1
    read -r -a stat_after < <(cut -d')' -f2- "/proc/$agent/stat")
    kill -INT "$agent"
    timeout 20 tail --pid="$agent" -f /dev/null || kill -9 "$agent"
    wait "$agent" || true
    # After the ")" split, utime and stime are fields 12 and 13 (stat fields 14, 15).
    ticks=$(( stat_after[11] + stat_after[12] - stat_before[11] - stat_before[12] ))
    cpu_us=$(awk -v t="$ticks" -v hz="$clk_tck" -v n="$reqs" 'BEGIN { printf "%.1f", t * 1e6 / hz / n }')
    summary="$work/agent-$name.out"
    replayed=$(count replayed "$summary")
    completeness=-
    if [ "$pct" = 100 ]; then
      completeness=$(awk -v a="$replayed" -v b="$reqs" 'BEGIN { printf "%.4f", a / b }')
    fi
    drops=""
    for reason in queue_full rate_limited incomplete too_large unparseable replay_error; do
      n=$(count "$reason" "$summary")
      [ "$n" -gt 0 ] && drops+="$reason=$n "
    done
    capture=$(grep '^capture' "$work/agent-$name.err" || true)
    kdrops=$(echo "$capture" | grep -oE '[0-9]+ (ring-buffer|kernel|interface) drops' | tr '\n' ' ')
    rows+=("| $engine | $pct% | $(printf '%.0f' "$rps") | $(awk -v a="$rps" -v b="$base_rps" 'BEGIN { printf "%.2f", a / b }') | ${p99_ms} | $(awk -v a="$p99_ms" -v b="$base_p99" 'BEGIN { printf "%.2f", a / b }') | $completeness ($replayed/$reqs) | ${drops:-none} | ${kdrops:-?} | $cpu_us |")
    echo "== $name" >&2
    grep -v '^ *$' "$summary" >&2 || true
    echo "$capture" >&2
  done
done

echo
echo "wrk -t2 -c$conns -d${secs}s over a veth; sink nginx on prod loopback; $(nproc) CPUs"
echo
echo "| agent | sample | req/s | req/s ÷ off | p99 ms | p99 ÷ off | completeness (replayed/served) | drops (summary) | capture drops | agent CPU-µs/req |"
echo "|---|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
