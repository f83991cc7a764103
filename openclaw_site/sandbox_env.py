"""Install the sandbox's own Python packages: `python -m openclaw_site.sandbox_env` (run by `make install`).

The packages are config.json's `sandbox.packages`, installed with this Python's pip into
`.sandbox/site` (not this project's environment: agents' code never imports ours), with `bin/`
wrappers such as `pytest` that run them with the system's python3 inside the sandbox, where the
folder is mounted read-only at /opt/sandbox. Nothing is done when the list has not changed.
"""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PACKAGES = ["pytest", "httpx", "fastapi", "flask", "sqlalchemy", "pydantic"]
WRAPPERS = {"pytest": "pytest", "py.test": "pytest"}


def packages(config_path: Path) -> list[str]:
    config = json.loads(config_path.read_text()) if config_path.exists() else {}
    listed = (config.get("sandbox") or {}).get("packages", DEFAULT_PACKAGES)
    if not isinstance(listed, list) or not all(isinstance(p, str) and p.strip() for p in listed):
        raise SystemExit(f"{config_path}: sandbox.packages must be a list of requirement strings")
    return listed


def install(target: Path, wanted: list[str]) -> bool:
    """Install `wanted` into `target`; False when it already holds exactly them."""
    stamp = target / ".installed"
    digest = hashlib.sha256(json.dumps(wanted).encode()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        stamp.touch()  # newer than config.json for make
        return False
    site = target / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--upgrade", "--target", str(site), *wanted],
        check=True,
    )
    bin_dir = target / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name, module in WRAPPERS.items():
        wrapper = bin_dir / name
        wrapper.write_text(f'#!/bin/sh\nexec python3 -m {module} "$@"\n')
        wrapper.chmod(0o755)
    stamp.write_text(digest)
    return True


def main() -> None:
    config_path = Path(os.environ.get("OPENCLAW_CONFIG", ROOT / "config.json"))
    target = Path(os.environ.get("OPENCLAW_SANDBOX_PACKAGES", ROOT / ".sandbox"))
    wanted = packages(config_path)
    changed = install(target, wanted)
    print(f"sandbox packages {'installed' if changed else 'up to date'} in {target}: {', '.join(wanted)}")


if __name__ == "__main__":
    main()
