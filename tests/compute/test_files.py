"""The host-side files API: confined to the workspace, never following a symlink."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from underlay import errors
from underlay.compute.files import WorkspaceFiles, encode, split


@pytest.fixture
def ws(tmp_path: Path) -> WorkspaceFiles:
    root = tmp_path / "ws"
    root.mkdir()
    return WorkspaceFiles(root, os.getuid(), os.getgid())


def test_split_accepts_workspace_paths_and_relative_ones() -> None:
    assert split("/workspace/a/b.txt") == ["a", "b.txt"]
    assert split("a/./c/../b") == ["a", "b"]
    assert split("/workspace") == []


@pytest.mark.parametrize("bad", ["/etc/passwd", "../x", "/workspace/../etc", "a/../../b", ""])
def test_split_rejects_paths_that_escape(bad: str) -> None:
    with pytest.raises(errors.InvalidInput) as info:
        split(bad)
    assert info.value.field == "path"


def test_write_read_list_remove(ws: WorkspaceFiles) -> None:
    assert ws.write("d/e/f.txt", b"hello") == "/workspace/d/e/f.txt"
    data, path = ws.read("/workspace/d/e/f.txt")
    assert (data, path) == (b"hello", "/workspace/d/e/f.txt")
    names = [f.path for f in ws.list("/workspace", depth=3)]
    assert names == ["/workspace/d", "/workspace/d/e", "/workspace/d/e/f.txt"]
    with pytest.raises(errors.Conflict):
        ws.remove("d")
    ws.remove("d", recursive=True)
    assert ws.list("/workspace") == []


def test_read_missing_file_is_not_found(ws: WorkspaceFiles) -> None:
    with pytest.raises(errors.NotFound):
        ws.read("nope.txt")


def test_symlink_to_host_file_is_not_followed_on_read(ws: WorkspaceFiles) -> None:
    (ws.root / "link").symlink_to("/etc/hostname")
    with pytest.raises(errors.InvalidInput, match="symlink"):
        ws.read("link")


def test_symlinked_directory_is_not_followed_on_write(ws: WorkspaceFiles, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (ws.root / "dir").symlink_to(outside)
    with pytest.raises(errors.InvalidInput, match="symlink"):
        ws.write("dir/planted.txt", b"x")
    assert not (outside / "planted.txt").exists()


def test_write_does_not_follow_a_symlink_at_the_target(ws: WorkspaceFiles, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (ws.root / "f").symlink_to(victim)
    with pytest.raises(errors.InvalidInput):
        ws.write("f", b"overwritten")
    assert victim.read_text() == "keep"


def test_remove_of_symlinked_dir_removes_only_the_link(ws: WorkspaceFiles, tmp_path: Path) -> None:
    outside = tmp_path / "keepme"
    outside.mkdir()
    (outside / "precious").write_text("x")
    (ws.root / "l").symlink_to(outside)
    ws.remove("l")
    assert (outside / "precious").exists()


def test_fifo_is_refused_without_blocking(ws: WorkspaceFiles) -> None:
    os.mkfifo(ws.root / "pipe")
    with pytest.raises(errors.InvalidInput, match="regular"):
        ws.read("pipe")


def test_list_shows_symlinks_as_such(ws: WorkspaceFiles) -> None:
    (ws.root / "l").symlink_to("/")
    [info] = ws.list("/workspace", depth=4)
    assert info.type == "symlink"


def test_encode_uses_base64_for_binary() -> None:
    assert encode(b"hi") == ("hi", "utf-8")
    assert encode(b"\xff\x00") == ("/wA=", "base64")
