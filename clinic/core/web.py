"""Request lifecycle: the one commit point, and domain errors mapped to HTTP in ONE place.

- API paths (/api/v1) answer with the error envelope of API.md, never a bare 500 for
  bad input; pages answer with a localized error page.
- A request that succeeds commits; one that is refused rolls back, then its refusal
  is audited in a transaction of its own (unless the refusal itself asked to keep its
  writes, e.g. a face-mismatch counter).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from flask import Flask, Response, g, make_response, render_template, request
from flask import session as flask_session
from flask_babel import gettext
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm.exc import StaleDataError
from werkzeug.exceptions import HTTPException

from clinic.core import audit, limits
from clinic.core.api import API_PREFIX, error_response
from clinic.core.db import db
from clinic.core.errors import Conflict, DomainError, Invalid, RateLimited, RuleRefusal, ServiceUnavailable
from clinic.core.text import unclean_multidict

log = logging.getLogger("clinic")


def private_image(data: bytes, media_type: str) -> Response:
    """A stored photo only its viewer may see (an enrolled face, an ID card): never kept in
    a cache, never sniffed into something other than its checked type."""
    resp = Response(data, mimetype=media_type)
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["X-Content-Type-Options"] = "nosniff"
    return resp


HTTP_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid",
    429: "rate_limited",
}


# What a person reads on an error page (the API keeps its envelope and codes).
def N_(message: str) -> str:
    """Mark a string for the catalog; it is translated when shown (`localized`)."""
    return message


PAGE_MESSAGES = {
    400: N_("The request could not be understood. Go back and try again."),
    403: N_("You do not have permission to open this page."),
    404: N_("This page does not exist, or it is not yours to see."),
    405: N_("This page cannot be used that way. Go back and use its buttons."),
    413: N_("The file is too large."),
    429: N_("Too many attempts. Wait a moment, then try again."),
}


def is_api_request() -> bool:
    return request.path.startswith(API_PREFIX + "/") or request.path == API_PREFIX


def localized(message: str, params: dict[str, Any] | None = None) -> str:
    """The message in the user's language; `params` fill the translated template."""
    try:
        text = gettext(message)
    except Exception:  # outside a request with Babel (e.g. CLI) keep the source text
        text = message
    if params:
        # Words among the parameters (a status, an event) are translated too; free text
        # (e.g. an administrator's reason) is not in the catalog and stays as written.
        params = {k: localized(v) if isinstance(v, str) else v for k, v in params.items()}
        try:
            return text % params
        except (KeyError, ValueError, TypeError):  # a translation that lost a placeholder
            return message % params
    return text


def localized_error(err: DomainError) -> str:
    """A refusal's message in the user's language (a rule refusal: each violation's)."""
    if isinstance(err, RuleRefusal) and err.from_violations and err.violations:
        joined = "; ".join(localized(v.message) for v in err.violations)
        return f"{localized(err.lead)} {joined}" if err.lead else joined
    return localized(err.template, err.params)


def _record_refusal(err: DomainError) -> None:
    """Refusals are part of the record: who tried what, and which rule said no."""
    if err.code == "invalid" and request.method == "GET":
        return
    if g.get("tokenless_refusal") and not _first_of_many():
        return
    session = db.session()
    audit.record(
        session,
        "request.refused",
        subject_type="endpoint",
        subject_id=request.endpoint or request.path,
        detail={
            "method": request.method,
            "path": request.path,
            "code": err.code,
            "status": err.status,
            **({"refusals_this_minute": g.tokenless_count} if g.get("tokenless_count") else {}),
        },
    )


TOKENLESS_WINDOW = 60


def _first_of_many() -> bool:
    """Requests without a (valid) token, per address and minute: the 1st, 10th, 100th, …
    refusal is audited (its entry says how many so far), the others only counted."""
    count = limits.guard().incr(f"tokenless-audit/{request.remote_addr or ''}", TOKENLESS_WINDOW)
    g.tokenless_count = count
    return count == 1 or (count >= 10 and str(count).rstrip("0") == "1")


def handle_refusal(err: DomainError) -> str:
    """Roll back (unless the refusal keeps its writes), audit it, and return its message.

    Used by the error handlers below and by page views that show the refusal in a form.
    """
    session = db.session()
    if not err.persist:
        session.rollback()
    _record_refusal(err)
    g.keep_writes = True
    return localized_error(err)


def changed_meanwhile() -> Conflict:
    """The refusal for a write that lost a race (see clinic.core.db.Versioned)."""
    return Conflict("Someone else changed this record at the same time; nothing was saved. Reload it and try again.")


def refusal_response(err: DomainError) -> Response:
    """Roll back, audit the refusal and answer it: the envelope on the API, a page elsewhere."""
    message = handle_refusal(err)
    if is_api_request():
        return error_response(err, message, localized)
    return make_response(render_template("error.html", code=err.code, status=err.status, message=message), err.status)


