from django.core.management.base import BaseCommand

from executions.models import ApiKey, Client


class Command(BaseCommand):
    help = "Create a client (or add a key to an existing one) and print its new API key on the last line."

    def add_arguments(self, parser):
        parser.add_argument("name")

    def handle(self, *args, name, **options):
        client, created = Client.objects.get_or_create(name=name)
        _, raw = ApiKey.issue(client)
        self.stdout.write(f"{'Created' if created else 'Existing'} client {client.name}; new API key:")
        self.stdout.write(raw)
