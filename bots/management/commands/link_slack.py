from django.core.management.base import BaseCommand, CommandError

from bots.services import slack_workspace_link
from executions.models import Client


class Command(BaseCommand):
    help = "Link a Slack workspace (team id) to the client its requests are billed to."

    def add_arguments(self, parser):
        parser.add_argument("team_id", help="The workspace's team id, e.g. T0123ABCD")
        parser.add_argument("client_name", help="An existing client (see create_client)")
        parser.add_argument("--name", default="", help="A label for the workspace")
        parser.add_argument(
            "--restrict",
            action="store_true",
            help="Only users with an allowed user mapping (admin) may use the bot",
        )

    def handle(self, *args, team_id, client_name, name, restrict, **options):
        client = Client.objects.filter(name=client_name).first()
        if client is None:
            raise CommandError(f"No client named {client_name!r}; create it with `manage.py create_client`.")
        workspace = slack_workspace_link(team_id=team_id, client=client, name=name)
        if restrict and not workspace.restrict_to_mapped_users:
            workspace.restrict_to_mapped_users = True
            workspace.save(update_fields=["restrict_to_mapped_users"])
        self.stdout.write(f"Slack workspace {team_id} now bills client {client.name}.")
