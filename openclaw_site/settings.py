"""Settings: one file, driven by the environment (django-environ).

With no DATABASE_URL the database is SQLite under var/ (WAL); with no REDIS_URL the embedded
Redis server that `make run` and the test suite start on a socket under var/ is used.

DEBUG is off unless the environment turns it on. A production process needs SECRET_KEY (or
SECRET_KEY_FILE, a file holding it) and refuses to start without one; a local run (`make run`
sets OPENCLAW_DEV=1; DEBUG=1 counts too) uses a key generated once into var/secret_key and plain
HTTP on this machine.
"""

import os
import secrets
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(environ.Env().str("OPENCLAW_VAR_DIR", default=str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

env = environ.Env(
    DEBUG=(bool, False),
    ALLOWED_HOSTS=(list, ["localhost", "127.0.0.1", "[::1]", "testserver"]),
)

DEBUG = env("DEBUG")
# A local run on this machine: a generated secret key, plain HTTP (no TLS redirect, no secure-only
# cookies). Never set it on a server others reach.
OPENCLAW_DEV = env.bool("OPENCLAW_DEV", default=False)
LOCAL_RUN = DEBUG or OPENCLAW_DEV


def _local_secret_key(path: Path) -> str:
    """The local run's key, generated once so every process of the run (and every restart) signs
    with the same one. Written beside the final name and linked into place, so processes that start
    together all read one complete key."""
    if not path.exists():
        staging = path.with_name(f"{path.name}.{os.getpid()}")
        staging.write_text(secrets.token_urlsafe(50) + "\n")
        staging.chmod(0o600)
        try:
            os.link(staging, path)
        except FileExistsError:
            pass  # another process of this run was first
        finally:
            staging.unlink()
    return path.read_text().strip()


def _secret_key() -> str:
    if key := env.str("SECRET_KEY", default=""):
        return key
    if key_file := env.str("SECRET_KEY_FILE", default=""):
        try:
            key = Path(key_file).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"SECRET_KEY_FILE={key_file} cannot be read: {exc}") from exc
        if not key:
            raise ImproperlyConfigured(f"SECRET_KEY_FILE={key_file} is empty")
        return key
    if LOCAL_RUN:
        return _local_secret_key(VAR_DIR / "secret_key")
    raise ImproperlyConfigured(
        "SECRET_KEY is not set. In production set SECRET_KEY (or SECRET_KEY_FILE, a file holding it); "
        "for a local run on this machine set OPENCLAW_DEV=1 (`make run` does), which uses a key "
        "generated into var/secret_key."
    )


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = env("ALLOWED_HOSTS")
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

EMBEDDED_REDIS_SOCKET = VAR_DIR / "redis.sock"
REDIS_URL = env("REDIS_URL", default=f"unix://{EMBEDDED_REDIS_SOCKET}?db=0")
OPENCLAW_CONFIG = env("OPENCLAW_CONFIG", default=str(BASE_DIR / "config.json"))
OPENCLAW_OFFLINE = env.bool("OPENCLAW_OFFLINE", default=False)
# Seconds without a lease renewal before the reaper declares an attempt's worker lost.
OPENCLAW_LEASE_SEC = env.float("OPENCLAW_LEASE_SEC", default=15.0)
OPENCLAW_LEASE_RENEW_SEC = env.float("OPENCLAW_LEASE_RENEW_SEC", default=3.0)
# A queued task whose message has not started after this long is sent again (lost message).
OPENCLAW_REQUEUE_AFTER_SEC = env.float("OPENCLAW_REQUEUE_AFTER_SEC", default=30.0)
OPENCLAW_REAPER_INTERVAL_SEC = env.float("OPENCLAW_REAPER_INTERVAL_SEC", default=1.0)
# Which ready task a free pool slot goes to: "rank" (priority, then the longest remaining critical
# path) or "fifo" (the order tasks became ready). FIFO exists so the benchmarks can measure what the
# rank rule buys on the real engine; leave it at "rank".
OPENCLAW_DISPATCH_ORDER = env.str("OPENCLAW_DISPATCH_ORDER", default="rank")
# A worker thread that records a success starts one of the tasks it made ready in the same
# transaction and runs it next (attempts.Continuation). Off: every task waits for its message, which
# the dispatch benchmark compares.
OPENCLAW_RUN_READY_IN_PLACE = env.bool("OPENCLAW_RUN_READY_IN_PLACE", default=True)
# Largest request message accepted by the API (characters).
OPENCLAW_MAX_MESSAGE_CHARS = env.int("OPENCLAW_MAX_MESSAGE_CHARS", default=20_000)
# Per-client API rate limit (django-ninja throttle syntax).
OPENCLAW_API_RATE = env.str("OPENCLAW_API_RATE", default="600/m")
# The longest `?wait=` on POST /api/execute-parallel is honoured for (seconds).
# A client may retry an execution's dead and blocked tasks this many times.
OPENCLAW_MAX_RETRIES_PER_EXECUTION = env.int("OPENCLAW_MAX_RETRIES_PER_EXECUTION", default=3)
# Requests of one client that may wait for their plan (`?wait=`) at once; more answer at once.
OPENCLAW_MAX_WAITS_PER_CLIENT = env.int("OPENCLAW_MAX_WAITS_PER_CLIENT", default=4)
OPENCLAW_MAX_PLAN_WAIT_SEC = env.float("OPENCLAW_MAX_PLAN_WAIT_SEC", default=60.0)
OPENCLAW_PUBLIC_URL = env("OPENCLAW_PUBLIC_URL", default="http://localhost:8000")
# GET /metrics: with a token, a scraper must send `Authorization: Bearer <token>`. ALLOW lists the
# client addresses or networks let in (e.g. "10.0.0.0/8,192.168.1.5"); left empty it means any
# address when a token is set, else loopback only, and then not a request a proxy forwarded.
OPENCLAW_METRICS_TOKEN = env.str("OPENCLAW_METRICS_TOKEN", default="")
OPENCLAW_METRICS_ALLOW = env.list("OPENCLAW_METRICS_ALLOW", default=[])
# An execution's rows (attempts, usage, conflicts) are folded into /metrics' running totals once it
# is this old, and not read again; what happens to an execution later than that is not counted.
OPENCLAW_METRICS_SETTLE_SEC = env.float("OPENCLAW_METRICS_SETTLE_SEC", default=86400.0)

# Plan approval: an execution awaiting approval longer than this is cancelled with no fee.
OPENCLAW_APPROVAL_TTL_HOURS = env.float("OPENCLAW_APPROVAL_TTL_HOURS", default=72.0)
# Webhooks. Private, loopback and link-local receivers (and plain http to them) only when this is
# on: local development, or a receiver on the same network. Cloud metadata addresses never.
OPENCLAW_WEBHOOK_ALLOW_PRIVATE = env.bool("OPENCLAW_WEBHOOK_ALLOW_PRIVATE", default=False)
OPENCLAW_WEBHOOK_TIMEOUT_SEC = env.float("OPENCLAW_WEBHOOK_TIMEOUT_SEC", default=10.0)
# Retries: after 15 s, then twice as long each time up to 4 h apart, until an attempt made 24 h
# or more after the first one fails too.
OPENCLAW_WEBHOOK_RETRY_BASE_SEC = env.float("OPENCLAW_WEBHOOK_RETRY_BASE_SEC", default=15.0)
OPENCLAW_WEBHOOK_RETRY_MAX_SEC = env.float("OPENCLAW_WEBHOOK_RETRY_MAX_SEC", default=4 * 3600.0)
OPENCLAW_WEBHOOK_RETRY_WINDOW_SEC = env.float("OPENCLAW_WEBHOOK_RETRY_WINDOW_SEC", default=24 * 3600.0)
# Server-Sent Events: a comment line this often keeps proxies from closing an idle stream.
OPENCLAW_SSE_HEARTBEAT_SEC = env.float("OPENCLAW_SSE_HEARTBEAT_SEC", default=15.0)
# The sandbox of the agents' `run` tool (pools/sandbox.py): the bubblewrap executable (a missing one
# leaves the sandbox unavailable; nothing then runs) and the sandbox's own Python environment, which
# `make install` builds (pools/sandbox_python.py).
OPENCLAW_SANDBOX_BWRAP = env.str("OPENCLAW_SANDBOX_BWRAP", default="bwrap")
OPENCLAW_SANDBOX_VENV = env.str("OPENCLAW_SANDBOX_VENV", default=str(BASE_DIR / ".venv-sandbox"))
OPENCLAW_SANDBOX_NICE = env.int("OPENCLAW_SANDBOX_NICE", default=10)
# The integration gate (executions/integration.py): the longest run of a merged project's compile
# and tests in the sandbox.
OPENCLAW_GATE_TIMEOUT_SEC = env.float("OPENCLAW_GATE_TIMEOUT_SEC", default=120.0)

# Slack bot (bots/). Optional: without a bot token and signing secret /slack/events answers 503.
SLACK_BOT_TOKEN = env.str("SLACK_BOT_TOKEN", default="")
SLACK_SIGNING_SECRET = env.str("SLACK_SIGNING_SECRET", default="")
SLACK_APP_TOKEN = env.str("SLACK_APP_TOKEN", default="")
SLACK_API_URL = env.str("SLACK_API_URL", default="https://slack.com/api/")
# chat.update is tier 3: keep each thread's status edits at most this often.
SLACK_MIN_UPDATE_INTERVAL_SEC = env.float("SLACK_MIN_UPDATE_INTERVAL_SEC", default=1.0)

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "django_dramatiq",
    "pools",
    "executions",
    "bots",
    "openclaw_site",  # last: the process commands (serve, reaper) that wire the apps
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "executions.api.ApiErrorsInJson",
]

