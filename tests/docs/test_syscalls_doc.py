"""docs/syscalls.md is generated from the table and must not drift from it."""

from pathlib import Path

from underlay.kernel.builtin import builtin_table
from underlay.kernel.docgen import syscalls_markdown

DOC = Path(__file__).resolve().parents[2] / "docs" / "syscalls.md"


def test_syscalls_doc_matches_table() -> None:
    expected = syscalls_markdown(builtin_table())
    assert DOC.read_text() == expected, (
        "docs/syscalls.md is stale: run `underlay syscalls --markdown > docs/syscalls.md`"
    )


def test_every_syscall_is_documented() -> None:
    text = DOC.read_text()
    for sc in builtin_table():
        assert f"| `{sc.name}` |" in text
