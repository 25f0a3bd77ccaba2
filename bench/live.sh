#!/usr/bin/env bash
# Benchmark of live shadowing (issue 4): a load generator in a `client` namespace drives
# nginx in a `prod` namespace over a veth pair; the agent runs in prod on that veth and
# shadows to a second nginx (the sink) on prod's loopback. Three parts:
#   1. wrk at its maximum rate, nothing pinned: eBPF at 0% (the capture path alone), 10%
#      and 100%, libpcap at 10% and 100%, and tcpdump alone as the reference. On 2 cores
#      the agent, the sink and the live service compete for the same CPUs. A second
#      reference, `copies-10`, runs no agent: h2load sends the sink as many requests as
#      the agent at 10% sends copies. It is what serving the copies costs this box,
#      whoever sends them (in a real deployment the target is another host).
#   2. wrk at its maximum rate with the CPUs split as a DaemonSet with a CPU limit would
#      be: prod nginx and wrk on CPU 0, the agent and the sink on CPU 1 (`taskset`), with
#      tcpdump, a busy loop and `copies-10` on CPU 1 (no agent) as references.
#   3. A fixed rate (h2load --rps, default 20,000 requests/s; the rate it achieved is
#      printed), unpinned and pinned: completeness at that rate.
# Parts 1 and 2 run each case in ROUNDS pairs (default 5) of an agent-off run and an
# agent-on run, back to back, in alternating order: this VM's speed drifts by 10-30%
# within seconds, so a run only compares with its neighbour. A row gives the median of
# the pairs' ratios and their range.
# For each case: throughput and p99 latency as ratios to agent-off, requests served (load
# generator), requests the agent saw, the accounting identity (outcomes add up to requests
# seen; the script fails when they do not), requests served but never seen, completeness
# (replayed / served, 100% runs), drops by reason, agent CPU-us per request served, and
# in part 3 for eBPF the classifier's own time in the kernel per request served
# (kernel.bpf_stats_enabled is on in part 3 only, as it slows every program run).
# Bounded: (8 + 7) x ROUNDS x 2 + 5 runs of SECONDS each (default 3), plus about two
# seconds of setup per run.
# Usage: [SHADOWTAP_BIN=path] [RATE=20000|0] [ROUNDS=5] [UNPINNED="case ..."]
#        [PINNED="case ..."] bench/live.sh [SECONDS] [CONNECTIONS]
# Needs .ci/setup (wrk, h2load, nginx) and root. Addresses 10.78.1.0/24 exist only inside
# the namespaces this script creates.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-3}
conns=${2:-32}
rate=${RATE:-20000}
ROUNDS=${ROUNDS:-5}
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
echo 0 >/proc/sys/kernel/bpf_stats_enabled

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

# place_nginx PIN: pinned, prod nginx on the live CPU and the sink on the agent's;
# otherwise both free to run anywhere.
place_nginx() {
  if [ "$1" = pinned ]; then
    pin_nginx prod "$live_cpu"
    pin_nginx sink "$agent_cpu"
  else
    pin_nginx prod "$all_cpus"
    pin_nginx sink "$all_cpus"
  fi
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
  seen=$(awk '/requests seen/ { for (i = 1; i <= NF; i++) if ($(i + 1) ~ /^requests?$/ && $(i + 2) == "seen") print $i }' "$1")
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

# case_start CASE PIN: starts what CASE runs beside the live service (the agent as
# ENGINE-PERCENT, `tcpdump`, or `busy`: a busy loop with no agent), pinned to the agent's
# CPU when PIN is pinned; sets $agent (its pid) and the counters read by case_stop.
case_start() {
  local case=$1 agent_pin=()
  [ "$2" = pinned ] && agent_pin=(taskset -c "$agent_cpu")
  agent_err="$work/case.err"
  agent_out="$work/case.out"
  : >"$agent_err"
  : >"$agent_out"
  case $case in
    tcpdump)
      ip netns exec "$ns_p" "${agent_pin[@]}" tcpdump -q -i pc0 -s 0 -w /dev/null 'tcp port 8000' \
        2>"$agent_err" &
      agent=$!
      for _ in $(seq 50); do
        grep -q 'listening on' "$agent_err" && break
        sleep 0.1
      done
      ;;
    busy)
      "${agent_pin[@]}" sh -c 'while :; do :; done' &
      agent=$!
      ;;
    copies-*)
      # What the copies alone cost this box: h2load in prod sends the sink as many
      # requests per second as the agent at that percent sent copies (the percent of
      # the median rate of the eBPF case at that percent, measured just before), one at
      # a time per connection, with no agent running.
      local per_conn
      per_conn=$(awk -v r="${case_rps[ebpf-${case#*-}]:-$last_off_rps}" -v p="${case#*-}" -v c="$conns" \
        'BEGIN { n = int(r * p / 100 / c + 0.5); print (n < 1) ? 1 : n }')
      ip netns exec "$ns_p" "${agent_pin[@]}" /usr/bin/time -f '%U %S' -o "$work/copies.time" \
        h2load --h1 -t1 -c"$conns" --rps "$per_conn" -D $((secs + 1)) http://127.0.0.1:9000/ \
        >"$agent_out" 2>"$agent_err" &
      agent=$!
      sleep 0.3
      ;;
    *)
      # `ebpfdiff-P`: eBPF at P% with the response comparison on (`--diff`: the
      # classifier also takes the server's answers, which are framed and paired).
      local engine=${case%-*} extra=()
      if [ "$engine" = ebpfdiff ]; then
        engine=ebpf
        extra=(--diff)
      fi
      ip netns exec "$ns_p" "${agent_pin[@]}" "$bin" run --engine "$engine" --iface pc0 \
        --port 8000 --target http://127.0.0.1:9000 --percent "${case#*-}" --drain-timeout 5s \
        "${extra[@]}" >"$agent_out" 2>"$agent_err" &
      agent=$!
      for _ in $(seq 100); do
        grep -q -e 'eBPF classifier attached' -e 'libpcap capture open' "$agent_err" && break
        kill -0 "$agent" 2>/dev/null || { cat "$agent_err"; exit 1; }
        sleep 0.1
      done
      ;;
  esac
  read -r -a stat_before < <(cut -d')' -f2- "/proc/$agent/stat")
  bpf_before=$(bpf_ns "$agent")
}

