"""How short a Poisson tail can be when batching saves (almost) nothing: a simulation of the two
schedulers on the per-batch times measured in-process, with nothing of the server's own cost.

    python benchmarks/queue_floor.py --narrow 48,96,192,385 --wide 28.1,52.9,118.4,217.7 \
        --decode 3.8 [--instances 2] [--fractions 0.5,0.8,0.95] [--requests 200000]

--narrow: ms per batch of 1, 2, 4, 8 on one instance (one core); --wide: on every core. Each
request is one image that costs --decode ms of one core before it queues. Arrivals are Poisson
at each fraction of the peak (batches of 8 on every instance). Policies:
- static: the first free instance takes everything queued, up to 8 (the scheduler before 19);
- adaptive: a lone request (nothing running) on every core, otherwise the queue shared out
  over the instances in batches of its share, at most 8;
- fifo-1: batches of 1 on the instances, first come first served (M/D/c).
Issue 19's target, p99 <= 2.5 x p50 at 80 % of the peak, is a property of the queue as much as
of the scheduler: where a batch of 8 costs 8 batches of 1, the server is a queue of fixed
capacity, whose tail at 80 % load is long whatever the order of service.
"""

from __future__ import annotations

import argparse

import numpy as np

SIZES = (1, 2, 4, 8)


def interp(ms: dict[int, float], n: int) -> float:
    if n in ms:
        return ms[n]
    hi = min(s for s in ms if s >= n)
    lo = max(s for s in ms if s < n)
    return ms[lo] + (ms[hi] - ms[lo]) * (n - lo) / (hi - lo)


def simulate(
    policy: str,
    rate: float,
    narrow: dict[int, float],
    wide: dict[int, float],
    decode: float,
    instances: int,
    requests: int,
    seed: int = 1,
) -> tuple[float, float]:
    """p50 and p99 of the time from arrival to answer (ms)."""
    rng = np.random.default_rng(seed)
    arrivals = np.cumsum(rng.exponential(1000.0 / rate, requests)) + decode
    free_at = [0.0] * instances  # when each instance (core) is free again
    queue: list[float] = []
    done: list[float] = []
    i, t = 0, 0.0
    while i < requests or queue:
        while i < requests and arrivals[i] <= t:
            queue.append(arrivals[i] - decode)
            i += 1
        idle = [k for k in range(instances) if free_at[k] <= t]
        started = False
        if queue and idle:
            if policy == "adaptive" and len(idle) == instances and len(queue) == 1:
                end = t + interp(wide, 1) + decode / instances  # the wide batch, its decode
                free_at = [end] * instances
                take = 1
            else:
                share = -(-len(queue) // len(idle)) if policy == "adaptive" else len(queue)
                take = 1 if policy == "fifo-1" else min(8, share)
                end = t + interp(narrow, take) + decode * take  # decode shares the cores
                free_at[idle[0]] = end
            done.extend(end - a for a in queue[:take])
            del queue[:take]
            started = True
        if not started:
            nxt = [f for f in free_at if f > t]
            t = min(arrivals[i] if i < requests else np.inf, min(nxt) if nxt else np.inf)
    lat = np.array(done[requests // 10 :])
    return float(np.percentile(lat, 50)), float(np.percentile(lat, 99))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--narrow", required=True, help="ms per batch of 1,2,4,8 on one instance")
    ap.add_argument("--wide", required=True, help="ms per batch of 1,2,4,8 on every core")
    ap.add_argument("--decode", type=float, default=0.0, help="ms of one core per image")
    ap.add_argument("--instances", type=int, default=2)
    ap.add_argument("--fractions", default="0.5,0.8,0.95")
    ap.add_argument("--requests", type=int, default=200_000)
    args = ap.parse_args()
    narrow = dict(zip(SIZES, map(float, args.narrow.split(",")), strict=True))
    wide = dict(zip(SIZES, map(float, args.wide.split(",")), strict=True))
    peak = args.instances * 8 * 1000.0 / (narrow[8] + 8 * args.decode)
    print(f"peak (batches of 8 on {args.instances} instances, decode included): {peak:.1f} img/s")
    print(
        "| policy | "
        + " | ".join(f"{f} p50 / p99 ms (p99/p50)" for f in args.fractions.split(","))
        + " |"
    )
    for policy in ("static", "adaptive", "fifo-1"):
        cells = []
        for f in map(float, args.fractions.split(",")):
            p50, p99 = simulate(
                policy, f * peak, narrow, wide, args.decode, args.instances, args.requests
            )
            cells.append(f"{p50:.0f} / {p99:.0f} ({p99 / p50:.2f})")
        print(f"| {policy} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
