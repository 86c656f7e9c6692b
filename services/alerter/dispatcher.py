"""Delivers the outbox: every owed notification is retried with backoff until it is accepted.

Rows are claimed with a lease (`FOR UPDATE SKIP LOCKED` in the store), so several alerter
processes can deliver side by side and a crashed one's claims come back after the lease. Each
delivery runs as its own task with a per-receiver limit: one slow or failing receiver only
delays its own rows. A delivery whose result could not be recorded (PostgreSQL down at that
moment) is delivered again after its lease, with the same transition id, so receivers that
dedup (PagerDuty dedup_key, Alertmanager, webhooks keyed on X-Gapwatch-Delivery) see it once.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from aiokafka import AIOKafkaProducer

from gapwatch.core.alerts.events import alert_event
from gapwatch.core.alerts.lifecycle import Alert, AlertState, Transition, transition_id
from gapwatch.core.alerts.rules import AlertmanagerReceiver, AlertsConfig, Rule
from gapwatch.core.topics import Stream, topic_name
from gapwatch.kafka.batches import CLOUDEVENTS_HEADERS
from gapwatch_alerter.engine import KAFKA_RECEIVER
from gapwatch_alerter.metrics import AlerterMetrics
from gapwatch_alerter.receivers import DeliveryOutcome, ReceiverClient
from gapwatch_alerter.settings import AlerterSettings
from gapwatch_alerter.store import AlertStore, Delivery, StoreUnavailable

log = logging.getLogger(__name__)

PER_RECEIVER_CONCURRENCY = 8


def backoff_seconds(attempts: int, cap: float, rng: random.Random) -> float:
    """1 s, 2 s, 4 s ... up to `cap`, with ±20 % jitter so retries of many rows spread out."""
    base = min(cap, 2.0 ** max(0, attempts - 1))
    return base * rng.uniform(0.8, 1.2)


class Dispatcher:
    """Claims due outbox rows and hands them to their receivers (Kafka is one of them)."""

    def __init__(
        self,
        settings: AlerterSettings,
        config: AlertsConfig,
        store: AlertStore,
        receivers: dict[str, ReceiverClient],
        producer: AIOKafkaProducer,
        metrics: AlerterMetrics,
    ) -> None:
        self.settings = settings
        self.config = config
        self.store = store
        self.receivers = receivers
        self.producer = producer
        self.metrics = metrics
        self.alerts_topic = topic_name(Stream.ALERTS, settings.topic_prefix)
        self.wake = asyncio.Event()
        self.limits = {name: asyncio.Semaphore(PER_RECEIVER_CONCURRENCY) for name in receivers}
        self.in_flight: set[asyncio.Task[None]] = set()
        self.rng = random.Random()
        self.listening = False

    async def run(self) -> None:
        """Deliver until cancelled; PostgreSQL outages pause it, they never end it."""
        while True:
            try:
                if not self.listening:
                    await self.store.listen_outbox(self.wake.set)
                    self.listening = True
                # Pages never queue behind the Kafka copies of transitions: each has its claim.
                batch = self.settings.alerter_delivery_batch
                lease = self.settings.alerter_lease_seconds
                to_kafka = await self.store.claim_deliveries(batch, lease, [KAFKA_RECEIVER])
                to_receivers = await self.store.claim_deliveries(batch, lease, self.receivers)
                await self._export_depth()
                if not to_kafka and not to_receivers:
                    self.wake.clear()
                    try:
                        await asyncio.wait_for(self.wake.wait(), timeout=1.0)
                    except TimeoutError:
                        pass
                    continue
                for delivery in to_receivers:
                    task = asyncio.create_task(self._deliver(delivery))
                    self.in_flight.add(task)
                    task.add_done_callback(self.in_flight.discard)
                if to_kafka:
                    await self._publish(to_kafka)
            except StoreUnavailable as exc:
                log.warning("outbox paused: PostgreSQL unavailable (%s)", exc)
                self.listening = False
                self.metrics.store_errors.inc()
                await asyncio.sleep(1.0)

    async def stop(self) -> None:
        for task in list(self.in_flight):
            task.cancel()
        await asyncio.gather(*self.in_flight, return_exceptions=True)

    async def _export_depth(self) -> None:
        depth = await self.store.outbox_depth()
        self.metrics.outbox_depth.clear()
        for receiver in (*self.receivers, KAFKA_RECEIVER):
            self.metrics.outbox_depth.labels(receiver).set(depth.get(receiver, 0))
        oldest = await self.store.oldest_undelivered_age()
        self.metrics.outbox_oldest_seconds.set(oldest or 0.0)

    async def _publish(self, deliveries: list[Delivery]) -> None:
        """Every transition on gapwatch.alerts.v1, keyed by fingerprint, in one producer batch."""
        futures = []
        for d in deliveries:
            event = alert_event(d.transition)
            futures.append(
                await self.producer.send(
                    self.alerts_topic,
                    event.model_dump_json(exclude_none=True).encode(),
                    key=event.key,
                    headers=list(CLOUDEVENTS_HEADERS),
                )
            )
        results = await asyncio.gather(*futures, return_exceptions=True)
        published = []
        for d, result in zip(deliveries, results, strict=True):
            if isinstance(result, BaseException):
                failure = DeliveryOutcome(False, True, None, f"kafka: {type(result).__name__}")
                await self._record(d, failure)
            else:
                published.append(d.id)
        if published:
            self.metrics.deliveries.labels(KAFKA_RECEIVER, "ok").inc(len(published))
            await _retrying(lambda: self.store.mark_delivered_many(published))

    async def _deliver(self, delivery: Delivery) -> None:
        client = self.receivers.get(delivery.receiver)
        if client is None:
            # A receiver removed from the config: keep the row, visible in the outbox depth.
            outcome = DeliveryOutcome(False, False, None, "receiver no longer configured")
        else:
            async with self.limits[delivery.receiver]:
                outcome = await client.deliver(delivery.transition)
        await self._record(delivery, outcome)

    async def _record(self, delivery: Delivery, outcome: DeliveryOutcome) -> None:
        receiver = delivery.receiver
        self.metrics.deliveries.labels(receiver, "ok" if outcome.ok else "failed").inc()
        if outcome.ok:
            lag = (datetime.now(UTC) - delivery.transition.at).total_seconds()
            self.metrics.delivery_latency_seconds.labels(receiver).observe(max(0.0, lag))
            await _retrying(lambda: self.store.mark_delivered(delivery.id, outcome.status))
            return
        wait = backoff_seconds(delivery.attempts, self.settings.alerter_retry_max_seconds, self.rng)
        log.warning(
            "delivery of %s to %s failed (attempt %d, %s): %s; retry in %.0fs",
            delivery.transition.id,
            receiver,
            delivery.attempts,
            "retriable" if outcome.retriable else "rejected",
            outcome.error,
            wait,
        )
        retry_at = datetime.now(UTC) + timedelta(seconds=wait)
        await _retrying(
            lambda: self.store.mark_failed(delivery.id, outcome.error, outcome.status, retry_at)
        )


async def _retrying(action: Callable[[], Awaitable[None]], attempts: int = 5) -> None:
    """Record a result through a short PostgreSQL blip; after that the lease brings it back."""
    for attempt in range(attempts):
        try:
            await action()
            return
        except StoreUnavailable:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.2 * 2**attempt)


def firing_transition(alert: Alert, rule: Rule) -> Transition:
    """A firing alert as its latest firing transition, for re-sending to Alertmanager."""
    at = alert.evaluated_at or alert.firing_since or datetime.now(UTC)
    runbook_url, dashboard_url = rule.links(alert.labels)
    return Transition(
        id=transition_id(alert.fingerprint, alert.sequence),
        fingerprint=alert.fingerprint,
        rule=alert.rule,
        labels=dict(alert.labels),
        severity=alert.severity,
        from_state=AlertState.FIRING,
        to_state=AlertState.FIRING,
        at=at,
        sequence=alert.sequence,
        summary=alert.summary,
        figures=alert.figures,
        window=alert.window,
        latest_breached=alert.latest_breached,
        firing_since=alert.firing_since,
        runbook_url=runbook_url,
        dashboard_url=dashboard_url,
    )


class AlertmanagerResender:
    """Re-posts firing alerts to each Alertmanager receiver before their endsAt passes."""

    def __init__(
        self,
        config: AlertsConfig,
        store: AlertStore,
        receivers: dict[str, ReceiverClient],
        leading: Callable[[], bool],
    ) -> None:
        self.config = config
        self.store = store
        self.targets = [
            (r, receivers[r.name])
            for r in config.receivers
            if isinstance(r, AlertmanagerReceiver) and r.name in receivers
        ]
        self.rules = {r.name: r for r in config.rules}
        self.leading = leading

    async def run(self) -> None:
        if not self.targets:
            return
        interval = min(r.resend_seconds for r, _ in self.targets)
        last = time.monotonic()
        while True:
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - last)))
            last = time.monotonic()
            if not self.leading():
                continue
            try:
                firing = await self.store.list_alerts(state=AlertState.FIRING.value, limit=10_000)
                silences = await self.store.active_silences(datetime.now(UTC))
            except StoreUnavailable:
                continue
            now = datetime.now(UTC)
            firing = [
                a for a in firing if not any(s.matches(a.rule, a.labels, now) for s in silences)
            ]
            for receiver, client in self.targets:
                mine = []
                for alert in firing:
                    rule = self.rules.get(alert.rule)
                    if rule is None:
                        continue
                    routed = self.config.receivers_for(alert.rule, alert.severity, alert.labels)
                    if receiver.name in routed:
                        mine.append(firing_transition(alert, rule))
                if mine:
                    outcome = await client.resend(mine)  # type: ignore[attr-defined]
                    if not outcome.ok:
                        log.warning("re-sending to %s failed: %s", receiver.name, outcome.error)
