"""The ranking steps of hybrid retrieval, each on its own."""

from __future__ import annotations

from underlay.memory import retrieval
from underlay.memory.interface import Row


def row(rowid: int, chunk: str = "c1", seq: int = 0, actor: str = "", tokens: int = 10) -> Row:
    return Row(
        id=f"m{rowid}",
        version=1,
        org="o",
        text=f"t{rowid}",
        hash="h",
        valid_from=0,
        created_at=0,
        actor=actor,
        chunk=chunk,
        seq=seq,
        tokens=tokens,
        rowid=rowid,
    )


def test_query_words_and_entities() -> None:
    assert retrieval.query_words("When did Caroline's team go to the Beach?") == [
        "caroline",
        "team",
        "go",
        "beach",
    ]
    assert retrieval.query_entities("When did Caroline go to the Beach?") == {"caroline", "beach"}


def test_fusion_rewards_agreement() -> None:
    scores = retrieval.fuse([[1, 2, 3], [3, 4]])
    assert max(scores, key=scores.__getitem__) == 3
    assert scores[1] == 1 / 11


def test_neighbours_entity_boost_and_diversity() -> None:
    rows = {i: row(i, seq=i) for i in range(1, 5)} | {9: row(9, chunk="c2", actor="Ana")}
    near = retrieval.Neighbours.of(rows.values())
    assert (near.before[2], near.after[2]) == (1, 3) and 9 not in near.after
    scores = {1: 0.05, 2: 0.05, 3: 0.049, 9: 0.048}
    ranked = [r for r, _ in retrieval.rerank(scores, rows, near, set(), 4)]
    assert ranked[0] == 2  # both its neighbours matched
    boosted = [r for r, _ in retrieval.rerank(scores, rows, near, {"ana"}, 1)]
    assert boosted == [9]


def test_expansion_respects_the_token_budget() -> None:
    rows = {i: row(i, seq=i, tokens=40) for i in range(1, 6)}
    near = retrieval.Neighbours.of(rows.values())
    assert retrieval.expand([1, 3], rows, near, budget=200) == {1: [2], 3: [4]}
    assert retrieval.expand([1, 3], rows, near, budget=120) == {1: [2], 3: []}
    assert retrieval.expand([1, 2], rows, near, budget=500) == {1: [], 2: [3]}
