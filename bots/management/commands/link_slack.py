from django.core.management.base import BaseCommand, CommandError

from bots.services import slack_workspace_link
from executions.models import Client


class Command(BaseCommand):
    help = (
        "Link a Slack workspace (team id) to the client its requests are billed to, and allow the "
        "Slack users who may act for it (--user, repeatable), or every member (--any-member)."
    )

    def add_arguments(self, parser):
        parser.add_argument("team_id", help="The workspace's team id, e.g. T0123ABCD")
        parser.add_argument("client_name", help="An existing client (see create_client)")
        parser.add_argument("--name", default="", help="A label for the workspace")
        parser.add_argument(
            "--user",
            dest="users",
            action="append",
            default=[],
            metavar="USER_ID",
            help="A Slack user id (U0123ABCD) who may start, cancel and retry executions; repeatable",
        )
        parser.add_argument(
            "--any-member",
            action="store_true",
            help="Let every member of the workspace start executions billed to the client "
            "(cancel and retry stay with the requester and the --user users)",
        )

    def handle(self, *args, team_id, client_name, name, users, any_member, **options):
        client = Client.objects.filter(name=client_name).first()
        if client is None:
            raise CommandError(f"No client named {client_name!r}; create it with `manage.py create_client`.")
        slack_workspace_link(team_id=team_id, client=client, name=name, users=users, any_member=any_member)
        self.stdout.write(f"Slack workspace {team_id} now bills client {client.name}.")
        if any_member:
            self.stdout.write("Every member of the workspace may start executions.")
        elif users:
            self.stdout.write(f"Allowed to act for it: {', '.join(users)}.")
        else:
            self.stdout.write(
                "No user may act for it yet: add them with --user USER_ID (or open it with --any-member)."
            )
