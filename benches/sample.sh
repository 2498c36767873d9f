#!/usr/bin/env bash
# Where a request's CPU goes on the real CPU (a benchmark, not a test): the minimal
# webhook of benches/load.sh and harbor-pilot under the same saturating load, each
# sampled by `perf record -e cpu-clock` (a timer, so it works where a VM offers no
# hardware counters), reported as microseconds of CPU per request, grouped and by
# symbol, side by side.
#
# Why next to benches/profile.sh: callgrind's counts repeat, but its cache model is not
# this CPU. On the VM this was written on it said harbor-pilot needed no more cycles per
# request than the minimal server while the CPU spent 9-18 % more; this shows where.
# Sampled numbers move by a few percent between runs; the groups, not the last digit,
# are the result.
#
#   benches/sample.sh                                  3 containers over HTTP/1.1
#   BODY=50 PROTO=h2 REQUESTS=50000 benches/sample.sh
#
# Needs: cargo, python3, perf (Debian linux-perf) and h2load (Debian nghttp2-client);
# the last two are installed if missing. perf must be allowed to sample the servers
# (root, or kernel.perf_event_paranoid <= 1). The perf files stay in target/sample/ for
# `perf report -i target/sample/<server>.perf`.
set -euo pipefail
cd "$(dirname "$0")/.."

BODY=${BODY:-3}               # 3 or 50 containers
PROTO=${PROTO:-h1}            # h1 (4 connections) or h2 (4 connections x 8 streams)
REQUESTS=${REQUESTS:-200000}  # sampled requests per server
FREQ=${FREQ:-2000}            # samples per second of CPU time
WORK=target/sample
MIN_PORT=19461 PILOT_PORT=19462 ADMIN_PORT=19082

die() { echo "benches/sample.sh: $*" >&2; exit 1; }
command -v python3 >/dev/null || die "python3 is needed for the report"
case $BODY in 3 | 50) ;; *) die "BODY is 3 or 50" ;; esac
case $PROTO in h1) LOAD=(--h1 -c 4 -m 1) ;; h2) LOAD=(-c 4 -m 8) ;; *) die "PROTO is h1 or h2" ;; esac
. benches/common.sh
install_missing benches/sample.sh h2load:nghttp2-client perf:linux-perf
perf record -q -e cpu-clock -o /dev/null -- true 2>/dev/null \
  || die "perf cannot sample here (run as root or lower kernel.perf_event_paranoid)"

# The two builds of benches/load.sh, for the reason it gives.
cargo build --profile production --locked --example minimal_webhook --example load_bodies
cargo build --profile production --locked --bin harbor-pilot

rm -rf "$WORK" && mkdir -p "$WORK"
target/production/examples/load_bodies "$WORK" >/dev/null

pin_cpus benches/sample.sh
trap kill_pids_at_exit EXIT

# harbor-pilot makes the development certificate (no --tls-cert-file); the minimal
# webhook serves the same one.
"${PIN_SERVER[@]}" target/production/harbor-pilot serve --config config/example.yaml \
  --webhook-addr "127.0.0.1:$PILOT_PORT" --admin-addr "127.0.0.1:$ADMIN_PORT" \
  --dev-cert-dir "$WORK/certs" --log-format json 2>"$WORK/harbor-pilot.log" &
pids+=($!)
PILOT_PID=$!
for i in $(seq 100); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$ADMIN_PORT/readyz")" = 200 ] && break
  [ "$i" -lt 100 ] || die "harbor-pilot did not become ready; see $WORK/harbor-pilot.log"
  sleep 0.1
done
"${PIN_SERVER[@]}" target/production/examples/minimal_webhook "127.0.0.1:$MIN_PORT" \
  "$WORK/certs/tls.crt" "$WORK/certs/tls.key" 2>"$WORK/minimal.log" &
pids+=($!)
MIN_PID=$!
for i in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$MIN_PORT") 2>/dev/null && break
  [ "$i" -lt 100 ] || die "the minimal webhook does not listen; see $WORK/minimal.log"
  sleep 0.1
done

load() { # port requests out
  "${PIN_LOAD[@]}" h2load "${LOAD[@]}" -n "$2" -d "$WORK/review-$BODY.json" \
    -H 'content-type: application/json' "https://127.0.0.1:$1/mutate" >"$3" \
    || die "h2load failed; see $3"
  grep -q ", $2 succeeded" "$3" || die "not every request succeeded; see $3"
}

