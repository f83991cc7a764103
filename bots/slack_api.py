"""The Slack Web API client, configured from settings (SLACK_BOT_TOKEN, SLACK_API_URL)."""

import functools

from django.conf import settings
from slack_sdk import WebClient
from slack_sdk.http_retry.builtin_handlers import ConnectionErrorRetryHandler, ServerErrorRetryHandler

# Short: a slow Slack must not hold worker threads. Longer outages are retried by the notifier.
API_TIMEOUT_SEC = 5


def slack_configured() -> bool:
    return bool(settings.SLACK_BOT_TOKEN)


def api_url() -> str:
    url = settings.SLACK_API_URL or "https://slack.com/api/"
    return url if url.endswith("/") else url + "/"


def slack_client() -> WebClient:
    """A WebClient for the bot token; raises RuntimeError when Slack is not configured."""
    if not slack_configured():
        raise RuntimeError("Slack is not configured (SLACK_BOT_TOKEN is empty)")
    return _client(settings.SLACK_BOT_TOKEN, api_url())


@functools.lru_cache(maxsize=4)
def _client(token: str, base_url: str) -> WebClient:
    # One quick retry for blips; 429 is not retried here because a Retry-After sleep would hold the
    # worker thread: the notifier reschedules itself instead.
    return WebClient(
        token=token,
        base_url=base_url,
        timeout=API_TIMEOUT_SEC,
        retry_handlers=[
            ConnectionErrorRetryHandler(max_retry_count=1),
            ServerErrorRetryHandler(max_retry_count=1),
        ],
    )
