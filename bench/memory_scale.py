"""Memory search at scale: latency of ``memory.search`` over 100,000 memories in one scope.

Run from the project root:

    .venv/bin/python bench/memory_scale.py [--memories 100000] [--queries 200]

Method.

- Two stores, each the real kernel's own ``memory.db`` (SQLite, sqlite-vec, FTS5) in a
  fresh home: the *large* one holds ``--memories`` memories in ONE user scope (``u_big``,
  the worst case: every index scan of that scope sees all of them), plus other scopes of
  the same organisation (``--other-scopes`` users of 1,500 memories each, one of them
  ``u_small``) and ``--other-org`` memories of another organisation. The *LoCoMo-size*
  one holds 1,500 memories in one scope, as bench/locomo.py's data set does.
- Texts are conversation turns ("Speaker: text", ~24 words, like LoCoMo's) generated
  from templates, word lists and a Zipf-distributed vocabulary (the embedding model's
  own word list, which is ordered by frequency), with a fixed seed. Each scope is one
  owner talking with a dozen friends; its turns come in chunks of 20 (one ``memory.add``
  of a session: one chunk id, seq 0..19), so speaker names recur as in real chats (the
  owner's name is in half of the scope's texts, which is what makes BM25 work hard).
- Vectors (the documented shortcut): the first ``--real`` turns of ``u_big`` (and every
  turn of the LoCoMo-size store) are embedded with the real model (all-MiniLM-L6-v2);
  every other vector is a noisy convex combination of two of those real vectors,
  ``normalise(w*a + (1-w)*b + noise)``, w ~ U(0.55, 0.95), noise N(0, 0.35^2/384) per
  dimension, so the vectors lie where real sentences lie (the table prints the mean
  pairwise cosine of both kinds). Brute-force search cost does not depend on the values
  anyway; quantised or approximate indexes would.
- Rows go in through ``MemoryStore.apply`` in plans of 1,000 (``ingest_per_s``: rows per
  second the store commits, vectors ready; ``embed_per_s``: what the real model embeds,
  batched; ``add_per_s``: end to end through ``ul.memory.add``, 20 turns a call,
  infer=False, real embeddings, into a fresh scope after the searches).
- Queries are LoCoMo-shaped questions ("When did Maya go hiking?") from templates, about
  the scope's people, embedded with the real model inside every search (that cost is part
  of the latency). Each query is searched with k = 10 (as bench/locomo.py does) through
  ``MemoryService.search`` (``search_*``), through the kernel in process
  (``ul.memory.search``: authn, budget hold, audit; ``kernel_search_*``) and through a
  traced copy of ``MemoryService.search`` that times each step with the same arguments:
  query embedding, dense search (sign bits, then exact cosine), FTS5 (BM25), row fetch,
  adjacent fetch, and the rerank (fusion, neighbours, entity boost, diversity, expansion,
  result models). Ten warm-up queries precede each series; p50 / p95 are nearest-rank
  over the series.

Prints tables, then ONE JSON line (``search_*`` for ``u_big`` of the large store, the
same under ``locomo_size`` and ``small_scope_in_large_store``). Targets: search p95 <=
100 ms at 100,000 memories, <= 50 ms at LoCoMo size.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from underlay.config import Config  # noqa: E402
from underlay.kernel.kernel import Kernel  # noqa: E402
from underlay.memory import extract, retrieval  # noqa: E402
from underlay.memory.interface import Plan, Row  # noqa: E402
from underlay.memory.models import SearchMemory  # noqa: E402
from underlay.memory.service import MemoryService, digest  # noqa: E402
from underlay.sdk.client import AsyncUnderlay  # noqa: E402
from underlay.sdk.transports import LocalTransport  # noqa: E402

SEED = 20240611
BATCH = 1_000
LOCOMO_SIZE = 1_500
START = datetime(2022, 1, 1, tzinfo=UTC).timestamp()
STAGES = ("embed", "dense", "fts", "rows", "adjacent", "rerank")

from scale_corpus import CHUNK, NAMES, Corpus, Scope, mean_cosine, questions, synthetic  # noqa: E402


@dataclass
class Built:
    rows: int = 0
    apply_seconds: float = 0.0
    batch_rates: list[float] = field(default_factory=list)
    embed_rate: float = 0.0
    cosine_real: float = 0.0
    cosine_synthetic: float = 0.0


def make_row(scope: Scope, text: str, speaker: str, chunk: str, seq: int, tokens: int) -> Row:
    at = START + int(chunk.rsplit("_", 1)[1]) * 3600.0 + seq
    return Row(
        id=f"mem_{scope.tag}_{chunk.rsplit('_', 1)[1]}_{seq:02d}",
        version=1,
        org=scope.org,
        text=text,
        hash=digest(text),
        valid_from=at,
        created_at=at,
        user_id=scope.user_id,
        actor=speaker,
        sources=[f"{chunk}:{seq}"],
        entities=list(extract.entities(text, speaker)),
        chunk=chunk,
        seq=seq,
        tokens=tokens,
    )


async def fill(
    svc: MemoryService,
    scope: Scope,
    turns: list[tuple[str, str, str, int]],
    vectors: Callable[[list[str], int], np.ndarray],
    built: Built,
) -> None:
    """Insert the scope's memories through ``MemoryStore.apply``, BATCH rows a plan."""
    for start in range(0, len(turns), BATCH):
        part = turns[start : start + BATCH]
        texts = [t[0] for t in part]
        vecs = vectors(texts, start)
        tokens = svc.embedder.count_tokens(texts)
        plan = Plan(
            inserts=[
                (make_row(scope, text, speaker, chunk, seq, tokens[i]), vecs[i])
                for i, (text, speaker, chunk, seq) in enumerate(part)
            ]
        )
        t0 = time.perf_counter()
        await svc.store.apply(plan)
        took = time.perf_counter() - t0
        built.apply_seconds += took
        built.batch_rates.append(len(part) / took)
        built.rows += len(part)


