"""Webhooks against a real HTTP receiver on this machine: the body, headers and signature of
DESIGN.md, retries under one delivery id with backoff, 2xx ends, 410 stops the URL, deliveries of
one execution in order, and callback URLs refused where they point inside (SSRF): loopback, cloud
metadata, a name that resolves to a private address, a redirect."""

import hashlib
import hmac
import json
import socket
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import transaction
from django.utils import timezone

from executions import approval, webhooks
from executions.models import Execution, StoppedWebhookUrl, WebhookDelivery
from executions.reaper import reap
from executions.services import RequestRefused, execution_create
from pools import outbound_http
from tests.factories import make_client, make_execution, make_pools
from tests.fakes.webhook_receiver import Receiver, verify


@pytest.fixture
def local_receivers(settings):
    """Receivers on 127.0.0.1, allowed as in development (OPENCLAW_WEBHOOK_ALLOW_PRIVATE=1)."""
    settings.OPENCLAW_WEBHOOK_ALLOW_PRIVATE = True
    started: list[Receiver] = []

    def start(**kwargs) -> Receiver:
        receiver = Receiver(**kwargs)
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        receiver.close()


@pytest.fixture
def acme(db):
    make_pools()
    return make_client("acme")


def awaiting_execution(client, url: str) -> Execution:
    execution = make_execution(client, [], status="awaiting_approval")
    Execution.objects.filter(pk=execution.pk).update(callback_url=url, approval="plan")
    execution.refresh_from_db()
    return execution


def announce(execution: Execution, status: str) -> WebhookDelivery:
    with transaction.atomic():
        return webhooks.webhook_delivery_create(execution=execution, status=status)


def test_a_webhook_carries_the_event_the_delivery_id_and_a_valid_signature(acme, local_receivers):
    client, key = acme
    receiver = local_receivers(secret=client.ensure_webhook_secret())
    execution = awaiting_execution(client, receiver.url)

    approval.execution_reject(execution, by="client")  # the status change creates the delivery
    delivery = WebhookDelivery.objects.get(execution=execution)
    assert webhooks.webhook_deliver(delivery.pk, 1) == "delivered"

    (request,) = receiver.wait_for(1)
    assert request.signature_ok is True
    assert request.headers["X-OpenClaw-Event"] == "execution.cancelled"
    assert request.headers["X-OpenClaw-Delivery"] == str(delivery.delivery_id)
    assert request.headers["Content-Type"] == "application/json"
    body = request.json
    assert set(body) == {"id", "type", "created_at", "data"}
    assert body["id"] == str(delivery.delivery_id) and body["type"] == "execution.cancelled"
    from django.test import Client as Browser

    get = Browser().get(f"/api/execution/{execution.pk}", HTTP_X_API_KEY=key).json()
    assert body["data"] == get  # what GET /api/execution/{id} answers
    # t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>"> keyed with the secret's UTF-8 bytes
    t, v1 = (part.split("=", 1)[1] for part in request.headers["X-OpenClaw-Signature"].split(","))
    secret = client.ensure_webhook_secret().encode("utf-8")
    assert v1 == hmac.new(secret, f"{t}.".encode() + request.body, hashlib.sha256).hexdigest()
    assert not verify(
        client.ensure_webhook_secret(), request.headers["X-OpenClaw-Signature"], request.body + b" "
    )
    assert not verify("another-secret", request.headers["X-OpenClaw-Signature"], request.body)
    delivery.refresh_from_db()
    assert delivery.status == "delivered" and delivery.attempts == 1 and delivery.last_status_code == 200


def test_what_a_receiver_answers_is_kept_storable_whatever_its_bytes(acme, local_receivers):
    client, _ = acme
    receiver = local_receivers(statuses=[500], body=b"oops\x00\xff")
    delivery = announce(awaiting_execution(client, receiver.url), "awaiting_approval")

    assert webhooks.webhook_deliver(delivery.pk, 1) == "pending"
    assert delivery.tries.get().response == "oops\ufffd\ufffd"  # PostgreSQL stores no NUL


