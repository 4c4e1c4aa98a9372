#!/usr/bin/env bash
# The example of docs/deploy.md: three verifiers sharing one PostgreSQL, behind HAProxy, on this
# machine. Run from a checkout after `npm ci && npm run build`; Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/../.."

: "${M2M_ADMIN_KEY:?set M2M_ADMIN_KEY: every verifier of a fleet needs the same one}"
: "${M2M_ENROLLMENT_TOKEN:?set M2M_ENROLLMENT_TOKEN: every verifier of a fleet needs the same one}"
export M2M_STORE="${M2M_STORE:-postgres://127.0.0.1:5432/test}"
export LB_PORT="${LB_PORT:-8080}" V1_PORT="${V1_PORT:-8781}" V2_PORT="${V2_PORT:-8782}" V3_PORT="${V3_PORT:-8783}"
export M2M_ADMIN_KEY M2M_ENROLLMENT_TOKEN

# Devices reach the fleet through the load balancer: that URL is their attestations' audience.
public_url="${M2M_PUBLIC_URL:-http://127.0.0.1:${LB_PORT}}"
# HAProxy adds X-Forwarded-For; --trust-proxy names it, so rate limits count gateways, not the
# proxy. Here the gateways run on this machine too and share one address: allow the fleet's rate.
limits='{"challengesPerAddress":{"burst":5000,"perSecond":2000}}'

pids=()
stop() {
  trap - EXIT INT TERM
  kill "${pids[@]}" 2>/dev/null || true
  wait || true
}
trap stop EXIT INT TERM

for port in "$V1_PORT" "$V2_PORT" "$V3_PORT"; do
  node dist/bin/m2m-verifier.js --host 127.0.0.1 --port "$port" --workers 1 \
    --public-url "$public_url" --limits "$limits" --trust-proxy 127.0.0.1 &
  pids+=($!)
done
haproxy -db -f docs/deploy/haproxy.cfg &
pids+=($!)
echo "load balancer on http://127.0.0.1:${LB_PORT}"
# A verifier that dies is taken out of rotation by HAProxy's checks; the others go on.
wait
