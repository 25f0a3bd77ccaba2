#!/usr/bin/env bash
# Benchmark of live shadowing over HTTP/2 cleartext (h2c, prior knowledge), the shape of
# bench/live.sh: h2load in a `client` namespace drives nginx's h2c listener in a `prod`
# namespace over a veth pair (many streams per connection: -c CONNECTIONS -m STREAMS);
# the agent runs in prod on that veth and shadows to a second nginx h2c listener (the
# sink) on prod's loopback, which logs each copy it receives (buffered access log), so
# the copies are counted where they arrive. Two parts, in the same run:
#   1. h2load at its maximum rate: the agent off, eBPF at 10%, eBPF at 100%, and tcpdump
#      (-w /dev/null) alone as the reference. Each case runs in ROUNDS pairs (default 3)
#      of an agent-off and an agent-on run, back to back in alternating order (this VM's
#      speed drifts within seconds, so a run only compares with its neighbour); a row
#      gives the median of the pairs' ratios and their range.
#   2. A fixed rate (h2load --rps, default RATE=20000 requests/s over the connections):
#      off, then eBPF at 100%: copy completeness at that rate (goal: every copy).
# For each case: requests/s and the ratio to agent-off (goal: >= 0.95 at 10% and 100%),
# requests served (h2load succeeded), requests the agent saw, requests sampled (seen
# minus not_sampled), copies received by the sink, completeness (copies received /
# requests sampled), the agent's (or tcpdump's) CPU-us per request served and per copy
# (utime + stime from /proc/PID/stat over the run, including the drain after the load).
# Until the agent frames HTTP/2, it sees 0 requests here: the rows say so (seen 0,
# completeness -), and the script still measures the capture path's cost.
# Bounded: 3 cases x ROUNDS x 2 + 2 runs of SECONDS each (default 3), plus about three
# seconds of setup and drain per run.
# Usage: [SHADOWTAP_BIN=path] [RATE=20000|0] [ROUNDS=3] [STREAMS=16]
#        bench/h2c.sh [SECONDS] [CONNECTIONS]
# Needs .ci/setup (h2load, nginx with the http_v2 module, tcpdump) and root. Addresses
# 10.79.1.0/24 exist only inside the namespaces this script creates.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-3}
conns=${2:-8}
streams=${STREAMS:-16}
rate=${RATE:-20000}
ROUNDS=${ROUNDS:-3}
if [ -z "${SHADOWTAP_BIN:-}" ]; then
  cargo build --release -q -p shadowtap
fi
bin=${SHADOWTAP_BIN:-$PWD/target/release/shadowtap}
for tool in h2load nginx tcpdump curl; do
  command -v "$tool" >/dev/null || { echo "bench/h2c.sh: $tool missing (run .ci/setup)" >&2; exit 1; }
done

# shellcheck source=scripts/lib/netns.sh
. scripts/lib/netns.sh
netns_setup sth2 10.79.1

# `listen ... http2` (cleartext: prior knowledge) before nginx 1.25.1, `http2 on` after.
nginx_version=$(nginx -v 2>&1 | sed -n 's|.*nginx/\([0-9.]*\).*|\1|p')
if [ "$(printf '%s\n1.25.1\n' "$nginx_version" | sort -V | head -n1)" = 1.25.1 ]; then
  h2_listen() { printf 'listen %s;\n    http2 on;' "$1"; }
else
  h2_listen() { printf 'listen %s http2;' "$1"; }
fi

# h2c_conf NAME LISTEN LOG: $work/NAME/nginx.conf, one worker answering 200 on LISTEN
# over h2c; LOG is `off` or a file for one line per request (buffered, flushed each s).
h2c_conf() {
  local log="off"
  [ "$3" != off ] && log="$3 copies buffer=64k flush=1s"
  mkdir -p "$work/$1"
  cat >"$work/$1/nginx.conf" <<NGX
worker_processes 1;
pid $work/$1/nginx.pid;
error_log $work/$1/error.log;
events { worker_connections 4096; }
http {
  log_format copies '\$http_host \$request_uri';
  access_log $log;
  client_body_temp_path $work/$1/body;
  proxy_temp_path $work/$1/proxy;
  fastcgi_temp_path $work/$1/fcgi;
  uwsgi_temp_path $work/$1/uwsgi;
  scgi_temp_path $work/$1/scgi;
  keepalive_requests 10000000;
  http2_max_concurrent_streams 256;
  server {
    $(h2_listen "$2")
    location / { return 200 "ok\n"; }
  }
}
NGX
}

