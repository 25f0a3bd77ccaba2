#!/usr/bin/env bash
# Builds the shadowtap container image here, without pulling a base image (buildah, FROM
# scratch: the binary plus the shared libraries `ldd` lists), and runs it the way the
# README and deploy/ run it: podman, --cap-drop=ALL plus only the capabilities the README
# lists for the eBPF engine (BPF, NET_ADMIN, PERFMON), in a network namespace with a real
# server (nginx) and a stage server. Checks that the copies arrive at the stage server,
# and that with one capability fewer the agent exits non-zero naming what it lacks.
#
# Usage: scripts/test-image.sh [BINARY]  (default: $SHADOWTAP_BIN or target/debug/shadowtap)
# Needs root, podman, buildah, nginx, curl, python3. Under CI=true a missing tool fails.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${1:-${SHADOWTAP_BIN:-$PWD/target/debug/shadowtap}}
image=localhost/shadowtap:image-test
ns=shadowtap-img-$$
work=$(mktemp -d /tmp/shadowtap-image.XXXXXX)

fail() { echo "test-image: FAIL: $*" >&2; exit 1; }
skip_or_fail() {
  if [ "${CI:-}" = true ]; then fail "cannot run on CI: $*"; fi
  echo "test-image: SKIP: $*"; exit 0
}

[ "$(id -u)" = 0 ] || skip_or_fail "not root (network namespaces and podman need it)"
for tool in podman buildah nginx curl python3 ip ldd; do
  command -v "$tool" >/dev/null 2>&1 || skip_or_fail "$tool is not installed (.ci/setup installs it)"
done
[ -x "$bin" ] || fail "no binary at $bin (cargo build -p shadowtap first)"

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  local name
  for name in ok no-BPF no-NET_ADMIN no-PERFMON; do
    podman --runtime runc rm -f "shadowtap-img-$name-$$" >/dev/null 2>&1 || true
  done
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "== image: rootfs from $bin"
root=$work/rootfs
install -D -m 0755 "$bin" "$root/usr/local/bin/shadowtap"
# Every library the dynamic loader resolves (libpcap and what it pulls in, libc) and the
# loader itself, at the paths the binary names.
ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | sort -u | while read -r lib; do
  install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
done
mkdir -p "$root/tmp" "$root/etc"
echo 'nobody:x:65532:65532:nobody:/:/usr/sbin/nologin' >"$root/etc/passwd"

echo "== image: buildah from scratch"
ctr=$(buildah from scratch)
buildah copy "$ctr" "$root" / >/dev/null
buildah config --entrypoint '["/usr/local/bin/shadowtap"]' --cmd '--help' \
  --port 9477 --label org.opencontainers.image.title=shadowtap "$ctr"
buildah commit --quiet "$ctr" "$image" >/dev/null
buildah rm "$ctr" >/dev/null
# runc: crun refuses hosts with cgroups v1 and v2 mounted both ("hybrid"). podman's
# default limits (a million open files) may be above the host's hard limits.
podman=(podman --runtime runc run --rm --ulimit nofile=1024:1024 --ulimit nproc=4096:4096)
"${podman[@]}" "$image" --version >/dev/null || fail "the image does not run shadowtap --version"

echo "== network namespace $ns: nginx on :8080, stage server on :9090"
ip netns add "$ns"
ip -n "$ns" link set lo up
cat >"$work/nginx.conf" <<NGINX
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path $work/nginx-body;
  server { listen 127.0.0.1:8080; location / { return 200 "live\n"; } }
}
NGINX
ip netns exec "$ns" nginx -c "$work/nginx.conf" -g 'daemon off;' &
pids+=($!)
# The stage server: answers 200 and writes one line per request (path and Host).
cat >"$work/stage.py" <<'PY'
import http.server, sys
log = open(sys.argv[1], "a", buffering=1)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        log.write(f"{self.path} {self.headers.get('Host')}\n")
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", 9090), H).serve_forever()
PY
: >"$work/stage.log"
ip netns exec "$ns" python3 "$work/stage.py" "$work/stage.log" &
pids+=($!)
for _ in $(seq 50); do
  ip netns exec "$ns" curl -s -o /dev/null http://127.0.0.1:8080/ready \
    && ip netns exec "$ns" curl -s -o /dev/null http://127.0.0.1:9090/ready && break
  sleep 0.1
done
: >"$work/stage.log"

# runs the agent in the image with the given capabilities; its output in $work/$name.log
run_agent() {
  local name=$1 caps=$2
  local args=(--name "shadowtap-img-$name-$$" --network "ns:/run/netns/$ns"
    --cap-drop=ALL --user 0:0 --read-only --security-opt no-new-privileges
    # Debian 12's podman (4.3) has a seccomp profile that predates CAP_BPF and refuses
    # bpf() without CAP_SYS_ADMIN, as README says of older Docker; the capabilities are
    # what is tested here.
    --security-opt seccomp=unconfined)
  local cap
  for cap in ${caps//,/ }; do args+=(--cap-add "$cap"); done
  "${podman[@]}" "${args[@]}" "$image" run --engine ebpf --iface lo --port 8080 \
    --target http://127.0.0.1:9090 --duration 6s >"$work/$name.log" 2>&1
}

echo "== run: --cap-drop=ALL --cap-add BPF,NET_ADMIN,PERFMON"
run_agent ok BPF,NET_ADMIN,PERFMON &
agent=$!
# Traffic to the live server once the agent is attached (its start line), for 3 s.
for _ in $(seq 100); do grep -q "capturing\|listening\|attached" "$work/ok.log" 2>/dev/null && break; sleep 0.1; done
sleep 0.5
for i in $(seq 30); do
  ip netns exec "$ns" curl -s -o /dev/null -H "Host: shop.example" "http://127.0.0.1:8080/item/$i"
  sleep 0.05
done
status=0; wait "$agent" || status=$?
cat "$work/ok.log"
[ "$status" = 0 ] || fail "the agent exited $status with BPF, NET_ADMIN and PERFMON"
got=$(grep -c ' shop.example-shadow$' "$work/stage.log" || true)
[ "$got" -ge 25 ] || fail "the stage server got $got of 30 copies (stage.log: $(head -3 "$work/stage.log"))"
echo "test-image: $got of 30 copies arrived at the stage server"

# One capability fewer, each in turn: a non-zero exit and a line naming the one missing.
for missing in BPF NET_ADMIN PERFMON; do
  caps=BPF,NET_ADMIN,PERFMON
  caps=${caps/$missing/}; caps=${caps//,,/,}; caps=${caps#,}; caps=${caps%,}
  echo "== run: --cap-drop=ALL --cap-add $caps (no $missing)"
  status=0; run_agent "no-$missing" "$caps" || status=$?
  cat "$work/no-$missing.log"
  [ "$status" != 0 ] || fail "without $missing the agent exited 0"
  grep -q "lacks CAP_$missing" "$work/no-$missing.log" \
    || fail "without $missing the agent's error does not name CAP_$missing"
  echo "test-image: without $missing: exit $status, the error names CAP_$missing"
done
echo "test-image: ok"
