"""Which file paths an agent may write: the rules for one path, and for a tree of them.

A path has to name the same file on every system the project is checked out on (Linux, macOS,
Windows, git itself), stay inside the project, stay out of its repository metadata, and read the
same to a reviewer as to the file system (no control or invisible bidi characters).
"""

import re
import unicodedata

# Control (Cc), format (Cf: bidi controls U+202A–U+202E, U+2066–U+2069, U+200E/U+200F, U+061C,
# zero-width characters), lone surrogates (Cs: no file name can hold them) and line/paragraph
# separators (Zl, Zp).
REFUSED_CATEGORIES = {"Cc", "Cf", "Cs", "Zl", "Zp"}
# Device names Windows reserves in every folder, with or without an extension (`con.txt`); its
# superscript digits count as digits there.
WINDOWS_DEVICE = re.compile(r"CON|PRN|AUX|NUL|COM[1-9¹²³]|LPT[1-9¹²³]|CONIN\$|CONOUT\$", re.IGNORECASE)
# `.git` holds the repository's config and hooks; `git~1` is its 8.3 short name on Windows.
GIT_FOLDERS = {".git", "git~1"}


def path_problem(path: object) -> str | None:
    """Why a file path from a model may not be written under the project root, or None if it may."""
    if not isinstance(path, str) or not path.strip():
        return "empty or missing path"
    for char in path:
        if unicodedata.category(char) in REFUSED_CATEGORIES:
            return f"path contains a control or invisible character (U+{ord(char):04X})"
    if "\\" in path:
        return "path contains a backslash"
    if path.startswith("/") or re.match(r"[A-Za-z]:", path):
        return "absolute path"
    if ":" in path:
        return "path contains ':'"
    parts = path.split("/")
    if ".." in parts:
        return "path escapes the project with '..'"
    for part in parts:
        if not part:
            return "path has an empty component ('//' or a trailing '/')"
        if part == ".":
            return "path has a '.' component"
        if part.casefold() in GIT_FOLDERS:
            return "path writes into the .git folder"
        if part.endswith((".", " ")):
            return f"path component {part!r} ends in a dot or a space"
        if WINDOWS_DEVICE.fullmatch(part.split(".")[0].rstrip(" ")):
            return f"path component {part!r} is a Windows device name"
    return None


def printable(path: object) -> str | None:
    """A path as it may be shown in a finding: its refused characters escaped."""
    if not isinstance(path, str):
        return None
    return "".join(
        f"\\u{ord(char):04x}" if unicodedata.category(char) in REFUSED_CATEGORIES else char for char in path
    )


def tree_problems(paths: list[str]) -> list[str]:
    """Why the files of a tree cannot all be checked out as given: case-only collisions
    (`App.py` and `app.py`, or one name in two Unicode forms) and a file that is also a folder
    (`a/b` and `a/b/c.py`); [] if none.
    Paths that `path_problem` refuses are never written and are left out."""
    return [message for _, message in tree_clashes(paths)]


def tree_clashes(paths: list[str]) -> list[tuple[str, str]]:
    """`tree_problems` with the path each problem is reported on."""
    spellings: dict[str, set[str]] = {}  # case-insensitive key -> the spellings of a file or folder
    first_under: dict[str, str] = {}  # file or folder -> the first path at or under it
    inside: dict[str, str] = {}  # folder -> the first path under it
    files = sorted({path for path in paths if path_problem(path) is None})
    for path in files:
        parts = path.split("/")
        for depth in range(1, len(parts) + 1):
            node = "/".join(parts[:depth])
            spellings.setdefault(_case_key(node), set()).add(node)
            first_under.setdefault(node, path)
            if depth < len(parts):
                inside.setdefault(node, path)
    clashes = [
        (path, f"{path!r} is a file and also the folder of {inside[path]!r}")
        for path in files
        if path in inside
    ]
    colliding = {key for key, names in spellings.items() if len(names) > 1}
    for key in sorted(colliding):
        if key.rpartition("/")[0] in colliding:
            continue  # the parent folders' collision says it already
        first, *others = sorted(spellings[key])
        for other in others:
            if unicodedata.normalize("NFC", first) == unicodedata.normalize("NFC", other):
                message = f"{first!r} and {other!r} are one name in two Unicode forms (NFC and NFD)"
            else:
                message = f"{first!r} and {other!r} differ only in case"
            clashes.append((first_under[other], message))
    return clashes


def _case_key(path: str) -> str:
    # macOS and Windows file systems ignore case, and macOS also Unicode normalization.
    return unicodedata.normalize("NFC", path).casefold()
