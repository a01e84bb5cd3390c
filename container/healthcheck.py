"""The image's HEALTHCHECK: lynkr is ready (GET /health/ready answers 200), asked with LYNKR_API_KEY."""

import os
import sys
import urllib.request

request = urllib.request.Request(
    f"http://127.0.0.1:{os.environ.get('LYNKR_PORT') or 8080}/health/ready",
    headers={"x-api-key": os.environ["LYNKR_API_KEY"]} if os.environ.get("LYNKR_API_KEY") else {},
)
try:
    with urllib.request.urlopen(request, timeout=4) as resp:
        sys.exit(0 if resp.status == 200 else 1)
except OSError as exc:
    print(f"lynkr is not ready: {exc}", file=sys.stderr)
    sys.exit(1)
