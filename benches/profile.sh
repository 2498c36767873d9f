#!/usr/bin/env bash
# Profile (a benchmark, not a test): what one admission costs each of the three servers
# of benches/load.sh (minimal, responder, harbor-pilot), counted by valgrind's callgrind
# with its cache model. Unlike wall-clock time these counts repeat from run to run on a
# shared, noisy machine, so they show where a change moves the cost. Per request:
#
#   instructions   instructions executed (all threads)
#   I1 misses      first-level instruction-cache misses: the code a request touches
#   D1 read/write  first-level data-cache misses on reads and on writes
#
# One connection, one request at a time (h2load -c 1 -m 1), after 50 warm-up requests
# that are not counted. A first-level miss that the second level serves costs about a
# dozen cycles, the time of several instructions: a server that runs fewer instructions
# can still be the slower one.
#
#   benches/profile.sh                     3-container body, HTTP/1.1 and HTTP/2
#   BODY=50 REQUESTS=100 benches/profile.sh
#
# Needs: cargo, python3, curl, valgrind (Debian valgrind) and h2load (Debian
# nghttp2-client); the last two are installed if missing. The callgrind files stay in target/profile/ for
# `callgrind_annotate --auto=no --inclusive=yes target/profile/<server>-<proto>.callgrind`.
set -euo pipefail
cd "$(dirname "$0")/.."

BODY=${BODY:-3}             # 3 or 50 containers
REQUESTS=${REQUESTS:-400}   # counted requests per server and protocol
WORK=target/profile
PORT=19451 ADMIN_PORT=19081

die() { echo "benches/profile.sh: $*" >&2; exit 1; }
command -v python3 >/dev/null || die "python3 is needed for the report"
. benches/common.sh
install_missing benches/profile.sh h2load:nghttp2-client valgrind:valgrind

# Line tables (no change to the code generated) so callgrind can name functions; a
# target directory of its own so the builds of load.sh stay as they are. The profile
# that ships (Cargo.toml's `production`), and two builds for the reason load.sh gives.
export CARGO_TARGET_DIR=target/profile-build
export CARGO_PROFILE_PRODUCTION_DEBUG=line-tables-only CARGO_PROFILE_PRODUCTION_STRIP=none
cargo build --profile production --locked \
  --example minimal_webhook --example null_responder --example load_bodies
cargo build --profile production --locked --bin harbor-pilot
BIN=$CARGO_TARGET_DIR/production

rm -rf "$WORK" && mkdir -p "$WORK"
"$BIN/examples/load_bodies" "$WORK" >/dev/null
[ -f "$WORK/review-$BODY.json" ] || die "no $BODY-container body (BODY is 3 or 50)"

pid=""
cleanup() { [ -z "$pid" ] || kill "$pid" 2>/dev/null || true; }
trap cleanup EXIT

h2load_run() { # proto count
  local args=(-c 1 -m 1 -n "$2")
  [ "$1" = h1 ] && args=(--h1 "${args[@]}")
  h2load "${args[@]}" -d "$WORK/review-$BODY.json" -H 'content-type: application/json' \
    "https://127.0.0.1:$PORT/mutate" >"$WORK/h2load.out" || die "h2load failed; see $WORK/h2load.out"
  grep -q ", $2 succeeded" "$WORK/h2load.out" || die "not every request succeeded; see $WORK/h2load.out"
}

# The responder writes the development certificate the others serve; it runs first.
profile() { # server proto
  local server=$1 proto=$2 out="$WORK/$1-$2.callgrind" cmd
  case $server in
    minimal) cmd=("$BIN/examples/minimal_webhook" "127.0.0.1:$PORT" "$WORK/certs/tls.crt" "$WORK/certs/tls.key") ;;
    responder) cmd=("$BIN/examples/null_responder" "127.0.0.1:$PORT" "$WORK/certs") ;;
    harbor-pilot) cmd=("$BIN/harbor-pilot" serve --config config/example.yaml
      --webhook-addr "127.0.0.1:$PORT" --admin-addr "127.0.0.1:$ADMIN_PORT"
      --tls-cert-file "$WORK/certs/tls.crt" --tls-key-file "$WORK/certs/tls.key" --log-format json) ;;
  esac
  echo "profiling $server over $proto" >&2
  valgrind --tool=callgrind --cache-sim=yes --callgrind-out-file="$out.run" "${cmd[@]}" \
    >/dev/null 2>"$WORK/$server-$proto.log" &
  pid=$!
  # Under valgrind start-up takes seconds (harbor-pilot's warm-up admissions among it).
  for i in $(seq 600); do
    if [ "$server" = harbor-pilot ]; then
      [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$ADMIN_PORT/readyz")" = 200 ] && break
    else
      (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
    fi
    kill -0 "$pid" 2>/dev/null || die "$server exited; see $WORK/$server-$proto.log"
    [ "$i" -lt 600 ] || die "$server not ready after 2 minutes; see $WORK/$server-$proto.log"
    sleep 0.2
  done
  h2load_run "$proto" 50
  callgrind_control -z "$pid" >/dev/null 2>&1 || die "callgrind_control could not zero $server's counts"
  h2load_run "$proto" "$REQUESTS"
  callgrind_control -d "$pid" >/dev/null 2>&1 || die "callgrind_control could not dump $server's counts"
  # TERM, not INT: a background job of a script starts with SIGINT ignored, and the
  # minimal webhook installs no handler of its own.
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  pid=""
  # The explicit dump (counts since the zeroing) is file .1; the one at exit is not used.
  mv "$out.run.1" "$out" || die "callgrind wrote no dump for $server; see $WORK/$server-$proto.log"
  rm -f "$out.run"
}

for proto in h1 h2; do
  for server in responder minimal harbor-pilot; do
    profile "$server" "$proto"
  done
done

export WORK REQUESTS BODY
python3 - <<'EOF'
import os

work, requests = os.environ["WORK"], int(os.environ["REQUESTS"])
columns = [("Ir", "instructions"), ("I1mr", "I1 misses"), ("D1mr", "D1 read misses"),
           ("D1mw", "D1 write misses")]


def per_request(path):
    events, totals = None, None
    with open(path) as f:
        for line in f:
            if line.startswith("events:"):
                events = line.split()[1:]
            elif line.startswith(("summary:", "totals:")):
                totals = [int(v) for v in line.split()[1:]]
    counts = dict(zip(events, totals + [0] * (len(events) - len(totals))))
    return {key: counts.get(key, 0) / requests for key, _ in columns}


print(f"\n{requests} requests per row, one at a time; {os.environ['BODY']}-container body; "
      "per request, and against the minimal webhook\n")
print(f"{'server':>12} {'proto':>5} | " + " | ".join(f"{name:>21}" for _, name in columns))
print("-" * 110)
for proto in ("h1", "h2"):
    base = per_request(f"{work}/minimal-{proto}.callgrind")
    for server in ("minimal", "responder", "harbor-pilot"):
        row = per_request(f"{work}/{server}-{proto}.callgrind")
        cells = [f"{row[k]:>12,.0f} {row[k] / base[k]:>7.2f}x" if base[k] else f"{row[k]:>21,.0f}"
                 for k, _ in columns]
        print(f"{server:>12} {proto:>5} | " + " | ".join(cells))
EOF