async def build(
    svc: MemoryService,
    scopes: list[Scope],
    corpus: Corpus,
    real: int,
    rng: np.random.Generator,
    log: Callable[[str], None],
) -> Built:
    """Fill ``scopes``; the first ``real`` turns of the first scope get real embeddings."""
    built = Built()
    first = scopes[0].turns(corpus)
    texts = [t[0] for t in first[:real]]
    t0 = time.perf_counter()
    bank = await asyncio.to_thread(svc.embedder.embed, texts)
    built.embed_rate = len(texts) / (time.perf_counter() - t0)
    log(f"embedded {len(texts):,} real turns at {built.embed_rate:,.0f}/s")
    built.cosine_real = mean_cosine(bank, rng)
    built.cosine_synthetic = mean_cosine(synthetic(bank, 5_000, rng), rng)

    for n, scope in enumerate(scopes):

        def vectors(batch: list[str], start: int, first_scope: bool = n == 0) -> np.ndarray:
            out = synthetic(bank, len(batch), rng)
            if first_scope and start < real:  # these rows are exactly the embedded texts
                have = min(real - start, len(batch))
                out[:have] = bank[start : start + have]
            return out

        t0 = time.perf_counter()
        await fill(svc, scope, first if n == 0 else scope.turns(corpus), vectors, built)
        log(
            f"{scope.org}/{scope.user_id}: {scope.size:,} memories in "
            f"{time.perf_counter() - t0:.1f} s"
        )
    return built


# -- measuring -----------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(values: list[float], q: float) -> float:
    return round(1000 * pct(values, q), 2)


