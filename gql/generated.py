"""Each compiled selection (``gql/planned.py``) as one generated Python function.

graphql-jit writes JavaScript per query; this writes Python per selection set: one
function that builds the selection's dict in response order, with every plain leaf
read and checked inline (``v = source.starts_at``, passed as is when it is a ``str``, a
``bool``, an ``int`` in range, serialized by its precompiled function otherwise), and
every other field's value completed by its precompiled completer, or left for the
level's ``gather`` when it is awaitable. The code only ever names the fields' own
values through a namespace of constants; the text it is built from is response keys
and attribute names the schema and the validated document define (``repr`` quoted)."""

from __future__ import annotations

import keyword
from collections.abc import Callable
from typing import Any

from graphql.pyutils import Path
from strawberry.execution import optimized_is_awaitable

from punchcard.gql.plan import Field, Run

Execute = Callable[[Run, Any, Path | None], dict[str, Any]]
INT_RANGE = "-2147483648 <= v <= 2147483647"


def _read(attribute: str) -> str:
    if attribute.isidentifier() and not keyword.iskeyword(attribute):
        return f"source.{attribute}"
    return f"getattr(source, {attribute!r})"


def function(fields: list[Field]) -> Execute:
    """The function that executes one selection of ``fields`` on a source object."""
    namespace: dict[str, Any] = {"Path": Path, "is_awaitable": optimized_is_awaitable}
    lines = ["def execute(state, source, path):", "    pending = state.pending", "    out = {}"]
    for index, field in enumerate(fields):
        key = repr(field.key)
        typename = repr(field.parent_type.name)
        if field.kind == "typename":
            lines.append(f"    out[{key}] = {typename}")
            continue
        if field.kind == "leaf":
            assert field.attribute is not None
            namespace[f"c{index}"] = field.coerce
            lines.append(f"    v = {_read(field.attribute)}")
            if field.check == "str":
                lines.append(f"    out[{key}] = v if type(v) is str else c{index}(v)")
            elif field.check == "bool":
                lines.append(f"    out[{key}] = v if type(v) is bool else c{index}(v)")
            elif field.check == "int":
                test = f"type(v) is int and {INT_RANGE}"
                lines.append(f"    out[{key}] = v if {test} else c{index}(v)")
            else:
                lines.append(f"    out[{key}] = c{index}(v)")
            continue
        namespace[f"m{index}"] = field.complete
        path = f"Path(path, {key}, {typename})" if field.needs_path else "None"
        lines.append(f"    p = {path}")
        if field.kind == "get":
            assert field.attribute is not None
            lines.append(f"    v = {_read(field.attribute)}")
        else:
            namespace[f"r{index}"] = field.resolve
            namespace[f"d{index}"] = field.definition
            namespace[f"n{index}"] = field.nodes
            namespace[f"t{index}"] = field.parent_type
            info = f"state.executor.build_resolve_info(d{index}, n{index}, t{index}, p)"
            arguments = f", **state.arguments[{field.slot}]" if field.slot >= 0 else ""
            call = f"v = r{index}(source, {info}{arguments})"
            if field.kind == "prefetched":
                assert field.attribute is not None
                lines += [
                    f"    v = {_read(field.attribute)}",
                    "    if v is None:",
                    f"        {call}",
                ]
            else:
                lines.append(f"    {call}")
        lines += [
            "    if is_awaitable(v):",
            f"        out[{key}] = None",  # keeps the key's place; filled in when it settles
            f"        pending.append((v, out, {key}, m{index}, p))",
            "    else:",
            f"        out[{key}] = m{index}(state, v, p)",
        ]
    lines.append("    return out")
    exec(compile("\n".join(lines), "<punchcard planned selection>", "exec"), namespace)
    execute: Execute = namespace["execute"]
    return execute