sink_log=$work/sink/copies.log
h2c_conf prod 10.79.1.1:8000 off
h2c_conf sink 127.0.0.1:9000 "$sink_log"
nginx_start prod
nginx_start sink
for _ in $(seq 50); do
  ip netns exec "$ns_c" curl -s -o /dev/null --max-time 1 --http2-prior-knowledge \
    http://10.79.1.1:8000/ && break
  sleep 0.1
done

clk_tck=$(getconf CLK_TCK)
rows=()

# load KIND NAME -> sets rps, served. KIND: max (as fast as it goes) or rate (RATE/s).
load() {
  local out="$work/load-$2.txt" extra=()
  if [ "$1" = rate ]; then
    extra=(--rps "$(( (rate + conns - 1) / conns ))")
  fi
  timeout $((secs + 30)) ip netns exec "$ns_c" h2load -t1 -c"$conns" -m"$streams" \
    "${extra[@]}" -D "$secs" -H ':authority: h2c-bench.example:8000' \
    "http://10.79.1.1:8000/$2" >"$out"
  served=$(awk '$1 == "requests:" {print $8}' "$out")
  rps=$(awk -v n="$served" -v s="$secs" 'BEGIN { printf "%.0f", n / s }')
}

# count LABEL FILE: sum of the summary rows starting with LABEL (as bench/live.sh).
count() {
  awk -v l="$1" 'substr($0, 1, 2) == "  " { line = $0; sub(/^ +/, "", line);
    if (index(line, l " ") == 1) { n = split(line, w, / +/); for (i = 1; i <= n; i++)
      if (w[i] ~ /^[0-9]+$/) { s += w[i]; break } } } END { print s + 0 }' "$2"
}

seen_of() {
  awk '/requests seen/ { for (i = 1; i <= NF; i++) if ($(i + 1) ~ /^requests?$/ && $(i + 2) == "seen") print $i }' "$1"
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
per() { awk -v t="$1" -v hz="$clk_tck" -v n="$2" 'BEGIN { if (n > 0) printf "%.2f", t * 1e6 / hz / n; else print "-" }'; }

# case_start CASE: starts tcpdump or the agent (ENGINE-PERCENT) in prod; sets $agent.
case_start() {
  agent_err="$work/case.err" agent_out="$work/case.out"
  : >"$agent_err"
  : >"$agent_out"
  : >"$sink_log"
  case $1 in
    tcpdump)
      ip netns exec "$ns_p" tcpdump -q -i pc0 -s 0 -w /dev/null 'tcp port 8000' 2>"$agent_err" &
      agent=$!
      for _ in $(seq 50); do
        grep -q 'listening on' "$agent_err" && break
        sleep 0.1
      done
      ;;
    *)
      ip netns exec "$ns_p" "$bin" run --engine "${1%-*}" --iface pc0 --port 8000 \
        --target http://127.0.0.1:9000 --percent "${1#*-}" --drain-timeout 5s \
        >"$agent_out" 2>"$agent_err" &
      agent=$!
      for _ in $(seq 100); do
        grep -q -e 'eBPF classifier attached' -e 'libpcap capture open' "$agent_err" && break
        kill -0 "$agent" 2>/dev/null || { cat "$agent_err"; exit 1; }
        sleep 0.1
      done
      ;;
  esac
  read -r -a stat_before < <(cut -d')' -f2- "/proc/$agent/stat")
}

# case_stop CASE: lets the agent send what is queued (part of its cost), stops it, adds
# its CPU ticks, requests seen and sampled, and the copies the sink logged to t_*.
case_stop() {
  [ "$1" != tcpdump ] && sleep 1
  read -r -a stat_after < <(cut -d')' -f2- "/proc/$agent/stat")
  kill -INT "$agent"
  timeout 20 tail --pid="$agent" -f /dev/null || kill -9 "$agent"
  wait "$agent" 2>/dev/null || true
  t_ticks=$((t_ticks + stat_after[11] + stat_after[12] - stat_before[11] - stat_before[12]))
  t_served=$((t_served + served))
  [ "$1" = tcpdump ] && return
  # The sink's access log is flushed every second.
  sleep 1.2
  local seen not_sampled
  seen=$(seen_of "$agent_out")
  seen=${seen:-0}
  not_sampled=$(count not_sampled "$agent_out")
  t_seen=$((t_seen + seen))
  t_sampled=$((t_sampled + seen - not_sampled))
  t_copies=$((t_copies + $(wc -l <"$sink_log")))
  # Copies that did not arrive with the -shadow authority count as not delivered.
  t_wrong=$((t_wrong + $(grep -vc '^h2c-bench.example-shadow:8000 ' "$sink_log" || true)))
  echo "== $1" >&2
  grep -v '^ *$' "$agent_out" >&2 || true
  grep '^capture' "$agent_err" >&2 || true
}

