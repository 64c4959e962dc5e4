"""What an uploaded file really is, decided from its bytes (never its name or declared type):
a JPEG, PNG or WebP image or a plain PDF, within its size and pixel limits; anything that
could run in a browser or a PDF reader is refused with `BadUpload` (invalid_upload).
Pure: the proofs, the visit room and the teleconsultations' attachments call it."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from typing import Any

import pypdf
from PIL import Image, UnidentifiedImageError

from clinic.core.errors import Invalid

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
