#!/usr/bin/env bash
# Load benchmark (a benchmark, not a test). In one run, three servers answer the same
# request bodies (a 3-container and a 50-container Pod CREATE) over HTTP/1.1 and HTTP/2,
# driven by h2load:
#
#   minimal       examples/minimal_webhook.rs: a do-nothing webhook written directly on
#                 tokio + rustls + hyper-util (the ceiling; none of our server layer)
#   responder     examples/null_responder.rs: the same do-nothing answer on harbor-pilot's
#                 own server layer (axum, server::serve): what that layer costs
#   harbor-pilot  `harbor-pilot serve` with config/example.yaml, rewriting every image
#
# Three measurements per body and protocol:
#   saturated  throughput (h1: 4 connections; h2: 4 connections x 8 streams). Each
#              round's DURATION is taken in SAT_SLICES slices, the servers alternating
#              slice by slice, the round's throughput their mean: in one piece, a 5 s
#              run of one server against the next server's moved by 10-30 % between
#              rounds on this VM, more than the servers differ
#   rate       latency at a fixed 1,000 requests/s, one request at a time, evenly
#              spaced on one connection: the service time, without queueing (an API
#              server sends each admission as its pod comes); and each server's CPU time
#              per request meanwhile (all its threads, from the kernel's schedstat).
#              Each round's DURATION is taken in RATE_SLICES slices, the servers
#              alternating slice by slice, and the p50 is over the round's requests
#              together: one server's 5 s in one piece moved its p50 by as much as
#              the servers differ (the VM's neighbours come and go). Also each
#              slice's p50 over the minimal's slice of the same turn, paired: the
#              VM's slow spells (tens of ms to seconds) land in one server's slice
#              and not the other's, and move the pooled p50 of a round with them
#   burst      latency at the same total rate over the saturated runs' connections and
#              streams. h2load's per-connection timers fire together, so requests come
#              in bursts (h1: 4 at once; h2: 8 streams at once per connection) and wait
#              for each other: queueing included. Kept next to `rate` because the
#              earlier runs measured latency this way.
# Servers run on CPU 0 and h2load on CPU 1; rounds alternate the servers and the report
# takes medians. Also reported: harbor-pilot's peak RSS and its first admission after
# start against later ones (all with images it has not seen), in latency and in the
# server's own time, and against the first admission of the same pod after another
# pod's.
#
#   benches/load.sh                        3 rounds of 5 s per measurement (~20 minutes)
#   ROUNDS=5 DURATION=10 benches/load.sh   longer
#
# Needs: cargo, python3, h2load (Debian nghttp2-client: installed if missing), taskset.
# Results land in target/load/ (results.json, h2load logs).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}    # seconds per measurement
RATE=${RATE:-1000}         # requests/s of the latency runs
RATE_SLICES=${RATE_SLICES:-5}  # slices of each round's one-at-a-time runs
STARTS=${STARTS:-40}           # starts for the first admission after start
SEASONED=${SEASONED:-20}       # starts for the first admission after another pod's
SAT_SLICES=${SAT_SLICES:-5}    # slices of each round's saturated runs
WORK=target/load
MIN_PORT=19441 NULL_PORT=19442 PILOT_PORT=19443 ADMIN_PORT=19080

die() { echo "benches/load.sh: $*" >&2; exit 1; }
command -v python3 >/dev/null || die "python3 is needed for the report"
. benches/common.sh
install_missing benches/load.sh h2load:nghttp2-client
[ "$STARTS" -ge 1 ] && [ "$SEASONED" -ge 1 ] && [ $((STARTS + SEASONED)) -le 64 ] ||
  die "STARTS and SEASONED are at least 1 and at most 64 together (384 bodies of new images)"

# Two builds: examples bring in the dev-dependencies, whose features (harbor-pilot-core's
# `fuzzing` among them) cargo unifies into anything built in the same invocation. Built
# together, harbor-pilot's JSON skipping compiled differently and ran ~9k instructions
# (3 %) more per admission than in the binary users build (`--bin harbor-pilot` alone,
# as the Dockerfile does), which is the one measured here.
cargo build --profile production --locked \
  --example minimal_webhook --example null_responder --example load_bodies
cargo build --profile production --locked --bin harbor-pilot

rm -rf "$WORK" && mkdir -p "$WORK"
target/production/examples/load_bodies "$WORK" >/dev/null

pin_cpus benches/load.sh
trap kill_pids_at_exit EXIT

wait_port() {
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  die "nothing listens on port $1; see $WORK/*.log"
}

# The responder makes the development certificate; the other two serve the same one.
"${PIN_SERVER[@]}" target/production/examples/null_responder "127.0.0.1:$NULL_PORT" "$WORK/certs" \
  2>"$WORK/responder.log" &
