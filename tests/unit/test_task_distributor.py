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
