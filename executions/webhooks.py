"""Webhooks: the client's server is called when an execution awaits approval or ends.

A delivery row is created in the transaction of the status change it announces
(`webhook_delivery_create`), with its body fixed then: `{"id": <delivery id>, "type", "created_at",
"data": <GET /api/execution/{id}>}`. Once committed a worker sends it (`webhook_deliver`), signed
`X-OpenClaw-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">` with the client's
webhook secret. A 2xx ends it; a 410 stops that URL for the client; anything else (or no answer)
is retried under the same delivery id, first after OPENCLAW_WEBHOOK_RETRY_BASE_SEC, then twice as
long each time (at most OPENCLAW_WEBHOOK_RETRY_MAX_SEC apart), until an attempt made
OPENCLAW_WEBHOOK_RETRY_WINDOW_SEC (24 h) or more after the first fails too.

The database is the schedule: the reaper's pass sends the deliveries that are due
(`webhooks_send_due`). A message carries the delivery's claim number and only the current one
sends, so a duplicate or stale message does nothing; deliveries of one execution go out one at a
time, in the order they were created. At least once: a worker killed after the receiver answered
sends the delivery again, with the same id, for the receiver to recognise.
"""

import hashlib
import hmac
import json
import logging
import time
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from pools import outbound_http

from . import messages, selectors
from .api_schemas import ExecutionOut
from .models import Execution, StoppedWebhookUrl, WebhookAttempt, WebhookDelivery
from .states import DELIVERY_FINAL, DELIVERY_TRANSITIONS, DeliveryStatus, ExecutionStatus, check

log = logging.getLogger("openclaw.webhooks")

# The statuses a webhook announces, and its event type for each.
WEBHOOK_EVENTS = {
    status: f"execution.{status}"
    for status in (
        ExecutionStatus.AWAITING_APPROVAL,
        ExecutionStatus.COMPLETED,
        ExecutionStatus.PARTIAL,
        ExecutionStatus.FAILED,
        ExecutionStatus.CANCELLED,
        ExecutionStatus.BUDGET_EXCEEDED,
    )
}
QUEUED_LEASE_SEC = 60  # a sent message not taken by then is presumed lost and sent again
SEND_GRACE_SEC = 30  # beyond the HTTP timeout, before another worker may send the delivery


class CallbackUrlRefused(ValueError):
    """A callback URL that may not be called (scheme, or an address inside); the message says why."""


def callback_url_check(url: str) -> str:
    """A callback URL a client gives, checked as it will be when called (https, a public address
    after DNS resolution); raises CallbackUrlRefused saying why not."""
    if len(url) > 500:
        raise CallbackUrlRefused("callback_url is longer than 500 characters")
    try:
        outbound_http.check_url(url, allow_private=settings.OPENCLAW_WEBHOOK_ALLOW_PRIVATE)
    except outbound_http.UnsafeTarget as exc:
        raise CallbackUrlRefused(f"callback_url refused: {exc}") from None
    return url


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The X-OpenClaw-Signature header's value for a body sent at `timestamp`."""
    digest = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def execution_body(execution: Execution) -> dict:
    """What GET /api/execution/{id} answers, as JSON values."""
    return ExecutionOut.model_validate(selectors.execution_detail(execution)).model_dump(mode="json")


def webhook_delivery_create(*, execution: Execution, status: str) -> WebhookDelivery | None:
    """The webhook announcing that the execution reached `status`, if the status has one and the
    execution a callback URL. Call inside the transaction of the status change, once the execution
    is as the client should see it (the body is read then); it is sent once that commits."""
    event = WEBHOOK_EVENTS.get(status)
    if event is None or not execution.callback_url:
        return None  # most executions: no query at all
    execution = Execution.objects.select_related("client").get(pk=execution.pk)
    if StoppedWebhookUrl.objects.filter(client_id=execution.client_id, url=execution.callback_url).exists():
        log.info("webhook %s of %s not sent: %s is stopped", event, execution.pk, execution.callback_url)
        return None
    now = timezone.now()
    delivery = WebhookDelivery(
        execution=execution,
        client_id=execution.client_id,
        event=event,
        url=execution.callback_url,
        created_at=now,
        next_attempt_at=now,
        retrying_since=now,
        claims=1,
        lease_until=now + timedelta(seconds=QUEUED_LEASE_SEC),
    )
    body = {
        "id": str(delivery.delivery_id),
        "type": event,
        "created_at": now.isoformat(),
        "data": execution_body(execution),
    }
    delivery.body = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    delivery.save()
    transaction.on_commit(lambda: messages.send_webhook(delivery.pk, 1))
    return delivery