pids+=($!)
NULL_PID=$!
wait_port "$NULL_PORT"
"${PIN_SERVER[@]}" target/production/examples/minimal_webhook "127.0.0.1:$MIN_PORT" \
  "$WORK/certs/tls.crt" "$WORK/certs/tls.key" 2>"$WORK/minimal.log" &
pids+=($!)
MIN_PID=$!
start_pilot() {
  "${PIN_SERVER[@]}" target/production/harbor-pilot serve --config config/example.yaml \
    --webhook-addr "127.0.0.1:$PILOT_PORT" --admin-addr "127.0.0.1:$ADMIN_PORT" \
    --tls-cert-file "$WORK/certs/tls.crt" --tls-key-file "$WORK/certs/tls.key" \
    --log-format json 2>>"$WORK/harbor-pilot.log" &
  PILOT_PID=$!
  pids+=("$PILOT_PID")
  for _ in $(seq 100); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$ADMIN_PORT/readyz")" = 200 ] && return 0
    sleep 0.1
  done
  die "harbor-pilot did not become ready; see $WORK/harbor-pilot.log"
}
wait_port "$MIN_PORT"

# CPU time (ns) all threads of process $1 have run: the kernel's schedstat, exact where
# /proc/<pid>/stat counts clock ticks.
cpu_ns() {
  cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{ns += $1} END {printf "%.0f\n", ns}'
}

# h2load: name port proto body mode -> $WORK/<name>-<proto>-<body>-<mode>.{log,out}, and
# for `rate` .cpu: the server's CPU time and the wall time of the run, in ns (at a fixed
# rate, their quotient is the CPU each request costs, warm-up included, times the rate).
# A `saturated` or `rate` run is one slice of a round: it appends to the round's files,
# which the caller moves away once the round's slices are done.
h2load_run() {
  local name=$1 port=$2 proto=$3 body=$4 mode=$5 args=()
  case $proto in h1) args=(--h1 -c 4 -m 1) ;; h2) args=(-c 4 -m 8) ;; esac
  case $mode in
    first) args=(--h1 -c 1 -m 1 -n 1) ;;
    rate) args=(-c 1 -m 1 --rps "$RATE" -D "$((DURATION * 1000 / RATE_SLICES))ms"
      --warm-up-time 500ms)
      [ "$proto" = h1 ] && args=(--h1 "${args[@]}") ;;
    saturated) args+=(-D "$((DURATION * 1000 / SAT_SLICES))ms" --warm-up-time 500ms) ;;
    burst) args+=(--rps "$((RATE / 4))" -D "$DURATION" --warm-up-time 1) ;;
    *) args+=(-D "$DURATION" --warm-up-time 1) ;;
  esac
  local out="$WORK/$name-$proto-$body-$mode" pid cpu wall
  case $mode in
    rate)
      case $name in minimal) pid=$MIN_PID ;; responder) pid=$NULL_PID ;; *) pid=$PILOT_PID ;; esac
      cpu=$(cpu_ns "$pid") wall=$(date +%s%N) ;;
    saturated) ;;
    *) rm -f "$out.log" "$out.out" ;; # h2load appends to its log file; so does this to .out
  esac
  "${PIN_LOAD[@]}" h2load "${args[@]}" -d "$WORK/review-$body.json" \
    -H 'content-type: application/json' --log-file "$out.log" \
    "https://127.0.0.1:$port/mutate" >>"$out.out" || die "h2load failed; see $out.out"
  if [ "$mode" = rate ]; then
    echo "$(($(cpu_ns "$pid") - cpu)) $(($(date +%s%N) - wall))" >>"$out.cpu"
    # Where each slice's requests end in the log, for the report's slice-by-slice pairs.
    wc -l <"$out.log" >>"$out.slices"
  fi
}

