"""The report of benches/load.sh: medians over rounds of h2load's per-request logs,
harbor-pilot and the do-nothing responder each against the minimal webhook, written
to stdout and to $WORK/results.json. Exits non-zero if any request failed."""

import json
import math
import os
import re
import statistics

WORK = os.environ["WORK"]
ROUNDS = int(os.environ["ROUNDS"])
RATE = int(os.environ["RATE"])
SERVERS = ("minimal", "responder", "harbor-pilot")
bad = []


def run(path):
    """Throughput, p50 and p99 (µs) of one h2load run, from its output and log file; of
    the slices of one together where h2load ran more than once into the same files."""
    out = open(f"{path}.out").read()
    rows = [line.split("\t") for line in open(f"{path}.log") if line.strip()]
    codes = {r[1] for r in rows}
    failed = re.findall(r"requests: .*?(\d+) failed, (\d+) errored", out)
    if codes - {"200"} or not failed or any(f != ("0", "0") for f in failed):
        bad.append(f"{path}: status codes {sorted(codes)}; {failed or out[-300:]}")
    latencies = sorted(int(r[2]) for r in rows)
    if not latencies:
        bad.append(f"{path}: no requests logged")
        return {"rps": 0.0, "p50_us": 0, "p99_us": 0, "p25_us": 0, "p75_us": 0}
    rps = statistics.mean(float(x) for x in re.findall(r"finished in .*?, ([\d.]+) req/s", out))
    pick = lambda q: latencies[min(len(latencies) - 1, int(len(latencies) * q))]
    return {"rps": rps, "p50_us": pick(0.50), "p99_us": pick(0.99), "requests": len(latencies),
            "p25_us": pick(0.25), "p75_us": pick(0.75)}


def cpu_per_request(path):
    """µs of the server's CPU per request of a fixed-rate run: its CPU time over the
    run's wall time, divided by the rate (from load.sh's .cpu file: a line per slice)."""
    slices = [[int(x) for x in line.split()] for line in open(f"{path}.cpu") if line.strip()]
    return sum(s[0] for s in slices) / sum(s[1] for s in slices) / RATE * 1e6


def latencies_in_order(path):
    return [int(line.split("\t")[2]) for line in open(f"{path}.log") if line.strip()]


def median_interval(xs, level=0.95):
    """The median's interval at `level`, distribution-free (order statistics, binomial at
    one half): no assumption about the spread's shape."""
    xs, n = sorted(xs), len(xs)
    k = 0  # the largest k with P(Binomial(n, 1/2) < k) <= (1 - level) / 2
    while k < n and sum(math.comb(n, i) for i in range(k + 1)) / 2**n <= (1 - level) / 2:
        k += 1
    return (xs[k - 1], xs[n - k]) if k >= 1 else (xs[0], xs[-1])


def slice_p50s(path):
    """The p50 (µs) of each slice of a fixed-rate run, in order (load.sh's .slices file:
    the log's line count after each slice)."""
    latencies = latencies_in_order(path)
    ends = [int(line) for line in open(f"{path}.slices") if line.strip()]
    return [statistics.median(latencies[start:end])
            for start, end in zip([0] + ends, ends) if end > start]


def paired_slices(proto, body):
    """harbor-pilot's p50 over the minimal's, slice by slice (the same turn of the same
    round): their median and its 95 % interval."""
    ratios = []
    for r in range(1, ROUNDS + 1):
        pilot = slice_p50s(f"{WORK}/harbor-pilot-{proto}-{body}-rate.{r}")
        minimal = slice_p50s(f"{WORK}/minimal-{proto}-{body}-rate.{r}")
        ratios += [p / m for p, m in zip(pilot, minimal)]
    if not ratios:
        bad.append(f"{proto} {body}: no slices to pair")
        return 0.0, (0.0, 0.0)
    return statistics.median(ratios), median_interval(ratios)


def median_of_rounds(server, proto, body, mode):
    runs = [run(f"{WORK}/{server}-{proto}-{body}-{mode}.{r}") for r in range(1, ROUNDS + 1)]
    if mode == "rate":
        for r, one in enumerate(runs, 1):
            one["cpu_us"] = cpu_per_request(f"{WORK}/{server}-{proto}-{body}-{mode}.{r}")
        return {k: statistics.median(r[k] for r in runs) for k in ("rps", "p50_us", "p99_us", "cpu_us")} | {
            "rounds": runs
        }
    return {k: statistics.median(r[k] for r in runs) for k in ("rps", "p50_us", "p99_us")} | {
        "rounds": runs
    }


bodies = {b: os.path.getsize(f"{WORK}/review-{b}.json") for b in ("3", "50")}
results = []
print(f"\n{ROUNDS} rounds of {os.environ['DURATION']} s per measurement (saturated in "
      f"{os.environ['SAT_SLICES']}, one at a time in {os.environ['RATE_SLICES']} alternated "
      "slices), medians; "
      f"bodies: 3 containers {bodies['3']:,} B, 50 containers {bodies['50']:,} B")
