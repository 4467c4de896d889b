"""The user's workflow with real fairseq processes on real Multi30k: profile -> train -> resume -> generate."""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import sacrebleu
import torch
from conftest import REPO, TINY_MODEL, TINY_TRAINING, build_model, fairseq, train_log

TINY_BRANCHES = {"encoder": 2 * 3, "decoder": 3 * 3}


def _branches(path: Path) -> list[dict]:
    return json.loads(path.read_text())["branches"]


def _omegas(branches: list[dict], side: str) -> list[float]:
    return [b["omega"] for b in branches if b["side"] == side]


def test_profiling_writes_the_profile_and_nothing_else(profile_path: Path):
    branches = _branches(profile_path)
    for side, count in TINY_BRANCHES.items():
        omegas = _omegas(branches, side)
        assert len(omegas) == count
        assert omegas[0] == 1.0
        assert omegas == sorted(omegas) and len(set(omegas)) == len(omegas), omegas  # grows with depth
    data = json.loads(profile_path.read_text())["data"]
    assert data["tokens"] >= 4096 and data["seed"] == 1
    assert sorted(p.name for p in profile_path.parent.iterdir()) == ["admin_profile.json"]  # no checkpoint


def test_same_seed_gives_the_same_profile_and_bf16_does_not_change_it(data_bin, profile_path, tmp_path):
    again = tmp_path / "again.json"
    result = fairseq("fairseq-train", data_bin, "--user-dir", "fairseq_admin", *TINY_MODEL, *TINY_TRAINING,
                     "--init-type", "adaptive-profiling", "--save-dir", tmp_path / "ck", "--admin-profile", again,
                     "--admin-profile-tokens", "4096", "--bf16")
    assert _branches(again) == _branches(profile_path)  # statistics are taken in fp32 whatever --bf16 says
    assert "enc.self_attn" in result.stdout  # the per-layer table
    assert not (tmp_path / "ck").exists() or not any((tmp_path / "ck").glob("*.pt"))


def test_profiling_does_not_touch_the_parameters(data_bin):
    """In-process: the same code path fairseq-train calls, with the weights compared before and after."""
    from fairseq_admin.profiling import profile_model

    args, task, model = build_model(data_bin, "--admin-profile-tokens", "2048")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    profile = profile_model(model, args, task)
    assert profile.data.tokens >= 2048
    after = model.state_dict()
    for name, value in before.items():
        if not name.endswith(".omega"):
            assert torch.equal(value, after[name]), name
    assert all(p.grad is None for p in model.parameters())  # forward only


def test_profiling_refuses_to_replace_an_existing_profile(data_bin, profile_path, tmp_path):
    path = tmp_path / "admin_profile.json"
    shutil.copy(profile_path, path)
    before = path.read_bytes()
    result = fairseq("fairseq-train", data_bin, "--user-dir", "fairseq_admin", *TINY_MODEL, *TINY_TRAINING,
                     "--init-type", "adaptive-profiling", "--save-dir", tmp_path, check=False)
    assert result.returncode != 0
    assert "already exists" in result.stderr and "Traceback" not in result.stderr
    assert path.read_bytes() == before


