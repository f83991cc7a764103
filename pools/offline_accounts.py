"""What the offline agents write for a project with accounts (`derive.has_accounts`): users sign up
and log in with an email and a password, and each record is its user's own.

The backend's `app/accounts.py` serves the contract's account endpoints (`derive.ACCOUNT_ENDPOINTS`)
and the `current_user` dependency every record route takes; its tests check sign-up, log-in, the
refusals and that one user never sees another's records. The frontend's account page signs up or
logs in and keeps the token in the browser; the record pages send it.
"""

import pprint

from .contracts.derive import PUBLIC_RECORDS

BACKEND_ACCOUNTS = '''"""Accounts: sign up or log in with an email and a password; the token either
returns is sent with every call as `Authorization: Bearer <token>`. A password is kept as its
scrypt hash, a token as its SHA-256: neither is in the database as it was sent."""

import hashlib
import hmac
import secrets
import sqlite3

from fastapi import APIRouter, Depends, Header, HTTPException

from .db import get_db

router = APIRouter(prefix="/api")
MIN_PASSWORD = 8
TOKEN_DAYS = 30  # a token older than this is refused: log in again
MAX_PASSWORD = 1024  # hashing is meant to be slow: no megabyte passwords
# Guessing a password: an email with this many failed log-ins within the window waits it out.
MAX_FAILURES, FAILURE_WINDOW = 5, "-15 minutes"


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1)
    return f"scrypt${salt.hex()}${digest.hex()}"


def password_matches(password: str, stored: str) -> bool:
    try:
        _, salt, _ = stored.split("$")
        return hmac.compare_digest(hash_password(password, bytes.fromhex(salt)), stored)
    except ValueError:
        return False


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def credentials(item: dict, new: bool) -> tuple[str, str]:
    """The payload's email (lower case) and password; a new account's password has a minimum."""
    email, password = item.get("email"), item.get("password")
    if not isinstance(email, str) or "@" not in email.strip(" @") or len(email) > 254:
        raise HTTPException(422, "email: an email address is needed")
    if not isinstance(password, str) or len(password) > MAX_PASSWORD:
        raise HTTPException(422, "password: a password is needed")
    if new and len(password) < MIN_PASSWORD:
        raise HTTPException(422, f"password: at least {MIN_PASSWORD} characters")
    return email.strip().lower(), password


def new_token(db, user_id: int) -> dict:
    token = secrets.token_urlsafe(32)
    db.execute("INSERT INTO auth_tokens (token_hash, user_id) VALUES (?, ?)", (token_hash(token), user_id))
    db.commit()
    return {"token": token}


@router.post("/signup")
def signup(item: dict, db=Depends(get_db)):
    email, password = credentials(item, new=True)
    try:
        cursor = db.execute(
            "INSERT INTO users (email, password_hash) VALUES (?, ?)", (email, hash_password(password))
        )
    except sqlite3.IntegrityError:
        raise HTTPException(409, "an account with this email exists: log in") from None
    return new_token(db, cursor.lastrowid)


@router.post("/login")
def login(item: dict, db=Depends(get_db)):
    email, password = credentials(item, new=False)
    recent = "SELECT count(*) FROM login_failures WHERE email = ? AND created_at > datetime('now', ?)"
    if db.execute(recent, (email, FAILURE_WINDOW)).fetchone()[0] >= MAX_FAILURES:
        raise HTTPException(429, "too many failed log-ins for this email: try again in 15 minutes")
    row = db.execute("SELECT id, password_hash FROM users WHERE email = ?", (email,)).fetchone()
    if row is None or not password_matches(password, row["password_hash"] or ""):
        db.execute("DELETE FROM login_failures WHERE created_at <= datetime('now', ?)", (FAILURE_WINDOW,))
        db.execute("INSERT INTO login_failures (email) VALUES (?)", (email,))
        db.commit()
        raise HTTPException(401, "wrong email or password")
    db.execute("DELETE FROM login_failures WHERE email = ?", (email,))
    return new_token(db, row["id"])


def bearer(authorization: str | None) -> str:
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def current_user(authorization: str | None = Header(None), db=Depends(get_db)) -> int:
    """The signed-in user's id, from the request's bearer token; 401 without a valid one."""
    token = bearer(authorization)
    row = None
    if token:
        query = (
            "SELECT user_id FROM auth_tokens WHERE token_hash = ?"
            " AND created_at > datetime('now', ?)"
        )
        row = db.execute(query, (token_hash(token), f"-{TOKEN_DAYS} days")).fetchone()
    if row is None:
        raise HTTPException(401, "log in first", headers={"WWW-Authenticate": "Bearer"})
    return row["user_id"]


@router.get("/me")
def me(user: int = Depends(current_user), db=Depends(get_db)):
    return dict(db.execute("SELECT id, email FROM users WHERE id = ?", (user,)).fetchone())


@router.post("/logout")
def logout(authorization: str | None = Header(None), db=Depends(get_db)):
    """The token stops working, here and wherever a copy of it is."""
    cursor = db.execute("DELETE FROM auth_tokens WHERE token_hash = ?", (token_hash(bearer(authorization)),))
    db.commit()
    return {"logged_out": cursor.rowcount == 1}
'''

