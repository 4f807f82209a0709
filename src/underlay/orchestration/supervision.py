"""Supervision trees, configured not coded (Erlang/OTP semantics), as a pure decision engine.

A supervisor watches children (agents, or other supervisors) and answers each child's
exit with actions; it does no I/O itself, so every decision is testable with a clock
value. Semantics:

* **restart type** of a child: ``permanent`` is always restarted, ``transient`` only
  after an abnormal exit, ``temporary`` never.
* **strategy**: ``one_for_one`` restarts the child; ``one_for_all`` restarts every child;
  ``rest_for_one`` restarts the child and the children declared after it.
* **intensity / period**: more than ``intensity`` restarts within ``period`` seconds and
  the supervisor gives up: it stops its children and exits abnormally itself, which its
  parent handles like any child's exit. When the root gives up, the tree escalates to a
  human — exactly once: the root is then ``failed`` and later exits change nothing.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from underlay import errors

Strategy = Literal["one_for_one", "one_for_all", "rest_for_one"]
RestartType = Literal["permanent", "transient", "temporary"]
Reason = Literal["normal", "error"]


@dataclass(frozen=True)
class Child:
    name: str
    restart: RestartType = "permanent"


@dataclass(frozen=True)
class SupervisorSpec:
    name: str
    children: tuple[Child | SupervisorSpec, ...]
    strategy: Strategy = "one_for_one"
    intensity: int = 3
    period: float = 5.0
    restart: RestartType = "permanent"  # how this supervisor's own parent treats it


@dataclass(frozen=True)
class Action:
    """``restart`` / ``stop`` a child (a path like ``root/workers/w1``), or ``escalate``."""

    kind: Literal["restart", "stop", "escalate"]
    path: str
    reason: str = ""


@dataclass
class _Node:
    spec: SupervisorSpec
    path: str
    restarts: deque[float] = field(default_factory=deque)
    failed: bool = False


class SupervisionTree:
    """The runtime state of one tree: restart histories, and whether the root gave up."""

    def __init__(self, spec: SupervisorSpec) -> None:
        self._nodes: dict[str, _Node] = {}
        self._children: dict[str, Child | SupervisorSpec] = {}
        self._index(spec, spec.name)
        self.root = spec.name

    def _index(self, spec: SupervisorSpec, path: str) -> None:
        if not 0 <= spec.intensity <= 1000 or spec.period <= 0:
            raise errors.InvalidInput(f"supervisor {path}: intensity 0..1000, period > 0")
        names = [c.name for c in spec.children]
        if len(set(names)) != len(names):
            raise errors.InvalidInput(f"supervisor {path}: child names must be unique")
        self._nodes[path] = _Node(spec, path)
        for child in spec.children:
            self._children[f"{path}/{child.name}"] = child
            if isinstance(child, SupervisorSpec):
                self._index(child, f"{path}/{child.name}")

    @property
    def failed(self) -> bool:
        return self._nodes[self.root].failed

    def exited(self, path: str, reason: Reason, now: float) -> list[Action]:
        """A child at ``path`` exited: the actions that follow, in order."""
        if path not in self._children:
            raise errors.NotFound(f"no child {path!r} in supervision tree {self.root}")
        if self.failed:
            return []  # the root gave up and escalated already
        parent = self._nodes[path.rsplit("/", 1)[0]]
        child = self._children[path]
        if child.restart == "temporary" or (child.restart == "transient" and reason == "normal"):
            return []
        parent.restarts.append(now)
        while parent.restarts and parent.restarts[0] <= now - parent.spec.period:
            parent.restarts.popleft()
        if len(parent.restarts) > parent.spec.intensity:
            return self._give_up(parent, now)
        return [Action("restart", p, reason) for p in self._to_restart(parent, path)]

    def _to_restart(self, parent: _Node, path: str) -> list[str]:
        siblings = [f"{parent.path}/{c.name}" for c in parent.spec.children]
        if parent.spec.strategy == "one_for_one":
            return [path]
        if parent.spec.strategy == "one_for_all":
            return siblings
        return siblings[siblings.index(path) :]

    def _give_up(self, node: _Node, now: float) -> list[Action]:
        stops = [Action("stop", f"{node.path}/{c.name}") for c in reversed(node.spec.children)]
        why = f"{node.path}: more than {node.spec.intensity} restarts in {node.spec.period:g} s"
        node.restarts.clear()
        if node.path == self.root:
            node.failed = True
            return [*stops, Action("escalate", node.path, why)]
        return [*stops, *self.exited(node.path, "error", now)]
