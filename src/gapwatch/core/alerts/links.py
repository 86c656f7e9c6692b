"""Runbook and dashboard links of an alert: a rule's link, made absolute with a base URL from
the settings and filled with the alert's labels, so a page opens the team's dashboard.

- `joined(base, link)`: a relative link (no scheme) is joined to `base`
  (`GAPWATCH_RUNBOOK_BASE_URL`, `GAPWATCH_GRAFANA_URL`); an absolute one, or any link without a
  base, stays as written.
- `filled(link, labels, dashboard=...)`: `{label}` placeholders take the alert's label values
  (URL-encoded; an unknown one stays as written); a dashboard link also gets Grafana's
  `var-<label>=<value>` for each label it does not already set, before any `#fragment`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import quote, urlencode, urlsplit

_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def joined(base: str, link: str) -> str:
    if not link or not base or urlsplit(link).scheme:
        return link
    return base.rstrip("/") + "/" + link.lstrip("/")


def filled(link: str, labels: Mapping[str, str], *, dashboard: bool) -> str:
    if not link:
        return link

    def label(match: re.Match[str]) -> str:
        value = labels.get(match[1])
        return match[0] if value is None else quote(value, safe="")

    out = _PLACEHOLDER.sub(label, link)
    if not dashboard:
        return out
    head, hash_, fragment = out.partition("#")
    extra = [(f"var-{k}", v) for k, v in sorted(labels.items()) if f"var-{k}=" not in head]
    if extra:
        head += ("&" if "?" in head else "?") + urlencode(extra)
    return head + hash_ + fragment
