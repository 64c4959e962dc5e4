"""identity/face.py on bad input and on real photos: decode safely, normalize, detect."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from clinic.core.config import Config
from identity import face
from tests.support import faces as F

CFG = Config()
LIM = face.Limits(CFG.FACE_MAX_UPLOAD_BYTES, CFG.FACE_MAX_PIXELS, CFG.FACE_DETECT_MAX_SIDE)
RATIO = CFG.FACE_MIN_SCORE_RATIO
SLOW = pytest.mark.slow  # runs dlib's face detector (pytest -m "not slow" skips it)
assert CFG.FACE_SURE_SCORE == 0.4  # face.one_face's default, used below


def _png_with_size(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (a decompression bomb's header), CRC intact."""
    data = F.png(Image.new("L", (8, 8)))
    ihdr = bytearray(data[8 + 8 : 8 + 8 + 13])
    ihdr[0:8] = struct.pack(">II", width, height)
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + bytes(ihdr)) & 0xFFFFFFFF)
    return data[:16] + bytes(ihdr) + crc + data[16 + 13 + 4 :]


def test_not_an_image_is_refused() -> None:
    with pytest.raises(face.NotAnImage):
        face.prepare(b"%PDF-1.7 this is not a picture", LIM)
    with pytest.raises(face.NotAnImage):
        face.prepare(b"", LIM)


def test_other_formats_are_refused() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32)).save(buf, "GIF")
    with pytest.raises(face.NotAnImage, match="GIF"):
        face.prepare(buf.getvalue(), LIM)


@pytest.mark.slow  # loads dlib: importing face_recognition is what turns the truncation hazard on
@pytest.mark.parametrize("kind", ["jpeg", "png"])
def test_a_truncated_image_is_refused(kind: str) -> None:
    face._face_recognition()  # importing face_recognition turns on Pillow's LOAD_TRUNCATED_IMAGES
    img = F.open_image(F.grace_hopper())
    data = F.jpeg(img) if kind == "jpeg" else F.png(img)
    with pytest.raises(face.NotAnImage, match="truncated"):
        face.prepare(data[: len(data) * 2 // 3], LIM)


def test_too_many_bytes_is_refused_before_decoding() -> None:
    with pytest.raises(face.ImageTooLarge):
        face.prepare(b"\xff\xd8" + b"\0" * (LIM.max_bytes + 1), LIM)


def test_a_png_bomb_header_is_refused_before_any_pixel_is_decoded() -> None:
    with pytest.raises(face.ImageTooLarge):
        face.prepare(_png_with_size(30_000, 30_000), LIM)
    with pytest.raises(face.ImageTooLarge):
        face.prepare(_png_with_size(8_000, 6_000), LIM)  # 48 MP: over our limit, under Pillow's


def test_a_real_png_bomb_is_refused() -> None:
    bomb = F.png(Image.new("L", (7_000, 7_000)))  # 49 megapixels of zeros, a few dozen kB compressed
    assert len(bomb) < 200_000
    with pytest.raises(face.ImageTooLarge):
        face.prepare(bomb, LIM)


def test_large_images_are_downscaled_before_detection() -> None:
    big = F.large_photo(F.grace_hopper(), 4000)
    prepared = face.prepare(big, LIM)
    assert max(prepared.original_size) == 4000
    assert max(prepared.pixels.shape[:2]) == LIM.max_side
    assert prepared.pixels.dtype == np.uint8 and prepared.pixels.shape[2] == 3


@SLOW
def test_exif_orientation_is_applied() -> None:
    upright = F.open_image(F.grace_hopper())
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was turned: display rotated 90° clockwise
    buf = io.BytesIO()
    upright.rotate(90, expand=True).save(buf, "JPEG", exif=exif)
    prepared = face.prepare(buf.getvalue(), LIM)
    assert prepared.pixels.shape[:2] == (upright.height, upright.width)
    face.one_face(prepared.pixels, RATIO)  # the face is upright again, so it is found


def test_transparent_and_grey_images_become_rgb() -> None:
    rgba = F.open_image(F.grace_hopper()).convert("RGBA")
    assert face.prepare(F.png(rgba), LIM).pixels.shape[2] == 3
    grey = F.open_image(F.grace_hopper()).convert("L")
    assert face.prepare(F.png(grey), LIM).pixels.shape[2] == 3


def test_dhash_survives_reencoding_and_resizing_not_another_photo() -> None:
    hopper = face.prepare(F.grace_hopper(), LIM).dhash
    copy = face.prepare(F.reencoded(F.resized(F.grace_hopper(), 0.6), 60), LIM).dhash
    other = face.prepare(F.astronaut(), LIM).dhash
    assert (hopper ^ copy).bit_count() <= CFG.FACE_REPLAY_MAX_BITS
    assert (hopper ^ other).bit_count() > 3 * CFG.FACE_REPLAY_MAX_BITS // 2


@SLOW
def test_one_face_in_a_portrait_ignoring_a_weak_false_hit() -> None:
    # skimage's astronaut: the patch on the suit is a weak second detection
    pixels = face.prepare(F.astronaut(), LIM).pixels
    top, right, bottom, left = face.one_face(pixels, RATIO)
    assert bottom < pixels.shape[0] // 2  # the face, at the top, not the patch below


@SLOW
def test_no_face_in_a_picture_without_people() -> None:
    from skimage import data

    with pytest.raises(face.NoFace):
        face.one_face(face.prepare(F.jpeg(Image.fromarray(data.coffee())), LIM).pixels, RATIO)


@SLOW
def test_two_people_side_by_side_are_several_faces() -> None:
    with pytest.raises(face.SeveralFaces):
        face.one_face(face.prepare(F.side_by_side(F.grace_hopper(), F.astronaut()), LIM).pixels, RATIO)


@SLOW
def test_a_group_photo_is_several_faces() -> None:
    with pytest.raises(face.SeveralFaces):
        face.one_face(face.prepare(F.insightface_images()["t1"], LIM).pixels, RATIO)


@SLOW
def test_a_small_face_is_found_with_upsampling() -> None:
    hanks = F.insightface_images()["tom_hanks"]  # 112 x 112
    top, right, bottom, left = face.one_face(face.prepare(hanks, LIM).pixels, RATIO)
    assert 0 <= left < right <= 112 and 0 <= top < bottom <= 112  # found, in the picture
    assert right - left >= 56 and bottom - top >= 56  # the face fills the crop, not a speck of it

    small = F.open_image(F.resized(F.grace_hopper(), 0.3))  # a face of about 60 px
    canvas = Image.new("RGB", (640, 480), (128, 128, 128))
    canvas.paste(small, (300, 200))
    top, right, bottom, left = face.one_face(face.prepare(F.jpeg(canvas), LIM).pixels, RATIO)
    # the pasted face, not some of the grey around it
    assert 300 <= left < right <= 300 + small.width and 200 <= top < bottom <= 200 + small.height
    assert right - left < 100  # and it is small: this is what upsampling is for
