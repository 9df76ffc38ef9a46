"""Classify a JPEG, then send SIGTERM (the command after `--`, e.g. `podman stop CTR`) while
clients keep sending, and account for every request: each one the server accepted must be
answered 200; refused connections (after the listener closed) are fine, nothing else is.
The command must return within the grace period.

Usage: kube_play_shutdown.py --url http://127.0.0.1:PORT --grace-s 30 -- podman stop CTR"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import threading
import time

import httpx
from PIL import Image

CLIENTS = 4


def jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (640, 480), (200, 30, 60)).save(buf, "JPEG")
    return buf.getvalue()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--grace-s", type=float, required=True)
    ap.add_argument("stop", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    stop_cmd = args.stop[1:] if args.stop[:1] == ["--"] else args.stop
    url = f"{args.url}/v1/models/resnet18/classify?top_k=3"
    body, headers = jpeg(), {"Content-Type": "image/jpeg"}

    r = httpx.post(url, content=body, headers=headers, timeout=30)
    if r.status_code != 200 or len(r.json()["predictions"][0]) != 3:
        print(f"classify failed: {r.status_code} {r.text[:300]}", file=sys.stderr)
        return 1
    print(f"classified a JPEG: {r.text[:200]}", file=sys.stderr)

    outcomes: list[tuple[float, str]] = []
    done = threading.Event()

    def client() -> None:
        with httpx.Client(timeout=60) as c:
            while not done.is_set():
                start = time.monotonic()
                try:
                    code = c.post(url, content=body, headers=headers).status_code
                    outcome = str(code)
                except httpx.ConnectError:
                    outcome = "refused"  # never accepted: the listener is closed
                    time.sleep(0.05)
                except httpx.HTTPError as exc:
                    outcome = f"lost:{type(exc).__name__}"  # accepted, then no answer
                outcomes.append((start, outcome))

    threads = [threading.Thread(target=client, daemon=True) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    time.sleep(2)
    sigterm_at = time.monotonic()
    stopped = subprocess.run(stop_cmd, capture_output=True, text=True, timeout=args.grace_s + 30)
    took = time.monotonic() - sigterm_at
    done.set()
    for t in threads:
        t.join(70)
    after = [o for s, o in outcomes if s >= sigterm_at]
    bad = [o for _, o in outcomes if o not in ("200", "refused")]
    print(
        f"SIGTERM: stopped in {took:.1f} s (grace {args.grace_s:.0f} s); "
        f"{len(outcomes)} requests, {after.count('200')} answered 200 after SIGTERM, "
        f"{after.count('refused')} refused after the listener closed, {len(bad)} lost {bad[:5]}",
        file=sys.stderr,
    )
    if stopped.returncode != 0:
        print(f"stop command failed: {stopped.stderr}", file=sys.stderr)
        return 1
    if took >= args.grace_s:
        print("did not exit within the grace period", file=sys.stderr)
        return 1
    if bad or after.count("200") == 0:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
