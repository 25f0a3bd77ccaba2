#!/usr/bin/env bash
# Benchmark of live shadowing (issue 4): a load generator in a `client` namespace drives
# nginx in a `prod` namespace over a veth pair; the agent runs in prod on that veth and
# shadows to a second nginx (the sink) on prod's loopback. Three parts, each with its own
# agent-off reference run:
#   1. wrk at its maximum rate, nothing pinned: agent off, eBPF and libpcap at 100% and 10%.
#      On 2 cores the agent, the sink and the live service compete for the same CPUs.
#   2. wrk at its maximum rate with the CPUs split as a DaemonSet with a CPU limit would
#      be: prod nginx and wrk on CPU 0, the agent and the sink on CPU 1 (`taskset`).
#   3. A fixed rate (h2load --rps, default 20,000 requests/s; the rate it achieved is
#      printed), unpinned and pinned: completeness at that rate.
# For each run: throughput and p99 latency as ratios to agent-off, requests served (load
# generator), requests the agent saw, the accounting identity (outcomes add up to requests
# seen; the script fails when they do not), requests served but never seen, completeness
# (replayed / served, 100% runs), drops by reason, agent CPU-us per request served, and
# for eBPF the classifier's own time in the kernel per request served (kernel.bpf_stats_enabled
# is on during the run; the classifier runs on the CPU that carries the live packets).
# Bounded: 19 runs of SECONDS each (default 5) plus a few seconds of setup per run.
# Usage: [SHADOWTAP_BIN=path] [RATE=20000] bench/live.sh [SECONDS] [CONNECTIONS]
# Needs .ci/setup (wrk, h2load, nginx) and root. Addresses 10.78.1.0/24 exist only inside
# the namespaces this script creates.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
conns=${2:-32}
rate=${RATE:-20000}
# SHADOWTAP_BIN skips the build (e.g. while cargo is busy with something else).
if [ -z "${SHADOWTAP_BIN:-}" ]; then
  cargo build --release -q -p shadowtap
fi
bin=${SHADOWTAP_BIN:-$PWD/target/release/shadowtap}
for tool in wrk h2load nginx taskset bpftool jq tcpdump; do
  command -v "$tool" >/dev/null || { echo "bench/live.sh: $tool missing (run .ci/setup)" >&2; exit 1; }
done
ncpu=$(nproc)
# Pinned runs put the live service on the first CPU and the agent on the last.
live_cpu=0
agent_cpu=$((ncpu - 1))

bpf_stats_was=$(cat /proc/sys/kernel/bpf_stats_enabled)
# shellcheck source=scripts/lib/netns.sh
. scripts/lib/netns.sh
netns_on_exit='echo "$bpf_stats_was" >/proc/sys/kernel/bpf_stats_enabled'
netns_setup stb 10.78.1
echo 1 >/proc/sys/kernel/bpf_stats_enabled

# prod on the veth address, the sink on loopback (not watched by the agent): two nginx
# instances, so that pinned runs can put them on different CPUs.
nginx_conf prod 10.78.1.1:8000 ok
nginx_conf sink 127.0.0.1:9000 sunk
nginx_start prod
nginx_start sink
wait_http http://10.78.1.1:8000/

# pin_nginx NAME CPUS: moves an nginx instance (master and workers) to CPUS.
pin_nginx() {
  local master
  master=$(cat "$work/$1/nginx.pid")
  for pid in "$master" $(ps --ppid "$master" -o pid=); do
    taskset -a -p -c "$2" "$pid" >/dev/null
  done
}

clk_tck=$(getconf CLK_TCK)
all_cpus="0-$((ncpu - 1))"
rows=()
failed=0

# load KIND PIN NAME -> sets rps, p99_ms, served. KIND: max (wrk) or rate (h2load --rps).
load() {
  local out="$work/load-$3.txt" pin=()
  [ "$2" = pinned ] && pin=(taskset -c "$live_cpu")
  if [ "$1" = max ]; then
    timeout $((secs + 20)) ip netns exec "$ns_c" "${pin[@]}" \
      wrk -t2 -c"$conns" -d"${secs}s" --latency http://10.78.1.1:8000/ >"$out"
    rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
    served=$(awk '/requests in/ {print $1}' "$out")
    # wrk prints p99 as e.g. 1.23ms, 850.00us or 1.02s.
    p99_ms=$(awk '$1 == "99%" {v=$2; u=v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v);
      if (u == "us") v /= 1000; else if (u == "s") v *= 1000; print v}' "$out")
  else
    # h2load paces each connection at rate/conns requests/s, one request at a time
    # (no pipelining); a connection that falls behind shows as a lower achieved rate.
    local per_conn=$(( (rate + conns - 1) / conns ))
    timeout $((secs + 20)) ip netns exec "$ns_c" "${pin[@]}" \
      h2load --h1 -t1 -c"$conns" --rps "$per_conn" -D "$secs" \
      --log-file "$work/h2load-$3.log" http://10.78.1.1:8000/ >"$out"
    served=$(awk '$1 == "requests:" {print $8}' "$out")
    rps=$(awk -v n="$served" -v s="$secs" 'BEGIN { printf "%.0f", n / s }')
    # Per-request log: start (us), status, duration (us).
    p99_ms=$(cut -f3 "$work/h2load-$3.log" | sort -n |
      awk '{ v[NR] = $1 } END { i = int(NR * 0.99); if (i < 1) i = 1; printf "%.2f", v[i] / 1000 }')
  fi
}

