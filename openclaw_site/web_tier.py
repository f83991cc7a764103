"""The web tier: one or more daphne processes on one listening socket.

A daphne process runs its Python on one core at a time. To serve with more, the parent opens the
listening socket once and starts each daphne on it (`daphne --fd`); the kernel hands every new
connection to one of them. Nothing else is shared between them: sessions, API keys and throttles
live in the database and the cache, and console websockets and streams get their events through
the channel layer (Redis), whichever process holds them.
"""

import socket
import sys

ASGI_APP = "openclaw_site.asgi:application"


def listening_socket(host: str, port: int, *, backlog: int = 1024) -> socket.socket:
    """A TCP socket listening on host:port (port 0: a free one), inheritable by child processes."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(backlog)
    listener.set_inheritable(True)
    return listener


def daphne_command(listener: socket.socket) -> list[str]:
    """The command line of one daphne serving the site on `listener` (pass its fd to the child)."""
    return [sys.executable, "-m", "daphne", "--fd", str(listener.fileno()), ASGI_APP]
