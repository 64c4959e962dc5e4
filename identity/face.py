"""The face_recognition (dlib) adapter and safe image handling.

Everything an uploaded image goes through before a face is compared:

1. size: more than FACE_MAX_UPLOAD_BYTES is refused (413 `image_too_large`) before decoding;
2. decoding with Pillow: only JPEG/PNG/WebP; the pixel count read from the header is
   checked before any pixel is decoded (a PNG/JPEG bomb is refused, 413 `image_too_large`);
   a truncated or corrupt file is refused (422 `not_an_image`), never half-read;
3. normalizing: EXIF orientation applied, converted to 8-bit RGB, and DOWNSCALED so the long
   side is at most FACE_DETECT_MAX_SIDE before detection (JPEGs are decoded at a reduced DCT
   scale with `draft`, so a 12-megapixel photo costs about what a 640-pixel one does);
4. hashes for replay detection: sha256 of the bytes, and a 256-bit difference hash (dHash) of
   the normalized pixels, which survives re-encoding, resizing and a change of brightness;
5. detection (HOG with one upsampling, so a smaller second person is found too), keeping the
   faces that matter (`rules.significant_faces`); a detection too weak to count by its score
   gets a second look on its own (`second_look`): a real face there is a second person
   (several_faces), a false hit (skimage's astronaut's suit patch) is ignored; then the
   128-d encoding of the one face.

Nothing here touches the database or Flask: the services decide what to do with the result.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from clinic.core.errors import DomainError, Invalid
from identity import rules

if TYPE_CHECKING:
    from clinic.core.config import Config

ALLOWED_FORMATS = {"JPEG", "PNG", "WEBP"}
HASH_SIZE = 16  # dHash of 16 x 16 = 256 bits


class ImageTooLarge(DomainError):
    status = 413
    code = "image_too_large"
    default_message = "The image is too large."


class NotAnImage(Invalid):
    code = "not_an_image"
    default_message = "The upload is not a readable JPEG, PNG or WebP image."


class NoFace(Invalid):
    code = "no_face"
    default_message = "No face was found in the image: face the camera in good light and try again."


class SeveralFaces(Invalid):
    code = "several_faces"
    default_message = "More than one face is in the image: only the physician may be in the picture."


@dataclass(frozen=True)
class Limits:
    max_bytes: int
    max_pixels: int
    max_side: int
    # PNG and WebP have no reduced-scale decoding (JPEG's `draft`): every pixel is decoded,
    # so they are held to fewer pixels — 16 MP decodes in ~0.3 s and ~50 MB; the 40 MP a
    # JPEG may have would cost a second and 140 MB per image.
    max_lossless_pixels: int = 16_000_000


@dataclass(frozen=True)
class Prepared:
    """A decoded, normalized image ready for detection, with its replay fingerprints."""

    pixels: np.ndarray  # H x W x 3, uint8, RGB, long side <= max_side
    sha256: str
    dhash: int
    original_size: tuple[int, int]
    media_type: str


def limits_from(config: Config) -> Limits:
    return Limits(
        max_bytes=config.FACE_MAX_UPLOAD_BYTES,
        max_pixels=config.FACE_MAX_PIXELS,
        max_side=config.FACE_DETECT_MAX_SIDE,
    )


def _open(data: bytes, lim: Limits) -> Image.Image:
    if len(data) > lim.max_bytes:
        raise ImageTooLarge(f"The image is larger than {lim.max_bytes // (1024 * 1024)} MB.")
    if not data:
        raise NotAnImage("The upload is empty.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        if isinstance(exc, UnidentifiedImageError):
            raise NotAnImage() from None
        raise ImageTooLarge("The image has too many pixels.") from None
    except (OSError, ValueError, SyntaxError):
        raise NotAnImage() from None
    if img.format not in ALLOWED_FORMATS:
        raise NotAnImage(f"Images must be JPEG, PNG or WebP, not {img.format or 'unknown'}.")
    width, height = img.size
    if width < 1 or height < 1:
        raise NotAnImage()
    cap = lim.max_pixels if img.format == "JPEG" else min(lim.max_pixels, lim.max_lossless_pixels)
    if width * height > cap:
        raise ImageTooLarge(
            f"The image has {width}x{height} pixels; at most {cap // 1_000_000} megapixels are accepted."
        )
    return img


def prepare(data: bytes, lim: Limits) -> Prepared:
    """Decode, check and normalize an uploaded image, or refuse it with a clear 4xx."""
    img = _open(data, lim)
    original = img.size
    media_type = Image.MIME.get(img.format or "", "application/octet-stream")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            if img.format == "JPEG":
                # Decode at 1/2, 1/4 or 1/8 scale when that still leaves >= max_side pixels.
                img.draft("RGB", (lim.max_side, lim.max_side))
            ImageFile.LOAD_TRUNCATED_IMAGES = False  # see _face_recognition()
            img.load()  # a truncated file raises here
            img = ImageOps.exif_transpose(img) or img
            if img.mode != "RGB":
                img = _to_rgb(img)
            if max(img.size) > lim.max_side:
                img.thumbnail((lim.max_side, lim.max_side), Image.Resampling.BILINEAR, reducing_gap=2.0)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageTooLarge("The image has too many pixels.") from None
    except (OSError, ValueError, SyntaxError, EOFError):
        raise NotAnImage("The image is truncated or corrupt.") from None
    pixels = np.ascontiguousarray(np.asarray(img, dtype=np.uint8))
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise NotAnImage()
    return Prepared(
        pixels=pixels,
        sha256=hashlib.sha256(data).hexdigest(),
        dhash=dhash(img),
        original_size=original,
        media_type=media_type,
    )


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 8-bit first, in integers (a float copy of a large 16-bit image took ~1 GB): keep
        # the top 8 of the bits in use, then stretch to the full range.
        arr = np.asarray(img)
        top = int(arr.max()) or 1
        shift = max(top.bit_length() - 8, 0)
        small = (arr >> shift).astype(np.uint8) if shift else arr.astype(np.uint8)
        return Image.fromarray(small, mode="L").convert("RGB")
    return img.convert("RGB")


def dhash(img: Image.Image, size: int = HASH_SIZE) -> int:
    """Difference hash of the normalized pixels: one bit per horizontal neighbour comparison."""
    small = img.convert("L").resize((size + 1, size), Image.Resampling.LANCZOS)
    arr = np.asarray(small, dtype=np.int16)
    bits = (arr[:, 1:] > arr[:, :-1]).flatten()
    value = 0
    for bit in bits:
        value = (value << 1) | int(bit)
    return value


def hash_hex(value: int) -> str:
    return f"{value:0{HASH_SIZE * HASH_SIZE // 4}x}"


def _face_recognition() -> Any:
    import face_recognition  # imported lazily: loading dlib's models takes a moment

    # face_recognition.api turns on Pillow's LOAD_TRUNCATED_IMAGES when imported; a truncated
    # upload must be refused, not silently half-decoded: put Pillow's default back.
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    return face_recognition


def locate(pixels: np.ndarray) -> list[rules.Detection]:
    """Faces with dlib's HOG detector and their detection scores, with one upsampling
    always (~0.1 s at 640 px): a second, smaller person beside a large face is found too,
    not only when nothing else was."""
    detector = _face_recognition().api.face_detector
    height, width = pixels.shape[:2]
    rects, scores, _ = detector.run(pixels, 1, 0.0)
    return [
        rules.Detection((max(r.top(), 0), min(r.right(), width), min(r.bottom(), height), max(r.left(), 0)), float(s))
        for r, s in zip(rects, scores, strict=True)
    ]


SECOND_LOOK_SIDE = 240  # a weak hit's surroundings, rescaled so a face in it is ~100 px


def second_look(pixels: np.ndarray, box: rules.Box) -> float:
    """Is a weak detection a real face? Look again at its surroundings alone, rescaled to the
    size the detector sees best: a real face (a second person further back, turned a little)
    scores clearly there (0.55-1.1 on insightface's group photo), a false hit does not
    (skimage's astronaut's suit patch: 0.12, or nothing). Answers the best score (0: none)."""
    top, right, bottom, left = box
    margin = int(0.6 * max(bottom - top, right - left))
    height, width = pixels.shape[:2]
    crop = Image.fromarray(pixels).crop(
        (max(left - margin, 0), max(top - margin, 0), min(right + margin, width), min(bottom + margin, height))
    )
    scale = SECOND_LOOK_SIDE / max(crop.size)
    crop = crop.resize((max(int(crop.width * scale), 1), max(int(crop.height * scale), 1)), Image.Resampling.BICUBIC)
    _, scores, _ = _face_recognition().api.face_detector.run(np.asarray(crop), 0, 0.0)
    return float(max(scores)) if len(scores) else 0.0


def one_face(pixels: np.ndarray, min_score_ratio: float, sure_score: float = 0.4) -> rules.Box:
    """The single face that matters, or refuse: no_face / several_faces.

    A detection too weak to count by its score is looked at again on its own
    (`second_look`): a second real person is refused as several_faces, a false hit is not."""
    found = locate(pixels)
    faces = rules.significant_faces(found, min_score_ratio, sure_score)
    weak = [d for d in found if d not in faces]
    if faces and any(second_look(pixels, d.box) >= sure_score for d in weak):
        raise SeveralFaces()
    refusal = rules.face_count_refusal(len(faces))
    if refusal == "no_face":
        raise NoFace()
    if refusal == "several_faces":
        raise SeveralFaces()
    return faces[0].box


def encode(pixels: np.ndarray, box: rules.Box) -> np.ndarray:
    fr = _face_recognition()
    encodings = fr.face_encodings(pixels, known_face_locations=[box], num_jitters=1, model="small")
    if not encodings:
        raise NoFace()
    return np.asarray(encodings[0], dtype=np.float64)


def encoding_to_bytes(enc: np.ndarray) -> bytes:
    return np.asarray(enc, dtype="<f8").tobytes()


def encoding_from_bytes(raw: bytes) -> np.ndarray:
    arr = np.frombuffer(raw, dtype="<f8")
    if arr.shape != (128,):
        raise ValueError("a face encoding has 128 numbers")
    return arr


def distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)))


@dataclass(frozen=True)
class Analysis:
    prepared: Prepared
    box: rules.Box
    encoding: np.ndarray


def analyse(data: bytes, lim: Limits, min_score_ratio: float, sure_score: float = 0.4) -> Analysis:
    """Bytes in, one face's encoding out (or a clear refusal)."""
    prepared = prepare(data, lim)
    box = one_face(prepared.pixels, min_score_ratio, sure_score)
    return Analysis(prepared, box, encode(prepared.pixels, box))
