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
    # identity/services.py and identity/rules.py
    N_("The username or password is wrong."),
    N_("The code is wrong or has expired."),
    N_("A patient with this ID number is already registered."),
    N_("This phone number is already registered."),
    N_("A mainland mobile number has 11 digits starting with 13–19."),
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
)