# case_stop CASE: lets the agent catch up with copies still queued (part of the cost),
# stops it, and adds what it did to the case totals (t_* variables, reset by case_reset).
case_stop() {
  local case=$1
  if [[ $case == copies-* ]]; then
    # h2load prints its counts only when it finishes. It runs SECONDS + 1 to cover the
    # load's SECONDS, so its requests and CPU are counted at SECONDS / (SECONDS + 1).
    wait "$agent"
    t_ticks=$((t_ticks + $(awk -v hz="$clk_tck" -v s="$secs" \
      '{ printf "%d", ($1 + $2) * hz * s / (s + 1) }' "$work/copies.time")))
    t_served=$((t_served + served))
    t_copies=$((t_copies + $(awk -v s="$secs" \
      '$1 == "requests:" { printf "%d", $8 * s / (s + 1) }' "$agent_out")))
    return
  fi
  bpf_after=$(bpf_ns "$agent")
  case $case in busy | tcpdump) ;; *) sleep 1 ;; esac
  read -r -a stat_after < <(cut -d')' -f2- "/proc/$agent/stat")
  # A command started with & in a script ignores SIGINT unless it sets its own handler
  # (the agent and tcpdump do; the busy loop's sh does not).
  if [ "$case" = busy ]; then kill -TERM "$agent"; else kill -INT "$agent"; fi
  timeout 20 tail --pid="$agent" -f /dev/null || kill -9 "$agent"
  wait "$agent" 2>/dev/null || true
  # After the ")" split, utime and stime are fields 12 and 13 (stat fields 14, 15).
  t_ticks=$((t_ticks + stat_after[11] + stat_after[12] - stat_before[11] - stat_before[12]))
  t_bpf=$((t_bpf + bpf_after - bpf_before))
  t_served=$((t_served + served))
  case $case in
    busy) return ;;
    tcpdump)
      local n
      n=$(grep -oE '[0-9]+ packets dropped by kernel' "$agent_err" | awk '{print $1}')
      t_cap[kernel]=$(( ${t_cap[kernel]:-0} + ${n:-0} ))
      return
      ;;
  esac
  outcomes "$agent_out"
  if [ -z "$seen" ] || [ "$total" != "$seen" ]; then
    t_identity_ok=0
    seen=${seen:-0}
  fi
  t_seen=$((t_seen + seen))
  t_total=$((t_total + total))
  # The load generator does not count requests still in flight when it stops (at most
  # one per connection); more served than seen beyond that were lost without a count.
  local unseen=$((served - seen))
  [ "$unseen" -lt 0 ] && unseen=0
  t_unseen=$((t_unseen + unseen))
  [ "$unseen" -gt "$conns" ] && t_lost=1
  t_replayed=$((t_replayed + $(count replayed "$agent_out")))
  local reason
  for reason in queue_full rate_limited incomplete too_large unparseable replay_error; do
    t_drops[$reason]=$(( ${t_drops[$reason]:-0} + $(count "$reason" "$agent_out") ))
  done
  local capture
  capture=$(grep '^capture' "$agent_err" || true)
  echo "== $case" >&2
  grep -v '^ *$' "$agent_out" >&2 || true
  echo "$capture" >&2
  # Summed over the runs, per kind: "N ring-buffer drops", "N kernel drops N interface drops".
  local n kind
  while read -r n kind _; do
    [ -n "$n" ] && t_cap[$kind]=$(( ${t_cap[$kind]:-0} + n ))
  done < <(echo "$capture" | grep -oE '[0-9]+ (ring-buffer|kernel|interface) drops' || true)
}

