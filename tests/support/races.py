"""Deterministic races: let one request load its record, then have another change it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from clinic.core.db import db


def interleave(monkeypatch: pytest.MonkeyPatch, module: Any, loader: str, competing: Callable[[], Any]) -> list[Any]:
    """Patch `module.loader` so that, the first time it has loaded its record, `competing`
    runs to completion in another thread before the caller goes on. Returns its result."""
    original = getattr(module, loader)
    out: list[Any] = []
    started = threading.Event()

    def loaded_then_overtaken(*args: Any, **kwargs: Any) -> Any:
        record = original(*args, **kwargs)
        if not started.is_set():  # the competing request loads through here too
            started.set()
            failures: list[BaseException] = []

            def run() -> None:
                try:
                    out.append(competing())
                except BaseException as exc:  # surfaced below
                    failures.append(exc)
                finally:
                    db.session.remove()

            thread = threading.Thread(target=run)
            thread.start()
            thread.join(60)
            if failures:
                raise failures[0]
        return record

    monkeypatch.setattr(module, loader, loaded_then_overtaken)
    return out
