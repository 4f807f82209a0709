"""Conflict prediction between branches: the one implementation the queue, workspaces and
the conflict notices share.

``pairwise(git, heads)`` merges every pair of the named revisions with ``git
merge-tree --write-tree`` — the same machinery as ``git merge`` (ort), so a pair is
predicted to conflict exactly when a real merge would, in exactly those paths — in a
throwaway object directory (``Git.scratch``): no checkout, nothing left behind.

* ``only``: just the pairs that include that name (one branch against the others).
* ``cache``: results kept across calls, by the pair of revisions. The merge of two
  fixed commits never changes, so pass a cache only with commit shas (never branch
  names); it is then exact, and each pass merges only the pairs it has not seen.
"""

from __future__ import annotations

from collections.abc import Sequence

from underlay.coordination.git import Git
from underlay.coordination.models import Overlap

Cache = dict[tuple[str, str], tuple[str, ...] | None]  # a pair's conflicts; None: clean
CACHE_LIMIT = 50_000  # pairs remembered before the cache starts over


async def pairwise(
    git: Git,
    heads: Sequence[tuple[str, str]],
    *,
    only: str | None = None,
    cache: Cache | None = None,
) -> tuple[list[Overlap], int]:
    """The conflicting pairs of ``heads`` (``(name, revision)``, named in the order given:
    ``a`` comes first) and how many pairs were considered."""
    pairs = [
        (heads[i], other)
        for i in range(len(heads))
        for other in heads[i + 1 :]
        if only is None or only in (heads[i][0], other[0])
    ]
    known: Cache = {} if cache is None else cache
    if len(known) > CACHE_LIMIT:
        known.clear()
    todo = {_key(ra, rb): (ra, rb) for (_, ra), (_, rb) in pairs if _key(ra, rb) not in known}
    if todo:
        async with git.scratch() as predictor:
            for key, (ours, theirs) in todo.items():
                merge = await predictor.merge_tree(ours, theirs)
                known[key] = None if merge.clean else merge.conflicts
    overlaps = []
    for (a, ra), (b, rb) in pairs:
        conflicts = known[_key(ra, rb)]
        if conflicts is not None:
            overlaps.append(Overlap(a=a, b=b, conflicts=list(conflicts)))
    return overlaps, len(pairs)


def _key(rev_a: str, rev_b: str) -> tuple[str, str]:
    """One key for both orders: which paths conflict does not depend on the order."""
    return (rev_a, rev_b) if rev_a <= rev_b else (rev_b, rev_a)
