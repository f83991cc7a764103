"""Fixtures of the Slack tests (tests/slack.py has their constants and helpers). A module that
needs a client "acme" without Slack defines its own `acme`, which takes precedence here."""

import pytest
from django.core.management import call_command

from executions.models import Client
from tests.fakes.slack_server import FakeSlackServer
from tests.slack import PUBLIC_URL, SECRET, TEAM, TOKEN, USER


@pytest.fixture
def fake_slack():
    with FakeSlackServer(token=TOKEN, team_id=TEAM) as server:
        yield server


@pytest.fixture
def slack_settings(settings, fake_slack):
    settings.SLACK_BOT_TOKEN = TOKEN
    settings.SLACK_SIGNING_SECRET = SECRET
    settings.SLACK_API_URL = fake_slack.url
    settings.OPENCLAW_PUBLIC_URL = PUBLIC_URL
    return settings


@pytest.fixture
def acme(db):
    """The client "acme", its Slack workspace TEAM linked, USER mapped to it."""
    client = Client.objects.create(name="acme")
    call_command("link_slack", TEAM, "acme", "--name", "Acme HQ", "--user", USER)
    return client
