"""One realistic example document per input event type, for the published schemas and tests."""

from __future__ import annotations

from typing import Any

_SOURCE = "https://helpdesk.example.com/gapwatch"


def _envelope(
    event_type: str, event_id: str, subject: str, time: str, data: dict[str, Any]
) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": _SOURCE,
        "type": event_type,
        "time": time,
        "subject": subject,
        "datacontenttype": "application/json",
        "data": data,
    }


EXAMPLES: dict[str, dict[str, Any]] = {
    "gapwatch.ticket.opened.v1": _envelope(
        "gapwatch.ticket.opened.v1",
        "evt-0001",
        "T-1001",
        "2026-03-02T08:15:03Z",
        {
            "ticket_id": "T-1001",
            "opened_at": "2026-03-02T09:15:00+01:00",
            "priority": "P2",
            "channel": "email",
            "customer_id": "C-77",
            "customer_tier": "gold",
            "team": "billing",
            "region": "emea",
            "labels": {"product": "invoicing"},
            "promises": [{"kind": "first_response", "due_at": "2026-03-02T11:15:00+01:00"}],
            "sla_policy": "gold-support",
        },
    ),
    "gapwatch.ticket.status_changed.v1": _envelope(
        "gapwatch.ticket.status_changed.v1",
        "evt-0002",
        "T-1001",
        "2026-03-02T08:40:00Z",
        {
            "ticket_id": "T-1001",
            "changed_at": "2026-03-02T08:40:00Z",
            "status": "awaiting_customer",
        },
    ),
    "gapwatch.ticket.replied.v1": _envelope(
        "gapwatch.ticket.replied.v1",
        "evt-0003",
        "T-1001",
        "2026-03-02T08:39:00Z",
        {
            "ticket_id": "T-1001",
            "replied_at": "2026-03-02T08:39:00Z",
            "author": "agent",
            "visibility": "public",
        },
    ),
    "gapwatch.ticket.promise_changed.v1": _envelope(
        "gapwatch.ticket.promise_changed.v1",
        "evt-0004",
        "T-1001",
        "2026-03-02T09:00:00Z",
        {
            "ticket_id": "T-1001",
            "changed_at": "2026-03-02T09:00:00Z",
            "kind": "resolution",
            "due_at": "2026-03-04T17:00:00+01:00",
            "reason": "customer_request",
        },
    ),
    "gapwatch.ticket.resolved.v1": _envelope(
        "gapwatch.ticket.resolved.v1",
        "evt-0005",
        "T-1001",
        "2026-03-03T14:02:00Z",
        {
            "ticket_id": "T-1001",
            "resolved_at": "2026-03-03T14:02:00Z",
            "resolution": "refund issued",
        },
    ),
    "gapwatch.ticket.reopened.v1": _envelope(
        "gapwatch.ticket.reopened.v1",
        "evt-0006",
        "T-1001",
        "2026-03-04T10:00:00Z",
        {"ticket_id": "T-1001", "reopened_at": "2026-03-04T10:00:00Z"},
    ),
    "gapwatch.ticket.closed.v1": _envelope(
        "gapwatch.ticket.closed.v1",
        "evt-0007",
        "T-1001",
        "2026-03-10T00:00:00Z",
        {"ticket_id": "T-1001", "closed_at": "2026-03-10T00:00:00Z"},
    ),
    "gapwatch.job.scheduled.v1": _envelope(
        "gapwatch.job.scheduled.v1",
        "evt-0101",
        "J-2001",
        "2026-03-02T07:00:00Z",
        {
            "job_id": "J-2001",
            "created_at": "2026-03-02T07:00:00Z",
            "window": {"start": "2026-03-03T13:00:00+01:00", "end": "2026-03-03T15:00:00+01:00"},
            "promised_completion_at": "2026-03-03T17:00:00+01:00",
            "service_type": "boiler_repair",
            "team": "field-north",
            "technician": "tech-17",
            "region": "emea",
            "customer_id": "C-91",
            "customer_tier": "standard",
            "labels": {"contract": "home-care"},
        },
    ),
    "gapwatch.job.rescheduled.v1": _envelope(
        "gapwatch.job.rescheduled.v1",
        "evt-0102",
        "J-2001",
        "2026-03-03T09:00:00Z",
        {
            "job_id": "J-2001",
            "rescheduled_at": "2026-03-03T09:00:00Z",
            "window": {"start": "2026-03-03T15:00:00+01:00", "end": "2026-03-03T17:00:00+01:00"},
            "reason": "internal",
        },
    ),
    "gapwatch.job.dispatched.v1": _envelope(
        "gapwatch.job.dispatched.v1",
        "evt-0103",
        "J-2001",
        "2026-03-03T13:10:00Z",
        {"job_id": "J-2001", "dispatched_at": "2026-03-03T13:10:00Z", "technician": "tech-17"},
    ),
    "gapwatch.job.arrived.v1": _envelope(
        "gapwatch.job.arrived.v1",
        "evt-0104",
        "J-2001",
        "2026-03-03T14:35:00Z",
        {"job_id": "J-2001", "arrived_at": "2026-03-03T14:35:00Z"},
    ),
    "gapwatch.job.completed.v1": _envelope(
        "gapwatch.job.completed.v1",
        "evt-0105",
        "J-2001",
        "2026-03-03T15:50:00Z",
        {"job_id": "J-2001", "completed_at": "2026-03-03T15:50:00Z", "fixed": True},
    ),
    "gapwatch.job.cancelled.v1": _envelope(
        "gapwatch.job.cancelled.v1",
        "evt-0106",
        "J-2002",
        "2026-03-03T08:00:00Z",
        {
            "job_id": "J-2002",
            "cancelled_at": "2026-03-03T08:00:00Z",
            "reason": "customer_request",
            "note": "customer fixed it themselves",
        },
    ),
    "gapwatch.feedback.submitted.v1": _envelope(
        "gapwatch.feedback.submitted.v1",
        "evt-0201",
        "J-2001",
        "2026-03-04T18:20:00Z",
        {
            "feedback_id": "F-3001",
            "item_id": "J-2001",
            "item_kind": "job",
            "submitted_at": "2026-03-04T18:20:00Z",
            "csat": 3,
            "nps": 6,
            "servqual": {
                "reliability": {"expected": 7, "perceived": 4},
                "responsiveness": {"expected": 6, "perceived": 5},
            },
            "comment": "Arrived late but fixed the boiler.",
        },
    ),
}