ACCOUNTS_TEST = '''"""Accounts: a user signs up and logs in, a wrong password or a forged token is
refused, and each user's records are their own."""

import secrets
import sqlite3

import pytest

from app import db

if not db.SCHEMA.is_file():
    pytest.skip("the project has no schema yet (database/schema.sql)", allow_module_level=True)

from fastapi.testclient import TestClient  # noqa: E402 (after the skip: FastAPI takes a while to load)

from app.main import app  # noqa: E402

PASSWORD = secrets.token_urlsafe(12)


@pytest.fixture
def client(tmp_path, monkeypatch):
    monkeypatch.setenv("DATABASE_PATH", str(tmp_path / "app.db"))  # made from the schema on first use
    return TestClient(app)


def sign_up(client, email: str) -> dict:
    response = client.post("/api/signup", json={{"email": email, "password": PASSWORD}})
    assert response.status_code == 200, response.text
    return {{"Authorization": f"Bearer {{response.json()['token']}}"}}


def test_a_user_signs_up_then_logs_in_and_out(client):
    sign_up(client, "ada@example.com")
    response = client.post("/api/login", json={{"email": "Ada@Example.com", "password": PASSWORD}})
    assert response.status_code == 200, response.text
    ada = {{"Authorization": f"Bearer {{response.json()['token']}}"}}
    assert client.get("/api/me", headers=ada).json()["email"] == "ada@example.com"
    assert client.post("/api/logout", headers=ada).json() == {{"logged_out": True}}
    assert client.get("/api/me", headers=ada).status_code == 401


def test_an_old_token_is_refused(client, tmp_path):
    ada = sign_up(client, "ada@example.com")
    database = sqlite3.connect(tmp_path / "app.db")
    database.execute("UPDATE auth_tokens SET created_at = datetime('now', '-31 days')")
    database.commit()
    assert client.get("/api/me", headers=ada).status_code == 401


def test_a_wrong_password_or_an_unknown_email_is_refused(client):
    sign_up(client, "ada@example.com")
    wrong = client.post("/api/login", json={{"email": "ada@example.com", "password": PASSWORD + "!"}})
    unknown = client.post("/api/login", json={{"email": "bob@example.com", "password": PASSWORD}})
    assert (wrong.status_code, unknown.status_code) == (401, 401)


def test_guessing_a_password_stops_after_five_failed_tries(client):
    sign_up(client, "ada@example.com")
    guesses = [
        client.post("/api/login", json={{"email": "ada@example.com", "password": f"guess {{n}}"}}).status_code
        for n in range(6)
    ]
    assert guesses == [401] * 5 + [429]
    right = client.post("/api/login", json={{"email": "ada@example.com", "password": PASSWORD}})
    assert right.status_code == 429  # not even the right one, until the window has passed
    other = client.post("/api/login", json={{"email": "bob@example.com", "password": PASSWORD}})
    assert other.status_code == 401  # another email is not held up


def test_an_email_signs_up_once_and_a_short_or_broken_password_is_refused(client):
    sign_up(client, "ada@example.com")
    again = client.post("/api/signup", json={{"email": "ada@example.com", "password": PASSWORD}})
    short = client.post("/api/signup", json={{"email": "bob@example.com", "password": PASSWORD[:7]}})
    broken = client.post(
        "/api/signup",
        content=b'{{"email": "eve@example.com", "password": "12345678\\\\ud800"}}',
        headers={{"Content-Type": "application/json"}},
    )
    assert (again.status_code, short.status_code, broken.status_code) == (409, 422, 422)


def test_neither_password_nor_token_is_stored_as_sent(client, tmp_path):
    token = sign_up(client, "ada@example.com")["Authorization"].split()[1]
    database = sqlite3.connect(tmp_path / "app.db")
    (stored,) = database.execute("SELECT password_hash FROM users").fetchone()
    tokens = [row[0] for row in database.execute("SELECT token_hash FROM auth_tokens")]
    assert stored.startswith("scrypt$") and PASSWORD not in stored
    assert token not in tokens and len(tokens) == 1
'''
# The tests of one record each, appended to ACCOUNTS_TEST for the records the app has.
ACCOUNTS_PRIVATE_TEST = """

# A record a user keeps to themselves.
PRIVATE, PRIVATE_RECORD = {table!r}, {record}


def test_private_records_need_a_signed_in_user(client):
    assert client.get(f"/api/{{PRIVATE}}").status_code == 401
    assert client.get(f"/api/{{PRIVATE}}", headers={{"Authorization": "Bearer forged"}}).status_code == 401
    assert client.post(f"/api/{{PRIVATE}}", json=PRIVATE_RECORD).status_code == 401


def test_a_user_sees_only_their_own_records(client):
    ada, bob = sign_up(client, "ada@example.com"), sign_up(client, "bob@example.com")
    theirs = {{**PRIVATE_RECORD, "user_id": 2}}  # the server decides whose a record is
    assert client.post(f"/api/{{PRIVATE}}", json=theirs, headers=ada).status_code == 200
    names = [row["name"] for row in client.get(f"/api/{{PRIVATE}}", headers=ada).json()]
    assert names == [PRIVATE_RECORD["name"]]
    assert client.get(f"/api/{{PRIVATE}}", headers=bob).json() == []
    assert client.get("/api/search", params={{"q": PRIVATE_RECORD["name"]}}, headers=bob).json() == []
"""
ACCOUNTS_PUBLIC_TEST = """

# A record everyone sees, which only a signed-in user adds.
PUBLIC, PUBLIC_RECORD = {table!r}, {record}


def test_everyone_sees_public_records_and_only_a_signed_in_user_adds_one(client):
    assert client.post(f"/api/{{PUBLIC}}", json=PUBLIC_RECORD).status_code == 401
    ada = sign_up(client, "ada@example.com")
    assert client.post(f"/api/{{PUBLIC}}", json=PUBLIC_RECORD, headers=ada).status_code == 200
    assert [row["name"] for row in client.get(f"/api/{{PUBLIC}}").json()] == [PUBLIC_RECORD["name"]]
"""
ACCOUNTS_DELETE_TEST = """

# A record its user may delete.
DELETED, DELETED_RECORD = {table!r}, {record}


def test_a_user_deletes_only_their_own_records(client):
    ada, bob = sign_up(client, "ada@example.com"), sign_up(client, "bob@example.com")
    created = client.post(f"/api/{{DELETED}}", json=DELETED_RECORD, headers=ada).json()["id"]
    assert client.delete(f"/api/{{DELETED}}/{{created}}", headers=bob).status_code == 404
    assert client.delete(f"/api/{{DELETED}}/{{created}}", headers=ada).json() == {{"deleted": created}}
"""
ACCOUNTS_UPDATE_TEST = """

# A record its user may change.
CHANGED, CHANGED_RECORD = {table!r}, {record}


def test_a_user_changes_only_their_own_records(client):
    ada, bob = sign_up(client, "ada@example.com"), sign_up(client, "bob@example.com")
    created = client.post(f"/api/{{CHANGED}}", json=CHANGED_RECORD, headers=ada).json()["id"]
    change = {{"name": "changed by its user"}}
    assert client.patch(f"/api/{{CHANGED}}/{{created}}", json=change).status_code == 401
    assert client.patch(f"/api/{{CHANGED}}/{{created}}", json=change, headers=bob).status_code == 404
    changed = client.patch(f"/api/{{CHANGED}}/{{created}}", json=change, headers=ada)
    assert changed.json() == {{"updated": created}}
    listed = client.get(f"/api/{{CHANGED}}", headers=ada).json()
    assert [row["name"] for row in listed if row["id"] == created] == ["changed by its user"]
"""

