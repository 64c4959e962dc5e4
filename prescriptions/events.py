"""What a prescription's life means to the packages above this one, said out loud.

The pharmacy sits above prescriptions (it reviews and dispenses them), so prescriptions
cannot call it. Instead the app factory registers the pharmacy's handlers here, per app
(as `identity.reclaims.add_records_follow` and `clinic.payments.register_purpose` do), and
the prescribing use cases announce what happened:

- `signed(session, rx)`: a prescription was signed into `pending_review` and flushed;
  the pharmacy queues it for review in the same transaction.
- `status_changed(session, rx, before)`: a prescription moved from `before` to `rx.status`;
  the pharmacy closes the review of one that expired or was cancelled while waiting.

Handlers run in the caller's transaction and flush nothing themselves.
"""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask, current_app
from sqlalchemy.orm import Session

from prescriptions.models import Prescription, PrescriptionStatus

OnSigned = Callable[[Session, Prescription], None]
OnStatusChanged = Callable[[Session, Prescription, PrescriptionStatus], None]

SIGNED = "prescriptions.on_signed"
STATUS_CHANGED = "prescriptions.on_status_changed"


def on_signed(app: Flask, handler: OnSigned) -> None:
    """`handler(session, rx)` runs for every prescription signed in this app."""
    app.extensions.setdefault(SIGNED, []).append(handler)


def on_status_changed(app: Flask, handler: OnStatusChanged) -> None:
    """`handler(session, rx, before)` runs after every status change of a prescription."""
    app.extensions.setdefault(STATUS_CHANGED, []).append(handler)


def signed(session: Session, rx: Prescription) -> None:
    handlers: list[OnSigned] = current_app.extensions.get(SIGNED, [])
    for handler in handlers:
        handler(session, rx)


def status_changed(session: Session, rx: Prescription, before: PrescriptionStatus) -> None:
    handlers: list[OnStatusChanged] = current_app.extensions.get(STATUS_CHANGED, [])
    for handler in handlers:
        handler(session, rx, before)
