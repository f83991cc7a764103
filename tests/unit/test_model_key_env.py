"""A model profile may only name a *_API_KEY variable: any other secret (SECRET_KEY, DATABASE_URL)
would be sent to whatever base URL the profile points at."""

from types import SimpleNamespace

import pytest
from django.core.exceptions import ValidationError

from pools import llm
from pools.models import ModelProfile
from pools.offline import OfflineProvider

REFUSED = ["SECRET_KEY", "DATABASE_URL", "AWS_SECRET_ACCESS_KEY", "openai_api_key", "OPENAI_API_KEY_OLD"]


def profile(api_key_env: str, **fields) -> ModelProfile:
    return ModelProfile(
        name="remote",
        provider="openai",
        model="gpt-4o-mini",
        base_url="https://models.example.com/v1",
        api_key_env=api_key_env,
        **fields,
    )


@pytest.mark.parametrize("name", REFUSED)
def test_a_profile_naming_another_variable_does_not_validate(db, name):
    with pytest.raises(ValidationError) as exc:
        profile(name).full_clean()
    assert "api_key_env" in exc.value.message_dict


@pytest.mark.parametrize("name", ["OPENAI_API_KEY", "MINIMAX_API_KEY", ""])
def test_a_profile_naming_an_api_key_variable_or_none_validates(db, name):
    profile(name).full_clean()


def watch_the_environment(monkeypatch, values: dict) -> list[str]:
    """`pools.llm`'s view of os.environ, recording every variable it reads."""
    reads: list[str] = []

    class Watched(dict):
        def get(self, key, default=None):
            reads.append(key)
            return super().get(key, default)

        def __getitem__(self, key):
            reads.append(key)
            return super().__getitem__(key)

    monkeypatch.setattr(llm, "os", SimpleNamespace(environ=Watched(values)))
    return reads


def test_a_stored_profile_naming_secret_key_runs_offline_and_never_reads_it(db, settings, monkeypatch):
    settings.OPENCLAW_OFFLINE = False
    row = ModelProfile.objects.create(  # written around the validation, e.g. by a migration or the shell
        name="remote",
        provider="openai",
        model="gpt-4o-mini",
        base_url="https://evil.example.com/v1",
        api_key_env="SECRET_KEY",
    )
    reads = watch_the_environment(
        monkeypatch, {"SECRET_KEY": "django-insecure-s3cret", "OPENAI_API_KEY": "sk-1"}
    )

    spec = llm.resolve(row)

    assert spec.provider == "offline" and "SECRET_KEY" in spec.fallback_reason
    assert (spec.api_key_env, spec.base_url) == ("", "")
    assert isinstance(llm.provider_for(spec), OfflineProvider)
    assert "SECRET_KEY" not in reads


def test_a_stored_profile_naming_an_api_key_variable_that_is_set_calls_the_provider(
    db, settings, monkeypatch
):
    """The control for the test above: the same profile with a proper variable is not sent offline."""
    settings.OPENCLAW_OFFLINE = False
    row = ModelProfile.objects.create(
        name="remote", provider="openai", model="gpt-4o-mini", api_key_env="OPENAI_API_KEY"
    )
    reads = watch_the_environment(monkeypatch, {"OPENAI_API_KEY": "sk-1"})

    spec = llm.resolve(row)

    assert (spec.provider, spec.api_key_env, spec.fallback_reason) == ("openai", "OPENAI_API_KEY", "")
    assert reads == ["OPENAI_API_KEY"]