# Every generated API test signs a user up first when the app has accounts.
SIGNED_IN_CLIENT = """\
@pytest.fixture
def client(tmp_path, monkeypatch):
    monkeypatch.setenv("DATABASE_PATH", str(tmp_path / "app.db"))  # made from the schema on first use
    client = TestClient(app)
    account = {"email": "tests@example.com", "password": secrets.token_urlsafe(12)}
    answer = client.post("/api/signup", json=account)
    if answer.status_code != 404:  # the app has accounts: these tests are a user's, signed up here
        client.headers["Authorization"] = "Bearer " + answer.json()["token"]
    return client
"""

# The pages' helper: the account page's token, as the API wants it.
FRONTEND_SIGNED_IN = """
// The token the account page keeps, as the API wants it; none before logging in.
function signedIn(): Record<string, string> {
  const token = localStorage.getItem("token");
  return token ? { Authorization: `Bearer ${token}` } : {};
}
"""
FRONTEND_ACCOUNT = (
    """\
import Link from "next/link";
import { useEffect, useState } from "react";

import Look from "../lib/look";

const API_BASE = process.env.NEXT_PUBLIC_API_BASE ?? "";

// Sign up or log in. The API's token is kept in this browser (localStorage) and the record pages
// send it with every call.
export default function AccountPage() {
  const [email, setEmail] = useState("");
  const [problem, setProblem] = useState("");
  async function whoAmI() {
    if (!localStorage.getItem("token")) return setEmail("");
    const response = await fetch(`${API_BASE}/api/me`, { headers: signedIn() });
    setEmail(response.ok ? (await response.json()).email : "");
  }
  useEffect(() => {
    whoAmI();
  }, []);
  async function send(form, signingUp: boolean) {
    const body = JSON.stringify({ email: form.elements.email.value, password: form.elements.password.value });
    const headers = { "Content-Type": "application/json" };
    const response = signingUp
      ? await fetch(`${API_BASE}/api/signup`, { method: "POST", headers, body })
      : await fetch(`${API_BASE}/api/login`, { method: "POST", headers, body });
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) {
      setProblem(typeof answer.detail === "string" ? answer.detail : `refused (${response.status})`);
      return;
    }
    localStorage.setItem("token", answer.token);
    setProblem("");
    form.reset();
    whoAmI();
  }
  async function logOut() {
    await fetch(`${API_BASE}/api/logout`, { method: "POST", headers: signedIn() });
    localStorage.removeItem("token");
    setEmail("");
  }
  return (
    <main>
      <Look />
      <h1>Account</h1>
      {email ? (
        <p>
          Signed in as {email}. <button onClick={logOut}>Log out</button>
        </p>
      ) : (
        <form
          onSubmit={(event) => {
            event.preventDefault();
            const submitter = (event.nativeEvent as SubmitEvent).submitter as HTMLButtonElement | null;
            send(event.currentTarget, submitter?.name === "signup");
          }}
        >
          <input name="email" type="email" placeholder="email" required />
          <input name="password" type="password" placeholder="password" minLength={8} required />
          <button type="submit" name="login">Log in</button>
          <button type="submit" name="signup">Sign up</button>
        </form>
      )}
      {problem && <p role="alert">{problem}</p>}
      <p>
        <Link href="/">Pages</Link>
      </p>
    </main>
  );
}
"""
    + FRONTEND_SIGNED_IN
)


