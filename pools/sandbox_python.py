"""The sandbox's own Python environment: `make install` builds it (`python -m pools.sandbox_python`).

A virtual environment of its own (`.venv-sandbox/`, setting `OPENCLAW_SANDBOX_VENV`) with the
packages config.json lists under `sandbox.packages`, at the versions `sandbox-requirements.txt`
pins (a pip constraints file: it pins without installing, so config alone says what is there).
The sandbox binds it read-only at `MOUNT` (pools/sandbox.py), where `python`, `python3` and the
packages' commands (`pytest`) come first on PATH.

Its base interpreter must be readable by the sandbox's unprivileged user, which cannot enter
`/root`: the system's `/usr/bin/python3` is preferred when it is 3.11 or newer and can make a
venv, else the interpreter running this. The commands pip writes start with
`#!<this folder>/bin/python`; they are rewritten to `MOUNT`, where the sandbox sees them.

Rebuilt from scratch when the base interpreter, the package list or the pins change (recorded in
`BUILD_RECORD`), so a package removed from config leaves the environment too; otherwise a no-op.
"""

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

MOUNT = "/opt/sandbox-venv"
DEFAULT_PACKAGES = ("pytest", "httpx", "fastapi", "flask", "sqlalchemy", "pydantic")
BUILD_RECORD = ".openclaw-build.json"
BASE_DIR = Path(__file__).resolve().parent.parent
SYSTEM_PYTHON = "/usr/bin/python3"
USABLE_BASE = "import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))"


def configured_packages(config_path: Path) -> list[str]:
    """config.json's `sandbox.packages`, or the defaults when the file has no sandbox section."""
    data = json.loads(config_path.read_text())
    packages = (data.get("sandbox") or {}).get("packages", list(DEFAULT_PACKAGES))
    if not isinstance(packages, list) or not all(isinstance(p, str) and p.strip() for p in packages):
        raise SystemExit(f"{config_path}: sandbox.packages must be a list of package names")
    return [p.strip() for p in packages]


def base_python(explicit: str | None) -> str:
    """The interpreter the environment is made from (see the module's docstring)."""
    candidates = [explicit] if explicit else [SYSTEM_PYTHON, getattr(sys, "_base_executable", sys.executable)]
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            done = subprocess.run([candidate, "-c", USABLE_BASE], capture_output=True)
            if done.returncode == 0:
                return candidate
    raise SystemExit(f"no Python 3.11+ that can make a venv among {candidates}")


def build(target: Path, *, packages: list[str], pins: Path, python: str) -> bool:
    """Make `target` hold exactly `packages` (pinned by `pins`) on `python`; False if it already did."""
    record = {
        "base": python,
        "base_version": subprocess.run(
            [python, "-c", "import sys; print(sys.version)"], capture_output=True, text=True, check=True
        ).stdout.strip(),
        "packages": sorted(packages),
        "pins": hashlib.sha256(pins.read_bytes()).hexdigest(),
    }
    record_path = target / BUILD_RECORD
    try:
        if json.loads(record_path.read_text()) == record and (target / "bin" / "python").exists():
            return False
    except (OSError, ValueError):
        pass
    subprocess.run([python, "-m", "venv", "--clear", str(target)], check=True)
    subprocess.run(
        [str(target / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-input"]
        + ["--disable-pip-version-check", "-c", str(pins), *packages],
        check=True,
    )
    rewrite_commands(target)
    for folder, _dirs, files in os.walk(target):  # readable by the sandbox's user, whatever the umask
        os.chmod(folder, 0o755)
        for name in files:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                os.chmod(path, os.stat(path).st_mode | 0o444)
    record_path.write_text(json.dumps(record, indent=2) + "\n")
    return True


def rewrite_commands(target: Path) -> None:
    """Point the scripts in bin/ at the environment's path inside the sandbox."""
    host_bin, sandbox_bin = f"{target.absolute()}/bin/".encode(), f"{MOUNT}/bin/".encode()
    for script in (target / "bin").iterdir():
        if script.is_symlink() or not script.is_file():
            continue
        content = script.read_bytes()
        if content.startswith(b"#!") and host_bin in content:
            script.write_bytes(content.replace(host_bin, sandbox_bin))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pools.sandbox_python", description=__doc__.split("\n")[0]
    )
    parser.add_argument("target", nargs="?", default=str(BASE_DIR / ".venv-sandbox"))
    parser.add_argument("--python", help=f"the base interpreter (default: {SYSTEM_PYTHON} if usable)")
    parser.add_argument("--config", default=os.environ.get("OPENCLAW_CONFIG", str(BASE_DIR / "config.json")))
    parser.add_argument("--pins", default=str(BASE_DIR / "sandbox-requirements.txt"))
    args = parser.parse_args(argv)
    target = Path(args.target)
    packages = configured_packages(Path(args.config))
    python = base_python(args.python)
    built = build(target, packages=packages, pins=Path(args.pins), python=python)
    print(
        f"sandbox Python environment {target}: {'built' if built else 'up to date'} ({', '.join(packages)})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
