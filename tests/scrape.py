"""Reading a real server's /metrics in tests. A series that is not there is an error, never
0.0: an `== 0` check must be able to fail (assert absence with pytest.raises(LookupError))."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families


def sample(text: str, name: str, **labels: str) -> float:
    """The value of the one sample `name` whose labels include `labels`."""
    found = [
        s
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    if not found:
        raise LookupError(f"no series {name}{labels} in the metrics")
    if len(found) > 1:
        raise LookupError(f"{len(found)} series match {name}{labels}: {[s.labels for s in found]}")
    return float(found[0].value)


def scraped(url: str, name: str, **labels: str) -> float:
    """sample() of the server at `url`, scraped now."""
    return sample(httpx.get(f"{url}/metrics").text, name, **labels)