case_reset() {
  t_ticks=0 t_bpf=0 t_served=0 t_seen=0 t_total=0 t_unseen=0 t_lost=0 t_replayed=0 t_copies=0
  t_identity_ok=1
  declare -gA t_drops=() t_cap=()
}

# case_row LABEL CASE RATIO_CELL P99_CELL RPS: the table row of a case from its totals.
case_row() {
  local label=$1 case=$2 engine=$2 pct=- identity="-" unseen="-" completeness="-" drops="-"
  local cpu_us="-" bpf_per_req="-" served_cell=$t_served seen_cell="-"
  case $case in
    tcpdump) engine="tcpdump -w /dev/null (reference)" ;;
    busy) engine="busy loop on CPU $agent_cpu, no agent" ;;
    copies-*)
      pct="${case#*-}%"
      engine="h2load to the sink at the eBPF $pct case's copy rate, no agent (reference)"
      completeness="- ($t_copies sent during the load, $(awk -v a="$t_copies" -v b="$t_served" 'BEGIN { printf "%.1f", 100 * a / b }')% of served)"
      cpu_us=$(awk -v t="$t_ticks" -v hz="$clk_tck" -v n="$t_served" 'BEGIN { printf "%.2f", t * 1e6 / hz / n }')
      ;;
    *)
      engine=${case%-*} pct="${case#*-}%"
      seen_cell=$t_seen
      identity="$t_total = $t_seen"
      if [ "$t_identity_ok" != 1 ] || [ "$t_total" != "$t_seen" ]; then
        identity="**$t_total != $t_seen**"
        failed=1
      fi
      unseen=$t_unseen
      if [ "$t_lost" = 1 ]; then
        unseen="$t_unseen **lost**"
        failed=1
      fi
      completeness="- ($t_replayed)"
      [ "$pct" = 100% ] && completeness="$(ratio "$t_replayed" "$t_served") ($t_replayed)"
      drops=""
      local reason
      for reason in queue_full rate_limited incomplete too_large unparseable replay_error; do
        [ "${t_drops[$reason]:-0}" -gt 0 ] && drops+="$reason=${t_drops[$reason]} "
      done
      drops=${drops:-none}
      cpu_us=$(awk -v t="$t_ticks" -v hz="$clk_tck" -v n="$t_served" 'BEGIN { printf "%.2f", t * 1e6 / hz / n }')
      [ "$engine" = ebpfdiff ] && engine="ebpf --diff"
      [[ $engine == ebpf* ]] && [ "$t_bpf" -gt 0 ] &&
        bpf_per_req=$(awk -v a="$t_bpf" -v n="$t_served" 'BEGIN { printf "%.0f", a / n }')
      ;;
  esac
  local capture="" kind
  for kind in ring-buffer kernel interface; do
    [ -n "${t_cap[$kind]:-}" ] && capture+="${t_cap[$kind]} $kind drops "
  done
  rows+=("| $label | $engine | $pct | $5 | $3 | $4 | $served_cell | $seen_cell | $identity | $unseen | $completeness | $drops | ${capture:--} | $cpu_us | $bpf_per_req |")
}

# stats V...: "median (min-max)" of the values.
stats() {
  printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
    m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    printf "%.3f (%.2f-%.2f)", m, v[1], v[NR] }'
}