def retry_delay(attempts: int) -> float:
    """Seconds before the next try, after `attempts` failed ones."""
    base = settings.OPENCLAW_WEBHOOK_RETRY_BASE_SEC
    return min(base * 2 ** max(0, attempts - 1), settings.OPENCLAW_WEBHOOK_RETRY_MAX_SEC)


def _earlier_pending():
    return WebhookDelivery.objects.filter(
        execution=OuterRef("execution"), status=DeliveryStatus.PENDING, pk__lt=OuterRef("pk")
    )


def _move(delivery_pk: int, expected, to: str, **changes) -> bool:
    sources = check(DELIVERY_TRANSITIONS, expected, to)
    return (
        WebhookDelivery.objects.filter(pk=delivery_pk, status__in=sources).update(status=to, **changes) == 1
    )


def webhook_deliver(delivery_pk: int, claim: int) -> str | None:
    """Send a delivery for the message holding claim `claim`; returns the status it is left in, or
    None when the message was stale (a duplicate, or the delivery was sent meanwhile)."""
    now = timezone.now()
    timeout = settings.OPENCLAW_WEBHOOK_TIMEOUT_SEC
    if not WebhookDelivery.objects.filter(pk=delivery_pk, status=DeliveryStatus.PENDING, claims=claim).update(
        claims=claim + 1, lease_until=now + timedelta(seconds=timeout + SEND_GRACE_SEC)
    ):
        return None
    delivery = WebhookDelivery.objects.select_related("client").get(pk=delivery_pk)
    if WebhookDelivery.objects.filter(pk=delivery_pk).filter(Exists(_earlier_pending())).exists():
        # An earlier delivery of the execution goes first: it sends this one when it is done.
        WebhookDelivery.objects.filter(pk=delivery_pk, claims=claim + 1).update(lease_until=None)
        return DeliveryStatus.PENDING
    if StoppedWebhookUrl.objects.filter(client_id=delivery.client_id, url=delivery.url).exists():
        return _finish(delivery, DeliveryStatus.GONE, error="the URL was stopped by an earlier 410")
    body = delivery.body.encode("utf-8")
    allow_private = settings.OPENCLAW_WEBHOOK_ALLOW_PRIVATE
    started = timezone.now()
    try:
        target = outbound_http.check_url(delivery.url, allow_private=allow_private)
    except outbound_http.UnsafeTarget as exc:
        answer = outbound_http.Answer(status=None, error=f"refused: {exc}"[:300])
    else:
        secret = delivery.client.ensure_webhook_secret()
        answer = outbound_http.post(
            target,
            body,
            {
                "X-OpenClaw-Event": delivery.event,
                "X-OpenClaw-Delivery": str(delivery.delivery_id),
                "X-OpenClaw-Signature": signature(secret, int(time.time()), body),
            },
            timeout=timeout,
        )
    return _record(delivery, answer, started)


def _record(delivery: WebhookDelivery, answer: outbound_http.Answer, started) -> str:
    number = delivery.attempts + 1
    error = answer.error
    if answer.status is not None and 300 <= answer.status < 400:
        error = f"redirect to {answer.location or '(no Location)'} not followed"
    WebhookAttempt.objects.create(
        delivery=delivery,
        number=number,
        started_at=started,
        duration_ms=answer.duration_ms,
        status_code=answer.status,
        response=answer.excerpt,
        error=error[:300],
    )
    delivery.attempts = number
    log.info(
        "webhook %s %s → %s: attempt %d, %s",
        delivery.delivery_id,
        delivery.event,
        delivery.url,
        number,
        answer.status or error,
    )
    if answer.ok:
        return _finish(delivery, DeliveryStatus.DELIVERED, status_code=answer.status)
    if answer.status == 410:
        _stop_url(delivery)
        return _finish(delivery, DeliveryStatus.GONE, status_code=410, error="410 Gone: the URL is stopped")
    if error.startswith("refused:"):
        return _finish(delivery, DeliveryStatus.REFUSED, error=error)
    now = timezone.now()
    if now - delivery.retrying_since >= timedelta(seconds=settings.OPENCLAW_WEBHOOK_RETRY_WINDOW_SEC):
        return _finish(delivery, DeliveryStatus.FAILED, status_code=answer.status, error=error)
    WebhookDelivery.objects.filter(pk=delivery.pk, status=DeliveryStatus.PENDING).update(
        attempts=number,
        last_status_code=answer.status,
        last_error=error[:300] or f"HTTP {answer.status}",
        next_attempt_at=now + timedelta(seconds=retry_delay(number)),
        lease_until=None,
    )
    return DeliveryStatus.PENDING


