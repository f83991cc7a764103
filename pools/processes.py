"""What the kernel's process table (/proc) says of a process of this host."""

from pathlib import Path


def start_time(pid: int) -> str | None:
    """The process's start time as /proc/<pid>/stat gives it (field 22: clock ticks since boot,
    which tells a process from a later one given the same pid); None when it no longer runs, a
    killed process nobody has reaped yet (a zombie) included. OSError when /proc cannot say."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    # The command name in parentheses may hold spaces and parentheses: fields count from the last ")".
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else fields[19]
