"""Durations as people read them on a page or in a table: 2d03h, 1h05m, 4m30s."""

from __future__ import annotations


def short_duration(seconds: float) -> str:
    """`seconds` (negative counts as 0) in its two largest units."""
    total = int(max(0.0, seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    if days:
        return f"{days}d{hours:02d}h"
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"