class Tracer:
    """Times the steps of the real ``MemoryService.search`` while it runs.

    Inside ``with tracer:`` the service's query embedding and the store's ``dense``,
    ``lexical``, ``rows`` and ``adjacent`` are wrapped (instance attributes, removed on
    exit), so the calls, their arguments and their order are exactly the service's. A
    store that runs its work on a worker thread through ``_call`` (the SQLite driver) is
    timed inside that thread: ``dense`` and ``lexical`` run under ``asyncio.gather`` and
    queue behind each other there, so a wall clock around each call would count the other
    one's time. Wall and CPU (``thread_time``) seconds are both kept: CPU is what a step
    costs when other processes compete for the cores. ``rerank`` is the rest of the
    search's wall time: fusion, rerank, expansion, result models, thread hops.
    """

    STORE = {"dense": "dense", "lexical": "fts", "rows": "rows", "adjacent": "adjacent"}

    def __init__(self, svc: MemoryService) -> None:
        self.svc = svc
        self.stage: contextvars.ContextVar[str] = contextvars.ContextVar("stage", default="")
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    def _add(self, stage: str, wall: float, cpu: float) -> None:
        self.wall[stage] = self.wall.get(stage, 0.0) + wall
        self.cpu[stage] = self.cpu.get(stage, 0.0) + cpu

    def _timed(self, fn: Callable[..., Any], stage: str) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            w, c = time.perf_counter(), time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self._add(stage, time.perf_counter() - w, time.thread_time() - c)

        return run

    def __enter__(self) -> Tracer:
        store, embedder, self.wall, self.cpu = self.svc.store, self.svc.embedder, {}, {}
        threaded = hasattr(store, "_call")
        original_call = getattr(store, "_call", None)

        def public(method: Callable[..., Any], stage: str) -> Callable[..., Any]:
            async def wrapped(*args: Any, **kwargs: Any) -> Any:
                token = self.stage.set(stage)  # each gathered call runs in its own task
                w, c = time.perf_counter(), time.thread_time()
                try:
                    return await method(*args, **kwargs)
                finally:
                    self.stage.reset(token)
                    if not threaded:
                        self._add(stage, time.perf_counter() - w, time.thread_time() - c)

            return wrapped

        for name, stage in self.STORE.items():
            setattr(store, name, public(getattr(store, name), stage))
        if original_call is not None:

            async def call(fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
                # run_in_executor does not carry context variables: read the step here
                return await original_call(self._timed(fn, self.stage.get()), *args, **kw)

            store._call = call  # type: ignore[attr-defined]
        self.svc.embedder = Timed(embedder, self)  # type: ignore[assignment]
        self._undo = (store, embedder)
        return self

    def __exit__(self, *exc: object) -> None:
        store, embedder = self._undo
        for name in (*self.STORE, "_call"):
            store.__dict__.pop(name, None)
        self.svc.embedder = embedder


class Timed:
    """The embedder, its ``embed`` and ``count_tokens`` timed as the ``embed`` step."""

    def __init__(self, inner: Any, tracer: Tracer) -> None:
        self.inner, self.tracer = inner, tracer
        self.dimensions, self.name = inner.dimensions, inner.name

    def _run(self, fn: Callable[[list[str]], Any], texts: list[str]) -> Any:
        return self.tracer._timed(fn, "embed")(texts)

    def embed(self, texts: list[str]) -> np.ndarray:
        return self._run(self.inner.embed, texts)  # type: ignore[no-any-return]

    def count_tokens(self, texts: list[str]) -> list[int]:
        return self._run(self.inner.count_tokens, texts)  # type: ignore[no-any-return]


async def traced(tracer: Tracer, org: str, inp: SearchMemory) -> tuple[dict[str, float], ...]:
    """One search through the tracer: (wall seconds by step, CPU seconds by step)."""
    with tracer:
        t0, c0 = time.perf_counter(), time.thread_time()
        await tracer.svc.search(org, inp)
        total, cpu_main = time.perf_counter() - t0, time.thread_time() - c0
    wall, cpu = dict(tracer.wall), dict(tracer.cpu)
    for step in STAGES[:-1]:
        wall.setdefault(step, 0.0)
        cpu.setdefault(step, 0.0)
    wall["rerank"] = max(0.0, total - sum(wall[s] for s in STAGES[:-1]))
    cpu["rerank"] = cpu_main  # the event loop thread's own work (the others ran elsewhere)
    wall["total"], cpu["total"] = total, sum(cpu.values())
    return wall, cpu


@dataclass
class Series:
    service: list[float] = field(default_factory=list)
    kernel: list[float] = field(default_factory=list)
    wall: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, list[float]] = field(default_factory=dict)
    fts_matches: list[int] = field(default_factory=list)
    load: float = 0.0  # 1-minute load average after the series: other work on the host

    def summary(self) -> dict[str, Any]:
        return {
            "search_p50_ms": ms(self.service, 0.5),
            "search_p95_ms": ms(self.service, 0.95),
            "kernel_search_p50_ms": ms(self.kernel, 0.5),
            "kernel_search_p95_ms": ms(self.kernel, 0.95),
            "breakdown_p50_ms": {s: ms(self.wall[s], 0.5) for s in (*STAGES, "total")},
            "breakdown_p95_ms": {s: ms(self.wall[s], 0.95) for s in (*STAGES, "total")},
            "breakdown_cpu_p50_ms": {s: ms(self.cpu[s], 0.5) for s in (*STAGES, "total")},
            "fts_matches_mean": round(statistics.mean(self.fts_matches)),
            "load_avg": round(self.load, 2),
        }


async def fts_matches(svc: MemoryService, query: str) -> int:
    """Rows of the whole FTS5 index that hold any of the query's words (what BM25 ranks)."""
    words = retrieval.query_words(query)
    if not words or not hasattr(svc.store, "_db"):
        return 0
    match = " OR ".join('"' + w.replace('"', '""') + '"' for w in words)
    db = svc.store._db  # type: ignore[attr-defined]
    sql = "SELECT count(*) FROM memories_fts WHERE memories_fts MATCH ?"
    return await svc.store._call(lambda: db.execute(sql, [match]).fetchone()[0])  # type: ignore[attr-defined]