ROOT_URLCONF = "openclaw_site.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]
WSGI_APPLICATION = None
ASGI_APPLICATION = "openclaw_site.asgi.application"


def _postgresql_pool(db: dict) -> dict:
    """Every process draws its PostgreSQL connections from a pool of its own (psycopg_pool), at
    most DATABASE_POOL_SIZE of them: daphne runs each concurrent request in a thread of its own,
    and connections kept per thread (CONN_MAX_AGE) grew with them until PostgreSQL refused new
    clients. A connection goes back to the pool where Django would close it (end of a request,
    of a worker's message), and is checked before it is handed out again (a server restart)."""
    db["CONN_MAX_AGE"] = 0  # Django's pool takes the place of kept connections
    db["CONN_HEALTH_CHECKS"] = True  # with a pool: each connection checked as it is handed out
    db.setdefault("OPTIONS", {})["pool"] = {
        "min_size": 1,
        "max_size": env.int("DATABASE_POOL_SIZE", default=20),
        "timeout": env.float("DATABASE_POOL_TIMEOUT_SEC", default=10.0),
    }
    return db


def _database() -> dict:
    if env.str("DATABASE_URL", default=""):
        db = env.db("DATABASE_URL")
        if db["ENGINE"] == "django.db.backends.postgresql":
            return _postgresql_pool(db)
        db.setdefault("CONN_MAX_AGE", 60)
        db["CONN_HEALTH_CHECKS"] = True
        return db
    # SQLite with several processes writing: WAL, a busy timeout and IMMEDIATE transactions,
    # so writers queue instead of failing with "database is locked". Connections are kept, as on
    # PostgreSQL: a new one costs about 0.8 ms of CPU (Django registers its SQL functions on each),
    # which a worker would otherwise pay for every message it handles.
    return {
        "ENGINE": "openclaw_site.sqlite_backend",
        "CONN_MAX_AGE": 60,
        "NAME": env.str("SQLITE_PATH", default=str(VAR_DIR / "openclaw.sqlite3")),
        "OPTIONS": {
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA busy_timeout=30000; PRAGMA synchronous=NORMAL;",
        },
        "TEST": {"NAME": str(VAR_DIR / "test.sqlite3")},
    }


