from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from executions.configuration import ConfigError, load_config_file


class Command(BaseCommand):
    help = (
        "Load config.json (OPENCLAW_CONFIG) into the database; only creates what is missing unless --force."
    )

    def add_arguments(self, parser):
        parser.add_argument("path", nargs="?", default=None)
        parser.add_argument(
            "--force", action="store_true", help="overwrite admin edits with the file's values"
        )

    def handle(self, *args, path=None, force=False, **options):
        path = path or settings.OPENCLAW_CONFIG
        try:
            created = load_config_file(path, force=force)
        except ConfigError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            f"Loaded {path}: {created['models']} new models, {created['pools']} new pools"
            + (" (forced)" if force else "")
        )
