# Shared set-up of the live benchmark and the soak (sourced, not run): a `client` and a
# `prod` network namespace joined by a veth pair (c0 <-> pc0), nginx instances in prod,
# and a cleanup that kills everything in both namespaces and removes them.
# netns_setup PREFIX SUBNET: creates the namespaces (names in $ns_c, $ns_p), the veth with
# SUBNET.1 on prod's pc0 and SUBNET.2 on the client's c0, and $work (a temporary
# directory); installs an EXIT trap that calls netns_cleanup and then $netns_on_exit
# (a command the caller may set).
netns_setup() {
  ns_c=$1-$$-client
  ns_p=$1-$$-prod
  work=$(mktemp -d)
  trap netns_cleanup EXIT
  ip netns add "$ns_c"
  ip netns add "$ns_p"
  ip -n "$ns_p" link set lo up
  ip -n "$ns_c" link set lo up
  ip -n "$ns_p" link add pc0 type veth peer name c0 netns "$ns_c"
  ip -n "$ns_p" addr add "$2.1/24" dev pc0
  ip -n "$ns_c" addr add "$2.2/24" dev c0
  ip -n "$ns_p" link set pc0 up
  ip -n "$ns_c" link set c0 up
}

netns_cleanup() {
  [ -n "${netns_on_exit:-}" ] && eval "$netns_on_exit"
  for ns in "$ns_c" "$ns_p"; do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  done
  rm -rf "$work"
}

# nginx_conf NAME LISTEN BODY: writes $work/NAME/nginx.conf, one worker answering 200 BODY
# on LISTEN with keep-alive and no access log. Start it with nginx_start NAME.
nginx_conf() {
  mkdir -p "$work/$1"
  cat >"$work/$1/nginx.conf" <<NGX
worker_processes 1;
pid $work/$1/nginx.pid;
error_log $work/$1/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/$1/body;
  proxy_temp_path $work/$1/proxy;
  fastcgi_temp_path $work/$1/fcgi;
  uwsgi_temp_path $work/$1/uwsgi;
  scgi_temp_path $work/$1/scgi;
  keepalive_requests 1000000;
  server {
    listen $2;
    location / { return 200 "$3\n"; }
  }
}
NGX
}

nginx_start() {
  ip netns exec "$ns_p" nginx -c "$work/$1/nginx.conf"
}

# wait_http URL: until the client namespace gets an answer from URL (5 s at most).
wait_http() {
  for _ in $(seq 50); do
    ip netns exec "$ns_c" curl -s -o /dev/null --max-time 1 "$1" && return 0
    sleep 0.1
  done
}
