"""sqlglot, taken in turns by every verifier that parses SQL."""

import threading

# sqlglot is not safe to use from several threads at once: checks running together in a fresh
# worker turned a valid schema into SQL that SQLite rejects (reproduced with eight threads). Its
# work is pure Python under the GIL anyway, so taking turns costs nothing.
SQLGLOT = threading.Lock()
