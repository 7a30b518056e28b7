"""The one atomic-write helper and the one owner format (pmlbal.files, pmlbal.procs)."""

import os
import socket

import matplotlib.pyplot as plt
import pytest

from pmlbal.figures import save_figure
from pmlbal.files import atomic_path, atomic_write_text
from pmlbal.procs import owner_alive, owner_id
from tests.helpers import dead_pid


def test_atomic_path_renames_into_place_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "state.bin"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".state.bin.")
        tmp.write_bytes(b"new")
        assert not target.exists()  # nothing under the final name before the block ends
    assert target.read_bytes() == b"new" and os.listdir(target.parent) == ["state.bin"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    target = tmp_path / "state.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("disk full")
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["state.bin"]
    with pytest.raises(ZeroDivisionError):
        atomic_write_text(target, str(1 / 0))
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["state.bin"]


def test_a_figure_is_written_whole_in_the_format_of_its_name(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    save_figure(fig, tmp_path / "curve.png")
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert os.listdir(tmp_path) == ["curve.png"] and fig.number not in plt.get_fignums()  # closed


def test_owner_format_and_liveness():
    me = owner_id()
    assert me == f"{socket.gethostname()}:{os.getpid()}" and owner_alive(me)
    assert not owner_alive(f"{socket.gethostname()}:{dead_pid()}")
    assert owner_alive("another-host:1")  # cannot be checked from here: trusted
    for broken in ("", "host", f"{socket.gethostname()} {os.getpid()}", "host:", ":12"):
        assert not owner_alive(broken), broken


def test_written_files_get_an_ordinary_files_mode_not_mkstemps_0600(tmp_path):
    """Records and boards in a shared results folder are readable by its other users."""
    import pmlbal.files as files

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "board.md", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "board.md").stat().st_mode & 0o777 == files.FILE_MODE == 0o666 & ~old


def test_only_dead_writers_temporaries_are_removed(tmp_path):
    from pmlbal.procs import remove_dead_temporaries

    dead, mine = tmp_path / f".r.json.x1.{dead_pid()}.tmp", tmp_path / f".r.json.x2.{os.getpid()}.tmp"
    odd = tmp_path / ".r.json.notapid.tmp"
    for f in (dead, mine, odd):
        f.write_text("partial")
    assert remove_dead_temporaries(tmp_path, ".*.json.*.tmp") == [dead]
    assert mine.exists() and odd.exists()


def test_a_refused_torch_load_is_named_in_one_line_without_the_unsafe_advice(tmp_path):
    import pickle
    import random

    import torch

    from pmlbal.files import describe_load_error

    foreign = tmp_path / "foreign.pt"
    torch.save({"obj": socket.AF_INET}, foreign)  # an enum: weights_only refuses it
    torch_errors = []
    for path, data in ((foreign, None), (tmp_path / "half.pt", b"PK\x03\x04 half a zip")):
        if data is not None:
            path.write_bytes(data)
        try:
            torch.load(path, weights_only=True)
        except Exception as err:  # noqa: BLE001 - torch raises several unrelated types
            torch_errors.append(err)
    assert len(torch_errors) == 2
    for err in torch_errors + [pickle.UnpicklingError("Weights only load failed. ... weights_only=False ...")]:
        text = describe_load_error(err)
        assert "weights_only" not in text and "\n" not in text
    assert "not a file pmlbal wrote" in describe_load_error(torch_errors[0])
    # Random bytes (fault trial, second round, case 47): torch's parser says anything of them, mostly
    # "Weights only load failed"; the file's first bytes settle it.
    noise = tmp_path / "noise.ckpt"
    for seed in range(5):
        noise.write_bytes(random.Random(seed).randbytes(5000))
        try:
            torch.load(noise, weights_only=True)
        except Exception as err:  # noqa: BLE001
            assert describe_load_error(err, noise).startswith("it is not a file torch wrote"), seed
    assert "not a file pmlbal wrote" in describe_load_error(torch_errors[0], foreign)  # a torch file after all
