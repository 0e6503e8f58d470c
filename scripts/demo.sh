#!/usr/bin/env bash
# A 3-node meshlb mesh on loopback: node a is the seed, b and c join it.
# Backends are added through different nodes, then every node is asked where
# the same keys go. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin/meshlb}
LOGS=$(mktemp -d /tmp/meshlb-demo.XXXXXX)
pids=()
cleanup() {
  trap - INT TERM EXIT
  echo; echo "stopping the mesh (graceful leave)..."
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "logs kept in $LOGS"
}
trap cleanup INT TERM EXIT

start() { # name gossip proxy admin [join]
  local args=(node --name "$1" --gossip-addr "127.0.0.1:$2" --listen "127.0.0.1:$3" --admin "127.0.0.1:$4" --log-format json)
  [ -n "${5:-}" ] && args+=(--join "$5")
  "$BIN" "${args[@]}" >"$LOGS/$1.log" 2>&1 &
  pids+=($!)
}
start a 17946 18080 19901
start b 17947 18081 19902 127.0.0.1:17946
start c 17948 18082 19903 127.0.0.1:17946

for port in 19901 19902 19903; do
  for _ in $(seq 100); do "$BIN" status --admin-url "http://127.0.0.1:$port" >/dev/null 2>&1 && break; sleep 0.1; done
done

"$BIN" backends add web-1=127.0.0.1:9001 --admin-url http://127.0.0.1:19901 >/dev/null
"$BIN" backends add web-2=127.0.0.1:9002 --admin-url http://127.0.0.1:19902 >/dev/null
"$BIN" backends add web-3=127.0.0.1:9003 --admin-url http://127.0.0.1:19903 >/dev/null
sleep 1

echo "== the mesh as node a sees it"
"$BIN" status --admin-url http://127.0.0.1:19901
echo
echo "== every node routes each key to the same backend"
for key in alice bob 203.0.113.7 session-42; do
  for port in 19901 19902 19903; do
    printf 'node :%s  ' "$port"; "$BIN" route "$key" --admin-url "http://127.0.0.1:$port"
  done
done
cat <<MSG

Try it yourself (the mesh keeps running until Ctrl-C):
  $BIN route my-session --admin-url http://127.0.0.1:19902
  $BIN backends remove web-2 --admin-url http://127.0.0.1:19903   # only web-2's keys move
  $BIN status --admin-url http://127.0.0.1:19901
  curl -s http://127.0.0.1:19901/metrics | grep ^meshlb_
Logs: $LOGS
MSG
wait
