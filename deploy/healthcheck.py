"""Container health probe: exit 0 when the service's /readyz answers 200, else 1.

The slim image has no curl, so the HEALTHCHECK runs this with the image's Python.
It reads the same SEQCAST_PORT the server binds, so a changed port needs no new probe.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def main() -> int:
    port = os.environ.get("SEQCAST_PORT", "8000")
    url = f"http://127.0.0.1:{port}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=float(os.environ.get("HEALTH_TIMEOUT", "2"))) as r:
            ok = r.status == 200
    except (urllib.error.URLError, OSError) as exc:
        sys.stderr.write(f"healthcheck: {url}: {exc}\n")
        return 1
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
