import json

from django.core.management.base import BaseCommand

from executions.configuration import dump_config


class Command(BaseCommand):
    help = "Print (or write) the live configuration in config.json's format."

    def add_arguments(self, parser):
        parser.add_argument("--output", "-o", default=None)

    def handle(self, *args, output=None, **options):
        text = json.dumps(dump_config(), indent=2) + "\n"
        if output:
            with open(output, "w") as fh:
                fh.write(text)
            self.stdout.write(f"Wrote {output}")
        else:
            self.stdout.write(text, ending="")
