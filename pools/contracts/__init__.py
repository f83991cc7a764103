"""The plan's contract and the checks of a project tree against it, by parsing only.

`contract` (shape, validation, path matching), `derive` (the deterministic planner's contract),
one module per thing read from the files (`routes`, `calls`, `sql_schema`, `sql_refs`, `orm`, with
`js_scan` tokenizing JavaScript), and `check`, which compares the tree with the contract and names
the deviating task of each mismatch. Nothing here imports an app or runs generated code.
"""