print("ratios are against the minimal webhook (throughput: higher is better; latency: lower)\n")
head = (f"{'body':>6} {'proto':>5} | {'minimal':>8} {'responder':>9} {'pilot':>8} {'pilot/min':>9} "
        f"| {'minimal':>7} {'responder':>9} {'pilot':>7} {'pilot/min':>9} {'paired':>6} {'p99 p/min':>9} "
        f"{'CPU p/min':>9} | {'pilot/min':>9}")
print(f"{'':>12} | {'saturated throughput, req/s':^39} "
      f"| {f'p50 at {RATE} req/s, one at a time, µs':^64} | {'in bursts':^9}")
print(head)
print("-" * len(head))
for body in ("3", "50"):
    for proto in ("h1", "h2"):
        sat = {s: median_of_rounds(s, proto, body, "saturated") for s in SERVERS}
        fixed = {s: median_of_rounds(s, proto, body, "rate") for s in SERVERS}
        burst = {s: median_of_rounds(s, proto, body, "burst") for s in SERVERS}
        tput = sat["harbor-pilot"]["rps"] / sat["minimal"]["rps"]
        p50 = fixed["harbor-pilot"]["p50_us"] / fixed["minimal"]["p50_us"]
        p99 = fixed["harbor-pilot"]["p99_us"] / fixed["minimal"]["p99_us"]
        burst_p50 = burst["harbor-pilot"]["p50_us"] / burst["minimal"]["p50_us"]
        cpu = fixed["harbor-pilot"]["cpu_us"] / fixed["minimal"]["cpu_us"]
        paired, (paired_low, paired_high) = paired_slices(proto, body)
        results.append({"containers": int(body), "proto": proto, "saturated": sat, "fixed_rate": fixed,
                        "bursts": burst, "throughput_ratio": tput, "p50_ratio": p50,
                        "p50_paired_slices_ratio": round(paired, 3),
                        "p50_paired_slices_ratio_ci95": [round(paired_low, 3), round(paired_high, 3)],
                        "p99_ratio": p99, "fixed_rate_cpu_ratio": cpu,
                        "burst_p50_ratio": burst_p50})
        print(f"{body + ' ctr':>6} {proto:>5} | {sat['minimal']['rps']:>8.0f} {sat['responder']['rps']:>9.0f} "
              f"{sat['harbor-pilot']['rps']:>8.0f} {tput:>8.2f}x | "
              f"{fixed['minimal']['p50_us']:>7.0f} {fixed['responder']['p50_us']:>9.0f} "
              f"{fixed['harbor-pilot']['p50_us']:>7.0f} {p50:>8.2f}x {paired:>5.2f}x {p99:>8.2f}x {cpu:>8.2f}x "
              f"| {burst_p50:>8.2f}x")

print(f"\nCPU p/min: the servers' CPU time per request in the one-at-a-time runs (all "
      "threads; schedstat over the run's wall time, divided by the rate), harbor-pilot's "
      "over the minimal's")
for body in ("3", "50"):
    for proto in ("h1", "h2"):
        row = next(r for r in results if r["containers"] == int(body) and r["proto"] == proto)
        cpus = [row["fixed_rate"][s]["cpu_us"] for s in SERVERS]
        print(f"  {body:>2} containers {proto}: minimal {cpus[0]:.1f} µs, responder {cpus[1]:.1f}, "
              f"harbor-pilot {cpus[2]:.1f}")
print(f"\npaired: the median over every slice of the one-at-a-time runs of harbor-pilot's p50 "
      "over the minimal's in the same turn, and the 95 % interval of that median; "
      "the VM's slow spells fall in one server's slices and not the other's and move a "
      "round's pooled p50, less so a ratio of neighbouring slices")
for body in ("3", "50"):
    for proto in ("h1", "h2"):
        row = next(r for r in results if r["containers"] == int(body) and r["proto"] == proto)
        low, high = row["p50_paired_slices_ratio_ci95"]
        print(f"  {body:>2} containers {proto}: {row['p50_paired_slices_ratio']:.2f}x "
              f"(95 % interval {low:.2f}-{high:.2f}x)")
print(f"\nin bursts: p50 of the same {RATE} req/s sent over the saturated runs' connections "
      "(h2load's timers fire together: 4 requests at once over HTTP/1.1, 8 streams at once "
      "per connection over HTTP/2), queueing included")
first = run(f"{WORK}/start")
later = run(f"{WORK}/later")
remembered = run(f"{WORK}/remembered")
rss_mib = int(os.environ["PEAK_RSS_KB"]) / 1024
starts = int(os.environ["STARTS"])
quartiles = lambda r: f"quartiles {r['p25_us']}-{r['p75_us']}"
print(f"\nharbor-pilot: first admission after start p50 {first['p50_us']} µs ({starts} starts; "
      f"{quartiles(first)}), later ones p50 {later['p50_us']} µs ({starts * 5}; {quartiles(later)}; "
      f"each the first request of a new HTTP/1.1 connection after 0.5 s idle, 3 containers, "
      f"all with images not seen before): {first['p50_us'] / later['p50_us']:.2f}x; later ones "
      f"with the images remembered p50 {remembered['p50_us']} µs ({starts * 3}; "
      f"{quartiles(remembered)}): the first {first['p50_us'] / remembered['p50_us']:.2f}x")