def test_non_2xx_answers_are_retried_with_backoff_under_the_same_delivery_id(acme, local_receivers, settings):
    settings.OPENCLAW_WEBHOOK_RETRY_BASE_SEC = 10
    client, _ = acme
    receiver = local_receivers(statuses=[500, 500, 500, 200], secret=client.ensure_webhook_secret())
    delivery = announce(awaiting_execution(client, receiver.url), "awaiting_approval")

    claim, delays = 1, []
    for expected in ("pending", "pending", "pending", "delivered"):
        assert webhooks.webhook_deliver(delivery.pk, claim) == expected
        delivery.refresh_from_db()
        claim = delivery.claims
        if expected == "pending":
            delays.append(round((delivery.next_attempt_at - timezone.now()).total_seconds()))
            # Not due yet: the reaper leaves it alone; once due, it sends it again.
            assert webhooks.webhooks_send_due() == 0
            assert webhooks.webhooks_send_due(delivery.next_attempt_at + timedelta(seconds=1)) == 1
            delivery.refresh_from_db()
            claim = delivery.claims
            # A duplicate of an older message does nothing.
            assert webhooks.webhook_deliver(delivery.pk, claim - 1) is None

    requests = receiver.wait_for(4)
    assert [r.status for r in requests] == [500, 500, 500, 200]
    assert {r.headers["X-OpenClaw-Delivery"] for r in requests} == {str(delivery.delivery_id)}
    assert len({r.body for r in requests}) == 1 and all(r.signature_ok for r in requests)
    assert delays == [pytest.approx(10, abs=1), pytest.approx(20, abs=1), pytest.approx(40, abs=1)]
    assert [a.status_code for a in delivery.tries.all()] == [500, 500, 500, 200]


def test_retries_go_on_for_a_day_then_stop(acme, local_receivers, settings):
    client, _ = acme
    receiver = local_receivers(statuses=[503])
    delivery = announce(awaiting_execution(client, receiver.url), "awaiting_approval")
    assert webhooks.retry_delay(1) <= 60  # the first retry within a minute
    assert sum(webhooks.retry_delay(n) for n in range(1, 16)) >= 24 * 3600

    assert webhooks.webhook_deliver(delivery.pk, 1) == "pending"
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        retrying_since=timezone.now() - timedelta(hours=24), next_attempt_at=timezone.now()
    )
    webhooks.webhooks_send_due()
    delivery.refresh_from_db()
    assert webhooks.webhook_deliver(delivery.pk, delivery.claims) == "failed"
    delivery.refresh_from_db()
    assert delivery.status == "failed" and delivery.attempts == 2 and delivery.last_status_code == 503


def test_a_receiver_that_is_down_leaves_the_retry_scheduled_and_visible_in_the_admin(
    acme, local_receivers, admin_client
):
    client, _ = acme
    receiver = local_receivers()
    url = receiver.url
    receiver.close()  # nobody listens there any more
    delivery = announce(awaiting_execution(client, url), "awaiting_approval")

    assert webhooks.webhook_deliver(delivery.pk, 1) == "pending"

    delivery.refresh_from_db()
    assert (
        delivery.status == "pending" and delivery.attempts == 1 and delivery.next_attempt_at > timezone.now()
    )
    assert "ConnectionRefusedError" in delivery.last_error
    page = admin_client.get(f"/admin/executions/webhookdelivery/{delivery.pk}/change/").content.decode()
    assert "ConnectionRefusedError" in page and str(delivery.delivery_id) in page
    listing = admin_client.get("/admin/executions/webhookdelivery/?status__exact=pending").content.decode()
    assert str(delivery.delivery_id) in listing


def test_a_410_stops_the_url_for_the_client_until_an_admin_resends(acme, local_receivers):
    client, _ = acme
    receiver = local_receivers(statuses=[410, 200])
    execution = awaiting_execution(client, receiver.url)
    delivery = announce(execution, "awaiting_approval")

    assert webhooks.webhook_deliver(delivery.pk, 1) == "gone"
    assert StoppedWebhookUrl.objects.filter(client=client, url=receiver.url).exists()
    assert announce(execution, "cancelled") is None  # nothing more for that URL
    assert webhooks.webhooks_send_due(timezone.now() + timedelta(days=2)) == 0

    assert webhooks.webhook_delivery_resend(delivery=delivery) is True
    delivery.refresh_from_db()
    assert webhooks.webhook_deliver(delivery.pk, delivery.claims) == "delivered"
    assert [r.status for r in receiver.wait_for(2)] == [410, 200]
    assert not StoppedWebhookUrl.objects.filter(client=client, url=receiver.url).exists()


def test_deliveries_of_one_execution_go_out_in_order(
    acme, local_receivers, django_capture_on_commit_callbacks
):
    client, _ = acme
    receiver = local_receivers(statuses=[500, 200, 200])
    execution = awaiting_execution(client, receiver.url)
    first = announce(execution, "awaiting_approval")
    second = announce(execution, "cancelled")

    assert webhooks.webhook_deliver(first.pk, 1) == "pending"  # failed: retried later
    assert webhooks.webhook_deliver(second.pk, 1) == "pending"  # waits for the first
    assert len(receiver.received) == 1
    assert webhooks.webhooks_send_due(timezone.now() + timedelta(hours=1)) == 1  # the first only
    first.refresh_from_db()
    with django_capture_on_commit_callbacks() as sent:
        assert webhooks.webhook_deliver(first.pk, first.claims) == "delivered"
    assert len(sent) == 1  # the first, delivered, sends the second
    second.refresh_from_db()
    assert webhooks.webhook_deliver(second.pk, second.claims) == "delivered"
    assert [r.headers["X-OpenClaw-Event"] for r in receiver.wait_for(3)] == [
        "execution.awaiting_approval",
        "execution.awaiting_approval",
        "execution.cancelled",
    ]