def refuse_unclean_page_input() -> None:
    """Pages: a form field or query parameter with a control character is refused (422) before
    any view reads it (the API does the same per field in clinic.core.api, naming the field)."""
    if is_api_request():
        return
    fields = unclean_multidict(request.args.items(multi=True))
    if request.method == "POST" and request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        fields += unclean_multidict(request.form.items(multi=True))
    if fields:
        raise Invalid(
            "The form contains a control character (such as NUL) that cannot be saved; remove it and send it again.",
            fields=[{"loc": name, "message": "control character"} for name in fields],
        )


RETRY_MARK = "X-Clinic-Connection-Lost"  # internal: set on a read's 503, removed before it leaves
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def is_connection_loss(exc: BaseException) -> bool:
    """The database connection went away (backend killed, server restarted, network cut)."""
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


def connection_lost_response() -> Response:
    """503 service_unavailable with Retry-After; nothing of the request was saved. The
    session's dead connection is dropped (the pool checks the next one with a ping)."""
    with contextlib.suppress(Exception):
        db.session.rollback()
    db.session.remove()
    log.warning("database connection lost during %s %s", request.method, request.path)
    err = ServiceUnavailable(
        "The database connection was lost; nothing was saved. Try again in a moment.", retry_after=1
    )
    if is_api_request():
        resp = error_response(err, localized(err.message))
    else:
        resp = make_response(render_template("error.html", code=err.code, message=localized(err.message)), 503)
        resp.headers["Retry-After"] = "1"
    if request.method in SAFE_METHODS:
        resp.headers[RETRY_MARK] = "1"
    return resp


class RetryReadsOnce:
    """WSGI wrapper: a read (GET/HEAD/OPTIONS) that lost its database connection is run once
    more on a fresh connection before anyone sees its 503; writes are never replayed."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def _run(self, environ: dict[str, Any]) -> tuple[list[Any], Any]:
        captured: list[Any] = ["500 INTERNAL SERVER ERROR", [], None]

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            captured[:] = [status, headers, exc_info]
            return lambda _data: None

        return captured, self.app(environ, capture)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("REQUEST_METHOD", "GET") not in SAFE_METHODS:
            return self.app(environ, start_response)
        mark = RETRY_MARK.lower()
        (status, headers, exc_info), body = self._run(environ)
        if any(k.lower() == mark for k, _ in headers):
            if hasattr(body, "close"):
                body.close()
            (status, headers, exc_info), body = self._run(environ)
        start_response(status, [(k, v) for k, v in headers if k.lower() != mark], exc_info)
        return body


def init_app(app: Flask) -> None:
    app.wsgi_app = RetryReadsOnce(app.wsgi_app)  # type: ignore[method-assign]

    @app.errorhandler(DBAPIError)
    def _database_error(exc: DBAPIError) -> Any:
        if is_connection_loss(exc):
            return connection_lost_response()
        return _unexpected(exc)

    app.before_request(refuse_unclean_page_input)

    @app.after_request
    def _commit_point(response: Response) -> Response:
        session = db.session()
        if response.status_code >= 400 and not g.get("keep_writes"):
            session.rollback()
            return response
        try:
            session.commit()
        except DBAPIError as exc:
            if not is_connection_loss(exc):
                raise
            return connection_lost_response()  # the commit did not happen: nothing was saved
        except StaleDataError:
            # The last flush runs here: a record this request changed was changed and
            # committed by someone else since it was loaded. Nothing of this request is kept,
            # nor what its page flashed for the next one ("you have taken this visit").
            flask_session.pop("_flashes", None)
            response = refusal_response(changed_meanwhile())  # rolls back, audits the refusal
            session.commit()  # the refusal's own audit entry
        return response

    @app.teardown_request
    def _cleanup(_exc: BaseException | None) -> None:
        db.session.remove()

    @app.errorhandler(DomainError)
    def _domain_error(err: DomainError) -> Any:
        return refusal_response(err)

    @app.errorhandler(StaleDataError)
    def _changed_meanwhile(_exc: StaleDataError) -> Any:
        return refusal_response(changed_meanwhile())  # a flush inside the request lost the race

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Any:
        status = exc.code or 500
        code = HTTP_CODES.get(status, "error")
        if status == 429:
            err: DomainError = RateLimited()
        else:
            err = DomainError(exc.description or exc.name, code=code)
            err.status = status
        db.session().rollback()
        if not is_api_request():
            # werkzeug's own English descriptions are replaced by ours; a view's own words stay
            default = exc.description == type(exc).description
            message = PAGE_MESSAGES[status] if default and status in PAGE_MESSAGES else err.message
            return render_template("error.html", code=code, status=status, message=localized(message)), status
        resp = error_response(err, localized(err.message))
        if status == 405 and exc.get_response().headers.get("Allow"):
            resp.headers["Allow"] = exc.get_response().headers["Allow"]
        return resp

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Any:
        log.exception("unhandled error on %s %s", request.method, request.path)
        db.session().rollback()
        err = DomainError("An internal error occurred; nothing was saved.", code="internal")
        err.status = 500
        if is_api_request():
            return error_response(err, localized(err.message))
        return render_template("error.html", code="internal", status=500, message=localized(err.message)), 500
