"""Container healthcheck: exit 0 when /health/ready answers 200, else 1 (stdlib only)."""

import os
import sys
import urllib.error
import urllib.request


def main() -> int:
    port = os.environ.get("POOLSERVE_PORT", "8000")
    url = f"http://127.0.0.1:{port}/health/ready"
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError):
        return 1


if __name__ == "__main__":
    sys.exit(main())
