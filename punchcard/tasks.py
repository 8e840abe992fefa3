"""Background tasks that a component starts with the app and stops with it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable


async def cancel(tasks: Iterable[asyncio.Task[None] | None]) -> None:
    """Cancel ``tasks`` and wait until each has finished (None entries are skipped)."""
    running = [task for task in tasks if task is not None]
    for task in running:
        task.cancel()
    for task in running:
        with contextlib.suppress(asyncio.CancelledError):
            await task