async def measure(
    svc: MemoryService, ul: AsyncUnderlay, org: str, user: str, queries: list[str]
) -> Series:
    out = Series(wall={s: [] for s in (*STAGES, "total")}, cpu={s: [] for s in (*STAGES, "total")})
    tracer = Tracer(svc)
    for q in queries[:10]:  # warm-up: page cache, model, code paths
        await svc.search(org, SearchMemory(query=q, user_id=user, limit=10))
        await ul.memory.search(q, user_id=user, limit=10)
    for q in queries:
        inp = SearchMemory(query=q, user_id=user, limit=10)
        t0 = time.perf_counter()
        await svc.search(org, inp)
        out.service.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        await ul.memory.search(q, user_id=user, limit=10)
        out.kernel.append(time.perf_counter() - t0)
        wall, cpu = await traced(tracer, org, inp)
        for stage in out.wall:
            out.wall[stage].append(wall[stage])
            out.cpu[stage].append(cpu[stage])
        out.fts_matches.append(await fts_matches(svc, q))
    out.load = os.getloadavg()[0]
    return out


async def add_rate(ul: AsyncUnderlay, corpus: Corpus, scope: Scope, sessions: int) -> float:
    """Memories per second through ``ul.memory.add`` (infer=False, real embeddings)."""
    owner, friends = scope.people[0], scope.people[1:]
    calls = []
    for _ in range(sessions):
        friend = corpus.rng.choice(friends)
        msgs = []
        for seq in range(CHUNK):
            speaker, other = (owner, friend) if seq % 2 == 0 else (friend, owner)
            msgs.append({"name": speaker, "content": corpus.turn(speaker, other).split(": ", 1)[1]})
        calls.append(msgs)
    t0 = time.perf_counter()
    for msgs in calls:
        await ul.memory.add(msgs, user_id=scope.user_id, infer=False)
    return sessions * CHUNK / (time.perf_counter() - t0)


async def open_kernel(home: Path) -> tuple[Kernel, AsyncUnderlay, MemoryService, str]:
    kernel = await Kernel.open(Config.load(home=home))
    ul = AsyncUnderlay(LocalTransport(kernel, kernel.admin_token()))
    svc = await kernel.memory()
    return kernel, ul, svc, kernel.bootstrap_info.org_id


def people(rng: random.Random, k: int = 13) -> list[str]:
    return rng.sample(NAMES, k)