def test_adaptive_trains_resumes_without_profile_and_decodes(data_bin, data_dir, profile_path, tmp_path):
    save_dir = tmp_path / "ck"
    save_dir.mkdir()
    shutil.copy(profile_path, save_dir / "admin_profile.json")
    train = ["fairseq-train", data_bin, "--user-dir", "fairseq_admin", *TINY_MODEL, *TINY_TRAINING,
             "--init-type", "adaptive", "--save-dir", save_dir, "--no-epoch-checkpoints", "--max-valid-steps", "2"]
    first = fairseq(*train, "--max-update", "16")
    losses = train_log(first.stdout)
    assert len(losses) == 16
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 - 0.3, losses  # it learns

    state = torch.load(save_dir / "checkpoint_last.pt")  # weights_only, thanks to the plugin
    profile = _branches(profile_path)
    for side in ("encoder", "decoder"):
        keys = sorted((k for k in state["model"] if k.startswith(side) and k.endswith(".omega")),
                      key=lambda k: [int(p) if p.isdigit() else p for p in k.split(".")])
        trained = [state["model"][k] for k in keys]
        assert len(trained) == TINY_BRANCHES[side]
        assert torch.equal(trained[0], torch.ones_like(trained[0]))  # ω_1 stays 1
        for value, expected in zip(trained, _omegas(profile, side), strict=True):
            assert torch.allclose(value, torch.full_like(value, expected), rtol=0.1)  # from the profile, trained

    (save_dir / "admin_profile.json").unlink()
    resumed = fairseq(*train, "--max-update", "18")
    assert "ω from" in resumed.stdout and "checkpoint_last.pt" in resumed.stdout
    assert train_log(resumed.stdout) and "num_updates=18" in resumed.stdout

    generated = fairseq("fairseq-generate", data_bin, "--user-dir", "fairseq_admin",
                        "--path", save_dir / "checkpoint_last.pt", "--gen-subset", "valid", "--beam", "2",
                        "--batch-size", "200", "--required-batch-size-multiple", "1",
                        "--max-len-a", "1.2", "--max-len-b", "5", "--cpu",
                        "--bpe", "sentencepiece", "--sentencepiece-model", data_dir / "spm.model")
    hypotheses = {}
    for line in generated.stdout.splitlines():
        if line.startswith("D-"):
            index, _score, text = (line.split("\t") + [""])[:3]
            hypotheses[int(index[2:])] = text
    references = (data_dir / "text" / "valid.raw.en").read_text().splitlines()
    assert len(hypotheses) == len(references)
    bleu = sacrebleu.corpus_bleu([hypotheses[i] for i in range(len(references))], [references])
    assert math.isfinite(bleu.score) and bleu.score >= 0


def test_fixed_omega_is_exactly_the_profile_and_bf16_trains(data_bin, profile_path, tmp_path):
    save_dir = tmp_path / "ck"
    save_dir.mkdir()
    shutil.copy(profile_path, save_dir / "admin_profile.json")
    result = fairseq("fairseq-train", data_bin, "--user-dir", "fairseq_admin", *TINY_MODEL, *TINY_TRAINING,
                     "--init-type", "adaptive", "--admin-omega-fixed", "--bf16", "--save-dir", save_dir,
                     "--max-update", "6", "--no-epoch-checkpoints", "--max-valid-steps", "1")
    losses = train_log(result.stdout)
    assert len(losses) == 6 and all(math.isfinite(v) for v in losses)
    state = torch.load(save_dir / "checkpoint_last.pt")
    expected = _omegas(_branches(profile_path), "decoder")[-1]
    last = state["model"]["decoder.layers.2.admin_shortcuts.2.omega"].float()
    assert torch.allclose(last, torch.full_like(last, expected), rtol=1e-2)  # bf16 storage of a constant ω


def test_default_init_is_the_stock_transformer(data_bin, tmp_path):
    """Same seed, dims and batches: transformer_admin --init-type default logs the stock transformer's losses."""
    common = [*TINY_TRAINING, "--max-update", "5", "--no-save", "--disable-validation", "--dropout", "0.1"]
    dims = TINY_MODEL[2:]  # everything but --arch
    ours = fairseq("fairseq-train", data_bin, "--user-dir", "fairseq_admin", "--arch", "transformer_admin",
                   *dims, "--init-type", "default", *common, "--save-dir", tmp_path / "a")
    stock = fairseq("fairseq-train", data_bin, "--user-dir", "fairseq_admin", "--arch", "transformer",
                    *dims, *common, "--save-dir", tmp_path / "b")
    for key in ("loss", "nll_loss", "gnorm"):
        assert train_log(ours.stdout, key) == train_log(stock.stdout, key)
        assert len(train_log(ours.stdout, key)) == 5


def test_user_dir_of_the_installed_package():
    """`fairseq-admin-dir` prints what --user-dir needs when the package is installed."""
    import subprocess

    out = subprocess.run([str(Path(sys.executable).parent / "fairseq-admin-dir")], capture_output=True,
                         text=True, check=True).stdout.strip()
    assert Path(out) == REPO / "fairseq_admin"
