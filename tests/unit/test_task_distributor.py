"""The seed's "Intent Classification Examples" classify as the seed says."""

import pytest

from executions.task_distributor import classify_task, detect_streams

SEED_EXAMPLES = {
    "codegen": [
        "Build frontend with React",
        "Implement API endpoint",
        "Create database migration",
        "Fix bug in authentication",
        "Deploy to production",
    ],
    "security": [
        "Audit for vulnerabilities",
        "Test payment security",
        "Check OWASP compliance",
        "Penetration test",
        "Review code for XSS",
    ],
    "database": [
        "Design Supabase schema",
        "Optimize slow queries",
        "Setup real-time subscriptions",
        "Create backup strategy",
        "Migrate PostgreSQL data",
    ],
}


@pytest.mark.parametrize(
    "pool,text", [(pool, text) for pool, texts in SEED_EXAMPLES.items() for text in texts]
)
def test_seed_examples_classify_as_the_seed_says(pool, text):
    assert classify_task(text) == pool


def test_unavailable_pool_falls_back_to_an_available_one():
    assert classify_task("Audit for vulnerabilities", ["codegen", "database"]) == "codegen"


def pools_of(request):
    return [s.pool for s in detect_streams(request)]


def test_restaurant_website_is_frontend_backend_database_and_security_after_backend():
    streams = detect_streams("Build a restaurant website with online booking and secure payments")
    assert [s.pool for s in streams] == ["codegen", "codegen", "database", "security"]
    backend = next(s for s in streams if "backend" in s.description.lower())
    security = next(s for s in streams if s.pool == "security")
    assert security.blocked_by == (backend.key,)
    assert all(not s.blocked_by for s in streams if s.pool != "security")


def test_audit_and_fix_is_find_fix_verify():
    streams = detect_streams("Audit and fix security")
    assert [s.pool for s in streams] == ["security", "codegen", "security"]
    assert streams[1].blocked_by == (streams[0].key,) and streams[2].blocked_by == (streams[1].key,)


def test_full_ecommerce_needs_codegen_database_security_and_codegen_again():
    pools = pools_of("Full e-commerce setup")
    assert pools.count("codegen") >= 2 and "database" in pools and "security" in pools


def test_small_request_is_a_single_task():
    assert pools_of("Build a contact form") == ["codegen"]
    assert pools_of("Optimize slow queries") == ["database"]


def test_seed_cost_comparison_projects():
    assert pools_of("REST API + frontend + security audit") == ["codegen", "codegen", "security"]
    assert sorted(pools_of("Full website + backend + audit + database")) == [
        "codegen",
        "codegen",
        "database",
        "security",
    ]


def areas_of(request):
    """Each stream as the part of the project it builds (its description's own words)."""
    return [s.description.split(":", 1)[0] for s in detect_streams(request)]


FULL_STACK = [
    "Build Next.js frontend",
    "Build FastAPI backend with API endpoints",
    "Design database schema with indexes",
    "Security audit (OWASP top 10, injection, XSS, CSRF)",
]
SHOP = [*FULL_STACK, "Integrate checkout and payments end to end"]


@pytest.mark.parametrize(
    "request_text,areas",
    [
        ("Build an online bookstore with a shopping cart, checkout and customer reviews", SHOP),
        ("Create an e-commerce store for handmade jewelry", SHOP),
        ("Build a todo app with user accounts and due-date reminders", FULL_STACK),
        ("Build a blog with posts, comments and an admin dashboard", FULL_STACK),
        ("Build a booking system for a hair salon with appointments", FULL_STACK),
        ("Build a mobile app for a gym with member sign-up", FULL_STACK),
        # An API over records needs their tables; an API over none does not.
        ("Build a REST API for bookings", FULL_STACK[1:3]),
        ("Build a webhook receiver API", ["Build a webhook receiver API"]),
        # Pages only, whatever the business sells.
        ("Build a landing page for a coffee shop", FULL_STACK[:1]),
        ("Build a portfolio website for a photographer", FULL_STACK[:1]),
        # Apps by their kind, over the records their users act on.
        ("Build an expense tracker", FULL_STACK),
        ("Build a URL shortener with click statistics", FULL_STACK),
        ("Create a dashboard for sales analytics", FULL_STACK),
        ("Build a job board", FULL_STACK),
        ("Build a chat app where users can create rooms and send messages", FULL_STACK),
        ("Build a kanban board with columns and cards", FULL_STACK),
        ("Build a grocery list", FULL_STACK),
        ("Build a guestbook", FULL_STACK),
        ("Build a package manager in Rust", ["Build a package manager in Rust"]),
        # One program, not a web app; "store" as a verb sells nothing.
        ("Build a CLI app that converts CSV to JSON", ["Build a CLI app that converts CSV to JSON"]),
        ("Write a script to store the logs in S3", ["Write a script to store the logs in S3"]),
        # A change to the app there is: one task, not a new project.
        ("Add a dark mode toggle to the app", FULL_STACK[:1]),
        ("Add a dark mode toggle to the shop", FULL_STACK[:1]),
        ("Add a dashboard page to the app", FULL_STACK[:1]),
        ("Build the online store for my bakery", SHOP),
        ("Make the website faster", FULL_STACK[:1]),
        ("Build the website for my bakery", FULL_STACK),
    ],
)
def test_a_request_gets_the_parts_a_project_of_its_kind_needs(request_text, areas):
    assert areas_of(request_text) == areas
