"""Real photos of real people, from files that PyPI packages ship (no network at test time
beyond the package registry), and variants of them made with Pillow.

- scikit-image `data.astronaut()` (Eileen Collins) and matplotlib's `grace_hopper.jpg`:
  installed with the project;
- face_recognition 1.3.0's sdist: `obama.jpg`, `obama2.jpg`, `obama3.jpg` (three photos of
  one person) and `biden.jpg`;
- insightface 2.1's wheel: `t1.jpg` (six different people) and `Tom_Hanks_54745.png`.

The two archives are fetched once with `pip download` into ~/.cache/clinic-test-faces (or
$CLINIC_TEST_FACES) and read with tarfile/zipfile: nothing is installed. A test that needs
them is skipped, saying why, only when the package registry cannot be reached.
"""

from __future__ import annotations

import functools
import importlib.util
import io
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance

CACHE = Path(os.environ.get("CLINIC_TEST_FACES", Path.home() / ".cache" / "clinic-test-faces"))
FR_SDIST = "face_recognition-1.3.0.tar.gz"
INSIGHTFACE_WHEEL = "insightface-2.1-py3-none-any.whl"


def _pip() -> list[str]:
    for exe in (sys.executable, shutil.which("python3") or "python3"):
        probe = subprocess.run([exe, "-m", "pip", "--version"], capture_output=True, check=False)
        if probe.returncode == 0:
            return [exe, "-m", "pip"]
    pytest.skip("no pip to fetch the test photos from the package registry")


def _fetch(filename: str, args: list[str]) -> Path:
    CACHE.mkdir(parents=True, exist_ok=True)
    target = CACHE / filename
    if target.exists():
        return target
    proc = subprocess.run(
        [*_pip(), "download", "--no-deps", *args, "-d", str(CACHE), "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if proc.returncode != 0 or not target.exists():
        pytest.skip(f"the package registry could not be reached to fetch {filename}: {proc.stderr[-300:]}")
    return target


@functools.cache
def fr_images() -> dict[str, bytes]:
    """obama, obama2, obama3, biden from face_recognition 1.3.0's source distribution."""
    sdist = _fetch(FR_SDIST, ["--no-binary", ":all:", "face_recognition==1.3.0"])
    out: dict[str, bytes] = {}
    with tarfile.open(sdist) as tar:
        for name in ("obama", "obama2", "obama3", "biden"):
            member = tar.extractfile(f"face_recognition-1.3.0/tests/test_images/{name}.jpg")
            assert member is not None
            out[name] = member.read()
    return out


@functools.cache
def insightface_images() -> dict[str, bytes]:
    """t1 (six people) and tom_hanks from insightface 2.1's wheel."""
    wheel = _fetch(INSIGHTFACE_WHEEL, ["--only-binary", ":all:", "insightface==2.1"])
    with zipfile.ZipFile(wheel) as zf:
        return {
            "t1": zf.read("insightface/data/images/t1.jpg"),
            "tom_hanks": zf.read("insightface/data/images/Tom_Hanks_54745.png"),
        }


def jpeg(img: Image.Image, quality: int = 92) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _package_file(package: str, *parts: str) -> Path:
    """A data file shipped inside an installed package, found without importing the package
    (importing scikit-image's `data` or matplotlib costs a second or more; the bytes are the same)."""
    spec = importlib.util.find_spec(package)
    assert spec is not None and spec.submodule_search_locations, f"{package} is not installed"
    return Path(next(iter(spec.submodule_search_locations)), *parts)


def astronaut_pixels() -> np.ndarray:
    """scikit-image's `data.astronaut()`: the same RGB array, read from the PNG it ships."""
    with Image.open(_package_file("skimage", "data", "astronaut.png")) as img:
        return np.asarray(img.convert("RGB"))


@functools.cache
def astronaut() -> bytes:
    return jpeg(Image.fromarray(astronaut_pixels()))


@functools.cache
def grace_hopper() -> bytes:
    """matplotlib's sample `grace_hopper.jpg` (what `cbook.get_sample_data` returns)."""
    return _package_file("matplotlib", "mpl-data", "sample_data", "grace_hopper.jpg").read_bytes()


def open_image(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


def resized(data: bytes, factor: float) -> bytes:
    img = open_image(data)
    return jpeg(
        img.resize((max(1, int(img.width * factor)), max(1, int(img.height * factor))), Image.Resampling.LANCZOS)
    )


def relit(data: bytes, factor: float) -> bytes:
    return jpeg(ImageEnhance.Brightness(open_image(data)).enhance(factor))


def cropped(data: bytes, margin: float) -> bytes:
    """Cut `margin` of the width/height away, more from the right and bottom (a new framing)."""
    img = open_image(data)
    w, h = img.size
    box = (int(w * margin / 3), int(h * margin / 3), int(w * (1 - 2 * margin / 3)), int(h * (1 - 2 * margin / 3)))
    return jpeg(img.crop(box))


def reencoded(data: bytes, quality: int = 70) -> bytes:
    return jpeg(open_image(data), quality=quality)


def side_by_side(a: bytes, b: bytes) -> bytes:
    """Two real people in one picture, at the same scale."""
    ia, ib = open_image(a), open_image(b)
    h = min(ia.height, ib.height)
    ia = ia.resize((ia.width * h // ia.height, h))
    ib = ib.resize((ib.width * h // ib.height, h))
    canvas = Image.new("RGB", (ia.width + ib.width, h))
    canvas.paste(ia, (0, 0))
    canvas.paste(ib, (ia.width, 0))
    return jpeg(canvas)


def variants(data: bytes) -> dict[str, bytes]:
    """The same photo across changes of size, light and crop, and a lossy re-encoding."""
    return {
        "half": resized(data, 0.5),
        "double": resized(data, 2.0),
        "dark": relit(data, 0.55),
        "bright": relit(data, 1.45),
        "crop": cropped(data, 0.2),
        "jpeg60": reencoded(data, 60),
    }


def people() -> dict[str, list[tuple[str, bytes]]]:
    """Every photo by person: several photos (and variants) of some, one photo of others."""
    fr = fr_images()
    ins = insightface_images()
    out: dict[str, list[tuple[str, bytes]]] = {}
    for person, photos in {
        "obama": [("obama", fr["obama"]), ("obama2", fr["obama2"]), ("obama3", fr["obama3"])],
        "biden": [("biden", fr["biden"])],
        "collins": [("astronaut", astronaut())],
        "hopper": [("grace_hopper", grace_hopper())],
        "hanks": [("tom_hanks", ins["tom_hanks"])],
    }.items():
        entries = list(photos)
        for name, data in photos:
            entries += [(f"{name}/{v}", d) for v, d in variants(data).items()]
        out[person] = entries
    return out


def large_photo(data: bytes, long_side: int = 4000) -> bytes:
    """The same photo as a 12-megapixel camera would deliver it (4000 x 3000 for 4:3)."""
    img = open_image(data)
    scale = long_side / max(img.size)
    return jpeg(img.resize((int(img.width * scale), int(img.height * scale)), Image.Resampling.BICUBIC), quality=90)
