from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from slack_bolt.adapter.socket_mode import SocketModeHandler

from bots.slack_app import slack_app


class Command(BaseCommand):
    help = (
        "Serve the Slack bot over Socket Mode (no public URL needed); "
        "needs SLACK_APP_TOKEN and SLACK_BOT_TOKEN."
    )

    def handle(self, *args, **options):
        if not settings.SLACK_APP_TOKEN:
            raise CommandError("SLACK_APP_TOKEN is not set: Socket Mode needs an app-level token (xapp-…).")
        app = slack_app(socket_mode=True)
        if app is None:
            raise CommandError("SLACK_BOT_TOKEN is not set.")
        self.stdout.write("Slack bot connected over Socket Mode; Ctrl-C stops it.")
        SocketModeHandler(app, settings.SLACK_APP_TOKEN).start()
