"""What a request asks for that the offline agents build nothing for: the offline answer names it,
rather than calling the project complete without it."""

import pytest

from pools import llm
from pools.contracts.derive import PAYMENT_PROCESSING, not_derived
from pools.llm_types import LLMRequest, ModelSpec

OFFLINE = ModelSpec(name="offline", provider="offline", model="m")


@pytest.mark.parametrize(
    "request_text, expected",
    [
        ("Build a restaurant website with online booking and secure payments", [PAYMENT_PROCESSING]),
        ("Build an e-commerce store for handmade jewelry", [PAYMENT_PROCESSING]),  # a shop takes them
        (
            "Build a todo list app where users can sign up, log in and share lists with friends",
            ["sharing records with other users"],
        ),
        ("Build a chat app where users create rooms and send messages", ["real-time updates and chat"]),
        ("Build an expense tracker with CSV export", ["exports"]),
        (
            "Build a todo app with Google login",
            ["sign-in with another provider: accounts are by email and password"],
        ),
        (
            "A booking app that sends email reminders and lets staff upload menus",
            ["notifications (email or SMS)", "file uploads"],
        ),
        ("Build a contact form", []),
        ("Build a blog where writers sign up, log in and publish posts", []),
        ("Add a phone number field to bookings", []),
        ("Build a bug report tracker", []),
    ],
)
def test_what_the_offline_agents_build_nothing_for(request_text, expected):
    assert not_derived(request_text) == expected


def synthesis(request_text: str) -> str:
    request = LLMRequest(
        purpose="synthesis",
        system="",
        prompt="",
        timeout=5,
        meta={"plain_summary": "## Project complete\n\n- ✅ task_1", "request": request_text},
    )
    return llm.complete(OFFLINE, request).text


def test_the_offline_answer_names_what_it_did_not_build():
    answer = synthesis("Build a todo list app where users sign up, log in and share lists with friends")

    assert answer == (
        "## Project complete\n\n- ✅ task_1\n\n**Not built offline:** sharing records with other users. "
        "The offline agents build records, fields, pages and accounts; a model agent writes the rest."
    )
    assert synthesis("Build a contact form") == "## Project complete\n\n- ✅ task_1"
