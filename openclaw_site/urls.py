from django.contrib import admin
from django.urls import path

from bots.views import slack_events
from executions.api import api

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", api.urls),
    path("slack/events", slack_events, name="slack-events"),
]
