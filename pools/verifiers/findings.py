"""The finding every verifier reports, in the agent contract's finding shape (DESIGN.md)."""

from dataclasses import asdict, dataclass


@dataclass
class Finding:
    """One problem found in an output, in the agent contract's finding shape plus where it came from."""

    severity: str
    title: str
    file: str | None = None
    line: int | None = None
    recommendation: str = ""
    source: str = "verifier"  # "bandit", "verifier" or "schema"
    rule: str = ""

    def as_dict(self) -> dict:
        return asdict(self)
