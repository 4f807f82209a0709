"""Merge queue: underlay's merge train against a serial queue, and conflict prediction.

Run from the project root, as root (the checks run in real bubblewrap sandboxes):

    .venv/bin/python bench/merge_queue.py [--agents 8] [--commits 5] [--overlap 0.25]
        [--fail-rate 0.10] [--seed 7] [--batch-size 2] [--concurrency 2] [--pool 0]
        [--check-wait 0] [--verify-pairs 0] [--quick]

Method.

- **The repository** (generated in a temporary directory, seeded): a small Python
  package (``pkg/``: a shared module, 16 core modules, one module per agent, each made
  of functions ``fN(x)`` that must return ``x * (N + 1) + OFFSET``), a few docs, and
  ``check.py``, the repository's check (``python3 -B check.py``: imports every module of
  ``pkg`` and calls every ``fN``; exits 1 on any wrong value). ``--agents`` agents each
  make ``--commits`` changes; a change is one branch off the base with 1-3 commits.
  Its first commit edits one line of a function: for an ``--overlap`` fraction of the
  changes, a function of ``pkg/shared.py`` (as many functions as such changes, picked
  at random: changes that pick the same one conflict, the others merge cleanly), else
  the agent's own module (function k for its change k: same file, different places,
  clean merges). The later commits edit a core module's function (each its own) or
  add a file. Exactly ``round(fail_rate * changes)`` changes (seeded) break their
  function (a wrong multiplier), which the check finds. Every change's head is checked
  once outside any sandbox before the runs, so the ground truth is known.
- **Prediction**: ``Git.merge_tree`` (``git merge-tree --write-tree``) on every pair of
  change heads and on the base with every head, called one after the other, through
  ``Git.scratch()`` as ``queue.predict`` does (merged trees written to a throwaway
  object directory in ``/dev/shm``, the repository's objects as an alternate); the figure
  is the mean wall time per call (the median is reported too). Each merge is new, so git
  writes its merged tree's objects; the same pairs once more, objects already written,
  give ``prediction_ms_repeat``. Exactness: for every
  pair (or ``--verify-pairs`` of them, sampled), a real ``git merge`` in a scratch
  worktree; the prediction is exact when clean/conflicted, the conflicted paths and,
  when clean, the merged tree are all identical.
- **Throughput**: one embedded kernel (a fresh home; ``compute.pool_size`` is
  ``--pool``, default 0: every check sandbox starts cold). The same changes, in the same
  (shuffled) queue order, are run through ``Train`` twice, each time on a fresh copy of
  the bare repository, with ``SandboxChecks`` (each check: the commit's files written
  into a new sandbox, then the check command, then the sandbox destroyed): the serial
  queue ``Train(batch_size=1, concurrency=1)``, then underlay's queue
  ``Train(batch_size=--batch-size, concurrency=--concurrency)``. Throughput is changes
  landed per minute of the run's wall time (``Train.run`` start to end; the landed
  sets of both runs are compared too). ``throughput_ratio_vs_serial`` = queue / serial.
  The default batch size 2 with concurrency 2 was the best of the settings tried on
  the 2-core reference machine, and is the Train's default.
- **Checks that wait** (``--check-wait S``): each check first sleeps S seconds in its
  sandbox, then runs. The default check is bound by this machine's CPU (a sandbox and
  a Python process; two cores): only two checks at a time help. A CI job mostly waits
  (on a runner, a service, a test database); with a wait, more checks in flight pay,
  e.g. ``--check-wait 0.3 --concurrency 4``.
- **Diagnostics**: the checks run (and the groups decided without a check, their tree
  having been checked before: ``checks_saved_queue``), their median wall time, the
  share of the run's wall time during which at least one check was running, and the
  train's own git calls (count and seconds; the checks' ``git archive`` excluded).
- **landed_red**: every commit the target was moved to (the landed verdicts' commits,
  and the final target) of both runs is exported and checked again outside the
  sandbox; the count of those that fail.

Progress goes to stderr; a table, then ONE JSON line, go to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import itertools
import os
import random
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import report  # noqa: E402  (bench/report.py: the script's directory is on sys.path)
from underlay.config import Config  # noqa: E402
from underlay.coordination.checks import SandboxChecks  # noqa: E402
from underlay.coordination.git import Git  # noqa: E402
from underlay.coordination.train import Change, Train, Verdict  # noqa: E402
from underlay.kernel.kernel import Kernel  # noqa: E402

MAIN = "refs/heads/main"
CHECK = "python3 -B check.py"
CORE_MODULES, CORE_FUNCS = 16, 8
GIT_ENV = {
    "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@underlay.invalid",
    "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@underlay.invalid",
    "PATH": "/usr/local/bin:/usr/bin:/bin", "LC_ALL": "C", "HOME": "/nonexistent",
}  # fmt: skip
CHECK_PY = '''\
"""The repository's check: every module of pkg imports, every fN is right."""
import importlib
import pathlib
import re
import sys

root = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(root))
failures, checked = [], 0
for path in sorted((root / "pkg").glob("*.py")):
    if path.name == "__init__.py":
        continue
    name = "pkg." + path.stem
    try:
        module = importlib.import_module(name)
    except Exception as exc:
        failures.append(f"{name}: import failed: {exc!r}")
        continue
    for attr in sorted(dir(module)):
        match = re.fullmatch(r"f(\\d+)", attr)
        if not match:
            continue
        n, checked = int(match.group(1)), checked + 1
        for x in (0, 1, 7):
            got, want = getattr(module, attr)(x), x * (n + 1) + module.OFFSET
            if got != want:
                failures.append(f"{name}.{attr}({x}) = {got}, expected {want}")
for line in failures:
    print("FAIL", line)
print(f"{checked} functions checked, {len(failures)} failures")
sys.exit(1 if failures else 0)
'''


def say(*args: Any) -> None:
    print(*args, file=sys.stderr, flush=True)


# -- the generated repository ---------------------------------------------------------------


def func(n: int, where: str, line: str | None = None) -> str:
    body = line if line is not None else f"y = x * {n + 1}"
    return f'def f{n}(x):\n    """Function {n} of {where}."""\n    {body}\n    return y + OFFSET\n'


def module(name: str, offset: int, funcs: int, lines: dict[int, str] | None = None) -> str:
    lines = lines or {}
    parts = [f'"""{name}: generated for the merge-queue benchmark."""\n\nOFFSET = {offset}\n']
    parts += [func(n, name, lines.get(n)) for n in range(funcs)]
    return "\n\n".join(parts)


@dataclass
class Planned:
    id: str
    agent: int
    index: int
    fails: bool
    main_file: str
    main_func: int
    commits: list[dict[str, str]] = field(default_factory=list)
    head: str = ""


class Scratch:
    """A bare repository (what the queue owns) and a working tree to make the commits."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.bare = root / "repo.git"
        self.work = root / "work"
        self.files: dict[str, str] = {}  # the base's files
        subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(self.bare)], check=True)
        subprocess.run(["git", "init", "-q", "-b", "main", str(self.work)], check=True)
        self.git("remote", "add", "origin", str(self.bare))

    def git(self, *args: str, cwd: Path | None = None, check: bool = True) -> str:
        done = subprocess.run(["git", *args], cwd=cwd or self.work, env=GIT_ENV,
                              capture_output=True, text=True)  # fmt: skip
        if check and done.returncode != 0:
            raise SystemExit(f"git {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout.strip()

    def commit(self, files: dict[str, str], message: str) -> str:
        for name, text in files.items():
            path = self.work / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)
        return self.git("rev-parse", "HEAD")


def plan(agents: int, per_agent: int, overlap: float, fail_rate: float,
         rng: random.Random) -> tuple[dict[str, str], list[Planned], int]:  # fmt: skip
    """The base's files, the changes (queue order) and the number of shared functions."""
    n = agents * per_agent
    ids = [(a, k) for a in range(agents) for k in range(per_agent)]
    sharing = set(rng.sample(range(n), k=round(overlap * n)))
    failing = set(rng.sample(range(n), k=round(fail_rate * n)))
    shared_funcs = max(2, len(sharing))
    picks = [rng.randrange(shared_funcs) for _ in sharing]
    if len(picks) >= 2 and len(set(picks)) == len(picks):
        picks[1] = picks[0]  # at least one real text conflict
    shared_pick = dict(zip(sorted(sharing), picks, strict=True))
    own_funcs = max(per_agent, 8)
    offsets = {"pkg/shared.py": 3}
    offsets |= {f"pkg/core{m:02d}.py": 10 + m for m in range(CORE_MODULES)}
    offsets |= {f"pkg/agent{a:02d}.py": 100 + a for a in range(agents)}
    sizes = {name: CORE_FUNCS for name in offsets} | {"pkg/shared.py": shared_funcs}
    sizes |= {f"pkg/agent{a:02d}.py": own_funcs for a in range(agents)}
    base = {name: module(name, offsets[name], sizes[name]) for name in offsets}
    base["pkg/__init__.py"] = '"""A package generated for the merge-queue benchmark."""\n'
    base["check.py"] = CHECK_PY
    base["README.md"] = "# bench repository\n\nChecks: `python3 -B check.py`.\n"
    for doc in ("design", "usage", "changelog", "contributing"):
        base[f"docs/{doc}.md"] = f"# {doc}\n\n" + "".join(f"Line {i}.\n" for i in range(20))
    core_slots = [(m, f) for m in range(CORE_MODULES) for f in range(CORE_FUNCS)]
    rng.shuffle(core_slots)  # each change that edits a core module gets its own function

    def edit(name: str, n: int, cid: str, fails: bool, current: dict[int, str]) -> str:
        mult = n + 2 if fails else n + 1  # a wrong multiplier is the bug the check finds
        current[n] = f"y = x * {mult}  # {cid}: {rng.choice(WORDS)} {rng.randrange(10**6)}"
        return module(name, offsets[name], sizes[name], current)

    changes = []
    for i, (a, k) in enumerate(ids):
        cid = f"a{a}c{k}"
        if i in sharing:
            main_file, main_func = "pkg/shared.py", shared_pick[i]
        else:
            main_file, main_func = f"pkg/agent{a:02d}.py", k
        change = Planned(cid, a, k, i in failing, main_file, main_func)
        change.commits.append({main_file: edit(main_file, main_func, cid, i in failing, {})})
        for extra in range(rng.randint(1, 3) - 1):
            if extra == 0:
                m, f = core_slots.pop()
                name = f"pkg/core{m:02d}.py"
                change.commits.append({name: edit(name, f, cid, False, {})})
            else:
                change.commits.append({f"docs/changes/{cid}.md": f"# {cid}\n\nWhat changed.\n"})
        changes.append(change)
    rng.shuffle(changes)  # the order in which they arrive in the queue
    return base, changes, shared_funcs


WORDS = ["tune", "rename", "clarify", "speed up", "tidy", "document", "inline", "guard"]


def generate(root: Path, args: argparse.Namespace) -> tuple[Scratch, str, list[Planned], int]:
    rng = random.Random(args.seed)
    base_files, planned, shared_funcs = plan(
        args.agents, args.commits, args.overlap, args.fail_rate, rng
    )
    repo = Scratch(root)
    repo.files = base_files
    base = repo.commit(base_files, "base")
    repo.git("push", "-q", "origin", f"{base}:{MAIN}")
    for change in planned:
        repo.git("checkout", "-q", "-B", f"agent{change.agent}/change{change.index}", base)
        for j, files in enumerate(change.commits):
            change.head = repo.commit(files, f"{change.id}: commit {j + 1}")
    repo.git("push", "-q", "origin", *(f"agent{c.agent}/change{c.index}" for c in planned))
    return repo, base, planned, shared_funcs


def check_outside(repo: Path, commit: str, scratch: Path) -> bool:
    """The check command on ``commit``'s files, exported to a temporary directory."""
    tar = subprocess.run(["git", "-C", str(repo), "archive", "--format=tar", commit],
                         capture_output=True, check=True).stdout  # fmt: skip
    with tempfile.TemporaryDirectory(dir=scratch) as where:
        with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
            archive.extractall(where, filter="data")
        done = subprocess.run(CHECK.split(), cwd=where, capture_output=True, check=False,
                              env=GIT_ENV)  # fmt: skip
        return done.returncode == 0


# -- prediction ------------------------------------------------------------------------------


async def predict(git: Git, base: str, heads: list[str]) -> dict[str, Any]:
    pairs = [(base, h) for h in heads] + list(itertools.combinations(heads, 2))
    took, again, results = [], [], {}
    async with git.scratch() as predictor:  # as queue.predict does: objects to a tmpfs
        for _ in range(5):  # warm-up (page cache, git's first start), on no measured pair
            await predictor.merge_tree(base, base)
        for a, b in pairs:  # first time: git writes the merged tree's new objects
            t0 = time.perf_counter()
            results[(a, b)] = await predictor.merge_tree(a, b)
            took.append(time.perf_counter() - t0)
        for a, b in pairs:  # the same again: the objects are there already
            t0 = time.perf_counter()
            await predictor.merge_tree(a, b)
            again.append(time.perf_counter() - t0)
    return {"pairs": pairs, "results": results, "took": took, "again": again}


Merged = tuple[bool, tuple[str, ...], str]


def real_merge(repo: Scratch, ours: str, theirs: str, where: Path) -> Merged:
    """What ``git merge`` does in a working tree: clean or not, conflicted paths, tree."""
    if not where.exists():
        repo.git("worktree", "add", "-q", "--detach", str(where), ours)
    repo.git("checkout", "-q", "--detach", "-f", ours, cwd=where)
    merged = subprocess.run(["git", "merge", "-q", "--no-edit", theirs], cwd=where,
                            env=GIT_ENV, capture_output=True, text=True)  # fmt: skip
    conflicted = tuple(sorted(repo.git("diff", "--name-only", "--diff-filter=U", cwd=where)
                              .split()))  # fmt: skip
    tree = repo.git("rev-parse", "HEAD^{tree}", cwd=where) if merged.returncode == 0 else ""
    repo.git("merge", "--abort", cwd=where, check=False)
    repo.git("reset", "-q", "--hard", cwd=where)
    return merged.returncode == 0, conflicted, tree


def verify(repo: Scratch, prediction: dict[str, Any], sample: int, seed: int) -> dict[str, Any]:
    pairs = prediction["pairs"]
    if 0 < sample < len(pairs):
        pairs = random.Random(seed).sample(pairs, sample)
    where = repo.root / "verify-worktree"
    wrong = []
    for a, b in pairs:
        predicted = prediction["results"][(a, b)]
        clean, conflicted, tree = real_merge(repo, a, b, where)
        same = (predicted.clean, predicted.conflicts) == (clean, conflicted)
        if same and clean:
            same = predicted.tree == tree
        if not same:
            wrong.append((a[:10], b[:10], predicted.clean, predicted.conflicts, clean, conflicted))
    return {"verified": len(pairs), "wrong": wrong}


# -- throughput ------------------------------------------------------------------------------


class TimedGit(Git):
    """``Git`` that counts its calls and their wall time (the train's own git work)."""

    calls: int = 0
    seconds: float = 0.0

    async def run_bytes(
        self, *args: str, ok: tuple[int, ...] = (0,), stdin: bytes | None = None
    ) -> tuple[int, bytes]:
        t0 = time.perf_counter()
        try:
            return await super().run_bytes(*args, ok=ok, stdin=stdin)
        finally:
            self.calls += 1
            self.seconds += time.perf_counter() - t0


@dataclass
class Run:
    label: str
    wall: float
    verdicts: list[Verdict]
    checks_run: int
    checks_saved: int  # groups decided by an earlier check of the same tree
    check_seconds: list[float]
    busy: float  # seconds during which at least one check was running
    final: str
    bare: Path
    git_calls: int
    git_seconds: float

    def count(self, outcome: str) -> int:
        return sum(v.outcome == outcome for v in self.verdicts)

    @property
    def per_min(self) -> float:
        return self.count("landed") / self.wall * 60


def check_commands(wait: float) -> list[str]:
    """The check as the sandbox runs it: with ``--check-wait``, a wait first, as a CI job
    waits on what is not the machine's CPU (a remote runner, a service, a test database)."""
    return ([f"sleep {wait:g}"] if wait > 0 else []) + [CHECK]


async def run_train(kernel: Kernel, org_id: str, src: Path, where: Path, changes: list[Change],
                    label: str, batch: int, concurrency: int, commands: list[str],
                    ) -> Run:  # fmt: skip
    bare = where / f"{label}.git"
    await asyncio.to_thread(shutil.copytree, src, bare)
    git = TimedGit(bare)
    checks = SandboxChecks(kernel, org_id, Git(bare), commands)  # its archive: not counted
    durations: list[float] = []
    active, busy, since = 0, 0.0, 0.0

    async def check(commit: str) -> tuple[bool, str]:
        nonlocal active, busy, since
        t0 = time.perf_counter()
        if active == 0:
            since = t0
        active += 1
        try:
            return await checks(commit)
        finally:
            t1 = time.perf_counter()
            active -= 1
            if active == 0:
                busy += t1 - since
            durations.append(t1 - t0)

    started, decided = time.perf_counter(), 0

    async def progress(v: Verdict) -> None:
        nonlocal decided
        decided += 1
        say(f"  [{label}] {decided:3d}/{len(changes)} {v.change.id:8s} "
            f"{v.outcome:8s} t={time.perf_counter() - started:6.2f} s "
            f"checks={train.checks_run}")  # fmt: skip

    train = Train(git, MAIN, check, batch_size=batch, concurrency=concurrency,
                  on_verdict=progress)  # fmt: skip
    started = time.perf_counter()
    verdicts = await train.run(changes)
    wall = time.perf_counter() - started
    final = await git.sha(MAIN)
    return Run(label, wall, verdicts, train.checks_run, train.checks_saved, durations, busy,
               final, bare, git.calls, git.seconds)  # fmt: skip


async def landed_red(run: Run, scratch: Path) -> tuple[int, int, list[str]]:
    """Re-check every commit the target moved to, outside the sandbox; (red, checked,
    problems with the train's guarantees)."""
    targets = list(dict.fromkeys([v.commit for v in run.verdicts if v.commit] + [run.final]))
    red = 0
    for commit in targets:
        if not await asyncio.to_thread(check_outside, run.bare, commit, scratch):
            red += 1
    git, problems = Git(run.bare), []
    for v in run.verdicts:
        if v.outcome == "landed" and not await git.is_ancestor(v.change.head, run.final):
            problems.append(f"{v.change.id} landed but is not in the target")
    return red, len(targets), problems


async def throughput(args: argparse.Namespace, src: Path, tmp: Path,
                     changes: list[Change]) -> tuple[Run, Run]:  # fmt: skip
    home = tmp / "home"
    kernel = await Kernel.open(Config.load(home=home, compute={"pool_size": args.pool}))
    try:
        assert kernel.bootstrap_info is not None
        org_id = kernel.bootstrap_info.org_id
        if args.pool:
            await (await kernel.compute()).pool.wait_full(120)
        commands = check_commands(args.check_wait)
        warm = SandboxChecks(kernel, org_id, Git(src), commands)
        base = await Git(src).sha(MAIN)
        for _ in range(3):  # warm-up: imports, first sandbox, page cache
            passed, output = await warm(base)
            if not passed:
                raise SystemExit(f"the base fails its checks in a sandbox:\n{output}")
        say(f"serial queue: Train(batch_size=1, concurrency=1) on {len(changes)} changes ...")
        serial = await run_train(kernel, org_id, src, tmp, changes, "serial", 1, 1, commands)
        say(f"  {serial.count('landed')} landed in {serial.wall:.2f} s")
        if args.pool:
            await (await kernel.compute()).pool.wait_full(120)
        say(f"underlay queue: Train(batch_size={args.batch_size}, "
            f"concurrency={args.concurrency}) ...")  # fmt: skip
        queue = await run_train(kernel, org_id, src, tmp, changes, "queue",
                                args.batch_size, args.concurrency, commands)  # fmt: skip
        say(f"  {queue.count('landed')} landed in {queue.wall:.2f} s")
        return serial, queue
    finally:
        await kernel.close()


# -- main ------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agents", type=int, default=8)
    ap.add_argument("--commits", type=int, default=5, help="changes per agent (K)")
    ap.add_argument("--overlap", type=float, default=0.25,
                    help="fraction of changes that edit the shared file")  # fmt: skip
    ap.add_argument("--fail-rate", type=float, default=0.10)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--pool", type=int, default=0, help="warm sandboxes (compute.pool_size)")
    ap.add_argument("--check-wait", type=float, default=0.0,
                    help="seconds each check waits before running (checks bound by waiting, "
                    "not by this machine's CPU)")  # fmt: skip
    ap.add_argument("--verify-pairs", type=int, default=0,
                    help="pairs checked against a real git merge (0: all)")  # fmt: skip
    ap.add_argument(
        "--tmp",
        type=Path,
        default=None,
        help="where the repositories and the kernel's home go (default: $TMPDIR)",
    )
    ap.add_argument("--quick", action="store_true", help="3 agents x 4 changes, 40 pairs")
    args = ap.parse_args()
    if args.quick:
        args.agents, args.commits, args.verify_pairs = 3, 4, args.verify_pairs or 40
    if os.geteuid() != 0:
        raise SystemExit("run as root: the checks run in sandboxes (cgroups, mounts)")

    with tempfile.TemporaryDirectory(prefix="ul-mq-", dir=args.tmp) as tmpdir:
        tmp = Path(tmpdir)
        t0 = time.perf_counter()
        repo, base, planned, shared_funcs = generate(tmp / "gen", args)
        n = len(planned)
        say(f"repository: {len(repo.files)} files in the base, {n} changes "
            f"({sum(len(c.commits) for c in planned)} commits), {shared_funcs} shared "
            f"functions, generated in {time.perf_counter() - t0:.1f} s")  # fmt: skip
        if not check_outside(repo.bare, base, tmp):
            raise SystemExit("the base fails its own checks")
        for c in planned:  # the ground truth: failing changes fail, the others pass
            if check_outside(repo.bare, c.head, tmp) == c.fails:
                raise SystemExit(f"{c.id}: the check does not match the plan (fails={c.fails})")
        say(f"ground truth: {sum(c.fails for c in planned)} of {n} changes fail their checks")

        git = Git(repo.bare)
        heads = [c.head for c in planned]
        prediction = asyncio.run(predict(git, base, heads))
        took = prediction["took"]
        conflicting = sum(not m.clean for m in prediction["results"].values())
        say(f"prediction: {len(took)} pairs, mean {statistics.mean(took) * 1000:.2f} ms "
            f"({statistics.mean(prediction['again']) * 1000:.2f} ms the second time), "
            f"{conflicting} conflicting")  # fmt: skip
        checked = verify(repo, prediction, args.verify_pairs, args.seed)
        say(f"exactness: {checked['verified']} pairs against a real git merge, "
            f"{len(checked['wrong'])} differ")  # fmt: skip
        for wrong in checked["wrong"][:10]:
            say(f"  differs: {wrong}")

        changes = [Change(c.id, c.head) for c in planned]
        serial, queue = asyncio.run(throughput(args, repo.bare, tmp, changes))
        reds, targets, problems = 0, 0, list[str]()
        for run in (serial, queue):
            red, count, issues = asyncio.run(landed_red(run, tmp))
            reds, targets, problems = reds + red, targets + count, problems + issues
            say(f"re-checked {count} target commits of the {run.label} run: {red} red")
        for problem in problems:
            say(f"  PROBLEM: {problem}")
        landed_same = {v.change.id for v in serial.verdicts if v.outcome == "landed"} == {
            v.change.id for v in queue.verdicts if v.outcome == "landed"
        }

    ratio = queue.per_min / serial.per_min if serial.per_min else float("nan")
    out: dict[str, Any] = {
        "throughput_ratio_vs_serial": round(ratio, 2),
        "prediction_ms_per_pair": round(statistics.mean(took) * 1000, 3),
        "prediction_exact": not checked["wrong"],
        "landed_red": reds,
        "serial_per_min": round(serial.per_min, 1),
        "queue_per_min": round(queue.per_min, 1),
        "serial_wall_s": round(serial.wall, 2),
        "queue_wall_s": round(queue.wall, 2),
        "checks_run_serial": serial.checks_run,
        "checks_run_queue": queue.checks_run,
        "checks_saved_queue": queue.checks_saved,
        "check_p50_ms_serial": round(statistics.median(serial.check_seconds) * 1000, 1),
        "check_p50_ms_queue": round(statistics.median(queue.check_seconds) * 1000, 1),
        "checks_busy_share_serial": round(serial.busy / serial.wall, 3),
        "checks_busy_share_queue": round(queue.busy / queue.wall, 3),
        "train_git_calls_serial": serial.git_calls,
        "train_git_calls_queue": queue.git_calls,
        "train_git_s_serial": round(serial.git_seconds, 2),
        "train_git_s_queue": round(queue.git_seconds, 2),
        "landed_serial": serial.count("landed"),
        "landed_queue": queue.count("landed"),
        "rejected_serial": serial.count("rejected"),
        "rejected_queue": queue.count("rejected"),
        "conflicts_serial": serial.count("conflict"),
        "conflicts_queue": queue.count("conflict"),
        "same_landed_set": landed_same,
        "target_commits_rechecked": targets,
        "guarantee_problems": len(problems),
        "prediction_ms_p50": round(statistics.median(took) * 1000, 3),
        "prediction_ms_repeat": round(statistics.mean(prediction["again"]) * 1000, 3),
        "pairs": len(took),
        "pairs_conflicting": conflicting,
        "pairs_verified": checked["verified"],
        "changes": n,
        "failing_changes": sum(c.fails for c in planned),
        "agents": args.agents,
        "commits_per_agent": args.commits,
        "overlap": args.overlap,
        "batch_size": args.batch_size,
        "concurrency": args.concurrency,
        "pool": args.pool,
        "check_wait_s": args.check_wait,
        "seed": args.seed,
    }
    report.figures(out, 12)


if __name__ == "__main__":
    main()
