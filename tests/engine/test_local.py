"""Local maildir delivery: durable, unique, never escaping the maildir folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from delivery.engine import local


def test_delivers_into_new_with_trace_headers_and_lf_line_ends(tmp_path: Path) -> None:
    path = local.deliver(
        tmp_path, "Bob@Example.ORG", b"Subject: hi\r\n\r\nbody\r\n", return_path="a@b.test"
    )
    assert path.parent == tmp_path / "maildir" / "example.org" / "Bob" / "new"
    assert path.read_bytes() == (
        b"Return-Path: <a@b.test>\nDelivered-To: Bob@Example.ORG\nSubject: hi\n\nbody\n"
    )
    assert list((path.parent.parent / "tmp").iterdir()) == []
    assert (path.parent.parent / "cur").is_dir()


def test_each_message_gets_its_own_file(tmp_path: Path) -> None:
    paths = {local.deliver(tmp_path, "a@example.org", b"x\r\n", return_path="") for _ in range(5)}
    assert len(paths) == 5


@pytest.mark.parametrize(
    "recipient",
    ["../../etc@example.org", "a/b@example.org", ".hidden@example.org", "x@../..", "@example.org"],
)
def test_hostile_addresses_stay_inside_the_maildir_folder(tmp_path: Path, recipient: str) -> None:
    path = local.deliver(tmp_path, recipient, b"x\r\n", return_path="")
    root = (tmp_path / "maildir").resolve()
    assert path.resolve().is_relative_to(root)
    box = path.parent.parent
    assert box.parent.parent == tmp_path / "maildir"
    assert not box.name.startswith(".") and not box.parent.name.startswith(".")


def test_unwritable_folder_raises_and_leaves_nothing(tmp_path: Path) -> None:
    (tmp_path / "maildir").write_text("not a folder")
    with pytest.raises(OSError):
        local.deliver(tmp_path, "a@example.org", b"x\r\n", return_path="")
