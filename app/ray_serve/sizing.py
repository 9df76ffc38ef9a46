"""How many requests Ray Serve lets into one replica, derived from the models' batching.

Two queues could hold a request waiting for a model: Serve's (in the proxy's router, before a
replica is chosen) and the batcher's (inside the replica). They must not fight:

- Too many requests let into a replica and its batcher's queue fills up and answers 503 while
  another replica idles: the batcher cannot hand work back to Serve's router.
- Too few and the batcher never sees enough requests at once to form full batches.

So a replica takes, per model, enough to keep every instance busy with a full batch and the
next full batch already forming: ``2 x max_batch_size x instances`` (the "busy" figure, twice).
More than that would only wait in this replica's queue, where no other replica can take it;
it waits in Serve's router instead, which hands it to whichever replica frees up first.
A replica serves all its models, and all of its requests may be for one model, so the total
is also capped by the smallest ``max_batch_size x instances + max_queue_size`` (what one
model's batcher holds without a 503). Autoscaling aims at one full batch per instance in
flight (``target_ongoing_requests`` = the busy figure), so it adds replicas before requests
queue. A request with several images takes one queue place per max_batch_size chunk, so these
figures count single-image requests, the common case.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.config import ModelConfig
from app.threads import plan


@dataclass(frozen=True)
class ReplicaLimits:
    max_ongoing_requests: int
    target_ongoing_requests: int
    # what each model's batcher holds without a 503 (the cap), for the docs and the CLI's report
    per_model_capacity: dict[str, int]


def replica_limits(configs: list[ModelConfig], cores: int = 1) -> ReplicaLimits:
    """`cores`: the replica's CPUs (num_cpus), for the instances a config leaves to the thread
    budget (instances 0), as the replica's server will plan them (app/threads.py)."""
    if not configs:
        raise ValueError("no model to serve: the model repository is empty")
    busy = {
        c.name: c.batching.max_batch_size * (c.batching.instances or plan(c, cores).instances)
        for c in configs
    }
    capacity = {c.name: busy[c.name] + c.batching.max_queue_size for c in configs}
    ongoing = min(sum(2 * b for b in busy.values()), min(capacity.values()))
    target = max(1, min(sum(busy.values()), ongoing))
    return ReplicaLimits(ongoing, target, capacity)
