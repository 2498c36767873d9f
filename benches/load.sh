#!/usr/bin/env bash
# Load benchmark (a benchmark, not a test): `harbor-pilot serve` against a do-nothing
# responder on the same TLS/HTTP stack (examples/null_responder.rs), same request bodies
# (a 3-container and a 50-container pod CREATE), HTTP/1.1 and HTTP/2, driven by oha in
# the same run. Prints requests/s and p50/p99 for both, their ratios, and harbor-pilot's
# peak RSS. Results land in target/load/.
#
#   benches/load.sh                   10 s per measurement
#   DURATION=30s benches/load.sh      longer runs
#
# Needs: cargo, python3 (the report), oha (installed into target/bench-tools if missing,
# ~5 minutes), taskset (optional: pins servers to CPU 0 and oha to CPU 1).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
WORK=target/load
PILOT_PORT=19443 ADMIN_PORT=19080 NULL_PORT=19444

die() { echo "benches/load.sh: $*" >&2; exit 1; }
command -v python3 >/dev/null || die "python3 is needed for the report"

cargo build --release --locked --bin harbor-pilot --example null_responder --example load_bodies

OHA=$(command -v oha || true)
if [ -z "$OHA" ]; then
  OHA=target/bench-tools/bin/oha
  if [ ! -x "$OHA" ]; then
    echo "installing oha into target/bench-tools (cargo install, a few minutes)" >&2
    cargo install oha --locked --root target/bench-tools
  fi
fi

rm -rf "$WORK" && mkdir -p "$WORK"
target/release/examples/load_bodies "$WORK" >/dev/null

PIN_SERVER=() PIN_LOAD=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  PIN_SERVER=(taskset -c 0) PIN_LOAD=(taskset -c 1)
fi

pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

wait_port() {
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  die "nothing listens on port $1; see $WORK/*.log"
}

# The responder makes the development certificate; harbor-pilot serves the same one.
"${PIN_SERVER[@]}" target/release/examples/null_responder "127.0.0.1:$NULL_PORT" "$WORK/certs" 2>"$WORK/responder.log" &
pids+=($!)
wait_port "$NULL_PORT"
"${PIN_SERVER[@]}" target/release/harbor-pilot serve --config config/example.yaml \
  --webhook-addr "127.0.0.1:$PILOT_PORT" --admin-addr "127.0.0.1:$ADMIN_PORT" \
  --tls-cert-file "$WORK/certs/tls.crt" --tls-key-file "$WORK/certs/tls.key" \
  --log-format json 2>"$WORK/harbor-pilot.log" &
PILOT_PID=$!
pids+=("$PILOT_PID")
wait_port "$PILOT_PORT"

RATE=${RATE:-1000}   # requests/s for the latency runs: well below either server's ceiling

measure() { # name port proto body duration [rate]
  local args=(-c 16) out="$WORK/$1-$3-$4.json"
  [ "$3" = h2 ] && args=(--http2 -c 4 -p 8)
  # At a fixed rate, with coordinated-omission correction, latency is service time
  # rather than queueing behind 16 open connections.
  [ -n "${6:-}" ] && args+=(-q "$6" --latency-correction) && out="$WORK/$1-$3-$4-rate.json"
  "${PIN_LOAD[@]}" "$OHA" --no-tui -z "$5" -w "${args[@]}" -m POST -T application/json \
    -D "$WORK/review-$4.json" --cacert "$WORK/certs/ca.crt" --output-format json \
    "https://127.0.0.1:$2/mutate" >"$out"
}

echo "warming up" >&2
for body in 3 50; do
  measure warmup "$NULL_PORT" h2 "$body" 2s
  measure warmup "$PILOT_PORT" h2 "$body" 2s
done

for body in 3 50; do
  for proto in h1 h2; do
    echo "measuring $proto, $body containers, $DURATION each" >&2
    # Interleaved, so drift on a shared machine hits both alike.
    measure responder "$NULL_PORT" "$proto" "$body" "$DURATION"
    measure harbor-pilot "$PILOT_PORT" "$proto" "$body" "$DURATION"
    measure responder "$NULL_PORT" "$proto" "$body" "$DURATION" "$RATE"
    measure harbor-pilot "$PILOT_PORT" "$proto" "$body" "$DURATION" "$RATE"
  done
done