def test_the_webhook_secret_command_prints_the_secret_alone_on_its_last_line(acme, capsys):
    client, _ = acme
    call_command("webhook_secret", "acme")
    secret = capsys.readouterr().out.strip().splitlines()[-1]
    client.refresh_from_db()
    assert secret == client.webhook_secret and secret.startswith("whsec_") and len(secret) > 40
    call_command("webhook_secret", "acme")
    assert capsys.readouterr().out.strip().splitlines()[-1] == secret  # the same one until rotated
    call_command("webhook_secret", "acme", "--rotate")
    assert capsys.readouterr().out.strip().splitlines()[-1] != secret


# ---------------------------------------------------------------- where webhooks may not go


@pytest.fixture
def private_names(monkeypatch):
    """`internal.example` resolves to a private address, `public.example` to a public one."""
    real = socket.getaddrinfo
    names = {
        "internal.example": "10.1.2.3",
        "public.example": "93.184.215.14",
        "meta.example": "169.254.169.254",
    }

    def getaddrinfo(host, port, *args, **kwargs):
        if host in names:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (names[host], port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.mark.parametrize(
    "url,reason",
    [
        ("http://127.0.0.1/hook", "https"),
        ("https://127.0.0.1/hook", "callback_url refused: 127.0.0.1 is a loopback address"),
        ("https://localhost:8443/hook", "loopback"),
        ("https://[::1]/hook", "loopback"),
        ("https://[::ffff:127.0.0.1]/hook", "loopback"),
        ("https://2130706433/hook", "2130706433 resolves to 127.0.0.1, which is a loopback address"),
        ("http://169.254.169.254/latest/meta-data/", "https"),
        ("https://169.254.169.254/latest/meta-data/", "metadata"),
        (
            "https://internal.example/hook",
            "internal.example resolves to 10.1.2.3, which is a private address",
        ),
        ("https://10.0.0.8/hook", "private"),
        ("https://[fe80::1]/hook", "link-local"),
        ("https://0.0.0.0/hook", "not a host"),
        ("ftp://public.example/hook", "https"),
        ("https://user:pw@public.example/hook", "credentials"),
        ("https:///hook", "no host"),
    ],
)
def test_callback_urls_pointing_inside_are_refused(private_names, settings, url, reason):
    settings.OPENCLAW_WEBHOOK_ALLOW_PRIVATE = False
    with pytest.raises(webhooks.CallbackUrlRefused) as refused:
        webhooks.callback_url_check(url)
    assert reason in str(refused.value)


def test_a_public_https_url_passes_and_private_ones_only_with_the_setting(private_names, settings):
    settings.OPENCLAW_WEBHOOK_ALLOW_PRIVATE = False
    target = outbound_http.check_url("https://public.example:8443/hook?x=1", allow_private=False)
    assert target.addresses == ("93.184.215.14",) and target.path == "/hook?x=1" and target.port == 8443
    assert outbound_http.check_url("https://internal.example/hook", allow_private=True).addresses == (
        "10.1.2.3",
    )
    assert outbound_http.check_url("http://127.0.0.1:9/hook", allow_private=True).scheme == "http"
    for url in ("https://169.254.169.254/", "https://meta.example/", "http://public.example/hook"):
        with pytest.raises(outbound_http.UnsafeTarget):
            outbound_http.check_url(
                url, allow_private=True
            )  # metadata never; plain http not over the internet


def test_a_request_with_a_refused_callback_url_is_a_422_and_stores_nothing(
    acme, private_names, client, settings
):
    settings.OPENCLAW_WEBHOOK_ALLOW_PRIVATE = False
    _, key = acme
    for url in ("http://127.0.0.1:8000/hook", "https://169.254.169.254/", "https://internal.example/hook"):
        response = client.post(
            "/api/execute-parallel",
            data=json.dumps({"message": "Build it", "callback_url": url}),
            content_type="application/json",
            HTTP_X_API_KEY=key,
        )
        assert response.status_code == 422 and "callback_url refused" in response.json()["detail"]
    assert not Execution.objects.exists()
    accepted = execution_create(
        client=acme[0], message="Build it", session_key="s", callback_url="https://public.example/hook"
    )
    assert accepted.callback_url == "https://public.example/hook"
    with pytest.raises(RequestRefused):
        execution_create(
            client=acme[0], message="Build it", session_key="s", callback_url="https://10.9.8.7/"
        )


def test_a_url_that_resolves_inside_by_the_time_it_is_called_is_refused_then(acme, private_names, settings):
    client, _ = acme
    execution = awaiting_execution(client, "https://internal.example/hook")  # stored before DNS changed
    delivery = announce(execution, "awaiting_approval")

    assert webhooks.webhook_deliver(delivery.pk, 1) == "refused"

    delivery.refresh_from_db()
    assert delivery.status == "refused" and "10.1.2.3, which is a private address" in delivery.last_error
    assert delivery.tries.get().status_code is None


def test_a_redirect_is_never_followed(acme, local_receivers):
    client, _ = acme
    inside = local_receivers()  # where the redirect points: must never be called
    redirecting = local_receivers(statuses=[302], headers={"Location": inside.url})
    metadata = local_receivers(statuses=[307], headers={"Location": "http://169.254.169.254/latest/"})
    for receiver in (redirecting, metadata):
        delivery = announce(awaiting_execution(client, receiver.url), "awaiting_approval")

        assert webhooks.webhook_deliver(delivery.pk, 1) == "pending"  # a 3xx is a failed attempt

        delivery.refresh_from_db()
        assert "not followed" in delivery.last_error and delivery.last_status_code in (302, 307)
        assert len(receiver.received) == 1
    assert inside.received == []


def test_the_reaper_sends_a_delivery_whose_message_was_lost(acme, local_receivers):
    client, _ = acme
    receiver = local_receivers()
    delivery = announce(awaiting_execution(client, receiver.url), "awaiting_approval")

    assert reap()["webhooks"] == 0  # its message is presumed on its way
    later = timezone.now() + timedelta(seconds=webhooks.QUEUED_LEASE_SEC + 1)
    assert reap(now=later)["webhooks"] == 1
    delivery.refresh_from_db()
    assert delivery.claims == 2
    assert webhooks.webhook_deliver(delivery.pk, 1) is None  # the lost message, should it come back
    assert webhooks.webhook_deliver(delivery.pk, 2) == "delivered"


def test_a_status_change_and_its_delivery_commit_or_roll_back_together(acme, private_names):
    from executions.planning import execution_fail_planning

    client, _ = acme
    execution = execution_create(
        client=client, message="Build it", session_key="s", callback_url="https://public.example/hook"
    )
    with pytest.raises(RuntimeError), transaction.atomic():
        execution_fail_planning(execution, "no pool can run it")
        assert WebhookDelivery.objects.filter(execution=execution, event="execution.failed").exists()
        raise RuntimeError("the transaction fails after the change")
    assert not WebhookDelivery.objects.exists()
    assert Execution.objects.get(pk=execution.pk).status == "planning"

    execution_fail_planning(execution, "no pool can run it")
    delivery = WebhookDelivery.objects.get(execution=execution)
    body = json.loads(delivery.body)
    assert delivery.event == body["type"] == "execution.failed" and body["data"]["status"] == "failed"
    assert delivery.url == "https://public.example/hook"


def test_the_console_shows_each_delivery_with_its_attempts_and_sends_one_again(acme, local_receivers):
    from tests.unit.test_plan_approval import staff_browser

    client, _ = acme
    receiver = local_receivers(statuses=[410, 200])
    execution = awaiting_execution(client, receiver.url)
    delivery = announce(execution, "awaiting_approval")
    webhooks.webhook_deliver(delivery.pk, 1)
    staff = staff_browser("ops", "change_execution")

    page = staff.get(f"/console/executions/{execution.pk}/").content.decode()
    assert str(delivery.delivery_id) in page and "HTTP 410" in page and "Send again" in page
    response = staff.post(f"/console/executions/{execution.pk}/webhooks/{delivery.pk}/resend")

    assert response.status_code == 302
    delivery.refresh_from_db()
    assert delivery.status == "pending"
    assert webhooks.webhook_deliver(delivery.pk, delivery.claims) == "delivered"
    assert [r.headers["X-OpenClaw-Delivery"] for r in receiver.wait_for(2)] == [str(delivery.delivery_id)] * 2
    viewer = staff_browser("viewer")
    assert "Send again" not in viewer.get(f"/console/executions/{execution.pk}/").content.decode()
    assert viewer.post(f"/console/executions/{execution.pk}/webhooks/{delivery.pk}/resend").status_code == 403
