"""Free text at the edge: control characters never reach the services or the database.

A NUL in a string is refused by PostgreSQL (it is a 500 there, silently kept on SQLite),
and the other C0/C1 control characters have no place in a name, a reason or a note. Every
string of a request (JSON body, form fields, query string) is checked before it is
parsed; a request carrying one is refused with 422 `invalid`, naming the field. Line
breaks (LF, and the CR of a browser's CRLF) and tabs are text and stay. Strings that are
not valid Unicode (a lone surrogate from a JSON `\\ud800` escape) are refused the same way.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def is_clean(text: str) -> bool:
    if CONTROL.search(text):
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return True


def unclean_fields(data: Any, loc: str = "") -> Iterator[str]:
    """The location (`items.0.unit`) of every string in `data`, keys included, that is not clean."""
    if isinstance(data, str):
        if not is_clean(data):
            yield loc or "body"
    elif isinstance(data, Mapping):
        for key, value in data.items():
            name = f"{loc}.{key}" if loc else str(key)
            if isinstance(key, str) and not is_clean(key):
                yield loc or "body"
            else:
                yield from unclean_fields(value, name)
    elif isinstance(data, list | tuple):
        for n, value in enumerate(data):
            yield from unclean_fields(value, f"{loc}.{n}" if loc else str(n))


def unclean_multidict(items: Iterable[tuple[str, str]]) -> list[str]:
    """The same for a query string or a form (werkzeug MultiDict `.items(multi=True)`)."""
    found: list[str] = []
    for key, value in items:
        if not is_clean(key):
            found.append("form")
        elif not is_clean(value):
            found.append(key)
    return list(dict.fromkeys(found))


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: object) -> object:
    """A value safe in a spreadsheet (OWASP CSV injection): text that a spreadsheet would
    read as a formula (= + - @, or a tab/CR before one) is prefixed with a quote and kept
    as text. Numbers stay numbers."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value
