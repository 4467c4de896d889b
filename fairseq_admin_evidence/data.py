"""The data every measurement uses: Multi30k de-en, prepared once with the repository's own prepare CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from fairseq_admin_evidence.common import REPO
from fairseq_admin_evidence.runs import fairseq_env

DEFAULT_DATA = REPO / "work" / "multi30k_de_en"


def ensure_data(dest: Path = DEFAULT_DATA, vocab_size: int = 8000, max_train_pairs: int | None = None) -> Path:
    """Prepared Multi30k de-en (joint spm + fairseq-preprocess) via our own prepare CLI; returns bin/."""
    if (dest / "bin").is_dir():
        return dest / "bin"
    command = [sys.executable, "-m", "fairseq_admin_tools.prepare", "--dest", str(dest),
               "--vocab-size", str(vocab_size)]
    if max_train_pairs:
        command += ["--max-train-pairs", str(max_train_pairs)]
    print(f"preparing data: {' '.join(command)}", flush=True)
    subprocess.run(command, cwd=REPO, check=True, env=fairseq_env())
    return dest / "bin"
