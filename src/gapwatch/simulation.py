"""A seeded simulator of a service business: tickets, jobs and feedback, with named scenarios.

Pure generation (no I/O): `Simulator.events_until(t)` yields input events (CloudEvents dicts) in
event-time order. Items arrive as a Poisson process whose rate follows a daily load curve; each
item's later events (replies, status changes, resolution, arrival, completion, feedback) are
drawn when it arrives and queued. Response delays are log-normal around a team's typical speed;
feedback worsens with lateness. Scenarios:

- `steady`: every team answers comfortably within its promises.
- `team-slip`: from minute `slip_start` to minute `slip_end` (simulated time since the start), the
  slipping team's first responses take `slip_factor` times longer, so they run late; after
  `slip_end` it recovers.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

SOURCE = "urn:gapwatch:simulator"
TEAMS = ("billing", "network", "onboarding", "field-north", "field-south")
TICKET_TEAMS = ("billing", "network", "onboarding")
JOB_TEAMS = ("field-north", "field-south")
REGIONS = ("emea", "amer", "apac")
PRIORITIES = (("P1", 0.05), ("P2", 0.2), ("P3", 0.5), ("P4", 0.25))
CHANNELS = ("email", "chat", "phone", "web")
TIERS = (("standard", 0.7), ("gold", 0.25), ("platinum", 0.05))
SERVICE_TYPES = ("boiler_repair", "installation", "inspection")
# Typical first-response minutes per priority: well inside the shipped 24x7 promises.
FIRST_RESPONSE_MINUTES = {"P1": 6.0, "P2": 20.0, "P3": 40.0, "P4": 60.0}


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str = "steady"
    slip_team: str = "billing"
    slip_start_minutes: float = 10.0
    slip_end_minutes: float = 30.0
    slip_factor: float = 8.0

    @classmethod
    def named(cls, name: str, **overrides: Any) -> Scenario:
        if name not in ("steady", "team-slip"):
            raise ValueError(f"unknown scenario {name!r}: choose steady or team-slip")
        return cls(name=name, **overrides)


def _weighted(rnd: random.Random, choices: tuple[tuple[str, float], ...]) -> str:
    return rnd.choices([c for c, _ in choices], weights=[w for _, w in choices])[0]


def load_curve(at: datetime) -> float:
    """Relative load by hour of day (UTC): a day peak near 14:00, a quiet night (0.3-1.0)."""
    hour = at.hour + at.minute / 60
    return 0.65 + 0.35 * math.cos((hour - 14) / 24 * 2 * math.pi)


@dataclass
class Simulator:
    """Generates a realistic, reproducible stream of input events."""

    start: datetime
    items_per_second: float = 2.0
    scenario: Scenario = field(default_factory=Scenario)
    seed: int = 1
    job_share: float = 0.3
    feedback_share: float = 0.35
    use_load_curve: bool = False

    def __post_init__(self) -> None:
        self._rnd = random.Random(self.seed)
        self._queue: list[tuple[datetime, int, dict[str, Any]]] = []
        self._seq = itertools.count()
        self._next_arrival = self.start
        self._items = itertools.count(1)
        self._events = itertools.count(1)

    # --- public ------------------------------------------------------------------------------

    def events_until(self, until: datetime) -> Iterator[dict[str, Any]]:
        """Every event with event time < `until` not yielded before, in event-time order."""
        while True:
            while self._next_arrival < until:
                self._arrive(self._next_arrival)
                rate = self.items_per_second * (
                    load_curve(self._next_arrival) if self.use_load_curve else 1.0
                )
                self._next_arrival += timedelta(seconds=self._rnd.expovariate(rate))
            if not self._queue or self._queue[0][0] >= until:
                return
            _, _, event = heapq.heappop(self._queue)
            yield event

    def slipping(self, team: str, at: datetime) -> bool:
        s = self.scenario
        minutes = (at - self.start).total_seconds() / 60
        return (
            s.name == "team-slip"
            and team == s.slip_team
            and s.slip_start_minutes <= minutes < s.slip_end_minutes
        )

    # --- generation -------------------------------------------------------------------------

    def _push(self, at: datetime, event_type: str, subject: str, data: dict[str, Any]) -> None:
        event = {
            "specversion": "1.0",
            "id": f"sim-{self.seed}-{next(self._events)}",
            "source": SOURCE,
            "type": f"gapwatch.{event_type}.v1",
            "time": at.isoformat(),
            "subject": subject,
            "data": data,
        }
        heapq.heappush(self._queue, (at, next(self._seq), event))

    def _delay(self, median_minutes: float, sigma: float = 0.5) -> timedelta:
        return timedelta(minutes=median_minutes * math.exp(self._rnd.gauss(0, sigma)))

    def _arrive(self, at: datetime) -> None:
        if self._rnd.random() < self.job_share:
            self._job(at)
        else:
            self._ticket(at)

    def _ticket(self, at: datetime) -> None:
        rnd = self._rnd
        ticket = f"T-{self.seed}-{next(self._items)}"
        team = rnd.choice(TICKET_TEAMS)
        priority = _weighted(rnd, PRIORITIES)
        self._push(
            at,
            "ticket.opened",
            ticket,
            {
                "ticket_id": ticket,
                "opened_at": at.isoformat(),
                "priority": priority,
                "channel": rnd.choice(CHANNELS),
                "customer_id": f"C-{rnd.randrange(1, 5000)}",
                "customer_tier": _weighted(rnd, TIERS),
                "team": team,
                "region": rnd.choice(REGIONS),
            },
        )
        first = self._delay(FIRST_RESPONSE_MINUTES[priority])
        if self.slipping(team, at):
            first *= self.scenario.slip_factor
        reply_at = at + first
        self._push(
            reply_at,
            "ticket.replied",
            ticket,
            {
                "ticket_id": ticket,
                "replied_at": reply_at.isoformat(),
                "author": "agent",
                "visibility": "public",
            },
        )
        t = reply_at
        if rnd.random() < 0.3:  # the agent asks the customer for something
            t += timedelta(minutes=1)
            self._push(
                t,
                "ticket.status_changed",
                ticket,
                {
                    "ticket_id": ticket,
                    "changed_at": t.isoformat(),
                    "status": "awaiting_customer",
                },
            )
            t += self._delay(45)
            self._push(
                t,
                "ticket.replied",
                ticket,
                {
                    "ticket_id": ticket,
                    "replied_at": t.isoformat(),
                    "author": "customer",
                    "visibility": "public",
                },
            )
            self._push(
                t,
                "ticket.status_changed",
                ticket,
                {
                    "ticket_id": ticket,
                    "changed_at": t.isoformat(),
                    "status": "open",
                },
            )
            t += self._delay(25)
            self._push(
                t,
                "ticket.replied",
                ticket,
                {
                    "ticket_id": ticket,
                    "replied_at": t.isoformat(),
                    "author": "agent",
                    "visibility": "public",
                },
            )
        resolved = t + self._delay(90, 0.8)
        self._push(
            resolved,
            "ticket.resolved",
            ticket,
            {
                "ticket_id": ticket,
                "resolved_at": resolved.isoformat(),
            },
        )
        closed = resolved + timedelta(hours=24)
        self._push(
            closed,
            "ticket.closed",
            ticket,
            {
                "ticket_id": ticket,
                "closed_at": closed.isoformat(),
            },
        )
        late_minutes = max(0.0, (first.total_seconds() / 60) - 60)
        self._feedback(ticket, "ticket", resolved, late_minutes)

    def _job(self, at: datetime) -> None:
        rnd = self._rnd
        job = f"J-{self.seed}-{next(self._items)}"
        team = rnd.choice(JOB_TEAMS)
        start = at + timedelta(hours=rnd.choice((1, 2, 3)))
        end = start + timedelta(hours=2)
        self._push(
            at,
            "job.scheduled",
            job,
            {
                "job_id": job,
                "created_at": at.isoformat(),
                "window": {"start": start.isoformat(), "end": end.isoformat()},
                "service_type": rnd.choice(SERVICE_TYPES),
                "team": team,
                "technician": f"tech-{rnd.randrange(1, 60)}",
                "region": rnd.choice(REGIONS),
                "customer_id": f"C-{rnd.randrange(1, 5000)}",
                "customer_tier": _weighted(rnd, TIERS),
            },
        )
        if rnd.random() < 0.03:
            cancel = at + self._delay(30)
            self._push(
                cancel,
                "job.cancelled",
                job,
                {
                    "job_id": job,
                    "cancelled_at": cancel.isoformat(),
                    "reason": "customer_request",
                },
            )
            return
        dispatched = start - timedelta(minutes=30)
        self._push(
            dispatched,
            "job.dispatched",
            job,
            {
                "job_id": job,
                "dispatched_at": dispatched.isoformat(),
            },
        )
        arrived = start + timedelta(minutes=rnd.gauss(50, 35))
        self._push(arrived, "job.arrived", job, {"job_id": job, "arrived_at": arrived.isoformat()})
        completed = arrived + self._delay(70)
        self._push(
            completed,
            "job.completed",
            job,
            {
                "job_id": job,
                "completed_at": completed.isoformat(),
                "fixed": rnd.random() < 0.85,
            },
        )
        late_minutes = max(0.0, (arrived - end).total_seconds() / 60)
        self._feedback(job, "job", completed, late_minutes)

    def _feedback(self, item: str, kind: str, after: datetime, late_minutes: float) -> None:
        rnd = self._rnd
        if rnd.random() >= self.feedback_share:
            return
        # Satisfaction falls with lateness: about a point of CSAT per hour late.
        csat = round(min(5.0, max(1.0, rnd.gauss(4.5 - late_minutes / 60, 0.7))))
        nps = round(min(10.0, max(0.0, rnd.gauss(8.5 - late_minutes / 30, 1.5))))
        at = after + self._delay(120, 1.0)
        self._push(
            at,
            "feedback.submitted",
            item,
            {
                "feedback_id": f"F-{item}",
                "item_id": item,
                "item_kind": kind,
                "submitted_at": at.isoformat(),
                "csat": csat,
                "nps": nps,
                "servqual": {
                    "reliability": {
                        "expected": 7,
                        "perceived": max(1, 7 - round(late_minutes / 30)),
                    },
                    "responsiveness": {"expected": 6, "perceived": rnd.randint(3, 7)},
                },
            },
        )
