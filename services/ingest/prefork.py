"""Several worker processes serving one listening socket, kept alive by a small supervisor.

One Python process tops out at one core, and validation is CPU-bound, so the ingest scales out on
one machine the way gunicorn does: the supervisor binds the socket, forks the workers (each runs
its own event loop, HTTP server and Kafka producer), and the kernel hands each new connection to
whichever worker accepts it first. The supervisor runs no event loop and holds no Kafka client: it
only replaces a worker that dies and stops them all on SIGTERM or SIGINT.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
# A worker that dies this soon after its start is crash-looping: wait before the next one.
_EARLY_DEATH_SECONDS = 5.0
_MAX_BACKOFF_SECONDS = 30.0


def _die_with_parent(parent: int) -> None:
    """Ask the kernel to SIGTERM this process when the supervisor goes, even by kill -9."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the supervisor went before prctl took effect
        os._exit(0)


def serve_prefork(
    sock: socket.socket,
    workers: int,
    serve: Callable[[socket.socket], None],
    on_worker_exit: Callable[[int], None] = lambda pid: None,
) -> int:
    """Run `serve(sock)` in `workers` forked processes until SIGTERM or SIGINT; returns 0.

    Must be called before any thread or event loop exists in this process. A worker that exits
    while the service is not stopping is replaced (after a back-off if it keeps dying at start);
    `on_worker_exit(pid)` runs for every worker that is gone, e.g. to drop its live gauges.
    """
    supervisor = os.getpid()
    started: dict[int, float] = {}
    stopping = False
    backoff = 0.0

    def spawn() -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                # Out of the terminal's process group: Ctrl-C reaches the supervisor alone, which
                # sends each worker one SIGTERM. A worker that got the terminal's SIGINT too, just
                # after the supervisor's SIGTERM, would take it as a second Ctrl-C, on which uvicorn
                # exits at once without finishing its requests.
                os.setpgid(0, 0)
                _die_with_parent(supervisor)
                serve(sock)
                code = 0
            except BaseException:  # a worker must never return into the supervisor's loop
                log.exception("ingest worker %d failed", os.getpid())
            finally:
                os._exit(code)
        started[pid] = time.monotonic()
        log.info("ingest worker %d started", pid)

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        if not stopping:
            log.info("%s: stopping %d ingest workers", signal.Signals(signum).name, len(started))
        stopping = True
        for pid in list(started):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        for _ in range(workers):
            spawn()
        while started:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            began = started.pop(pid, None)
            if began is None:
                continue
            on_worker_exit(pid)
            if stopping:
                continue
            code = os.waitstatus_to_exitcode(status)
            lived = time.monotonic() - began
            backoff = (
                min(max(backoff * 2, 1.0), _MAX_BACKOFF_SECONDS)
                if lived < _EARLY_DEATH_SECONDS
                else 0.0
            )
            log.error(
                "ingest worker %d exited (%s) after %.1fs; starting another%s",
                pid,
                f"signal {-code}" if code < 0 else f"code {code}",
                lived,
                f" in {backoff:.0f}s" if backoff else "",
            )
            if backoff:
                time.sleep(backoff)
            if not stopping:
                spawn()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0