sample() { # name pid port
  echo "sampling $1: $REQUESTS requests, $BODY containers, $PROTO" >&2
  load "$3" 5000 "$WORK/$1-warmup.out"
  perf record -q -e cpu-clock -F "$FREQ" -p "$2" -o "$WORK/$1.perf" 2>"$WORK/$1-perf.log" &
  local perf_pid=$!
  sleep 0.5
  load "$3" "$REQUESTS" "$WORK/$1-h2load.out"
  # TERM: a background job of a script starts with SIGINT ignored.
  kill -TERM "$perf_pid"
  wait "$perf_pid" 2>/dev/null || true
  [ -s "$WORK/$1.perf" ] || die "perf wrote no samples for $1; see $WORK/$1-perf.log"
  perf report -i "$WORK/$1.perf" --no-children --sort dso,sym --stdio -g none \
    >"$WORK/$1.report" 2>/dev/null || die "perf report failed for $1"
}

sample minimal "$MIN_PID" "$MIN_PORT"
sample harbor-pilot "$PILOT_PID" "$PILOT_PORT"

export WORK REQUESTS BODY PROTO
python3 - <<'EOF'
import os
import re

work, requests = os.environ["WORK"], int(os.environ["REQUESTS"])

# Groups by symbol, first match wins; the kernel by where perf found the sample.
GROUPS = [
    ("reading the body", r"serde|json::|fast_read|envelope|decode::|simdutf8|from_utf8"),
    ("deciding, patch, answer", r"harbor_pilot_core::|btree|sip::|hash_one|base64"),
    ("log line, formatting", r"tracing|json_line|telemetry|LocalKey|core::fmt"),
    ("metrics", r"prometheus|metrics::"),
    ("TLS records (ring, rustls)", r"ring_core|rustls|aes|gcm"),
    ("HTTP (hyper, http)", r"hyper|httparse|http::"),
    ("tokio and futures", r"tokio|futures|Either"),
    ("allocation", r"\bmi_|_mi_|malloc|_int_free|cfree|realloc"),
    ("copies (memmove, memset, memcmp)", r"memmove|memset|memcpy|memcmp"),
    ("clock", r"clock_gettime|vdso"),
]


def per_request(name):
    """µs of CPU per request by (dso, symbol), from perf's report."""
    total_ns, rows = None, {}
    with open(f"{work}/{name}.report") as f:
        for line in f:
            if line.startswith("# Event count"):
                total_ns = int(line.split()[-1])
            m = re.match(r"\s+([\d.]+)%\s+(\S+)\s+\[(.)\]\s+(.*)$", line)
            if m:
                share, dso, kind, symbol = float(m[1]), m[2], m[3], m[4].strip()
                where = "kernel" if kind == "k" else "user"
                key = (where, symbol)
                rows[key] = rows.get(key, 0.0) + share
    if total_ns is None:
        raise SystemExit(f"no event count in {work}/{name}.report")
    return {k: v / 100 * total_ns / 1e3 / requests for k, v in rows.items()}


def grouped(rows):
    out = {"kernel": 0.0}
    for (where, symbol), us in rows.items():
        if where == "kernel":
            out["kernel"] += us
            continue
        group = next((g for g, pattern in GROUPS if re.search(pattern, symbol)), "other")
        out[group] = out.get(group, 0.0) + us
    return out


base, pilot = per_request("minimal"), per_request("harbor-pilot")
gb, gp = grouped(base), grouped(pilot)
print(f"\n{requests} requests per server, {os.environ['BODY']} containers, "
      f"{os.environ['PROTO']}; µs of CPU per request (all the process's threads)\n")
print(f"{'':34} {'minimal':>9} {'pilot':>9} {'pilot-min':>10}")
print("-" * 65)
order = [g for g, _ in GROUPS] + ["other", "kernel"]
for group in order:
    b, p = gb.get(group, 0.0), gp.get(group, 0.0)
    if b or p:
        print(f"{group:34} {b:9.2f} {p:9.2f} {p - b:+10.2f}")
tb, tp = sum(base.values()), sum(pilot.values())
print("-" * 65)
print(f"{'all':34} {tb:9.2f} {tp:9.2f} {tp - tb:+10.2f}   ({tp / tb:.2f}x)")
print("\nsymbols, by what harbor-pilot spends more (µs per request)\n")
keys = sorted(set(base) | set(pilot), key=lambda k: base.get(k, 0.0) - pilot.get(k, 0.0))
for key in keys[:20]:
    b, p = base.get(key, 0.0), pilot.get(key, 0.0)
    tag = "[k] " if key[0] == "kernel" else ""
    print(f"{b:7.2f} {p:7.2f} {p - b:+7.2f}  {tag}{key[1][:100]}")
EOF
