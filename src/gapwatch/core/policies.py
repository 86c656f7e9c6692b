"""SLA policies: which promises an item gets, on which calendar, from its labels (pure config)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Self

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from gapwatch.core.calendar import ALWAYS_OPEN, BusinessCalendar, CalendarSpec
from gapwatch.core.promises import PromiseKind

_DURATION = re.compile(r"^\s*(?P<amount>[0-9]+(?:\.[0-9]+)?)\s*(?P<unit>s|m|h|d)\s*$")
_UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0}


class Target(BaseModel):
    """A promised duration: business seconds, or whole business days ("1d" is one business day)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    seconds: float | None = None
    days: int | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.seconds is None) == (self.days is None):
            raise PydanticCustomError("target_shape", "a target is either seconds or days")
        if (self.seconds is not None and self.seconds <= 0) or (
            self.days is not None and self.days <= 0
        ):
            raise PydanticCustomError("target_positive", "a target must be positive")
        return self

    def due(self, calendar: BusinessCalendar, start: datetime) -> datetime:
        """When a promise started at `start` is due on `calendar`."""
        if self.days is not None:
            return calendar.add_business_days(start, self.days)
        assert self.seconds is not None
        return calendar.add_business_seconds(start, self.seconds)

    def __str__(self) -> str:
        return f"{self.days}d" if self.days is not None else f"{self.seconds:g}s"


def parse_target(value: Any) -> Any:
    """'15m', '4h', '90s', '1d' (business day), or a number of seconds."""
    if isinstance(value, Target | dict):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return {"seconds": float(value)}
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            amount, unit = float(match["amount"]), match["unit"]
            if unit == "d":
                if amount != int(amount):
                    raise PydanticCustomError(
                        "target_days", "business days must be whole: use hours for fractions"
                    )
                return {"days": int(amount)}
            return {"seconds": amount * _UNIT_SECONDS[unit]}
    raise PydanticCustomError(
        "target_format", "expected a duration like '15m', '4h', '90s' or '1d' (business days)"
    )


TargetField = Annotated[Target, BeforeValidator(parse_target)]
Fraction = Annotated[float, Field(gt=0, lt=1)]


class PromiseRule(BaseModel):
    """One promise a policy makes: how long, on which calendar, when it is at risk."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    within: TargetField
    calendar: str | None = Field(default=None, description="Overrides the policy's calendar.")
    at_risk: tuple[Fraction, ...] | None = Field(
        default=None, description="Shares of the promised time that raise at_risk events."
    )


class ReplyRule(BaseModel):
    """Which replies deliver a first or next response."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    authors: tuple[str, ...] = ("agent",)
    visibilities: tuple[str, ...] = ("public",)


class Policy(BaseModel):
    """Promises for the items whose labels match; the first matching policy wins."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=128)]
    match: dict[str, str | tuple[str, ...]] = Field(
        default_factory=dict, description="label -> value or list of values; all must match."
    )
    calendar: str | None = None
    pause_statuses: tuple[str, ...] | None = None
    at_risk: tuple[Fraction, ...] | None = None
    promises: dict[PromiseKind, PromiseRule] = Field(
        default_factory=dict,
        description="Per promise kind, its target. A promise an event states itself (a "
        "ticket's `promises`, a job's window and promised completion) wins over the policy's "
        "for that kind; the policy fills the other kinds. `{}` gives none: the items it matches "
        "keep only the promises their events carry (and no later policy matches them).",
    )

    def matches(self, labels: Mapping[str, str]) -> bool:
        for key, wanted in self.match.items():
            value = labels.get(key)
            if value is None:
                return False
            if isinstance(wanted, tuple) and value not in wanted:
                return False
            if isinstance(wanted, str) and value != wanted:
                return False
        return True


class PolicyDefaults(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    calendar: str = ALWAYS_OPEN
    pause_statuses: tuple[str, ...] = ("pending_customer", "awaiting_customer", "on_hold")
    at_risk: tuple[Fraction, ...] = (0.75, 0.9)
    replies: ReplyRule = ReplyRule()


class ResolvedPromise(BaseModel):
    """A policy's promise with every default filled in: what the clock needs."""

    model_config = ConfigDict(frozen=True)

    kind: PromiseKind
    within: Target
    calendar: str
    at_risk: tuple[float, ...]


class PolicySet(BaseModel):
    """The whole policies.yaml: a version, defaults, calendars and ordered policies."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Annotated[int, Field(ge=0)]
    defaults: PolicyDefaults = PolicyDefaults()
    calendars: tuple[CalendarSpec, ...] = ()
    policies: tuple[Policy, ...]

    @model_validator(mode="after")
    def _references_resolve(self) -> Self:
        known = {c.name for c in self.calendars} | {ALWAYS_OPEN}
        names: set[str] = set()
        for index, policy in enumerate(self.policies):
            if policy.name in names:
                raise PydanticCustomError(
                    "duplicate_policy",
                    "policies[{index}]: duplicate policy name {name!r}",
                    {"index": index, "name": policy.name},
                )
            names.add(policy.name)
            used = [policy.calendar] + [r.calendar for r in policy.promises.values()]
            for calendar in [self.defaults.calendar, *used]:
                if calendar is not None and calendar not in known:
                    raise PydanticCustomError(
                        "unknown_calendar",
                        "policies[{index}] ({name}): unknown calendar {calendar!r}; known: {known}",
                        {
                            "index": index,
                            "name": policy.name,
                            "calendar": calendar,
                            "known": ", ".join(sorted(known)),
                        },
                    )
        return self

    def calendar_objects(self) -> dict[str, BusinessCalendar]:
        calendars = {c.name: BusinessCalendar(c) for c in self.calendars}
        calendars.setdefault(ALWAYS_OPEN, BusinessCalendar.always_open())
        return calendars

    def select(self, labels: Mapping[str, str], by_name: str | None = None) -> Policy | None:
        """The named policy if given and known, else the first whose match holds."""
        if by_name is not None:
            for policy in self.policies:
                if policy.name == by_name:
                    return policy
        for policy in self.policies:
            if policy.matches(labels):
                return policy
        return None

    def resolve(self, policy: Policy) -> list[ResolvedPromise]:
        defaults = self.defaults
        return [
            ResolvedPromise(
                kind=kind,
                within=rule.within,
                calendar=rule.calendar or policy.calendar or defaults.calendar,
                at_risk=tuple(sorted(rule.at_risk or policy.at_risk or defaults.at_risk)),
            )
            for kind, rule in policy.promises.items()
        ]

    def pause_statuses(self, policy: Policy | None) -> frozenset[str]:
        statuses = policy.pause_statuses if policy and policy.pause_statuses is not None else None
        return frozenset(statuses if statuses is not None else self.defaults.pause_statuses)
