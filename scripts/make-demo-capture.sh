#!/usr/bin/env bash
# Re-records agent/assets/demo.pcapng, the capture `shadowtap demo` replays: httpbin under
# gunicorn on 127.0.0.1:8000, curl as the client, dumpcap (pcapng) on lo. Needs .ci/setup.
set -euo pipefail
out=${1:-agent/assets/demo.pcapng}
gunicorn -b 127.0.0.1:8000 -w 2 httpbin:app >/dev/null 2>&1 & gpid=$!
sleep 2
dumpcap -q -i lo -f "tcp port 8000" -w "$out" >/dev/null 2>&1 & dpid=$!
sleep 2
H="Host: httpbin:8000"
u=http://127.0.0.1:8000
curl -s -H "$H" $u/headers -o /dev/null
curl -s -H "$H" "$u/get?show_env=1&q=a%20b" -o /dev/null
curl -s -H "$H" -H "Content-Type: application/json" -d '{"user":"ada","items":[1,2,3]}' $u/post -o /dev/null
curl -s -H "$H" -H "Transfer-Encoding: chunked" --data-binary @"$(dirname "$0")/../README.md" $u/post -o /dev/null
curl -s -H "$H" -X PUT -H "Authorization: Bearer demo-token" -d 'x=1' $u/put -o /dev/null
curl -s -H "$H" $u/status/418 -o /dev/null
curl -s -H "$H" -X DELETE $u/delete -o /dev/null
curl -s -H "$H" $u/headers $u/ip $u/user-agent -o /dev/null -o /dev/null -o /dev/null
sleep 1
kill $dpid $gpid
wait 2>/dev/null || true
