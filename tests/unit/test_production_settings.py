"""Settings as a server gets them: DEBUG off by default, no start without a secret key, and API
errors that tell a client nothing of the server's internals."""

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client as HttpClient

from executions import selectors
from tests.factories import make_client

ROOT = Path(__file__).resolve().parent.parent.parent
SHOW = "from django.conf import settings; print(settings.DEBUG, len(settings.SECRET_KEY))"


def settings_in_a_process(tmp_path, **env) -> subprocess.CompletedProcess:
    """Import the settings in a fresh process with only `env` set of the variables they read."""
    clean = {k: v for k, v in os.environ.items() if k not in ("DEBUG", "SECRET_KEY", "OPENCLAW_DEV")}
    clean.update(DJANGO_SETTINGS_MODULE="openclaw_site.settings", OPENCLAW_VAR_DIR=str(tmp_path), **env)
    return subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); {SHOW}"],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_without_a_secret_key_a_server_refuses_to_start(tmp_path):
    result = settings_in_a_process(tmp_path)
    assert result.returncode != 0
    assert "ImproperlyConfigured: SECRET_KEY is not set" in result.stderr
    assert not (tmp_path / "secret_key").exists()


def test_debug_is_off_unless_asked_for(tmp_path):
    result = settings_in_a_process(tmp_path, SECRET_KEY="k" * 50)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "50"]


def test_the_key_can_come_from_a_file(tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text("f" * 60 + "\n")
    assert settings_in_a_process(tmp_path, SECRET_KEY_FILE=str(key_file)).stdout.split() == ["False", "60"]
    missing = settings_in_a_process(tmp_path, SECRET_KEY_FILE=str(tmp_path / "absent"))
    assert missing.returncode != 0 and "SECRET_KEY_FILE" in missing.stderr


def test_a_local_run_generates_one_key_and_keeps_it(tmp_path):
    first = settings_in_a_process(tmp_path, OPENCLAW_DEV="1")
    assert first.returncode == 0, first.stderr
    assert first.stdout.split()[0] == "False"  # a local run does not turn DEBUG on
    key = (tmp_path / "secret_key").read_text().strip()
    assert len(key) >= 50 and (tmp_path / "secret_key").stat().st_mode & 0o777 == 0o600
    assert settings_in_a_process(tmp_path, OPENCLAW_DEV="1").returncode == 0
    assert (tmp_path / "secret_key").read_text().strip() == key


@pytest.mark.parametrize("debug", [False, True])
def test_an_api_error_reaches_the_client_without_internals(db, settings, monkeypatch, caplog, debug):
    settings.DEBUG = debug

    def broken():
        raise RuntimeError(f"secret detail in {__file__}")

    monkeypatch.setattr(selectors, "pool_overview", broken)
    _, key = make_client()
    http = HttpClient(raise_request_exception=False)
    with caplog.at_level(logging.ERROR, logger="openclaw.api"):
        response = http.get("/api/pools", HTTP_X_API_KEY=key)
    assert response.status_code == 500
    assert response["Content-Type"].startswith("application/json")
    assert response.json() == {"detail": "internal server error"}
    body = response.content.decode()
    assert "Traceback" not in body and "secret detail" not in body and ".py" not in body
    assert any(r.exc_info and "secret detail" in str(r.exc_info[1]) for r in caplog.records)
