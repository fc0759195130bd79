#!/usr/bin/env bash
# Starts (or stops) a three-server JetStream cluster on loopback, each server run from the shipped
# deploy/nats/cluster-node.conf, for trying tgingest with replicas = 3 by hand or from the loadtest.
#
#   scripts/nats-cluster.sh start DIR [BASE_PORT]   # clients on BASE..BASE+2 (default 14222)
#   scripts/nats-cluster.sh stop DIR
#
# `start` prints the nats.url to use (also written to DIR/url), e.g.
#   TGINGEST_NATS_URL=$(cat DIR/url) TGINGEST_KV_REPLICAS=3 … tgingest run
# The tests start the same cluster from Rust (tgingest::nats_server::cluster).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cmd=${1:-}
dir=${2:-}
if [[ -z "$cmd" || -z "$dir" ]]; then
  echo "usage: $0 start DIR [BASE_PORT] | stop DIR" >&2
  exit 2
fi
case "$cmd" in
  start)
    base=${3:-14222}
    scripts/install-nats-server.sh >/dev/null
    bin=.tools/nats-server/bin/nats-server
    [[ -n "${TGINGEST_NATS_SERVER:-}" ]] && bin=$TGINGEST_NATS_SERVER
    mkdir -p "$dir"
    key=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
    urls=()
    for i in 1 2 3; do
      client=$((base + i - 1))
      urls+=("nats://127.0.0.1:$client")
      NATS_NAME=nats-$i \
      NATS_LISTEN=127.0.0.1:$client \
      NATS_HTTP=127.0.0.1:$((base + 200 + i - 1)) \
      NATS_STORE_DIR="$dir/nats-$i" \
      NATS_JS_KEY=$key \
      NATS_CLUSTER_LISTEN=127.0.0.1:$((base + 100 + i - 1)) \
      NATS_ROUTE_1=nats-route://127.0.0.1:$((base + 100)) \
      NATS_ROUTE_2=nats-route://127.0.0.1:$((base + 101)) \
      NATS_ROUTE_3=nats-route://127.0.0.1:$((base + 102)) \
        setsid "$bin" -c deploy/nats/cluster-node.conf >"$dir/nats-$i.log" 2>&1 &
      echo $! >"$dir/nats-$i.pid"
    done
    (IFS=,; echo "${urls[*]}") >"$dir/url"
    for _ in $(seq 1 100); do
      if curl -sf "http://127.0.0.1:$((base + 200))/healthz?js-enabled-only=true" >/dev/null; then
        cat "$dir/url"
        exit 0
      fi
      sleep 0.1
    done
    echo "the cluster did not come up; see $dir/nats-*.log" >&2
    exit 1
    ;;
  stop)
    for pidfile in "$dir"/nats-*.pid; do
      [[ -f "$pidfile" ]] || continue
      kill "$(cat "$pidfile")" 2>/dev/null || true
      rm -f "$pidfile"
    done
    ;;
  *)
    echo "usage: $0 start DIR [BASE_PORT] | stop DIR" >&2
    exit 2
    ;;
esac
