import logging

from django.contrib import admin
from django.core.exceptions import BadRequest, PermissionDenied, SuspiciousOperation
from django.http import HttpRequest, HttpResponse
from django.urls import include, path
from django.views.generic import RedirectView

from bots.views import slack_events
from executions import console
from executions.api import api
from openclaw_site.health import healthz
from openclaw_site.metrics import metrics_view

logger = logging.getLogger("openclaw.api")


@api.exception_handler(Exception)
def api_unexpected_error(request: HttpRequest, exc: Exception) -> HttpResponse:
    """An API client gets JSON and nothing of the server's internals, whatever DEBUG says (ninja's
    own handler answers with the traceback when DEBUG is on); the traceback goes to the log."""
    if isinstance(exc, PermissionDenied):
        return api.create_response(request, {"detail": "forbidden"}, status=403)
    if isinstance(exc, (BadRequest, SuspiciousOperation)):
        return api.create_response(request, {"detail": "bad request"}, status=400)
    logger.exception("API error on %s %s", request.method, request.path)
    return api.create_response(request, {"detail": "internal server error"}, status=500)


urlpatterns = [
    path("", RedirectView.as_view(url="/console/", permanent=False)),
    path("admin/", admin.site.urls),
    path("api/", api.urls),
    path("console/", include(console)),
    path("metrics", metrics_view, name="metrics"),
    path("healthz", healthz, name="healthz"),
    path("slack/events", slack_events, name="slack-events"),
]
