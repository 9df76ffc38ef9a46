#!/usr/bin/python3
"""`curl -f URL` for podman's probes, in an image without curl (podman kube play runs an httpGet
probe as `curl -f http://localhost:PORT/PATH` inside the container). GET the URL; exit 0 on
2xx/3xx, 22 on an HTTP error (what `curl -f` does), 7 when nothing answers. Test images only."""

import sys
import urllib.error
import urllib.request

urls = [a for a in sys.argv[1:] if a.startswith(("http://", "https://"))]
if len(urls) != 1:
    print(f"probe-curl: expected one URL, got {sys.argv[1:]}", file=sys.stderr)
    sys.exit(2)
try:
    with urllib.request.urlopen(urls[0], timeout=10) as response:
        sys.exit(0 if response.status < 400 else 22)
except urllib.error.HTTPError:
    sys.exit(22)
except OSError:
    sys.exit(7)
