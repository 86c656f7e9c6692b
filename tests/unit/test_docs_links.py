"""Every relative link in the README, the CHANGELOG and docs/ resolves to a file in the repo."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PAGES = sorted([REPO / "README.md", REPO / "CHANGELOG.md", *(REPO / "docs").rglob("*.md")])
LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(page: Path) -> None:
    broken = [
        target
        for target in LINK.findall(page.read_text())
        if not target.startswith(("http://", "https://", "#", "mailto:"))
        and not (page.parent / target.split("#")[0]).exists()
    ]
    assert broken == []


def test_the_readme_stays_a_front_page() -> None:
    assert len((REPO / "README.md").read_text().splitlines()) <= 250
