"""Test-wide settings: in CI, hypothesis runs a fixed set of examples (no flaky landings)."""

from __future__ import annotations

import os

from hypothesis import settings

# Locally every run explores new examples (and remembers failures in .hypothesis/); CI runs the
# same derandomized examples each time, so a landing never depends on the draw.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