PEAK_RSS_KB=$(awk '/^VmHWM:/ {print $2}' "/proc/$PILOT_PID/status")
BODY_3=$(stat -c %s "$WORK/review-3.json") BODY_50=$(stat -c %s "$WORK/review-50.json")
export WORK PEAK_RSS_KB BODY_3 BODY_50 DURATION RATE
python3 - <<'PY'
import json, os
work = os.environ["WORK"]
rows, results, bad = [], [], []
def load(name, proto, body, suffix=""):
    with open(f"{work}/{name}-{proto}-{body}{suffix}.json") as f:
        d = json.load(f)
    codes = d.get("statusCodeDistribution", {})
    # oha cuts requests still queued when a fixed-rate run's time is up; not a failure.
    errors = {k: v for k, v in d.get("errorDistribution", {}).items() if k != "aborted due to deadline"}
    if set(codes) - {"200"} or errors:
        bad.append(f"{name} {proto} {body}{suffix}: {codes} {errors}")
    return {
        "rps": d["summary"]["requestsPerSec"],
        "p50_ms": d["latencyPercentiles"]["p50"] * 1e3,
        "p99_ms": d["latencyPercentiles"]["p99"] * 1e3,
        "requests": sum(codes.values()),
    }
print(f"\nharbor-pilot vs do-nothing responder, same TLS stack, {os.environ['DURATION']} per run")
print(f"bodies: 3 containers {int(os.environ['BODY_3'])//1024} KiB, 50 containers {int(os.environ['BODY_50'])//1024} KiB")
print("\nsaturated (h1: 16 connections; h2: 4 connections x 8 streams): throughput, and latency incl. queueing")
head = f"{'body':>7} {'proto':>5} | {'responder rps':>13} {'pilot rps':>10} {'ratio':>6} | {'resp p50':>8} {'pilot p50':>9} {'ratio':>6} | {'resp p99':>8} {'pilot p99':>9}"
print(head); print("-" * len(head))
for body in ("3", "50"):
    for proto in ("h1", "h2"):
        r, p = load("responder", proto, body), load("harbor-pilot", proto, body)
        tput, p50 = p["rps"] / r["rps"], p["p50_ms"] / r["p50_ms"]
        results.append({"mode": "saturated", "containers": int(body), "proto": proto, "responder": r,
                        "harbor_pilot": p, "throughput_ratio": tput, "p50_ratio": p50})
        print(f"{body + ' ctr':>7} {proto:>5} | {r['rps']:>13.0f} {p['rps']:>10.0f} {tput:>6.2f} | "
              f"{r['p50_ms']:>6.2f}ms {p['p50_ms']:>7.2f}ms {p50:>6.2f} | {r['p99_ms']:>6.2f}ms {p['p99_ms']:>7.2f}ms")
print(f"\nat a fixed {os.environ['RATE']} requests/s: latency is service time")
head = f"{'body':>7} {'proto':>5} | {'resp p50':>8} {'pilot p50':>9} {'ratio':>6} | {'resp p99':>8} {'pilot p99':>9} {'ratio':>6}"
print(head); print("-" * len(head))
for body in ("3", "50"):
    for proto in ("h1", "h2"):
        r, p = load("responder", proto, body, "-rate"), load("harbor-pilot", proto, body, "-rate")
        p50, p99 = p["p50_ms"] / r["p50_ms"], p["p99_ms"] / r["p99_ms"]
        results.append({"mode": "fixed_rate", "rate": int(os.environ["RATE"]), "containers": int(body), "proto": proto,
                        "responder": r, "harbor_pilot": p, "p50_ratio": p50, "p99_ratio": p99})
        print(f"{body + ' ctr':>7} {proto:>5} | {r['p50_ms']:>6.3f}ms {p['p50_ms']:>7.3f}ms {p50:>6.2f} | "
              f"{r['p99_ms']:>6.3f}ms {p['p99_ms']:>7.3f}ms {p99:>6.2f}")
rss_mib = int(os.environ["PEAK_RSS_KB"]) / 1024
print(f"\nharbor-pilot peak RSS: {rss_mib:.1f} MiB")
print("target: saturated throughput ratio >= 0.90, p50 ratio <= 1.20")
with open(f"{work}/results.json", "w") as f:
    json.dump({"duration": os.environ["DURATION"], "peak_rss_mib": rss_mib, "runs": results}, f, indent=2)
if bad:
    print("\nNON-200 ANSWERS OR ERRORS:\n" + "\n".join(bad))
    raise SystemExit(1)
PY
