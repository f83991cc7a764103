"""Websocket routes (asgi.py wraps them in the Origin check and the session auth)."""

from django.urls import re_path

from executions.consumers import ConsoleConsumer, ExecutionConsumer

websocket_urlpatterns = [
    re_path(r"^ws/executions/(?P<execution_id>[A-Za-z0-9_.-]{1,80})/$", ExecutionConsumer.as_asgi()),
    re_path(r"^ws/console/$", ConsoleConsumer.as_asgi()),
]
