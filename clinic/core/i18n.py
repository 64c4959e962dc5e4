"""Languages: zh-CN first, English available (Flask-Babel).

The locale comes from the user's explicit choice (the `lang` cookie set by the
language switch), then the browser's Accept-Language, then zh_CN. English is the
source language: it has no catalog and shows the source strings.

Catalogs (`translations/<lang>/LC_MESSAGES/messages.po`, updated by `make translations`)
are compiled on start into `translations/.compiled/<locale>/` when the .mo is missing or
older than its .po. The compiled folder is named the way Babel names the locale
(`zh_CN` parses to `zh_Hans_CN`), which is the folder Flask-Babel looks in.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from babel import Locale
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from flask import Flask, request
from flask_babel import Babel, get_locale

LOCALES = ("zh_CN", "en")
TRANSLATIONS = Path(__file__).resolve().parent.parent / "translations"

babel = Babel()


def select_locale() -> str:
    """Pages: Chinese unless the person chose English with the switch (the `lang` cookie).
    The JSON API: the client's Accept-Language (zh-CN when it names neither)."""
    chosen = request.cookies.get("lang")
    if chosen in LOCALES:
        return chosen
    if request.path.startswith("/api/"):
        best = request.accept_languages.best_match(["zh-CN", "zh", "en"], default="zh-CN")
        return "en" if best == "en" else "zh_CN"
    return "zh_CN"


def compile_catalogs(root: Path = TRANSLATIONS, target: Path | None = None) -> Path:
    """Compile every `<lang>/LC_MESSAGES/*.po` under root; answer the compiled folder."""
    target = target or root / ".compiled"
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError:  # a read-only install: compile into a temporary folder instead
        target = Path(tempfile.mkdtemp(prefix="clinic-i18n-"))
    for po_path in root.glob("*/LC_MESSAGES/*.po"):
        lang = po_path.parent.parent.name
        mo_dir = target / str(Locale.parse(lang)) / "LC_MESSAGES"
        mo_path = mo_dir / po_path.with_suffix(".mo").name
        if mo_path.exists() and mo_path.stat().st_mtime >= po_path.stat().st_mtime:
            continue
        mo_dir.mkdir(parents=True, exist_ok=True)
        with po_path.open("rb") as fh:
            catalog = read_po(fh)
        tmp = mo_path.with_name(f"{mo_path.stem}.{os.getpid()}.mo.tmp")  # one per process (gunicorn workers)
        with tmp.open("wb") as fh:
            write_mo(fh, catalog)
        tmp.replace(mo_path)
    return target


def init_app(app: Flask) -> None:
    compiled = compile_catalogs()
    app.config.setdefault("BABEL_TRANSLATION_DIRECTORIES", str(compiled))
    babel.init_app(app, locale_selector=select_locale, default_timezone="Asia/Shanghai")
    app.jinja_env.globals["get_locale"] = get_locale
