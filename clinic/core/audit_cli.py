"""`flask audit verify|sequencer|checkpoint|public-key`: the audit log from the command line
(the full check against a checkpoint kept outside the database, the sequencer's loop, the
latest checkpoint and the log's verifier key)."""

from __future__ import annotations

import json
import time
from typing import Any

import click
from flask import Flask

from clinic.core.audit_sequencer import hand_over_jobs, run_pass
from clinic.core.audit_verify import verify
from clinic.core.auditlog import config, latest_checkpoint
from clinic.core.db import db


def init_app(app: Flask) -> None:
    group = click.Group("audit", help="The audit log: sequencer, checkpoints, verification.")
    app.cli.add_command(group)

    @group.command("verify")
    @click.option(
        "--checkpoint",
        "checkpoint_file",
        type=click.File("r", encoding="utf-8"),
        default=None,
        help="A checkpoint kept outside the database.",
    )
    def verify_cmd(checkpoint_file: Any) -> None:
        """Re-hash the whole log against its signed checkpoints (and one kept outside); name the
        first bad entry. Exit 1 when anything does not match."""
        with db.engine.connect() as conn:
            report = verify(conn, config().verifier, checkpoint_file.read() if checkpoint_file else None)
        click.echo(json.dumps(report.as_dict(), ensure_ascii=False))
        if not report.ok:
            raise SystemExit(1)

    @group.command("sequencer")
    @click.option("--once", is_flag=True, help="One pass (and a checkpoint if entries are unsigned), then stop.")
    def sequencer_cmd(once: bool) -> None:
        """Integrate pending entries every AUDIT_MERGE_DELAY_SECONDS / 2 and sign a checkpoint
        at least every AUDIT_CHECKPOINT_SECONDS while entries arrive."""
        from clinic.core import jobs

        log_cfg = config()
        while True:
            result = run_pass(log_cfg, force_checkpoint=once)
            if result.jobs:
                hand_over_jobs(result.jobs)
                jobs.drain()
            if once:
                click.echo(
                    json.dumps({"integrated": result.integrated, "checkpoint": result.checkpoint, "busy": result.busy})
                )
                return
            db.session.remove()
            time.sleep(max(0.05, log_cfg.merge_delay / 2))

    @group.command("checkpoint")
    def checkpoint_cmd() -> None:
        """Print the latest signed checkpoint (to keep outside the database)."""
        with db.engine.connect() as conn:
            cp = latest_checkpoint(conn)
        if cp is None:
            raise click.ClickException("no checkpoint yet: run `flask audit sequencer --once`")
        click.echo(cp.note, nl=False)

    @group.command("public-key")
    def public_key_cmd() -> None:
        """Print the log's verifier key (name+id+key), for whoever keeps checkpoints."""
        click.echo(config().verifier.vkey())
