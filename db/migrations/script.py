"""Run a multi-statement SQL script through Alembic one statement at a time.

asyncpg prepares every statement, and a prepared statement holds one command, so a
script is split on top-level semicolons (``$$``-quoted bodies and ``--`` comments kept whole).
"""

from __future__ import annotations

from alembic import op


def statements(script: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    in_dollar = False
    for line in script.splitlines():
        if line.lstrip().startswith("--") and not in_dollar:
            continue
        current.append(line)
        in_dollar ^= line.count("$$") % 2 == 1
        if not in_dollar and line.rstrip().endswith(";"):
            parts.append("\n".join(current).strip().rstrip(";"))
            current = []
    tail = "\n".join(current).strip()
    if tail:
        parts.append(tail)
    return parts


def run_script(script: str) -> None:
    for statement in statements(script):
        op.execute(statement)
