"""Face verification benchmark: `.venv/bin/python bench/face_bench.py`.

Prints, from one run (median of several timed repetitions each):
1. verification time per request (POST /api/v1/auth/face through the Flask test client:
   upload, decode, replay check, detection, encoding, comparison, audit, commit) divided
   by face_recognition's own `load_image_file` + `face_encodings` on the same image
   (target <= 1.2);
2. the verification time of a 12-megapixel photo divided by that of a 640-pixel one of
   the same scene (target <= 1.5), and whether both got the same decision.

Photos: matplotlib's grace_hopper.jpg is enrolled; the live picture is the same face
mirrored on a 640 x 480 frame (a picture not used before), and that frame scaled to
4000 x 3000. The replay check's Hamming comparison is switched off for the bench only, so the same
image can be sent again, each time with 16 random bytes after the JPEG's end so the
sha256 differs too (the check's cost, one query and a comparison per stored image, is
still paid).
"""

from __future__ import annotations

import io
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

warnings.filterwarnings("ignore")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from PIL import Image  # noqa: E402

from tests.support import faces as F  # noqa: E402

REPEAT = 7


def timed(fn: Callable[[], object], repeat: int = REPEAT) -> float:
    fn()  # warm up
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    import face_recognition
    from flask_migrate import upgrade

    from clinic.app import create_app
    from clinic.core.audit import Actor, acting_as
    from clinic.core.config import Config
    from clinic.core.db import db, unit_of_work
    from identity import face_services, services
    from identity.models import Role

    tmp = Path(tempfile.mkdtemp(prefix="face-bench-"))
    cfg = Config(
        ENV="testing",
        TESTING=True,
        INSTANCE_PATH=str(tmp),
        DATABASE_URL=f"sqlite:///{tmp / 'bench.sqlite3'}",
        FACE_REPLAY_MAX_BITS=-1,  # bench only: allow sending the same picture again
        FACE_RATE_LIMIT="100000 per minute",
        FACE_MAX_MISMATCHES=10**6,
    )
    cfg.extra["WTF_CSRF_ENABLED"] = False
    cfg.finalize()
    app = create_app(cfg)
    with app.app_context():
        upgrade()
        with acting_as(Actor(None, "bench")), unit_of_work():
            from tests.support.factories import PASSWORD, institution

            institution()
            account = services.create_staff(
                services.StaffSpec(username="dr_bench", password=PASSWORD, role=Role.PHYSICIAN, name="Bench")
            )
            face_services.enroll_face(account, F.grace_hopper())
        client = app.test_client()
        tok = client.post("/api/v1/auth/token", json={"username": "dr_bench", "password": PASSWORD}).get_json()[
            "access_token"
        ]
        db.session.remove()

    # A 640-pixel camera frame and a 12-megapixel photo (4000 x 3000) of the same person.
    scene = F.open_image(F.grace_hopper())
    canvas = Image.new("RGB", (640, 480), (90, 100, 110))
    face_img = scene.resize((int(scene.width * 0.75), int(scene.height * 0.75)))
    canvas.paste(face_img, ((640 - face_img.width) // 2, 0))
    canvas = Image.fromarray(__import__("numpy").asarray(canvas)[:, ::-1])  # mirrored: a different picture
    small = F.jpeg(canvas, 92)
    large = F.jpeg(canvas.resize((4000, 3000), Image.Resampling.BICUBIC), 90)

    def verify(data: bytes) -> Callable[[], int]:
        def run() -> int:
            fresh = data + os.urandom(16)  # bytes after the JPEG's end: new sha256, same pixels
            resp = client.post(
                "/api/v1/auth/face",
                data={"image": (io.BytesIO(fresh), "c.jpg")},
                headers={"Authorization": f"Bearer {tok}"},
            )
            assert resp.status_code in (200, 403), resp.get_json()
            return resp.status_code

        return run

    def library(data: bytes) -> Callable[[], object]:
        def run() -> object:
            image = face_recognition.load_image_file(io.BytesIO(data))
            return face_recognition.face_encodings(image)

        return run

    decision_small = verify(small)()
    decision_large = verify(large)()
    t_service_small = timed(verify(small))
    t_library_small = timed(library(small))
    t_service_large = timed(verify(large))
    t_library_large = timed(library(large), repeat=3)
    print(f"images: 640x480 JPEG {len(small) // 1024} kB; 4000x3000 JPEG {len(large) // 1024} kB")
    print(f"decisions: 640 px -> {decision_small}, 12 MP -> {decision_large}, same: {decision_small == decision_large}")
    print(
        f"service verify 640 px: {t_service_small * 1000:.0f} ms; face_recognition face_encodings: {t_library_small * 1000:.0f} ms"
    )
    print(
        f"service verify 12 MP: {t_service_large * 1000:.0f} ms; face_recognition face_encodings: {t_library_large * 1000:.0f} ms"
    )
    print(f"ratio service / face_encodings (640 px, target <= 1.2): {t_service_small / t_library_small:.2f}")
    print(f"ratio service / face_encodings (12 MP): {t_service_large / t_library_large:.2f}")
    print(f"ratio 12 MP / 640 px verification (target <= 1.5): {t_service_large / t_service_small:.2f}")


if __name__ == "__main__":
    main()
