from django.core.management.base import BaseCommand, CommandError

from executions.models import Client


class Command(BaseCommand):
    help = (
        "Print a client's webhook signing secret alone on the last line (made on first use); "
        "--rotate replaces it."
    )

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--rotate", action="store_true", help="issue a new secret (the old one stops)")

    def handle(self, *args, name, rotate=False, **options):
        client = Client.objects.filter(name=name).first()
        if client is None:
            raise CommandError(f"no client named {name!r} (create one with `manage.py create_client {name}`)")
        if rotate:
            Client.objects.filter(pk=client.pk).update(webhook_secret="")
            client.webhook_secret = ""
        secret = client.ensure_webhook_secret()
        new = " (new)" if rotate else ""
        self.stdout.write(f"Webhook secret of {client.name}{new}; verify X-OpenClaw-Signature with it:")
        self.stdout.write(secret)
