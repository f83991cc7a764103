"""The seed's models behind the fake model server: the PM plans, the agents answer, all valid.

Test and benchmark tooling: an execution whose every model call goes through the official SDKs to
`FakeLLMServer`, with the seed's pairing of providers (config.json: the PM and the database pool on
Anthropic, codegen and security on OpenAI-compatible servers), and the time each call arrived.

    with FakeLLMServer(default_reply=AgencyReplies(plan)) as server:
        load_config(seed_config_at(server, key_env="X_API_KEY"), force=True)  # workers get X_API_KEY
        ... run an execution ...
        agent_calls(server.requests)  # [(pool, task description, arrival), …]
"""

import json
import re

from tests.fakes.llm_server import ReceivedRequest

PM_SYSTEM_PREFIX = "You are the PM of a software agency"
SYNTHESIS_SYSTEM_PREFIX = "You are the PM writing"
AGENT_TASK = re.compile(r"Your task \((\w+) pool\): <<<CLIENT_DATA\n(.*?)\nCLIENT_DATA>>>", re.DOTALL)
# The smallest replies each role's verification accepts: no Python, so no bandit scan.
AGENT_REPLIES = {
    "codegen": {
        "summary": "Pages.",
        "findings": [],
        "files": [{"path": "web/index.html", "content": "<h1>Delhi Palace</h1>\n"}],
    },
    "database": {
        "summary": "Users table.",
        "findings": [],
        "files": [
            {"path": "db/schema.sql", "content": "CREATE TABLE users (id SERIAL PRIMARY KEY, email TEXT);\n"}
        ],
    },
    "security": {"summary": "Nothing found.", "files": [], "findings": []},
}


class AgencyReplies:
    """`FakeLLMServer`'s default reply: the PM answers with `plan_tasks`, each agent with a valid
    reply of its pool, the synthesis with a line."""

    def __init__(self, plan_tasks: list[dict]):
        self.plan = json.dumps({"tasks": plan_tasks})

    def __call__(self, body: dict) -> str:
        system = body.get("system") or body["messages"][0]["content"]
        if system.startswith(PM_SYSTEM_PREFIX):
            return self.plan
        if system.startswith(SYNTHESIS_SYSTEM_PREFIX):
            return "Delivered."
        pool, _ = AGENT_TASK.search(body["messages"][-1]["content"]).groups()
        return json.dumps(AGENT_REPLIES[pool])


def agent_calls(requests: list[ReceivedRequest]) -> list[tuple[str, str, float]]:
    """The agents' calls among the server's requests: (pool, task description, arrival)."""
    calls = []
    for request in requests:
        found = AGENT_TASK.search(request.body["messages"][-1]["content"])
        if found:
            calls.append((*found.groups(), request.at))
    return calls


def seed_config_at(server, *, key_env: str, offline_pm: bool = False) -> dict:
    """config.json's engine and models, every real model served by `server` with the key in `key_env`
    (`offline_pm`: the PM plans offline, so the agents make the first real model calls)."""
    pool = {"max_concurrent": 3, "timeout_sec": 60, "max_retries": 2, "retry_backoff_sec": 0.1}
    anthropic = {"provider": "anthropic", "base_url": server.anthropic_base_url, "api_key_env": key_env}
    openai = {"provider": "openai", "base_url": server.openai_base_url, "api_key_env": key_env}
    prices = {"input_per_mtok": 3.0, "output_per_mtok": 15.0}
    return {
        "parallel_execution": {
            "enabled": True,
            "pm": {"model": "offline" if offline_pm else "claude-opus", "synthesis_model": "claude-sonnet"},
            "worker_pools": {
                "codegen": {**pool, "model": "minimax"},
                "security": {**pool, "max_concurrent": 2, "model": "qwen-coder"},
                "database": {**pool, "max_concurrent": 2, "model": "claude-sonnet"},
            },
        },
        "models": {
            "claude-opus": {**anthropic, "model": "claude-opus-4-1", **prices},
            "claude-sonnet": {**anthropic, "model": "claude-sonnet-4-5", **prices},
            "minimax": {**openai, "model": "MiniMax-M2.5", **prices},
            "qwen-coder": {**openai, "model": "qwen2.5-coder:14b", **prices},
            "offline": {"provider": "offline", "model": "openclaw-offline-1", **prices},
        },
    }
