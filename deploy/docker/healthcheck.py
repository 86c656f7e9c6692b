#!/usr/bin/env python3
"""Container health probe: `gapwatch-healthcheck URL` exits 0 on a 2xx answer, 1 otherwise."""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

TIMEOUT_SECONDS = 3.0


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not argv[1].startswith("http://"):
        sys.stderr.write("usage: gapwatch-healthcheck http://HOST:PORT/PATH\n")
        return 2
    try:
        # Only the fixed http:// URL from the probe's own command line is opened.
        with urllib.request.urlopen(argv[1], timeout=TIMEOUT_SECONDS) as response:  # noqa: S310
            return 0 if 200 <= response.status < 300 else 1
    except (urllib.error.URLError, OSError) as exc:
        sys.stderr.write(f"{argv[1]}: {exc}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