# max_part PIN: for each case in CASES, ROUNDS pairs of wrk runs at its maximum rate,
# one with the case running and one without, back to back and in alternating order
# (this VM's speed drifts by 10-30% over seconds, so only neighbours compare). The row
# gives the median of the per-pair ratios with their range, the summed accounting, and
# the agent's CPU over all its runs.
max_part() {
  local pin=$1 label="wrk max, $1" case r
  place_nginx "$pin"
  local off_all=()
  declare -gA case_rps=()
  for case in "${CASES[@]}"; do
    case_reset
    local ratios=() p99s=() on_rps=()
    for r in $(seq "$ROUNDS"); do
      local off_rps off_p99
      if [ $((r % 2)) = 1 ]; then
        load max "$pin" off
        off_rps=$rps off_p99=$p99_ms last_off_rps=$rps
      fi
      case_start "$case" "$pin"
      load max "$pin" "$case"
      case_stop "$case"
      if [ $((r % 2)) = 0 ]; then
        local on=$rps on_p99=$p99_ms
        load max "$pin" off
        off_rps=$rps off_p99=$p99_ms last_off_rps=$rps
        rps=$on p99_ms=$on_p99
      fi
      ratios+=("$(ratio "$rps" "$off_rps")")
      p99s+=("$(ratio "$p99_ms" "$off_p99")")
      on_rps+=("$rps")
      off_all+=("$off_rps")
    done
    case_rps[$case]=$(stats "${on_rps[@]}" | awk '{printf "%.0f", $1}')
    case_row "$label" "$case" "$(stats "${ratios[@]}")" "$(stats "${p99s[@]}")" "${case_rps[$case]}"
  done
  rows+=("| $label | off (all pairs) | - | $(printf '%s\n' "${off_all[@]}" | sort -g | awk '{ v[NR] = $1 } END {
    printf "%.0f (%.0f-%.0f)", v[int((NR + 1) / 2)], v[1], v[NR] }') | 1 | - | - | - | - | - | - | - | - | - | - |")
}

# rate_part PIN: h2load at RATE requests/s for SECONDS, agent off then each case in
# CASES once: completeness at that rate. kernel.bpf_stats_enabled is on here only (it
# costs every program run two clock reads), for the classifier's ns per request.
rate_part() {
  local pin=$1 label="h2load ${rate}/s, $1" case
  place_nginx "$pin"
  load rate "$pin" off
  rows+=("| $label | off | - | $(printf '%.0f' "$rps") | 1.00 | 1.00 (p99 $p99_ms ms) | $served | - | - | - | - | - | - | - | - |")
  local base_rps=$rps base_p99=$p99_ms
  echo 1 >/proc/sys/kernel/bpf_stats_enabled
  for case in "${CASES[@]}"; do
    case_reset
    case_start "$case" "$pin"
    load rate "$pin" "$case"
    case_stop "$case"
    case_row "$label" "$case" "$(ratio "$rps" "$base_rps")" "$(ratio "$p99_ms" "$base_p99")" \
      "$(printf '%.0f' "$rps")"
  done
  echo 0 >/proc/sys/kernel/bpf_stats_enabled
}

# The 0% rows are the capture path alone (classifier, reassembly, framing; nothing sent).
# UNPINNED and PINNED (space-separated cases) narrow parts 1 and 2 to fewer cases, for
# more ROUNDS of the ones that matter in the same time; an empty one skips its part.
# RATE=0 skips part 3.
read -ra CASES <<<"${UNPINNED-ebpf-0 ebpf-10 ebpfdiff-10 copies-10 ebpf-100 pcap-10 pcap-100 tcpdump}"
if [ ${#CASES[@]} -gt 0 ]; then max_part unpinned; fi
read -ra CASES <<<"${PINNED-ebpf-0 ebpf-10 copies-10 ebpf-100 pcap-100 tcpdump busy}"
if [ ${#CASES[@]} -gt 0 ]; then max_part pinned; fi
if [ "$rate" != 0 ]; then
  CASES=(ebpf-100 pcap-100)
  rate_part unpinned
  CASES=(ebpf-100)
  rate_part pinned
fi

echo
echo "wrk -t2 -c$conns -d${secs}s / h2load --h1 -c$conns --rps (total $rate/s) -D $secs over a veth;"
echo "sink nginx on prod loopback; $ncpu CPUs; pinned: prod nginx + load on CPU $live_cpu, agent + sink on CPU $agent_cpu"
echo
echo "$ROUNDS pairs per case in the wrk rows; sums over the agent's runs in served, seen and what follows"
echo
echo "| load, CPUs | agent | sample | req/s (median) | ÷ off: median (range) | p99 ÷ off | served | seen | outcomes = seen | served, not seen | completeness (replayed) | drops (summary) | capture drops | agent CPU-µs/req | classifier ns/req |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
if [ "$failed" != 0 ]; then
  echo "bench/live.sh: accounting check failed (outcomes != seen, or requests lost uncounted)" >&2
  exit 1
fi
