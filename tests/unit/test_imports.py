"""Importing the product's modules touches nothing outside the process: the test session and the web
server import every actor module before the database they will use is settled (pytest-django points
the connection at the test database only after collection)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
IMPORT_EVERYTHING = """
import django
django.setup()
from django.db.backends.signals import connection_created
opened = []
connection_created.connect(lambda sender, connection, **kw: opened.append(connection.alias))
import executions.actors, bots.actors, executions.api, bots.slack_app, openclaw_site.urls
print("opened:", opened)
"""


def test_importing_the_actors_and_urls_opens_no_database_connection():
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_EVERYTHING], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "opened: []"