# The first admission after start (harbor-pilot has served nothing yet) against later
# ones made the same way: each the first request of a new connection, after the same
# half second of idleness (an idle process answers slower than a busy one: caches and
# CPU wake-up, nothing of ours). Both bring images the server has not seen (it
# remembers its decisions per image string; a first admission with images a later one
# finds remembered measured that too). STARTS starts, five later admissions each, then
# three repeating the last one's images: the later admissions with images remembered,
# for comparison with the runs before this split. 40 starts by default: with 15, the
# median of the firsts moved between 0.93x and 1.20x the later ones' from run to run
# (its quartiles spanning ~80 us); the report pairs each first with its own start's.
: >"$WORK/start.log"
: >"$WORK/later.log"
: >"$WORK/remembered.log"
: >"$WORK/start.server"
: >"$WORK/later.server"
: >"$WORK/remembered.server"
: >"$WORK/seasoned.log"
: >"$WORK/seasoned-later.log"
: >"$WORK/seasoned.server"
: >"$WORK/seasoned-later.server"
# Also the server's own time for each admission, from reading the body to the answer
# (the sum of harbor_pilot_admission_duration_seconds after it and after the one before;
# read after each admission, so no scrape wakes the server just before the next):
# without the handshake, the client and the VM's scheduling, it is far less spread than
# h2load's latency (a first admission's ratio to its start's later ones: quartiles
# 1.17-1.23 against 0.9-1.3 for the latency).
admission_seconds_sum() {
  curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" |
    awk '/^harbor_pilot_admission_duration_seconds_sum / {print $2}'
}
# STARTS starts as above, then SEASONED starts in which harbor-pilot first serves three
# admissions of another pod (the microservices demo's, one container) and only then
# the 3-container pod with new images (seasoned.*, five later ones in seasoned-later.*):
# the first pod of a shape in a process that has served others. While the reference
# grammar's automaton was built lazily, the first pod of each shape cost more than its
# later ones at any time (a one-container pod after 3-container ones: 1.29x inside the
# server); these starts show how much of the first admission after start is that, and
# how much start-up.
cp tests/fixtures/admission/048-microservices-demo-deployment.json "$WORK/review-other.json"
new=0
# first_admissions OTHERS FIRST LATER [REMEMBERED]: one start (see above).
first_admissions() {
  local others=$1 log n
  start_pilot
  for _ in $(seq "$others"); do
    sleep 0.5
    h2load_run harbor-pilot "$PILOT_PORT" h1 other first
  done
  sum=$(admission_seconds_sum)
  for n in $(seq 0 $(($# == 4 ? 8 : 5))); do
    sleep 0.5
    case $n in
      0) log="$WORK/$2.log" ;;
      [1-5]) log="$WORK/$3.log" ;;
      *) log="$WORK/$4.log" ;;
    esac
    [ "$n" -gt 5 ] || new=$((new + 1))
    h2load_run harbor-pilot "$PILOT_PORT" h1 "3-new-$new" first
    before=$sum
    sum=$(admission_seconds_sum)
    echo "$sum $before" >>"${log%.log}.server"
    cat "$WORK/harbor-pilot-h1-3-new-$new-first.log" >>"$log"
    mv "$WORK/harbor-pilot-h1-3-new-$new-first.out" "${log%.log}.out"
    rm -f "$WORK/harbor-pilot-h1-3-new-$new-first.log"
  done
  kill -INT "$PILOT_PID"
  wait "$PILOT_PID" || true
}
for _ in $(seq "$STARTS"); do
  first_admissions 0 start later remembered
done
for _ in $(seq "$SEASONED"); do
  first_admissions 3 seasoned seasoned-later
done
start_pilot

echo "warming up" >&2
for body in 3 50; do
  for server in "minimal $MIN_PORT" "responder $NULL_PORT" "harbor-pilot $PILOT_PORT"; do
    # shellcheck disable=SC2086
    set -- $server
    DURATION=2 h2load_run "$1" "$2" h2 "$body" "warmup"
  done
done

for round in $(seq "$ROUNDS"); do
  for body in 3 50; do
    for proto in h1 h2; do
      for mode in saturated rate burst; do
        echo "round $round/$ROUNDS: $body containers, $proto, $mode" >&2
        # Alternating the order each round, so drift on a shared machine hits all alike.
        servers=("minimal $MIN_PORT" "responder $NULL_PORT" "harbor-pilot $PILOT_PORT")
        [ $((round % 2)) -eq 0 ] && servers=("harbor-pilot $PILOT_PORT" "responder $NULL_PORT" "minimal $MIN_PORT")
        case $mode in rate) slices=$RATE_SLICES ;; saturated) slices=$SAT_SLICES ;; *) slices=1 ;; esac
        for _ in $(seq "$slices"); do
          for server in "${servers[@]}"; do
            # shellcheck disable=SC2086
            set -- $server
            h2load_run "$1" "$2" "$proto" "$body" "$mode"
          done
        done
        for server in "${servers[@]}"; do
          # shellcheck disable=SC2086
          set -- $server
          for file in "$WORK/$1-$proto-$body-$mode".{log,out,cpu,slices}; do
            [ ! -e "$file" ] || mv "$file" "${file%.*}.$round.${file##*.}"
          done
        done
      done
    done
  done
done

PEAK_RSS_KB=$(awk '/^VmHWM:/ {print $2}' "/proc/$PILOT_PID/status")
export WORK ROUNDS DURATION RATE RATE_SLICES SAT_SLICES STARTS SEASONED PEAK_RSS_KB
python3 benches/load_report.py
