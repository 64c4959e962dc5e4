"""Strings the extractor cannot see where they are used, listed for the catalogs.

Not imported by the app: `make translations` (pybabel extract) reads it. It holds the
domain errors' class-level default messages, refusals raised through subclasses the
Makefile's keyword list does not name, and values shown through `_(value)` in templates
(relations, roles). At render time `clinic.core.web.localized` passes every refusal's
English source through gettext, so a message listed here is shown translated.
"""

from __future__ import annotations


def N_(message: str) -> str:
    """Mark a string for extraction without translating it here."""
    return message


MESSAGES = (
    # pharmacy/rules.py UnsafeEndpoint
    N_("The partner endpoint must be an http(s) URL with a host."),
    N_("The partner endpoint must not carry a user name or password in its URL."),
    N_("The partner endpoint's port is not a number from 1 to 65535."),
    N_("The partner endpoint must use https."),
    N_("The partner endpoint must be a public host name, not an address or a local name."),
    N_("The partner endpoint's host resolves to a non-public address (%(addresses)s)."),
    # clinic/visits/informed_consent.py: the stale-version refusal (clinic/core/versioned_text.py StaleConsent)
    N_("The consent text has changed; the current version is %(version)s."),
    # clinic/core/idempotency.py KeyReused
    N_("This Idempotency-Key was already used for a different request; use a new key for a new request."),
    # clinic/core/errors.py defaults
    N_("The request was refused."),
    N_("Authentication is required."),
    N_("You are not allowed to do this."),
    N_("Not found."),
    N_("The request conflicts with the current state."),
    N_("The request is not valid."),
    N_("Too many requests; try again later."),
    N_("The service is unavailable."),
    N_("Refused by rule."),
    # clinic/visits/lifecycle.py: a contracted patient's visit held for the family-doctor team
    N_("This visit is held for the patient's family doctor team for now; take another one."),
    # identity/services.py and identity/rules.py
    N_("The username or password is wrong."),
    N_("The code is wrong or has expired."),
    N_("The current password is wrong."),
    N_("The token was issued before the account's sessions were ended; log in again."),
    N_("Confirm your phone number with the code we sent by SMS before requesting a visit."),
    N_("This ID number or phone number is already registered; log in, or recover the account."),
    N_("A mainland mobile number has 11 digits starting with 13–19."),
    # identity/face_services.py
    N_("A face check is needed within the last minutes before this act."),
    N_("The face does not match the physician's enrolled face."),
    N_("Face verification is locked after too many consecutive mismatches; an administrator must lift it."),
    N_("No reference face is enrolled for this physician; ask an administrator to enroll one."),
    N_("This image was already used; take a new picture with the camera."),
    # identity/face.py
    N_("The image is too large."),
    N_("The upload is not a readable JPEG, PNG or WebP image."),
    N_("No face was found in the image: face the camera in good light and try again."),
    N_("More than one face is in the image: only the physician may be in the picture."),
    # clinic/visits/rules.py, prescriptions/signing.py
    N_("The visit is closed."),
    N_("The prescription's signature does not verify."),
    # clinic/regulator/access.py
    N_(
        "The regulators' data interface needs a scoped token: POST /api/v1/regulator/token with "
        '{"scope": ["read:deidentified"]} (or "read:identified" where allowed) using your login token.'
    ),
    # clinic/payments/services.py and clinic/payments/gateway.py
    N_("The webhook body is not a Stripe event."),
    N_("The payment provider cannot be reached; nothing was charged or changed. Try again later."),
    N_("The webhook signature is missing, wrong or too old."),
    # prescriptions/rules.py
    N_("The prescription cannot move to that status from its current one."),
    # pharmacy/services.py, pharmacy/dispensing.py, pharmacy/rules.py, pharmacy/delivery.py
    N_("You have not claimed this prescription (or your claim has expired); claim it from the queue."),
    N_("The drug fee is not paid: nothing is dispensed before an approved, paid prescription."),
    N_("The patient has not said where the medicines go (delivery address or collection)."),
    N_("This status change is not allowed from the delivery's current status."),
    N_("The partner signature is missing, wrong or too old."),
    N_("Re-run at review, the prescribing rules refuse this prescription; reject or return it."),
    # pharmacy/services.py raises this inside a conditional expression, which the extractor
    # reads as one string glued to the next literal; listed here whole.
    N_("Reject and return need at least one reason from the review standard."),
    # relations of the people on an account (templates: _(p.relation.value))
    N_("self"),
    N_("child"),
    N_("parent"),
    N_("spouse"),
    N_("other"),
    # roles (templates: _(current_user.role.value))
    N_("patient"),
    N_("physician"),
    N_("pharmacist"),
    N_("admin"),
    N_("regulator"),
    # RuleRefusal(lead=...) introductions
    N_("The physician may not practise online:"),
    # visit and diagnosis statuses shown inside messages
    N_("awaiting_payment"),
    N_("waiting"),
    N_("in_progress"),
    N_("completed"),
    N_("referred"),
    N_("cancelled"),
    N_("pending"),
    N_("confirmed"),
    N_("rejected"),
    # visit lifecycle events named in refusals
    N_("accept"),
    N_("complete"),
    N_("terminate"),
    N_("cancel"),
)
