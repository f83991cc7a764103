"""ASGI entry point for daphne: HTTP through Django, websockets under /ws/."""

import logging
import os
import threading

import django
from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.base import BaseHandler

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "openclaw_site.settings")
# Django must be set up before anything imports models (the consumers do).
django.setup(set_prefix=False)


class OneHopASGIHandler(ASGIHandler):
    """Django's ASGI handler with the middleware run as one synchronous chain, in one thread hop.

    Every middleware of this site is synchronous (Django's own). Under ASGI, Django adapts each of
    them, a hop to a thread and back for every hook: measured, that was half of daphne's CPU for
    an API request, and what capped one daphne's throughput. Here the chain runs in one hop, as
    under WSGI. Async views (the event stream) still run on the event loop, and streaming responses
    are still sent by the loop, a chunk at a time."""

    def __init__(self):
        BaseHandler.__init__(self)
        self.load_middleware(is_async=False)

    async def get_response_async(self, request):
        return await sync_to_async(self.get_response, thread_sensitive=True)(request)


django_asgi_app = OneHopASGIHandler()

from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

# The console's CSS and JS are served by daphne itself (a few small files; no collectstatic or
# separate web server needed). Put a CDN or reverse proxy in front of /static/ for heavy traffic.
http_app = ASGIStaticFilesHandler(django_asgi_app)

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from openclaw_site.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": http_app,
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)

from openclaw_site.worker_tuning import freeze_startup_objects  # noqa: E402

freeze_startup_objects()  # what daphne loaded stays out of every full collection's walk


def _warm_event_publisher() -> None:
    """The events a request commits (a new execution's plan) go out through this process's
    publisher: connected now, in the background, so the first request does not wait for it and a
    Redis not up yet does not stop daphne's start."""
    from executions import events  # noqa: PLC0415 (after django.setup, as the consumers)

    try:
        events.warm_publisher()
    except Exception:  # the first event connects instead
        logging.getLogger("openclaw.events").warning("event publisher not connected at start", exc_info=True)


threading.Thread(target=_warm_event_publisher, name="warm-event-publisher", daemon=True).start()
