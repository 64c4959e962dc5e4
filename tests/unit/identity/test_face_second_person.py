"""Issue 21 item 17: a second real face in the frame is refused as several_faces.

A smaller second person beside the physician was dropped as "insignificant" (a weak score
beside a strong one), so the photo verified. Now every frame is searched with one
upsampling (small faces are found too), and a detection too weak to count by its score is
looked at again on its own: a real face scores clearly there, a false hit does not. The
single-person photos still pass (test_face_accuracy, test_face_images).
"""

from __future__ import annotations

import pytest

from clinic.core.config import Config
from identity import face
from tests.support import faces as F

pytestmark = pytest.mark.slow  # dlib detection (pytest -m "not slow" skips them)


CFG = Config()
LIM = face.Limits(CFG.FACE_MAX_UPLOAD_BYTES, CFG.FACE_MAX_PIXELS, CFG.FACE_DETECT_MAX_SIDE)
RATIO = CFG.FACE_MIN_SCORE_RATIO


def with_a_smaller_second_person(factor: float) -> bytes:
    canvas = F.open_image(F.grace_hopper()).copy()
    small = F.open_image(F.resized(F.astronaut(), factor))
    canvas.paste(small, (0, canvas.size[1] - small.size[1]))  # two real people, one much smaller
    return F.jpeg(canvas)


def test_a_smaller_second_person_beside_the_physician_is_several_faces() -> None:
    pixels = face.prepare(with_a_smaller_second_person(0.35), LIM).pixels
    with pytest.raises(face.SeveralFaces):
        face.one_face(pixels, RATIO)
    alone = face.prepare(F.grace_hopper(), LIM).pixels
    face.one_face(alone, RATIO)  # the same physician alone passes


def test_the_second_look_tells_a_real_face_from_a_false_hit() -> None:
    group = face.prepare(F.insightface_images()["t1"], LIM).pixels
    weak_real = [d for d in face.locate(group) if d.score < CFG.FACE_SURE_SCORE]
    assert weak_real, "the group photo has people the detector scores weakly"
    assert all(face.second_look(group, d.box) >= CFG.FACE_SURE_SCORE for d in weak_real)
    astronaut = face.prepare(F.astronaut(), LIM).pixels
    patch = [d for d in face.locate(astronaut) if d.score < CFG.FACE_SURE_SCORE]
    assert patch and all(face.second_look(astronaut, d.box) < CFG.FACE_SURE_SCORE for d in patch)
    face.one_face(astronaut, RATIO)  # one person: the patch on her suit is not a second face