# outcomes FILE -> sets seen, total: requests seen by the agent and the sum of every
# outcome row of the summary (one target).
outcomes() {
  seen=$(awk '/requests seen/ { for (i = 1; i <= NF; i++) if ($(i + 1) == "requests" && $(i + 2) == "seen,") print $i }' "$1")
  total=$(awk 'substr($0, 1, 2) == "  " && $1 != "total" { for (i = 1; i <= NF; i++)
    if ($i ~ /^[0-9]+$/) { s += $i; break } } END { print s + 0 }' "$1")
}

# count LABEL FILE: sum of the summary rows starting with LABEL
count() {
  awk -v l="$1" 'substr($0, 1, 2) == "  " { line = $0; sub(/^ +/, "", line);
    if (index(line, l " ") == 1) { n = split(line, w, / +/); for (i = 1; i <= n; i++)
      if (w[i] ~ /^[0-9]+$/) { s += w[i]; break } } } END { print s + 0 }' "$2"
}

# bpf_ns PID: nanoseconds the eBPF programs held open by PID have run so far.
bpf_ns() {
  local total=0 id n
  for id in $(grep -h '^prog_id:' /proc/"$1"/fdinfo/* 2>/dev/null | awk '{print $2}' | sort -u); do
    n=$(bpftool -j prog show id "$id" | jq '.run_time_ns // 0')
    total=$((total + n))
  done
  echo "$total"
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }

# part KIND PIN: the agent-off reference, then each engine/percentage in CASES.
part() {
  local kind=$1 pin=$2
  local label="$kind, $pin"
  [ "$kind" = max ] && label="wrk max, $pin" || label="h2load ${rate}/s, $pin"
  if [ "$pin" = pinned ]; then
    pin_nginx prod "$live_cpu"
    pin_nginx sink "$agent_cpu"
  else
    pin_nginx prod "$all_cpus"
    pin_nginx sink "$all_cpus"
  fi
  load "$kind" "$pin" "$kind-$pin-off"
  local base_rps=$rps base_p99=$p99_ms
  part_off_rps=$rps
  [ "$kind-$pin" = max-pinned ] && pinned_off_rps=$rps
  rows+=("| $label | off | - | $(printf '%.0f' "$rps") | 1.00 | $p99_ms | 1.00 | $served | - | - | - | - | - | - | - | - |")
  for case in "${CASES[@]}"; do
    local engine=${case%-*} pct=${case#*-}
    local name="$kind-$pin-$case" agent_pin=()
    [ "$pin" = pinned ] && agent_pin=(taskset -c "$agent_cpu")
    ip netns exec "$ns_p" "${agent_pin[@]}" "$bin" run --engine "$engine" --iface pc0 \
      --port 8000 --target http://127.0.0.1:9000 --percent "$pct" --drain-timeout 5s \
      >"$work/agent-$name.out" 2>"$work/agent-$name.err" &
    local agent=$!
    for _ in $(seq 100); do
      grep -q -e 'eBPF classifier attached' -e 'libpcap capture open' "$work/agent-$name.err" && break
      kill -0 "$agent" 2>/dev/null || { cat "$work/agent-$name.err"; exit 1; }
      sleep 0.1
    done
    local stat_before stat_after
    read -r -a stat_before < <(cut -d')' -f2- "/proc/$agent/stat")
    local bpf_before bpf_after
    bpf_before=$(bpf_ns "$agent")
    load "$kind" "$pin" "$name"
    bpf_after=$(bpf_ns "$agent")
    # Copies still queued are part of the cost: let the agent catch up before sampling.
    sleep 1
    read -r -a stat_after < <(cut -d')' -f2- "/proc/$agent/stat")
    kill -INT "$agent"
    timeout 20 tail --pid="$agent" -f /dev/null || kill -9 "$agent"
    wait "$agent" || true
    # After the ")" split, utime and stime are fields 12 and 13 (stat fields 14, 15).
    local ticks=$((stat_after[11] + stat_after[12] - stat_before[11] - stat_before[12]))
    local cpu_us
    cpu_us=$(awk -v t="$ticks" -v hz="$clk_tck" -v n="$served" 'BEGIN { printf "%.1f", t * 1e6 / hz / n }')
    local bpf_per_req=-
    if [ "$engine" = ebpf ]; then
      bpf_per_req=$(awk -v a="$bpf_after" -v b="$bpf_before" -v n="$served" 'BEGIN { printf "%.0f", (a - b) / n }')
    fi
    local summary="$work/agent-$name.out"
    outcomes "$summary"
    local identity="$total = $seen"
    if [ -z "$seen" ] || [ "$total" != "$seen" ]; then
      identity="**$total != ${seen:-?}**"
      failed=1
    fi
    # The load generator does not count requests still in flight when it stops (at most
    # one per connection); more served than seen beyond that were lost without a count.
    local unseen=$((served - seen)) lost=""
    [ "$unseen" -lt 0 ] && unseen=0
    if [ "$unseen" -gt "$conns" ]; then
      lost=" **lost**"
      failed=1
    fi
    local replayed completeness=-
    replayed=$(count replayed "$summary")
    if [ "$pct" = 100 ]; then
      completeness=$(awk -v a="$replayed" -v b="$served" 'BEGIN { printf "%.4f", a / b }')
    fi
    local drops=""
    for reason in queue_full rate_limited incomplete too_large unparseable replay_error; do
      local n
      n=$(count "$reason" "$summary")
      [ "$n" -gt 0 ] && drops+="$reason=$n "
    done
    local capture kdrops
    capture=$(grep '^capture' "$work/agent-$name.err" || true)
    kdrops=$(echo "$capture" | grep -oE '[0-9]+ (ring-buffer|kernel|interface) drops' | tr '\n' ' ')
    rows+=("| $label | $engine | $pct% | $(printf '%.0f' "$rps") | $(ratio "$rps" "$base_rps") | $p99_ms | $(ratio "$p99_ms" "$base_p99") | $served | $seen | $identity | $unseen$lost | $completeness ($replayed) | ${drops:-none} | ${kdrops:-?} | $cpu_us | $bpf_per_req |")
    echo "== $name" >&2
    grep -v '^ *$' "$summary" >&2 || true
    echo "$capture" >&2
  done
}

# tcpdump_ref PIN: the reference the issue names, tcpdump alone on the same veth writing
# to /dev/null (pinned: on the agent's CPU), against the agent-off run just before it.
tcpdump_ref() {
  local pin=() base_rps=$part_off_rps
  [ "$1" = pinned ] && pin=(taskset -c "$agent_cpu")
  ip netns exec "$ns_p" "${pin[@]}" tcpdump -q -i pc0 -s 0 -w /dev/null 'tcp port 8000' \
    2>"$work/tcpdump-$1.err" &
  local td=$!
  for _ in $(seq 50); do
    grep -q 'listening on' "$work/tcpdump-$1.err" && break
    sleep 0.1
  done
  load max "$1" "max-$1-tcpdump"
  kill -INT "$td"
  wait "$td" || true
  local tdrops
  tdrops=$(grep -oE '[0-9]+ packets dropped by kernel' "$work/tcpdump-$1.err" | awk '{print $1}')
  rows+=("| wrk max, $1 | tcpdump -w /dev/null (reference) | - | $(printf '%.0f' "$rps") | $(ratio "$rps" "$base_rps") | $p99_ms | - | $served | - | - | - | - | - | ${tdrops:-?} kernel drops | - | - |")
}

# The 0% rows are the capture path alone (classifier, reassembly, framing; nothing sent).
CASES=(ebpf-100 ebpf-10 ebpf-0 pcap-100 pcap-10)
part max unpinned
tcpdump_ref unpinned
CASES=(ebpf-100 ebpf-10 ebpf-0 pcap-100)
part max pinned
tcpdump_ref pinned
# Reference for the pinned runs: no agent, a busy loop on the agent's CPU. What it costs
# the live CPU is what any work on the other CPU costs on this machine (shared host cores).
pin_nginx prod "$live_cpu"
taskset -c "$agent_cpu" sh -c 'while :; do :; done' &
burner=$!
load max pinned max-pinned-burner
kill "$burner"
rows+=("| wrk max, pinned | busy loop on CPU $agent_cpu, no agent | - | $(printf '%.0f' "$rps") | $(ratio "$rps" "$pinned_off_rps") | $p99_ms | - | $served | - | - | - | - | - | - | - | - |")
CASES=(ebpf-100 pcap-100)
part rate unpinned
CASES=(ebpf-100)
part rate pinned

echo
echo "wrk -t2 -c$conns -d${secs}s / h2load --h1 -c$conns --rps (total $rate/s) -D $secs over a veth;"
echo "sink nginx on prod loopback; $ncpu CPUs; pinned: prod nginx + load on CPU $live_cpu, agent + sink on CPU $agent_cpu"
echo
echo "| load, CPUs | agent | sample | req/s | ÷ off | p99 ms | ÷ off | served | seen | outcomes = seen | served, not seen | completeness (replayed) | drops (summary) | capture drops | agent CPU-µs/req | classifier ns/req |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
if [ "$failed" != 0 ]; then
  echo "bench/live.sh: accounting check failed (outcomes != seen, or requests lost uncounted)" >&2
  exit 1
fi
