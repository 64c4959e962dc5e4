"""The migrations form one line: `flask db upgrade` (API.md) needs a single head."""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory


def test_one_head_and_one_base() -> None:
    root = Path(__file__).resolve().parents[4] / "migrations"
    cfg = Config()
    cfg.set_main_option("script_location", str(root))
    script = ScriptDirectory.from_config(cfg)
    assert len(script.get_heads()) == 1, f"several heads: {script.get_heads()} (re-point down_revision)"
    assert len(script.get_bases()) == 1
    revisions = list(script.walk_revisions())
    assert all(rev.dependencies is None or not rev.dependencies for rev in revisions)
