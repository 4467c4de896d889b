"""fairseq-admin-export: a trained Admin checkpoint folded into a stock transformer translates the same.

Real checkpoints (profiling, then --init-type adaptive for enough updates that ω leaves its profile
values) and real fairseq-generate subprocesses; the exported one is loaded by stock fairseq, without
--user-dir, under torch's default weights_only=True.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import BIN, REPO, TINY_MODEL, TINY_TRAINING, fairseq

from fairseq_admin.export import export
from fairseq_admin.profile_file import load_profile
from fairseq_admin_tools.errors import AdminError

TEST_SENTENCES = 100
TRAIN_UPDATES = 80
# --required-batch-size-multiple 1: fairseq-fixed otherwise drops the sentences past the last multiple of 8.
GENERATE = ["--gen-subset", "test", "--cpu", "--batch-size", "50", "--required-batch-size-multiple", "1",
            "--max-len-b", "40"]


def write_small_test_split(data_bin: Path, dest: Path, count: int) -> Path:
    """The dictionaries and the first ``count`` test pairs, so each fairseq-generate call stays short."""
    from fairseq.data import indexed_dataset

    dest.mkdir(parents=True, exist_ok=True)
    for dictionary in data_bin.glob("dict.*.txt"):
        shutil.copy(dictionary, dest / dictionary.name)
    for lang in ("de", "en"):
        prefix = f"test.de-en.{lang}"
        source = indexed_dataset.make_dataset(str(data_bin / prefix), impl="mmap")
        builder = indexed_dataset.make_builder(str(dest / f"{prefix}.bin"), impl="mmap", vocab_size=1000)
        for i in range(min(count, len(source))):
            builder.add_item(source[i])
        builder.finalize(str(dest / f"{prefix}.idx"))
    return dest


@pytest.fixture(scope="module")
def small_test_bin(data_bin: Path, tmp_path_factory) -> Path:
    return write_small_test_split(data_bin, tmp_path_factory.mktemp("small_test"), TEST_SENTENCES)


@pytest.fixture(scope="module")
def trained_admin(data_bin: Path, profile_path: Path, tmp_path_factory) -> Path:
    """checkpoint_last.pt of an adaptive Admin model trained TRAIN_UPDATES updates (optimizer state kept)."""
    save_dir = tmp_path_factory.mktemp("admin_trained")
    fairseq("fairseq-train", data_bin, "--user-dir", "fairseq_admin", *TINY_MODEL, *TINY_TRAINING,
            "--init-type", "adaptive", "--admin-profile", profile_path, "--save-dir", save_dir,
            "--max-update", str(TRAIN_UPDATES), "--lr", "5e-3", "--no-epoch-checkpoints", "--disable-validation")
    return save_dir / "checkpoint_last.pt"


def hypotheses(output: str) -> dict[int, tuple[float, str]]:
    """``H-<id>\\t<score>\\t<tokens>`` lines of fairseq-generate, by sentence id."""
    result = {}
    for line in output.splitlines():
        if line.startswith("H-"):
            key, score, tokens = line.split("\t")
            result[int(key[2:])] = (float(score), tokens)
    return result


def test_omega_moved_from_profile(trained_admin: Path, profile_path: Path) -> None:
    """Otherwise the round trip below would only test folding the profile's scalars."""
    model = torch.load(trained_admin, map_location="cpu", weights_only=True)["model"]
    profile = load_profile(str(profile_path))
    for side in ("encoder", "decoder"):
        keys = sorted((k for k in model if k.startswith(f"{side}.") and k.endswith(".omega")),
                      key=lambda k: (int(k.split(".")[2]), int(k.split(".")[4])))
        omegas = profile.omegas(side)
        assert len(keys) == len(omegas)
        assert torch.equal(model[keys[0]], torch.ones_like(model[keys[0]]))  # ω_1 stays the constant 1
        moved = [(model[k] - w).abs().max().item() for k, w in zip(keys[1:], omegas[1:], strict=True)]
        assert min(moved) > 1e-3 and max(moved) > 1e-2, moved


def test_export_round_trip(trained_admin: Path, small_test_bin: Path, tmp_path: Path) -> None:
    out = tmp_path / "stock.pt"
    result = subprocess.run([str(BIN / "fairseq-admin-export"), str(trained_admin), str(out)],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr

    # A stock checkpoint: no plugin keys or config, no optimizer state, nothing weights_only refuses.
    check = subprocess.run(
        [str(BIN / "python"), "-c",
         "import sys, torch; s = torch.load(sys.argv[1], weights_only=True); "
         "assert s['cfg']['model']['arch'] == s['cfg']['model']['_name'] == 'transformer'; "
         "assert not any('admin' in k for k in s['model']), 'admin keys'; "
         "assert not any(k.startswith('admin') or k == 'init_type' for k in s['cfg']['model']); "
         "assert 'last_optimizer_state' not in s; print('ok')", str(out)],
        capture_output=True, text=True)
    assert check.stdout.strip() == "ok", check.stderr[-2000:]

    for beam in ("1", "4"):
        plugin = fairseq("fairseq-generate", small_test_bin, "--user-dir", "fairseq_admin",
                         "--path", trained_admin, "--beam", beam, *GENERATE)
        stock = fairseq("fairseq-generate", small_test_bin, "--path", out, "--beam", beam, *GENERATE)
        assert "fairseq_admin" not in stock.stderr
        ours, theirs = hypotheses(plugin.stdout), hypotheses(stock.stdout)
        assert len(ours) == TEST_SENTENCES and ours.keys() == theirs.keys()
        assert len({tokens for _, tokens in ours.values()}) > 5  # not one degenerate output for everything
        for sid, (score, tokens) in ours.items():
            assert theirs[sid][1] == tokens, f"beam {beam}, sentence {sid}"
            assert abs(theirs[sid][0] - score) <= 1e-4, f"beam {beam}, sentence {sid}: {score} vs {theirs[sid][0]}"


def _modified_checkpoint(source: Path, dest: Path, change) -> Path:
    state = torch.load(source, map_location="cpu", weights_only=True)
    change(state)
    torch.save(state, dest)
    return dest


def test_export_refuses_what_it_cannot_fold(trained_admin: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.pt"

    def omega_1(state):
        state["model"]["encoder.layers.0.admin_shortcuts.0.omega"].fill_(1.5)

    def extra_key(state):
        state["model"]["decoder.layers.0.something_new"] = torch.zeros(3)

    def pre_ln(state):
        state["cfg"]["model"]["decoder_normalize_before"] = True  # a plain dict: the dataclass config, saved

    def layerdrop(state):
        state["cfg"]["model"]["encoder_layerdrop"] = 0.1

    for change, message in ((omega_1, "ω_1"), (extra_key, "something_new"), (pre_ln, "Pre-LN"),
                            (layerdrop, "layerdrop")):
        bad = _modified_checkpoint(trained_admin, tmp_path / f"{change.__name__}.pt", change)
        with pytest.raises(AdminError, match=message):
            export(str(bad), str(out))
        assert not out.exists()

    # The CLI: one line on stderr, exit status 1, and IN is never the output.
    result = subprocess.run([str(BIN / "fairseq-admin-export"), str(trained_admin), str(trained_admin)],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("fairseq-admin-export: error: refusing to overwrite")
    assert "Traceback" not in result.stderr
