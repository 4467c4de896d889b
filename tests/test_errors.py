"""Bad input: one clear error line, exit status != 0, no traceback, and nothing the user had is changed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import TINY_MODEL, TINY_TRAINING, fairseq


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())} if directory.exists() else {}


def _truncate(path: Path) -> None:
    path.write_text(path.read_text()[:150])


def _nan(path: Path) -> None:
    profile = json.loads(path.read_text())
    text = json.dumps(profile, indent=1)
    path.write_text(text.replace(f'"omega": {profile["branches"][3]["omega"]}', '"omega": NaN', 1))


def _inf(path: Path) -> None:
    profile = json.loads(path.read_text())
    text = json.dumps(profile, indent=1)
    path.write_text(text.replace(f'"var_branch": {profile["branches"][2]["var_branch"]}', '"var_branch": Infinity', 1))


CASES = {
    # name: (how to damage the profile in save_dir (None: no profile), extra flags, words the error must contain)
    "missing named profile": (None, ["--init-type", "adaptive", "--admin-profile", "no/such/profile.json"],
                              ["no Admin profile at no/such/profile.json", "leave --admin-profile out"]),
    "profile of another model": ("keep", ["--init-type", "adaptive", "--encoder-layers", "4"],
                                 ["different model", "encoder_layers: profile 3, model 4"]),
    "truncated profile": (_truncate, ["--init-type", "adaptive"], ["not valid JSON", "truncated"]),
    "NaN in profile": (_nan, ["--init-type", "adaptive"], ["non-finite"]),
    "inf in profile": (_inf, ["--init-type", "adaptive"], ["non-finite"]),
    "pre-LN with adaptive": ("keep", ["--init-type", "adaptive", "--encoder-normalize-before"],
                             ["Post-LN", "--encoder-normalize-before"]),
    "pre-LN with profiling": (None, ["--init-type", "adaptive-profiling", "--decoder-normalize-before"],
                              ["Post-LN"]),
    "profile under another dropout": ("keep", ["--init-type", "adaptive", "--dropout", "0.3"],
                                      ["other settings that change ω", "dropout: profiled 0.1, now 0.3"]),
    "profile with another padding mode": ("keep", ["--init-type", "adaptive", "--admin-profile-padding", "include"],
                                          ["profile_padding: profiled 'exclude', now 'include'"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_clear_error(case, data_bin, profile_path, tmp_path):
    damage, flags, words = CASES[case]
    save_dir = tmp_path / "ck"
    save_dir.mkdir()
    if damage is not None:
        shutil.copy(profile_path, save_dir / "admin_profile.json")
        if callable(damage):
            damage(save_dir / "admin_profile.json")
    (save_dir / "notes.txt").write_text("the user's own file\n")
    before = _snapshot(save_dir)

    result = fairseq("fairseq-train", data_bin, "--user-dir", "fairseq_admin", *TINY_MODEL, *TINY_TRAINING,
                     *flags, "--save-dir", save_dir, "--max-update", "2", check=False)

    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("fairseq-admin: error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    for word in words:
        assert word in errors[0]
    assert "Traceback" not in result.stderr + result.stdout
    assert _snapshot(save_dir) == before
