"""settings() is the app's typed Config, and it follows app.config: a test (or an extension)
that sets, pops or deletes a key through app.config changes what the services read."""

from __future__ import annotations

from flask import Flask

from clinic.core.config import Config, settings


def test_settings_follow_what_is_set_popped_and_deleted_through_app_config(ctx: Flask) -> None:
    saved = ctx.config["REGULATOR_CONTACT_PHONE"]
    try:
        ctx.config["REGULATOR_CONTACT_PHONE"] = "13900139000"
        assert settings().REGULATOR_CONTACT_PHONE == "13900139000"
        assert ctx.config.pop("REGULATOR_CONTACT_PHONE") == "13900139000"
        assert settings().REGULATOR_CONTACT_PHONE == Config().REGULATOR_CONTACT_PHONE == ""
        ctx.config.update(REGULATOR_CONTACT_PHONE="13800138000")
        assert settings().REGULATOR_CONTACT_PHONE == "13800138000"
        del ctx.config["REGULATOR_CONTACT_PHONE"]
        assert settings().REGULATOR_CONTACT_PHONE == ""
    finally:
        ctx.config["REGULATOR_CONTACT_PHONE"] = saved
    assert saved == settings().REGULATOR_CONTACT_PHONE


def test_settings_are_typed_as_config_declares(ctx: Flask) -> None:
    cfg = settings()
    assert isinstance(cfg, Config)
    assert isinstance(cfg.FACE_FRESH_SECONDS, int) and ctx.config["FACE_FRESH_SECONDS"] == cfg.FACE_FRESH_SECONDS