case_reset() { t_ticks=0 t_served=0 t_seen=0 t_sampled=0 t_copies=0 t_wrong=0; }

# case_row LABEL CASE RPS RATIO_CELL
case_row() {
  local label=$1 case=$2 pct=- seen="-" sampled="-" copies="-" completeness="-" per_copy="-"
  if [ "$case" != tcpdump ]; then
    pct="${case#*-}%"
    seen=$t_seen sampled=$t_sampled
    copies=$t_copies
    [ "$t_wrong" -gt 0 ] && copies="$t_copies ($t_wrong without -shadow)"
    completeness=$(ratio "$((t_copies - t_wrong))" "$t_sampled")
    per_copy=$(per "$t_ticks" "$t_copies")
  fi
  rows+=("| $label | $case | $pct | $3 | $4 | $t_served | $seen | $sampled | $copies | $completeness | $(per "$t_ticks" "$t_served") | $per_copy |")
}

stats() {
  printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
    m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    printf "%.3f (%.2f-%.2f)", m, v[1], v[NR] }'
}

# Part 1: maximum rate, ROUNDS alternating off/on pairs per case.
label="h2load max, -c$conns -m$streams"
off_all=()
declare -A median_ratio=()
for case in ebpf-10 ebpf-100 tcpdump; do
  case_reset
  ratios=() on_rps=()
  for r in $(seq "$ROUNDS"); do
    if [ $((r % 2)) = 1 ]; then
      load max off
      off_rps=$rps
    fi
    case_start "$case"
    load max "$case"
    case_stop "$case"
    on=$rps
    if [ $((r % 2)) = 0 ]; then
      load max off
      off_rps=$rps
    fi
    ratios+=("$(ratio "$on" "$off_rps")")
    on_rps+=("$on")
    off_all+=("$off_rps")
  done
  case_row "$label" "$case" "$(stats "${on_rps[@]}" | awk '{printf "%.0f", $1}')" "$(stats "${ratios[@]}")"
  median_ratio[$case]=$(stats "${ratios[@]}" | awk '{print $1}')
done
rows+=("| $label | off (all pairs) | - | $(printf '%s\n' "${off_all[@]}" | sort -g | awk '{ v[NR] = $1 } END {
  printf "%.0f (%.0f-%.0f)", v[int((NR + 1) / 2)], v[1], v[NR] }') | 1 | - | - | - | - | - | - | - |")

# Part 2: a fixed rate, agent off then eBPF at 100%.
if [ "$rate" != 0 ]; then
  label="h2load ${rate}/s, -c$conns -m$streams"
  load rate off
  base=$rps
  rows+=("| $label | off | - | $rps | 1.00 | $served | - | - | - | - | - | - |")
  case_reset
  case_start ebpf-100
  load rate ebpf-100
  case_stop ebpf-100
  case_row "$label" ebpf-100 "$rps" "$(ratio "$rps" "$base")"
  rate_complete="$t_copies of $t_sampled sampled ($((t_copies - t_wrong)) with the -shadow authority)"
  rate_met=$([ "$t_sampled" -gt 0 ] && [ "$((t_copies - t_wrong))" = "$t_sampled" ] \
    && [ "$t_seen" -ge "$t_served" ] && echo yes || echo no)
fi

echo
echo "h2load -t1 -c$conns -m$streams -D ${secs}s (h2c prior knowledge) over a veth; sink nginx h2c on prod loopback; $(nproc) CPUs, unpinned"
echo "$ROUNDS pairs per case at the maximum rate; served, seen and what follows are sums over the case's runs"
echo
echo "| load | case | sample | req/s (median) | ÷ off: median (range) | served | seen | sampled | copies at sink | completeness (copies ÷ sampled) | CPU-µs/req | CPU-µs/copy |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
echo
# Goals (issue text): >= 0.95 of agent-off at 10% and at 100%; every copy delivered at RATE/s.
for case in ebpf-10 ebpf-100; do
  echo "goal $case >= 0.95 of off: $(awk -v r="${median_ratio[$case]}" 'BEGIN { print (r >= 0.95) ? "met" : "not met" }') (median ${median_ratio[$case]})"
done
if [ "$rate" != 0 ]; then
  echo "goal every copy delivered at ${rate}/s (eBPF 100%): $([ "$rate_met" = yes ] && echo met || echo "not met") ($rate_complete; $t_seen seen of $t_served served)"
fi