async def run_store(
    home: Path,
    big: int,
    others: int,
    other_org: int,
    real: int,
    n_queries: int,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Build one store in ``home`` and measure it; ``big`` memories in scope ``u_big``."""
    kernel, ul, svc, org = await open_kernel(home)
    corpus, rng = Corpus(SEED), np.random.default_rng(SEED)
    pick = random.Random(SEED)
    scopes = [Scope(org, "u_big", big, people(pick), "big")]
    scopes += [
        Scope(org, "u_small" if i == 0 else f"u_{i:02d}", LOCOMO_SIZE, people(pick), f"s{i:02d}")
        for i in range(others)
    ]
    if other_org:
        scopes.append(Scope("org_other", "u_other", other_org, people(pick), "oth"))
    built = await build(svc, scopes, corpus, min(real, big), rng, log)
    log(
        f"{built.rows:,} rows in {built.apply_seconds:.1f} s of apply "
        f"({built.rows / built.apply_seconds:,.0f}/s)"
    )
    qcorpus = Corpus(SEED + 2)
    result: dict[str, Any] = {"built": built, "series": {}}
    targets = [("u_big", scopes[0])] + ([("u_small", scopes[1])] if others else [])
    for name, scope in targets:
        t0 = time.perf_counter()
        result["series"][name] = await measure(
            svc, ul, org, scope.user_id, questions(qcorpus, scope, n_queries)
        )
        log(f"searched {name} ({n_queries} queries x 3 paths) in {time.perf_counter() - t0:.1f} s")
    result["add_per_s"] = await add_rate(
        ul, qcorpus, Scope(org, "u_add", 0, people(pick), "add"), 10
    )
    result["db_mb"] = round((home / "memory.db").stat().st_size / 1e6, 1)
    await kernel.close()
    return result


def print_tables(runs: dict[str, tuple[int, Series]], built: dict[str, Built]) -> None:
    print(f"\n{'store / scope':34s} {'memories':>9s} {'path':>8s} {'p50 ms':>8s} {'p95 ms':>8s}")
    for label, (size, s) in runs.items():
        for path, values in (("service", s.service), ("kernel", s.kernel)):
            print(
                f"{label:34s} {size:>9,d} {path:>8s} {ms(values, 0.5):>8.2f} "
                f"{ms(values, 0.95):>8.2f}"
            )
    print(
        "\nwhere the time goes (the traced MemoryService.search), ms: "
        "wall p50 / wall p95 / CPU p50 [share of mean wall]"
    )
    print(f"{'step':10s}" + "".join(f"{label:>34s}" for label in runs))
    for step in (*STAGES, "total"):
        cells = []
        for _, s in runs.values():
            share = statistics.mean(s.wall[step]) / statistics.mean(s.wall["total"])
            cells.append(
                f"{ms(s.wall[step], 0.5):6.1f} /{ms(s.wall[step], 0.95):6.1f} /"
                f"{ms(s.cpu[step], 0.5):6.1f} [{100 * share:3.0f}%]"
            )
        print(f"{step:10s}" + "".join(f"{c:>34s}" for c in cells))
    print(
        "\nFTS5 rows matching a query's words (mean): "
        + ", ".join(
            f"{label}: {statistics.mean(s.fts_matches):,.0f}" for label, (_, s) in runs.items()
        )
    )
    for name, b in built.items():
        rates = b.batch_rates
        tail = max(1, len(rates) // 10)
        print(
            f"{name}: ingest {b.rows / b.apply_seconds:,.0f} rows/s through apply "
            f"(first 10%: {statistics.mean(rates[:tail]):,.0f}/s, last 10%: "
            f"{statistics.mean(rates[-tail:]):,.0f}/s); real model {b.embed_rate:,.0f} "
            f"texts/s; mean pairwise cosine real {b.cosine_real:.3f}, synthetic "
            f"{b.cosine_synthetic:.3f}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--memories", type=int, default=100_000, help="memories in scope u_big")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--real", type=int, default=5_000, help="turns embedded with the model")
    ap.add_argument("--other-scopes", type=int, default=8, help="other users, 1,500 each")
    ap.add_argument("--other-org", type=int, default=5_000, help="memories of another org")
    ap.add_argument("--keep", type=Path, help="build the large store's home here and keep it")
    args = ap.parse_args()

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="ul-scale-") as tmp:
        large_home = args.keep or Path(tmp) / "large"
        small = asyncio.run(
            run_store(Path(tmp) / "locomo", LOCOMO_SIZE, 0, 0, LOCOMO_SIZE, args.queries, log)
        )
        large = asyncio.run(
            run_store(
                large_home,
                args.memories,
                args.other_scopes,
                args.other_org,
                args.real,
                args.queries,
                log,
            )
        )
    big, inner = large["series"]["u_big"], large["series"].get("u_small")
    loco = small["series"]["u_big"]
    total_rows = large["built"].rows
    loads = ", ".join(f"{s.load:.1f}" for s in (big, inner, loco) if s is not None)
    print(
        f"\nlarge store: {total_rows:,} rows (u_big {args.memories:,}, "
        f"{args.other_scopes} other users of {LOCOMO_SIZE:,}, another org "
        f"{args.other_org:,}); LoCoMo-size store: {LOCOMO_SIZE:,} rows, one user; load "
        f"average after each series {loads} on {os.cpu_count()} CPUs"
    )
    runs = {"large store, u_big": (args.memories, big)}
    if inner is not None:
        runs["large store, u_small"] = (LOCOMO_SIZE, inner)
    runs["LoCoMo-size store"] = (LOCOMO_SIZE, loco)
    print_tables(runs, {"large store": large["built"], "LoCoMo-size store": small["built"]})
    print(
        f"ul.memory.add end to end (real embeddings): large store "
        f"{large['add_per_s']:,.0f} memories/s, LoCoMo-size {small['add_per_s']:,.0f}/s; "
        f"memory.db {large['db_mb']} MB vs {small['db_mb']} MB"
    )

    def figures(series: Series, built: Built, res: dict[str, Any], size: int) -> dict[str, Any]:
        return {
            "memories": size,
            **series.summary(),
            "ingest_per_s": round(built.rows / built.apply_seconds),
            "embed_per_s": round(built.embed_rate),
            "add_per_s": round(res["add_per_s"], 1),
            "store_rows": built.rows,
            "db_mb": res["db_mb"],
        }

    out = figures(big, large["built"], large, args.memories)
    out["queries"] = args.queries
    out["target_100ms_met"] = out["search_p95_ms"] <= 100
    out["locomo_size"] = figures(loco, small["built"], small, LOCOMO_SIZE)
    out["locomo_size"]["target_50ms_met"] = out["locomo_size"]["search_p95_ms"] <= 50
    if inner is not None:
        out["small_scope_in_large_store"] = {"memories": LOCOMO_SIZE, **inner.summary()}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