GAP_EXAMPLE: dict[str, Any] = {
    "specversion": "1.0",
    "id": "0b5d1c1e-8f0a-5d6e-9a53-2f1d3c4b5a69",
    "source": "urn:gapwatch:scorer",
    "type": "gapwatch.gap.delivered_late.v1",
    "time": "2026-03-02T10:30:00Z",
    "subject": "T-1001",
    "data": {
        "item_id": "T-1001",
        "item_kind": "ticket",
        "promise_kind": "first_response",
        "cycle": 0,
        "round": 0,
        "segment": {
            "team": "billing",
            "region": "emea",
            "priority": "P2",
            "channel": "email",
            "customer_tier": "gold",
        },
        "outcome": "delivered_late",
        "outcome_at": "2026-03-02T10:30:00Z",
        "started_at": "2026-03-02T08:15:00Z",
        "promised_at": "2026-03-02T09:15:00Z",
        "original_promised_at": "2026-03-02T09:15:00Z",
        "delivered_at": "2026-03-02T10:30:00Z",
        "gap_seconds": 4500.0,
        "gap_business_seconds": 4500.0,
        "promised_seconds": 3600.0,
        "delivered_seconds": 8100.0,
        "drift_seconds": 0.0,
        "policy": {"name": "gold-support", "version": 1},
        "calendar": {"name": "emea-business", "version": 1},
        "caused_by": "evt-0003",
    },
}

ALERT_EXAMPLE: dict[str, Any] = {
    "specversion": "1.0",
    "id": "3d8f4a8e-2a0e-5c55-a2f1-6f3b7f0c9e21",
    "source": "urn:gapwatch:alerter",
    "type": "gapwatch.alert.firing.v1",
    "time": "2026-03-02T10:42:00Z",
    "subject": "9c1e5b0f2a7d4e3b8c6a1f0e2d3c4b5a",
    "data": {
        "fingerprint": "9c1e5b0f2a7d4e3b8c6a1f0e2d3c4b5a",
        "rule": "first-response-burn",
        "labels": {"team": "billing"},
        "severity": "page",
        "from_state": "pending",
        "to_state": "firing",
        "at": "2026-03-02T10:42:00Z",
        "sequence": 2,
        "summary": "first-response-burn (team=billing): attainment 20.0% over 1h burns the "
        "95.0% objective's budget 16.0x (limit 14.4x)",
        "figures": {
            "objective": 0.95,
            "factor": 14.4,
            "long_window": "1h",
            "short_window": "5m",
            "attainment_long": 0.2,
            "attainment_short": 0.1,
            "burn_rate_long": 16.0,
            "burn_rate_short": 18.0,
            "met_long": 12,
            "breached_long": 48,
            "min_events": 10,
        },
        "window": "1h",
        "latest_breached": ["T-10442", "T-10439"],
        "firing_since": "2026-03-02T10:42:00Z",
        "runbook_url": "https://github.com/gapwatch/gapwatch/blob/main/docs/runbooks/first-response-burn.md",
        "dashboard_url": "https://grafana.example.com/d/gapwatch-overview?var-team=billing",
    },
}

PROMISE_STATE_EXAMPLE: dict[str, Any] = {
    "specversion": "1.0",
    "id": "6e2b7a51-0c4d-5f8e-b1a9-3c7d2e4f6a80",
    "source": "urn:gapwatch:scorer",
    "type": "gapwatch.promise.state.v1",
    "time": "2026-03-02T10:15:00Z",
    "subject": "T-1001",
    "data": {
        "item_id": "T-1001",
        "item_kind": "ticket",
        "promise_kind": "first_response",
        "cycle": 0,
        "round": 0,
        "segment": {"team": "billing", "region": "emea", "priority": "P2"},
        "state": "overdue",
        "changed_at": "2026-03-02T10:15:00Z",
        "started_at": "2026-03-02T08:15:00Z",
        "due_at": "2026-03-02T10:15:00Z",
        "original_due_at": "2026-03-02T10:15:00Z",
        "overdue_by_seconds": 0.0,
        "overdue_by_business_seconds": 0.0,
        "policy": {"name": "gold-support", "version": 1},
        "calendar": {"name": "emea-business", "version": 1},
    },
}