def _finish(delivery: WebhookDelivery, to: str, *, status_code: int | None = None, error: str = "") -> str:
    with transaction.atomic():
        _move(
            delivery.pk,
            DeliveryStatus.PENDING,
            to,
            attempts=delivery.attempts,
            last_status_code=status_code,
            last_error=error[:300],
            lease_until=None,
            finished_at=timezone.now(),
        )
        _send_next(delivery.execution_id)
    return to


def _stop_url(delivery: WebhookDelivery) -> None:
    """410 Gone: nothing more goes to this URL for the client (its other pending deliveries end)."""
    with transaction.atomic():
        StoppedWebhookUrl.objects.get_or_create(
            client_id=delivery.client_id,
            url=delivery.url,
            defaults={"reason": f"410 Gone answered to delivery {delivery.delivery_id}"},
        )
        for pk in (
            WebhookDelivery.objects.filter(
                client_id=delivery.client_id, url=delivery.url, status=DeliveryStatus.PENDING
            )
            .exclude(pk=delivery.pk)
            .values_list("pk", flat=True)
        ):
            _move(
                pk, DeliveryStatus.PENDING, DeliveryStatus.GONE, finished_at=timezone.now(), lease_until=None
            )
    log.warning("webhook URL %s answered 410 Gone: stopped for client %s", delivery.url, delivery.client_id)


def _claim_and_send(delivery_pk: int, claims: int, now) -> bool:
    """Take the delivery for a new message (compare-and-set on its claim number) and send it on commit."""
    if not WebhookDelivery.objects.filter(
        pk=delivery_pk, status=DeliveryStatus.PENDING, claims=claims
    ).update(claims=claims + 1, lease_until=now + timedelta(seconds=QUEUED_LEASE_SEC)):
        return False
    transaction.on_commit(lambda: messages.send_webhook(delivery_pk, claims + 1))
    return True


def _due(now):
    return (
        WebhookDelivery.objects.filter(status=DeliveryStatus.PENDING, next_attempt_at__lte=now)
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
        .exclude(Exists(_earlier_pending()))
    )


def _send_next(execution_id: str) -> None:
    """The execution's next delivery, if it is due: sent once the current transaction commits."""
    now = timezone.now()
    row = _due(now).filter(execution_id=execution_id).order_by("pk").values_list("pk", "claims").first()
    if row:
        _claim_and_send(*row, now)


def webhooks_send_due(now=None) -> int:
    """The reaper's part: send every delivery whose retry is due, or whose message was lost (its
    lease lapsed), the first pending one of each execution only. Returns how many were sent."""
    now = now or timezone.now()
    sent = 0
    for delivery_pk, claims in _due(now).order_by("pk").values_list("pk", "claims")[:500]:
        with transaction.atomic():
            sent += _claim_and_send(delivery_pk, claims, now)
    return sent


def webhook_delivery_resend(*, delivery: WebhookDelivery) -> bool:
    """Send a finished delivery again (admin, console): the same id and body, a new round of
    retries; a URL stopped by a 410 is let through again. False when it is still pending."""
    now = timezone.now()
    with transaction.atomic():
        if not _move(
            delivery.pk,
            DELIVERY_FINAL,
            DeliveryStatus.PENDING,
            next_attempt_at=now,
            retrying_since=now,
            finished_at=None,
            lease_until=None,
        ):
            return False
        StoppedWebhookUrl.objects.filter(client_id=delivery.client_id, url=delivery.url).delete()
        _send_next(delivery.execution_id)
    return True
