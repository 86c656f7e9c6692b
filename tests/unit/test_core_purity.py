"""The core imports no Kafka, HTTP or database code (STYLE rule 1)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "src" / "gapwatch" / "core"
FORBIDDEN = (
    "aiokafka",
    "faust",
    "asyncpg",
    "fastapi",
    "starlette",
    "uvicorn",
    "httpx",
    "prometheus_client",
)


def test_importing_the_whole_core_loads_no_io_library():
    modules = sorted(p.stem for p in CORE.glob("*.py") if p.stem != "__init__")
    code = (
        "import sys\n"
        + "".join(f"import gapwatch.core.{m}\n" for m in modules)
        + f"print(sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
    assert len(modules) >= 8


def test_services_do_not_import_each_other():
    services = Path(__file__).resolve().parents[2] / "services"
    names = [p.name for p in services.iterdir() if p.is_dir() and (p / "__init__.py").exists()]
    for name in names:
        others = [f"gapwatch_{n}" for n in names if n != name]
        for source in (services / name).rglob("*.py"):
            text = source.read_text()
            for other in others:
                assert f"import {other}" not in text and f"from {other}" not in text, source
