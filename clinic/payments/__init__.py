"""Fees through Stripe PaymentIntents (PAYMENTS=stripe); off by default in development.

A clinic-domain package below the domains that charge fees: it never imports them, and
they reach it only through the `PaymentsPort` they declare (clinic.visits.lifecycle).
"""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    """Put the payments port into `app.extensions["payments"]` when PAYMENTS=stripe; serve the webhook."""
    from clinic.payments.api import bare
    from clinic.payments.gateway import StripeGateway
    from clinic.payments.services import StripePayments

    mode = str(app.config.get("PAYMENTS", "off")).lower()
    if mode == "stripe":
        secret, webhook_secret = app.config.get("STRIPE_SECRET_KEY", ""), app.config.get("STRIPE_WEBHOOK_SECRET", "")
        if not secret or not webhook_secret:
            raise RuntimeError("PAYMENTS=stripe needs STRIPE_SECRET_KEY and STRIPE_WEBHOOK_SECRET")
        gateway = StripeGateway(secret, app.config.get("STRIPE_API_BASE", ""))
        app.extensions["payments"] = StripePayments(gateway, webhook_secret)
    elif mode != "off":
        raise RuntimeError(f"PAYMENTS must be 'off' or 'stripe', not {mode!r}")
    app.register_blueprint(bare)
    csrf = app.extensions.get("csrf")
    if csrf is not None:
        csrf.exempt(bare)  # signed by Stripe, never a browser form
