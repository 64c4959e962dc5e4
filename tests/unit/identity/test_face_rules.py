"""The pure face decisions: which faces count, match, replay, lockout."""

from __future__ import annotations

import pytest

from identity import rules
from identity.rules import Detection, LockoutState, UsedImage


def det(score: float, size: int = 100) -> Detection:
    return Detection((0, size, size, 0), score)


def test_a_weak_false_hit_beside_a_clear_face_is_ignored() -> None:
    faces = rules.significant_faces([det(0.07), det(1.61)], 0.35, 0.4)
    assert [d.score for d in faces] == [1.61]
    assert rules.face_count_refusal(len(faces)) is None


def test_two_confident_faces_are_several() -> None:
    faces = rules.significant_faces([det(2.4), det(0.9), det(2.0)], 0.35, 0.4)
    assert [d.score for d in faces] == [2.4, 2.0, 0.9]
    assert rules.face_count_refusal(len(faces)) == "several_faces"


def test_a_fairly_sure_second_face_counts_even_beside_a_much_surer_one() -> None:
    faces = rules.significant_faces([det(1.49), det(0.49)], 0.35, 0.4)
    assert rules.face_count_refusal(len(faces)) == "several_faces"
    assert rules.face_count_refusal(len(rules.significant_faces([det(1.49), det(0.39)], 0.35, 0.4))) is None


def test_no_detection_is_no_face() -> None:
    assert rules.significant_faces([], 0.35, 0.4) == []
    assert rules.face_count_refusal(0) == "no_face"


@pytest.mark.parametrize(("distance", "expected"), [(0.0, True), (0.55, True), (0.5501, False), (1.2, False)])
def test_match_is_distance_at_most_tolerance(distance: float, expected: bool) -> None:
    assert rules.face_matches(distance, 0.55) is expected


def test_replay_by_same_bytes_or_near_pixels() -> None:
    used = [UsedImage("a" * 64, 0b1111_0000), UsedImage("b" * 64, (1 << 255) | 1)]
    assert rules.replay_of("a" * 64, 12345, used, 40) == used[0]  # same bytes, whatever the pixels
    assert rules.replay_of("c" * 64, 0b1111_0011, used, 2) == used[0]  # 2 bits apart
    assert rules.replay_of("c" * 64, 0b1111_0111, used, 2) is None  # 3 bits apart
    assert rules.replay_of("c" * 64, (1 << 256) - 1, [], 40) is None


def test_hamming_counts_differing_bits() -> None:
    assert rules.hamming(0, 0) == 0
    assert rules.hamming(0b1011, 0b0001) == 2
    assert rules.hamming((1 << 256) - 1, 0) == 256


def test_fifth_consecutive_mismatch_locks_and_a_match_resets() -> None:
    state = LockoutState(0, False)
    for expected in range(1, 5):
        state = rules.after_face_attempt(state, matched=False, max_mismatches=5)
        assert state == LockoutState(expected, False)
    assert rules.after_face_attempt(state, matched=True, max_mismatches=5) == LockoutState(0, False)
    state = rules.after_face_attempt(state, matched=False, max_mismatches=5)
    assert state == LockoutState(5, True)


def test_a_locked_state_stays_locked_even_on_a_match() -> None:
    locked = LockoutState(5, True)
    assert rules.after_face_attempt(locked, matched=True, max_mismatches=5) == locked
    assert rules.after_face_attempt(locked, matched=False, max_mismatches=5) == locked


def test_mismatches_must_be_consecutive() -> None:
    state = LockoutState(0, False)
    for matched in [False, False, False, False, True, False, False, False, False]:
        state = rules.after_face_attempt(state, matched, 5)
    assert state == LockoutState(4, False)
