"""The sign-bit index: exact Hamming ranking, scope and currency masks, growth."""

from __future__ import annotations

import numpy as np

from underlay.memory.drivers.signindex import SignIndex, sign_bits

DIMS = 96  # not a multiple of 64: the last word is padded


def rows(vectors: np.ndarray, users: list[str], start: int = 1) -> list:
    return [
        (start + i, (users[i % len(users)], "", ""), True, sign_bits(v))
        for i, v in enumerate(vectors)
    ]


def hamming(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.count_nonzero((a > 0) != (b > 0)))


def test_sign_bits_pack_one_bit_a_dimension() -> None:
    v = np.array([1.0, -1.0, 0.0, 2.0, -0.5, 0.1, -3.0, 4.0, 5.0], np.float32)
    assert sign_bits(v) == bytes([0b10010101, 0b10000000])


def test_nearest_is_the_exact_hamming_top_k() -> None:
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(500, DIMS)).astype(np.float32)
    index = SignIndex(DIMS)
    index.add(rows(vectors, ["u1"]))
    query = rng.normal(size=DIMS).astype(np.float32)
    got = index.nearest({}, sign_bits(query), 20, current=True)
    distances = sorted(hamming(v, query) for v in vectors)
    assert len(got) == 20
    assert sorted(hamming(vectors[i - 1], query) for i in got) == distances[:20]


def test_a_stored_vector_is_its_own_nearest() -> None:
    rng = np.random.default_rng(8)
    vectors = rng.normal(size=(300, DIMS)).astype(np.float32)
    index = SignIndex(DIMS)
    index.add(rows(vectors, ["u1"]))
    assert 43 in index.nearest({}, sign_bits(vectors[42]), 1, current=True)


def test_scope_masks_rows_and_unknown_values_find_nothing() -> None:
    rng = np.random.default_rng(9)
    vectors = rng.normal(size=(60, DIMS)).astype(np.float32)
    index = SignIndex(DIMS)
    index.add(rows(vectors, ["u1", "u2", "u3"]))
    got = index.nearest({"user_id": "u2"}, sign_bits(vectors[0]), 100, current=True)
    assert sorted(got) == [i + 1 for i in range(60) if i % 3 == 1]
    assert index.nearest({"user_id": "nobody"}, sign_bits(vectors[0]), 5, current=True) == []
    assert index.nearest({"agent_id": ""}, sign_bits(vectors[0]), 100, current=True) != []


def test_retired_rows_leave_current_searches_only() -> None:
    rng = np.random.default_rng(10)
    vectors = rng.normal(size=(10, DIMS)).astype(np.float32)
    index = SignIndex(DIMS)
    index.add(rows(vectors, ["u1"]))
    index.retire([3, 4, 999])  # 999 is unknown: ignored
    assert sorted(index.nearest({}, sign_bits(vectors[2]), 50, current=True)) == [
        1,
        2,
        5,
        6,
        7,
        8,
        9,
        10,
    ]
    assert len(index.nearest({}, sign_bits(vectors[2]), 50, current=False)) == 10


def test_growth_keeps_every_row_added_in_many_batches() -> None:
    rng = np.random.default_rng(11)
    index = SignIndex(DIMS)
    vectors = rng.normal(size=(3000, DIMS)).astype(np.float32)
    for start in range(0, 3000, 700):
        index.add(rows(vectors[start : start + 700], ["u1"], start=start + 1))
    assert len(index) == 3000
    assert sorted(index.nearest({}, sign_bits(vectors[0]), 5000, current=True)) == list(
        range(1, 3001)
    )
    assert 2999 in index.nearest({}, sign_bits(vectors[2998]), 1, current=True)
