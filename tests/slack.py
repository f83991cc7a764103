"""What the Slack tests share: the linked workspace and its user, signed requests to /slack/events,
the Dramatiq messages they queued. Their fixtures (Slack's side as a fake server over real HTTP,
the settings pointing at it, the client "acme" linked to the workspace) are in tests/unit/conftest.py."""

import dramatiq

from tests.fakes.slack_server import signed_headers

TOKEN = "xoxb-test-token"
SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
TEAM = "T0LINKED"
OTHER_TEAM = "T0STRANGER"
USER = "U0ALICE"
PUBLIC_URL = "https://openclaw.example"
FORM = "application/x-www-form-urlencoded"


def post(
    client,
    body: str,
    *,
    content_type: str = FORM,
    secret: str = SECRET,
    timestamp: float | None = None,
    **extra,
):
    """A request to /slack/events signed as Slack signs it."""
    return client.post(
        "/slack/events",
        data=body,
        content_type=content_type,
        **signed_headers(secret, body, timestamp=timestamp),
        **extra,
    )


def queued(redis_server, queue: str) -> list[dramatiq.Message]:
    """Messages waiting in a Dramatiq queue (read straight from Redis)."""
    return [dramatiq.Message.decode(raw) for raw in redis_server.hvals(f"openclaw:{queue}.msgs")]
