"""Parsing model replies per the contracts of DESIGN.md: a JSON object, bare or in a fenced block."""

import json
import re
from dataclasses import dataclass, field

from .storable import json_loads

SEVERITIES = ("critical", "high", "medium", "low", "info")
_FENCE = re.compile(r"```(?:json|JSON)?\s*\n(.*?)\n?```", re.DOTALL)
MAX_FILES = 200
MAX_FILE_CHARS = 400_000


class ReplyError(ValueError):
    """A reply that does not follow the contract; the message says why, for the attempt's record."""


def extract_json(text: str) -> dict:
    """The JSON object in a reply: the whole text, a fenced block, or the outermost {...}."""
    candidates = [text.strip()]
    candidates += [m.group(1).strip() for m in _FENCE.finditer(text)]
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        candidates.append(text[start : end + 1])
    last_error = "no JSON object found in the reply"
    for candidate in candidates:
        if not candidate:
            continue
        try:
            value = json_loads(candidate)
        except json.JSONDecodeError as exc:
            last_error = f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
            continue
        except ValueError as exc:  # nested too deeply, an integer of thousands of digits
            last_error = f"invalid JSON: {exc}"
            continue
        if isinstance(value, dict):
            return value
        last_error = f"expected a JSON object, got {type(value).__name__}"
    raise ReplyError(last_error)


@dataclass
class AgentReply:
    summary: str
    files: list[dict] = field(default_factory=list)
    findings: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"summary": self.summary, "files": self.files, "findings": self.findings}


def parse_agent_reply(text: str) -> AgentReply:
    """Validate an agent reply: {"summary", "files": [{"path", "content"}], "findings": [...]}."""
    data = extract_json(text)
    summary = data.get("summary")
    if not isinstance(summary, str) or not summary.strip():
        raise ReplyError('"summary" must be a non-empty string')
    files = data.get("files") or []
    if not isinstance(files, list) or len(files) > MAX_FILES:
        raise ReplyError(f'"files" must be a list of at most {MAX_FILES} objects')
    clean_files = []
    for i, item in enumerate(files):
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("path"), str)
            or not isinstance(item.get("content"), str)
        ):
            raise ReplyError(f'files[{i}] must be an object with string "path" and "content"')
        if len(item["content"]) > MAX_FILE_CHARS:
            raise ReplyError(f"files[{i}] ({item['path']}) is larger than {MAX_FILE_CHARS} characters")
        clean_files.append({"path": item["path"].strip(), "content": item["content"]})
    clean_findings = parse_findings(data.get("findings") or [])
    return AgentReply(summary.strip()[:4000], clean_files, clean_findings)


def parse_findings(findings: object) -> list[dict]:
    """Validate the findings of an agent reply (or of its `finish` tool call)."""
    if not isinstance(findings, list):
        raise ReplyError('"findings" must be a list')
    clean_findings = []
    for i, item in enumerate(findings):
        if not isinstance(item, dict) or not isinstance(item.get("title"), str):
            raise ReplyError(f'findings[{i}] must be an object with a string "title"')
        severity = str(item.get("severity", "info")).lower()
        if severity not in SEVERITIES:
            raise ReplyError(f"findings[{i}] has unknown severity {item.get('severity')!r}")
        line = item.get("line")
        clean_findings.append(
            {
                "severity": severity,
                "title": item["title"][:300],
                "file": item.get("file") if isinstance(item.get("file"), str) else None,
                "line": line if isinstance(line, int) and not isinstance(line, bool) else None,
                "recommendation": str(item.get("recommendation") or "")[:2000],
                "source": "model",
            }
        )
    return clean_findings