DATABASES = {"default": _database()}
# SQLite: the longest a writing transaction waits for the writer lock (openclaw_site/sqlite_backend)
# before failing with an OperationalError that names the process holding it.
OPENCLAW_SQLITE_WRITER_WAIT_SEC = env.float("OPENCLAW_SQLITE_WRITER_WAIT_SEC", default=30.0)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "openclaw",
    }
}

CHANNEL_LAYERS = {
    "default": {
        # Redis pub/sub: a group send is one PUBLISH, where the list-based layer takes four round
        # trips a group, each a wait for the GIL in a busy worker (events reached the console
        # several times later). Both are at-most-once; clients resume by seq. A process holds one
        # subscribing connection for all its websockets and streams; publishes come from a pool,
        # which redis-py 8 caps at 100 connections unless told otherwise.
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {
            "hosts": [
                {
                    "address": REDIS_URL,
                    "max_connections": env.int("CHANNELS_REDIS_MAX_CONNECTIONS", default=2000),
                }
            ],
            "prefix": "openclaw:channels",
        },
    }
}

DRAMATIQ_BROKER = {
    "BROKER": "openclaw_site.broker.UndelayedQueuesRedisBroker",
    # Only the Slack notifier delays messages, and nobody waits on its queue (openclaw_site/broker.py).
    "OPTIONS": {
        "url": REDIS_URL,
        "namespace": "openclaw",
        "delayed_queues": ["slack"],
        "background_queues": ["slack"],
    },
    "MIDDLEWARE": [
        "dramatiq.middleware.AgeLimit",
        "dramatiq.middleware.TimeLimit",
        "dramatiq.middleware.Callbacks",
        "dramatiq.middleware.Retries",
        "dramatiq.middleware.ShutdownNotifications",
        "django_dramatiq.middleware.DbConnectionsMiddleware",
        "openclaw_site.worker_tuning.WorkerPriority",
        "openclaw_site.worker_tuning.GilSwitchInterval",
        "openclaw_site.worker_tuning.SweepScratchOfGoneWorkers",
        "openclaw_site.worker_tuning.WarmAgentCode",
        "executions.worker_queues.FollowPoolQueues",
        "executions.worker_identity.AnnounceWorker",
        "openclaw_site.worker_tuning.FreezeStartupObjects",
    ],
}
WORKER_GIL_SWITCH_INTERVAL_MS = env.float("WORKER_GIL_SWITCH_INTERVAL_MS", default=1.0)
WORKER_NICE = env.int("WORKER_NICE", default=0)
# The workers `make run` (manage.py serve) and the benchmarks start: Dramatiq's own defaults, a
# process per core (each has its own GIL) of 8 threads.
WORKER_PROCESSES = env.int("WORKER_PROCESSES", default=os.cpu_count() or 1)
WORKER_THREADS = env.int("WORKER_THREADS", default=8)
# The daphne processes `make run` starts on its one listening socket (openclaw_site/web_tier.py).
WEB_PROCESSES = env.int("WEB_PROCESSES", default=1)
DRAMATIQ_AUTODISCOVER_MODULES = ["actors"]
# Where agents' workspaces live: a worker running as root runs the sandbox as `nobody`, who must be
# able to reach this folder (every folder above it searchable by others).
OPENCLAW_WORKSPACES_DIR = Path(env.str("OPENCLAW_WORKSPACES_DIR", default=str(VAR_DIR / "workspaces")))
# Where the projects' bare git repositories live, one folder per client (executions/projects.py).
OPENCLAW_REPOS_DIR = Path(env.str("OPENCLAW_REPOS_DIR", default=str(VAR_DIR / "repos")))
# How often a running worker looks for pools created or renamed in the admin (and consumes their queue).
OPENCLAW_POOL_QUEUES_REFRESH_SEC = env.float("OPENCLAW_POOL_QUEUES_REFRESH_SEC", default=5.0)
# Dramatiq's Redis consumer polls an idle queue with a backoff of up to this many ms. An enqueue
# wakes the queue's consumers at once (openclaw_site/broker.py), so this is only the fallback for a
# wake-up lost while a worker's listener reconnects; every poll takes the worker's GIL. dramatiq
# reads it from the environment when it starts, and `rundramatiq` execs dramatiq with ours.
DRAMATIQ_WORKER_TIMEOUT_MS = env.int("DRAMATIQ_WORKER_TIMEOUT_MS", default=1000)
os.environ.setdefault("dramatiq_worker_timeout", str(DRAMATIQ_WORKER_TIMEOUT_MS))

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "/admin/login/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = env.str("STATIC_ROOT", default=str(VAR_DIR / "staticfiles"))

SESSION_COOKIE_SECURE = not LOCAL_RUN
CSRF_COOKIE_SECURE = not LOCAL_RUN
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not LOCAL_RUN)
SECURE_HSTS_SECONDS = 0 if LOCAL_RUN else env.int("SECURE_HSTS_SECONDS", default=31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not LOCAL_RUN
SECURE_HSTS_PRELOAD = not LOCAL_RUN
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "openclaw": {
            "handlers": ["console"],
            "level": env.str("LOG_LEVEL", default="INFO"),
            "propagate": False,
        },
        # bandit loads its report formatters through stevedore, which logs an ERROR for each whose
        # optional dependency is missing (sarif_om); the verifiers use none of them.
        "stevedore.extension": {"level": "CRITICAL"},
    },
}
