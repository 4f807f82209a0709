"""LoCoMo retrieval: underlay's memory layer beside mem0 and BM25, in one run.

Run from the project root (peers need `.venv/bin/pip install -e '.[bench]'`):

    .venv/bin/python bench/locomo.py ../shared/data/locomo/locomo-dev.json [--no-peers]

Each conversation becomes one user's memory (scope user_id = its sample_id); every session
is one ``memory.add`` of its turns (``infer=False``: each turn is one memory, its dia_id the
source; the session's date the timestamp), through the real kernel (SQLite, audit,
budget). Every question of categories 1-4 is searched with k = 10. R_all@k: the share of
questions whose evidence turns all appear among the sources of the top k results (with
the context turns search attached to them); R_any@k: at least one. Tokens are word pieces
of the embedding model's tokenizer, counted over every returned text. Peers get the same
turns ("Speaker: text") and the same embedder (mem0: infer=False, FAISS).
Prints tables, then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop"}
_EVIDENCE = re.compile(r"^D:?(\d+):(\d+)$")


@dataclass
class Conversation:
    sample_id: str
    sessions: list[tuple[datetime, list[dict[str, str]]]]
    questions: list[tuple[str, list[str], int]] = field(default_factory=list)


def turn_text(turn: dict[str, Any]) -> str:
    text = turn["text"]
    if turn.get("blip_caption"):
        text += f" [shares {turn['blip_caption']}]"
    return str(text)


def load(path: Path) -> list[Conversation]:
    """Conversations with normalised evidence ids (malformed ones fixed or dropped)."""
    out = []
    for item in json.loads(path.read_text()):
        conv = item["conversation"]
        sessions, n = [], 1
        while f"session_{n}" in conv or f"session_{n}_date_time" in conv:
            if f"session_{n}" in conv:
                when = datetime.strptime(conv[f"session_{n}_date_time"], "%I:%M %p on %d %B, %Y")
                sessions.append((when.replace(tzinfo=UTC), conv[f"session_{n}"]))
            n += 1
        c = Conversation(item["sample_id"], sessions)
        valid = {t["dia_id"] for _, turns in sessions for t in turns}
        for qa in item["qa"]:
            if qa.get("category") not in CATEGORIES:
                continue
            ev = []
            for raw in qa.get("evidence", []):
                for part in re.split(r"[;,]", raw):
                    if m := _EVIDENCE.match(part.strip().replace(" ", "")):
                        d = f"D{int(m.group(1))}:{int(m.group(2))}"
                        if d in valid and d not in ev:
                            ev.append(d)
            if ev:
                c.questions.append((qa["question"], ev, qa["category"]))
        out.append(c)
    return out


@dataclass
class Scores:
    hits: dict[str, list[bool]] = field(default_factory=lambda: defaultdict(list))
    latencies: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)

    def score(self, cat: int, evidence: list[str], ranked: list[list[str]]) -> None:
        for k in (5, 10):
            got = {s for sources in ranked[:k] for s in sources}
            self.hits[f"all@{k}"].append(all(e in got for e in evidence))
            self.hits[f"all@{k}/{cat}"].append(all(e in got for e in evidence))
            self.hits[f"any@{k}"].append(any(e in got for e in evidence))

    def pct(self, key: str) -> float:
        values = self.hits.get(key, [])
        return round(100 * sum(values) / len(values), 1) if values else 0.0

    def ms(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return round(1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


async def run_underlay(convs: list[Conversation]) -> tuple[Scores, int]:
    from underlay.config import Config
    from underlay.kernel.kernel import Kernel
    from underlay.sdk.client import AsyncUnderlay
    from underlay.sdk.transports import LocalTransport

    scores, full_tokens = Scores(), 0
    with tempfile.TemporaryDirectory() as home:
        kernel = await Kernel.open(Config.load(home=home))
        ul = AsyncUnderlay(LocalTransport(kernel, kernel.admin_token()))
        embedder = (await kernel.memory()).embedder
        started = time.perf_counter()
        for c in convs:
            for when, turns in c.sessions:
                messages = [
                    {"name": t["speaker"], "content": turn_text(t), "id": t["dia_id"]}
                    for t in turns
                ]
                full_tokens += sum(
                    embedder.count_tokens([f"{t['speaker']}: {turn_text(t)}" for t in turns])
                )
                await ul.memory.add(messages, user_id=c.sample_id, infer=False, timestamp=when)
        print(f"underlay: ingested in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        for c in convs:
            for question, evidence, cat in c.questions:
                t0 = time.perf_counter()
                found = await ul.memory.search(question, user_id=c.sample_id, limit=10)
                scores.latencies.append(time.perf_counter() - t0)
                ranked = [
                    m.sources + [s for ctx in m.context for s in ctx.sources] for m in found.results
                ]
                scores.score(cat, evidence, ranked)
                scores.tokens.append(found.tokens)
        await kernel.close()
    return scores, full_tokens


def run_peer(peer: Any, convs: list[Conversation]) -> Scores:
    from peers import Turn

    scores = Scores()
    for c in convs:
        peer.add_conversation(
            c.sample_id,
            [
                Turn(f"{t['speaker']}: {turn_text(t)}", t["dia_id"], when)
                for when, turns in c.sessions
                for t in turns
            ],
        )
    for c in convs:
        for question, evidence, cat in c.questions:
            t0 = time.perf_counter()
            hits = peer.search(c.sample_id, question, 10)
            scores.latencies.append(time.perf_counter() - t0)
            scores.score(cat, evidence, [h.sources for h in hits])
    return scores


def table(results: dict[str, Scores]) -> None:
    cols = ["all@5", "all@10", "any@10", *(f"all@10/{c}" for c in CATEGORIES)]
    heads = ["R_all@5", "R_all@10", "R_any@10", *(f"{n} R_all@10" for n in CATEGORIES.values())]
    print(
        f"{'system':10s} "
        + " ".join(f"{h:>20s}" for h in heads)
        + f" {'p50 ms':>8s} {'p95 ms':>8s}"
    )
    for name, s in results.items():
        print(
            f"{name:10s} "
            + " ".join(f"{s.pct(c):>20.1f}" for c in cols)
            + f" {s.ms(0.5):>8.2f} {s.ms(0.95):>8.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, help="a LoCoMo-format JSON file")
    parser.add_argument("--no-peers", action="store_true", help="skip mem0 and BM25")
    args = parser.parse_args()
    convs = load(args.path)
    n_q = sum(len(c.questions) for c in convs)
    print(f"{len(convs)} conversations, {n_q} questions (categories 1-4)", file=sys.stderr)
    ours, full_tokens = asyncio.run(run_underlay(convs))
    results = {"underlay": ours}
    if not args.no_peers:
        try:
            from peers.bm25 import BM25Peer
            from peers.mem0_peer import Mem0Peer
        except ImportError as exc:
            sys.exit(f"peers need `.venv/bin/pip install -e '.[bench]'` ({exc}); or --no-peers")
        from underlay.memory.embedding import local_embedder

        results["bm25"] = run_peer(BM25Peer(), convs)
        with Mem0Peer(local_embedder()) as mem0:
            results["mem0"] = run_peer(mem0, convs)
    table(results)
    print(
        f"tokens per query (underlay, mean): {statistics.mean(ours.tokens):.0f}; "
        f"full conversation (mean): {full_tokens / len(convs):.0f}"
    )
    figures = {
        "r_all_5": ours.pct("all@5"),
        "r_all_10": ours.pct("all@10"),
        "r_any_10": ours.pct("any@10"),
        "r_all_10_by_category": {str(c): ours.pct(f"all@10/{c}") for c in CATEGORIES},
        "search_p50_ms": ours.ms(0.5),
        "search_p95_ms": ours.ms(0.95),
        "tokens_per_query": round(statistics.mean(ours.tokens)),
        "full_context_tokens": round(full_tokens / len(convs)),
        "mem0_r_all_10": results["mem0"].pct("all@10") if "mem0" in results else None,
        "bm25_r_all_10": results["bm25"].pct("all@10") if "bm25" in results else None,
        "questions": n_q,
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
