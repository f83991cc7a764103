"""Real-tool checks of agent outputs, one module per check; import from the modules themselves.

- `findings`: the `Finding` every check reports.
- `paths`: which file paths an agent may write (`path_problem`) and clashes in a tree (`tree_problems`).
- `output_files`: an output's files as a whole (`verify_files`): paths, clashes, contents that parse.
- `syntax`: does a file's content parse for its type; `js_balance`, the bracket scan for JS/TS.
- `bandit_scan`: bandit's findings on Python files (`run_bandit`).
- `schema`: a schema applied to a scratch SQLite database (`check_schema`), with
  `schema_screen` (statements a schema may not hold), `sqlite_translation` (other dialects to
  SQLite) and `scratch_sqlite` (the child process the SQL runs in).
- `sqlglot_lock`: sqlglot taken in turns.

Pure functions over the agent contract's `files` list (DESIGN.md): no Django, no network, and
generated code is never executed on the host (bandit reads it, and SQL runs only in a scratch
SQLite database, each in a child process with resource limits).
"""
