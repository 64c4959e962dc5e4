"""Security headers on every answer (Flask-Talisman).

- Content-Security-Policy without inline script: scripts come from this site's static
  files (and Stripe.js on the payment page), never from `<script>` blocks or `on…=`
  attributes in templates; `frame-ancestors 'none'` (and X-Frame-Options DENY) so no page,
  the signing page included, can be framed.
- X-Content-Type-Options: nosniff; Referrer-Policy; Permissions-Policy letting this site
  alone use the camera and microphone (face checks, video visits).
- HSTS in production (sent on HTTPS answers, as browsers only honour it there).
"""

from __future__ import annotations

from flask import Flask, g
from flask_talisman import Talisman
from werkzeug.wrappers import Response

STRIPE_JS = "https://js.stripe.com"
CSP: dict[str, str | list[str]] = {
    "default-src": "'self'",
    "script-src": ["'self'", STRIPE_JS],
    # style attributes are tolerated (no script runs from them); scripts never are
    "style-src": ["'self'", "'unsafe-inline'"],
    "img-src": ["'self'", "data:", "blob:"],
    "media-src": ["'self'", "blob:"],
    # Stripe's API; Twilio Video's signalling (the video itself is WebRTC, outside CSP)
    "connect-src": ["'self'", "https://api.stripe.com", "https://*.twilio.com", "wss://*.twilio.com"],
    "frame-src": [STRIPE_JS, "https://hooks.stripe.com"],
    "frame-ancestors": "'none'",
    "form-action": "'self'",
    "base-uri": "'self'",
    "object-src": "'none'",
}

talisman = Talisman()


def _keep_view_csp(resp: Response) -> Response:
    """Before Talisman's hook: a policy the view set itself (stored files are served with
    `default-src 'none'; sandbox`, stricter than the pages') is kept aside..."""
    if "Content-Security-Policy" in resp.headers:
        g.view_csp = resp.headers["Content-Security-Policy"]
    return resp


def _restore_view_csp(resp: Response) -> Response:
    """...and put back after Talisman wrote the site's policy over it."""
    kept = g.pop("view_csp", None)
    if kept:
        resp.headers["Content-Security-Policy"] = kept
    return resp


def init_app(app: Flask) -> None:
    production = app.config.get("ENV") == "production"
    # Flask runs after-request hooks in reverse order of registration: this one after Talisman's
    app.after_request(_restore_view_csp)
    talisman.init_app(
        app,
        content_security_policy=CSP,
        frame_options="DENY",
        force_https=False,  # TLS ends at the load balancer; HSTS tells browsers to stay on HTTPS
        strict_transport_security=production,
        strict_transport_security_max_age=int(app.config.get("HSTS_MAX_AGE_SECONDS", 31536000)),
        referrer_policy="strict-origin-when-cross-origin",
        permissions_policy={"camera": "(self)", "microphone": "(self)", "geolocation": "()"},
        session_cookie_secure=bool(app.config.get("SESSION_COOKIE_SECURE")),
        session_cookie_http_only=True,
        x_content_type_options=True,
    )
    app.after_request(_keep_view_csp)  # and this one before it