def backend_accounts_files(records: dict[str, dict], edited: list[str], removed: list[str]) -> list[dict]:
    """The accounts module and its tests: of accounts themselves, then of the first record the API
    takes (`records`: table → a sample record) that a user keeps to themselves, the first everyone
    sees (`PUBLIC_RECORDS`), the first a user changes (`edited`) and the first a user deletes
    (`removed`), where the app has them."""
    named = [table for table, record in records.items() if "name" in record]
    private = [table for table in named if table not in PUBLIC_RECORDS]
    public = [table for table in named if table in PUBLIC_RECORDS]
    test = ACCOUNTS_TEST.format()  # no fields of its own: its doubled braces undone
    for tables, piece in (
        (private, ACCOUNTS_PRIVATE_TEST),
        (public, ACCOUNTS_PUBLIC_TEST),
        ([table for table in edited if table in named], ACCOUNTS_UPDATE_TEST),
        (removed, ACCOUNTS_DELETE_TEST),
    ):
        if tables:
            record = pprint.pformat(records[tables[0]], width=80, sort_dicts=False)
            test += piece.format(table=tables[0], record=record)
    return [
        {"path": "backend/app/accounts.py", "content": BACKEND_ACCOUNTS},
        {"path": "backend/tests/test_accounts.py", "content": test},
    ]
