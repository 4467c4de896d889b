"""The atomic writers: files get the mode a plain open() gives (umask honoured), and a failed or
killed write never touches the file that was there before."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from conftest import REPO

from fairseq_admin.profile_file import AdminProfile, load_profile, save_profile
from fairseq_admin_tools.files import torch_save_atomically, write_atomically


@pytest.fixture
def umask(request) -> Iterator[int]:
    """Run the test under ``request.param`` as the process umask, restoring the old one after."""
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def write_each_kind(profile: AdminProfile, directory: Path) -> dict[str, Path]:
    """One file from each writer fairseq-admin uses: the profile, plain text, a checkpoint."""
    paths = {"profile": directory / "admin_profile.json", "text": directory / "result.json",
             "checkpoint": directory / "checkpoint.pt"}
    save_profile(profile, str(paths["profile"]))
    write_atomically(str(paths["text"]), '{"bleu": 33.5, "note": "ω"}\n')
    torch_save_atomically({"model": {"w": torch.arange(6.0)}}, str(paths["checkpoint"]))
    return paths


@pytest.mark.parametrize(("umask", "expected"), [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)],
                         indirect=["umask"])
def test_written_files_get_the_mode_open_would_give(umask, expected, profile_path, tmp_path):
    profile = load_profile(str(profile_path))  # a real one, from conftest's profiling run
    paths = write_each_kind(profile, tmp_path / "new" / "dir")
    for kind, path in paths.items():
        assert stat.S_IMODE(path.stat().st_mode) == expected, (kind, oct(path.stat().st_mode))
    plain = tmp_path / "plain.txt"
    with open(plain, "w") as f:
        f.write("x")
    assert stat.S_IMODE(plain.stat().st_mode) == expected  # the reference: what open() gives
    assert load_profile(str(paths["profile"])) == profile
    assert paths["text"].read_text(encoding="utf-8") == '{"bleu": 33.5, "note": "ω"}\n'
    assert torch.equal(torch.load(paths["checkpoint"])["model"]["w"], torch.arange(6.0))
    assert sorted(p.name for p in paths["profile"].parent.iterdir()) == sorted(p.name for p in paths.values())


class FailsWhilePickled:
    """Raises in the middle of torch.save, after part of the new file has been written."""

    def __reduce__(self):
        raise KeyboardInterrupt("interrupted while writing")


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path):
    checkpoint, text = tmp_path / "checkpoint_best.pt", tmp_path / "admin_profile.json"
    torch_save_atomically({"w": torch.ones(3)}, str(checkpoint))
    write_atomically(str(text), "old\n")
    old_bytes = checkpoint.read_bytes()
    with pytest.raises(KeyboardInterrupt):
        torch_save_atomically({"w": torch.zeros(100_000), "later": FailsWhilePickled()}, str(checkpoint))
    with pytest.raises(TypeError):
        write_atomically(str(text), None)  # type: ignore[arg-type]
    assert checkpoint.read_bytes() == old_bytes
    assert text.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["admin_profile.json", "checkpoint_best.pt"]


KILLED_WRITER = """
import sys, time, torch
from pathlib import Path
from fairseq_admin_tools.files import torch_save_atomically

class Stall:
    def __reduce__(self):
        Path(sys.argv[2]).touch()  # tell the test we are inside the write
        time.sleep(60)
        return (int, ())

torch_save_atomically({"w": torch.zeros(100_000), "stall": Stall()}, sys.argv[1])
"""


def test_a_killed_writer_leaves_the_old_file_intact(tmp_path):
    checkpoint, inside = tmp_path / "checkpoint_last.pt", tmp_path / "inside"
    torch_save_atomically({"w": torch.ones(3)}, str(checkpoint))
    old_bytes = checkpoint.read_bytes()
    child = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(checkpoint), str(inside)], cwd=REPO)
    try:
        deadline = time.monotonic() + 120
        while not inside.exists():
            assert child.poll() is None, "the writer exited before it started writing"
            assert time.monotonic() < deadline, "the writer never started writing"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL
    assert checkpoint.read_bytes() == old_bytes
    assert torch.equal(torch.load(checkpoint)["w"], torch.ones(3))
    # A killed process cannot clean up; what it leaves is a hidden temporary, never the real name.
    leftovers = [p.name for p in tmp_path.iterdir() if p.name not in ("checkpoint_last.pt", "inside")]
    assert all(name.startswith(".checkpoint_last.pt.") and name.endswith(".tmp") for name in leftovers), leftovers
