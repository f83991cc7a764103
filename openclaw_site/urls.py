from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from bots.views import slack_events
from executions import console, git_http
from executions.api import api
from executions.throttling import AdminLoginForm
from openclaw_site.health import healthz
from openclaw_site.metrics import metrics_view

admin.site.login_form = AdminLoginForm  # failed sign-ins are throttled like the console's

urlpatterns = [
    path("", RedirectView.as_view(url="/console/", permanent=False)),
    path("admin/", admin.site.urls),
    path("api/", api.urls),
    path("console/", include(console)),
    path("git/", include(git_http)),
    path("metrics", metrics_view, name="metrics"),
    path("healthz", healthz, name="healthz"),
    path("slack/events", slack_events, name="slack-events"),
]