# Paired by start: each first admission against the median of the five later ones of the
# same process, so the VM's phases (its admissions took ~330 µs for minutes, then ~600)
# fall on both sides of each ratio.
def paired_by_start(firsts, laters):
    """Each start's first over the median of its five later ones: their median and its
    interval."""
    paired = [f / statistics.median(laters[5 * i:5 * i + 5]) for i, f in enumerate(firsts)
              if len(laters[5 * i:5 * i + 5]) == 5]
    if not paired:
        return 0.0, (0.0, 0.0)
    return statistics.median(paired), median_interval(paired)


def server_us(path):
    """The server's own time per admission (µs), from the metric's sum after and before."""
    return [(float(after) - float(before)) * 1e6
            for after, before in (line.split() for line in open(f"{path}.server") if line.strip())]


firsts, laters = latencies_in_order(f"{WORK}/start"), latencies_in_order(f"{WORK}/later")
paired_median, (paired_low, paired_high) = paired_by_start(firsts, laters)
print(f"harbor-pilot: first admission / the same start's later ones, paired: median "
      f"{paired_median:.2f}x ({len(firsts)} starts; 95 % interval of the median "
      f"{paired_low:.2f}-{paired_high:.2f}x)")
s_firsts, s_laters = server_us(f"{WORK}/start"), server_us(f"{WORK}/later")
s_paired_median, (s_low, s_high) = paired_by_start(s_firsts, s_laters)
if s_firsts and s_laters:
    print(f"harbor-pilot: the server's own time (body read to answer): first admission "
          f"{statistics.median(s_firsts):.0f} µs, later ones {statistics.median(s_laters):.0f} "
          f"(with the images remembered {statistics.median(server_us(f'{WORK}/remembered')):.0f}); "
          f"paired median {s_paired_median:.2f}x (95 % interval {s_low:.2f}-{s_high:.2f}x)")
# The first pod of a shape after another pod's, in a process that has served (SEASONED
# starts): what the first pod of any shape costs at any time, against which the first
# admission after start shows what start-up adds.
v_firsts, v_laters = server_us(f"{WORK}/seasoned"), server_us(f"{WORK}/seasoned-later")
v_paired_median, (v_low, v_high) = paired_by_start(v_firsts, v_laters)
seasoned = int(os.environ["SEASONED"])
if v_firsts and v_laters and s_firsts:
    print(f"harbor-pilot: the server's own time, the same pod first after another pod's "
          f"({seasoned} starts, three admissions of the microservices demo's pod first): "
          f"{statistics.median(v_firsts):.0f} µs, later ones {statistics.median(v_laters):.0f}; "
          f"paired median {v_paired_median:.2f}x (95 % interval {v_low:.2f}-{v_high:.2f}x); "
          f"first after start / first after another pod: "
          f"{statistics.median(s_firsts) / statistics.median(v_firsts):.2f}x")
print(f"harbor-pilot: peak RSS {rss_mib:.1f} MiB")
print("goal: throughput >= 0.90x and p50 (one at a time) <= 1.20x the minimal webhook's")
with open(f"{WORK}/results.json", "w") as f:
    json.dump({"rounds": ROUNDS, "duration_s": int(os.environ["DURATION"]), "rate": RATE,
               "rate_slices": int(os.environ["RATE_SLICES"]),
               "saturated_slices": int(os.environ["SAT_SLICES"]),
               "peak_rss_mib": rss_mib, "first_admission_us": first["p50_us"],
               "later_admissions_p50_us": later["p50_us"],
               "later_admissions_remembered_p50_us": remembered["p50_us"],
               "first_admission_quartiles_us": [first["p25_us"], first["p75_us"]],
               "later_admissions_quartiles_us": [later["p25_us"], later["p75_us"]],
               "later_admissions_remembered_quartiles_us": [remembered["p25_us"], remembered["p75_us"]],
               "first_admission_paired_ratio": round(paired_median, 3),
               "first_admission_paired_ratio_ci95": [round(paired_low, 3), round(paired_high, 3)],
               "first_admission_server_us": round(statistics.median(s_firsts), 1) if s_firsts else 0,
               "later_admissions_server_us": round(statistics.median(s_laters), 1) if s_laters else 0,
               "first_admission_server_paired_ratio": round(s_paired_median, 3),
               "first_admission_server_paired_ratio_ci95": [round(s_low, 3), round(s_high, 3)],
               "seasoned_first_admission_server_us":
                   round(statistics.median(v_firsts), 1) if v_firsts else 0,
               "seasoned_later_admissions_server_us":
                   round(statistics.median(v_laters), 1) if v_laters else 0,
               "seasoned_first_admission_server_paired_ratio": round(v_paired_median, 3),
               "seasoned_first_admission_server_paired_ratio_ci95": [round(v_low, 3), round(v_high, 3)],
               "runs": results}, f, indent=2)
if bad:
    print("\nFAILED REQUESTS:\n" + "\n".join(bad))
    raise SystemExit(1)
