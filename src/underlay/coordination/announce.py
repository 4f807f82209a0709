"""What the merge queue tells the organisation and the agents: events and messages.

Written inside the caller's transaction (``events.append``, ``mailbox.deliver``), so a
verdict, its event and its author's message commit together or not at all; the caller
wakes long-polling readers after the commit (``notify.wake``). Nothing here carries a
secret: events name the change, repository, agent, task and commit, with at most the
first line of a check's output; the author's message carries the output's tail (both
scrubbed by the comms layer), which ``queue.get`` shows the author anyway.

* ``verdict``: event ``queue.<landed|rejected|conflict|escalated>`` for every verdict,
  and a message to the change's author for every verdict but ``landed``, with what it
  needs to fix the branch.
* ``predicted``: event ``queue.conflict_predicted`` and a message to each agent of a
  predicted conflict, naming the other side, its branch and the paths.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from underlay.comms import events, mailbox
from underlay.comms.scrub import first_line, tail

SENDER = "merge-queue"


def verdict(
    conn: Connection, repo: Any, change: Any, state: str, values: dict[str, Any], now: float
) -> None:
    """The event of one verdict, and (unless it landed) the message to its author."""
    detail = str(values.get("detail", ""))
    about = {
        "change": change.id, "repo": repo.name, "ref": change.ref, "head": change.head,
        "agent": change.submitted_by, "task": change.task_id,
    }  # fmt: skip
    event = {
        **about, "state": state, "commit": values.get("landed_commit"),
        "conflicts": list(values.get("conflicts", [])), "summary": first_line(detail),
        "check_seconds": values.get("check_seconds", change.check_seconds),
        "escalation": values.get("escalation_id"),
    }  # fmt: skip
    events.append(conn, repo.org_id, f"queue.{state}", change.id, event, now)
    if state == "landed":
        return
    body: dict[str, Any] = {**about, "state": state}
    tries = f"after {repo.settings['max_conflict_tries']} conflicts a human is asked"
    if state == "rejected":
        body["output"] = tail(detail)
        body["next"] = f"fix {change.ref} so the checks pass, then submit it again"
    else:
        body["conflicts"] = list(values.get("conflicts", []))
        body["tries"] = values.get("tries", change.tries)
        body["next"] = (
            f"merge {repo.target} into {change.ref}, resolve these paths and submit it "
            f"again ({tries})"
        )
    if state == "escalated":
        body["escalation"] = values.get("escalation_id")
        body["next"] = f"a human was asked (escalation {values.get('escalation_id')})"
    subject = f"{change.ref} {state} in {repo.name}"
    if state == "rejected" and first_line(detail):
        subject += f": {first_line(detail, 120)}"
    mailbox.deliver(conn, repo.org_id, change.submitted_by, SENDER, subject, body, now)


def side(branch: Any) -> dict[str, Any]:
    """One side of a predicted conflict, as events and messages name it."""
    return {"kind": branch.kind, "id": branch.id, "ref": branch.ref, "head": branch.head,
            "agent": branch.agent}  # fmt: skip


def predicted(
    conn: Connection, repo: Any, a: Any, b: Any, conflicts: list[str], now: float
) -> None:
    """A newly predicted conflict between ``a`` and ``b`` (a branch, or the target:
    ``b.kind == "target"``): the event, and a message to each agent involved."""
    paths = ", ".join(conflicts[:5]) + (f" (+{len(conflicts) - 5})" if len(conflicts) > 5 else "")
    payload = {"repo": repo.name, "a": side(a), "b": side(b), "conflicts": conflicts}
    events.append(conn, repo.org_id, "queue.conflict_predicted", a.id, payload, now)
    told: set[str] = set()
    for mine, other in ((a, b), (b, a)):
        if mine.kind == "target" or mine.agent in told:
            continue
        told.add(mine.agent)
        if other.kind == "target":
            whose = "the target"
            advice = f"merge {other.ref} into {mine.ref} and resolve these paths: as is, it "
            advice += "cannot land"
        else:
            whose = f"{other.agent}'s {other.kind}"
            advice = f"agree with {other.agent} who changes these paths first (claims help), "
            advice += "or merge their branch early: whichever lands second will conflict"
        body = {"repo": repo.name, "yours": side(mine), "other": side(other),
                "conflicts": conflicts, "next": advice}  # fmt: skip
        subject = f"predicted conflict: {mine.ref} with {other.ref} ({whose}) in {paths}"
        mailbox.deliver(conn, repo.org_id, mine.agent, SENDER, subject, body, now)
