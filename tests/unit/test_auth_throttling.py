"""Failed authentication is throttled per client IP (and per username at sign-in); successes are not."""

import pytest
from django.contrib import admin

from executions import throttling
from tests.factories import make_client, make_pools

URL = "/api/executions"
START = 1_800_000_000.0  # a window's first second: the tests' minute never ends on its own


class Clock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fixed = Clock(START)
    monkeypatch.setattr(throttling, "clock", fixed)
    return fixed


@pytest.fixture
def key(db):
    make_pools()
    return make_client("acme")[1]


def get(client, key: str, ip: str = "203.0.113.7", **headers):
    return client.get(URL, HTTP_X_API_KEY=key, REMOTE_ADDR=ip, **headers)


def test_wrong_api_keys_from_one_address_get_429_with_retry_after(client, key, clock):
    assert [get(client, f"oc_wrong{i}").status_code for i in range(10)] == [401] * 10
    clock.now += 15
    refused = get(client, "oc_wrong-again")
    assert refused.status_code == 429
    assert refused["Retry-After"] == "45"  # the window's end
    assert "Too many failed authentication attempts" in refused.json()["detail"]
    # The right key from that address waits too (else throttling would not slow guessing), and so does Bearer.
    assert get(client, key).status_code == 429
    bearer = client.get(URL, HTTP_AUTHORIZATION=f"Bearer {key}", REMOTE_ADDR="203.0.113.7")
    assert bearer.status_code == 429

    assert get(client, key, ip="198.51.100.1").status_code == 200  # other addresses are not affected
    clock.now += 45
    assert get(client, key).status_code == 200  # the next window


def test_successful_requests_are_neither_counted_nor_slowed(client, key, clock, settings):
    settings.OPENCLAW_AUTH_FAILURES_PER_MINUTE = 3
    assert all(get(client, key).status_code == 200 for _ in range(20))
    assert client.get(URL, REMOTE_ADDR="203.0.113.7").status_code == 401  # no key at all: not a guess
    assert [get(client, "oc_wrong").status_code for _ in range(4)] == [401, 401, 401, 429]


def test_forwarded_for_counts_only_behind_trusted_proxies(client, key, clock, settings):
    settings.OPENCLAW_AUTH_FAILURES_PER_MINUTE = 2
    # Without a trusted proxy, X-Forwarded-For is the client's own claim: a new one each try helps nothing.
    codes = [get(client, "oc_wrong", HTTP_X_FORWARDED_FOR=f"10.0.0.{i}").status_code for i in range(3)]
    assert codes == [401, 401, 429]

    settings.OPENCLAW_NUM_PROXIES = 1  # behind one proxy: its REMOTE_ADDR is shared, the hop it saw counts
    proxy = "192.0.2.1"
    hops = ["1.1.1.1, 10.0.0.9", "2.2.2.2, 10.0.0.9", "10.0.0.9"]
    assert [get(client, "oc_wrong", ip=proxy, HTTP_X_FORWARDED_FOR=h).status_code for h in hops] == [
        401,
        401,
        429,
    ]
    assert get(client, key, ip=proxy, HTTP_X_FORWARDED_FOR="10.0.0.10").status_code == 200


# -- sign-in ---------------------------------------------------------------------------------------


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user("ops", password="right-horse-battery", is_staff=True)


def sign_in(client, path: str, username: str, password: str, ip: str = "203.0.113.7"):
    return client.post(path, {"username": username, "password": password}, REMOTE_ADDR=ip)


def test_console_sign_in_is_throttled_per_address_with_a_clear_error(client, staff, clock):
    for _ in range(10):
        assert "Please enter a correct username" in sign_in(client, "/console/login/", "ops", "guess").text
    clock.now += 20
    refused = sign_in(client, "/console/login/", "ops", "right-horse-battery")
    assert "Too many failed sign-in attempts. Please wait 40 seconds and try again." in refused.text
    assert "_auth_user_id" not in client.session  # the right password did not get through

    clock.now += 40
    assert sign_in(client, "/console/login/", "ops", "right-horse-battery").status_code == 302
    assert client.session["_auth_user_id"] == str(staff.pk)


def test_console_sign_in_is_throttled_per_username_across_addresses(client, staff, clock, settings):
    settings.OPENCLAW_AUTH_FAILURES_PER_MINUTE = 3
    for i in range(3):
        sign_in(client, "/console/login/", "OPS", "guess", ip=f"10.0.0.{i}")  # usernames match ignoring case
    refused = sign_in(client, "/console/login/", "ops", "right-horse-battery", ip="10.0.0.99")
    assert "Too many failed sign-in attempts" in refused.text
    assert sign_in(client, "/console/login/", "someone-else", "x", ip="10.0.0.99").status_code == 200
    assert "Too many" not in sign_in(client, "/console/login/", "someone-else", "x", ip="10.0.0.99").text


def test_a_right_password_of_a_non_staff_account_is_not_a_failed_guess(client, clock, settings, db):
    from django.contrib.auth import get_user_model

    settings.OPENCLAW_AUTH_FAILURES_PER_MINUTE = 2
    get_user_model().objects.create_user("client-user", password="pw-123456789")
    for _ in range(3):
        answer = sign_in(client, "/console/login/", "client-user", "pw-123456789").text
        assert "no access to the console" in answer and "Too many" not in answer


def test_admin_sign_in_is_throttled(client, staff, clock, monkeypatch):
    # openclaw_site/urls.py sets admin.site.login_form = AdminLoginForm; set here too so this
    # test holds on its own.
    monkeypatch.setattr(admin.site, "login_form", throttling.AdminLoginForm)
    for _ in range(10):
        assert "Please enter the correct username" in sign_in(client, "/admin/login/", "ops", "guess").text
    refused = sign_in(client, "/admin/login/", "ops", "right-horse-battery")
    assert "Too many failed sign-in attempts" in refused.text
    assert "_auth_user_id" not in client.session
