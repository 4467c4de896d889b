"""Admin where its users train: one-step Admin, data-parallel CPU ranks (gloo), and several nodes.

Real ``fairseq-train`` processes started by torchrun or by ``scripts/launch_cpu_ddp.py`` (a working
directory per rank, for node-local disks), running fairseq's own distributed code. The reference for ω is
conftest's ``profile_path``: a single-process ``--init-type adaptive-profiling`` run with the same flags
(``--admin-profile-tokens 4096``), so one-step Admin must write exactly that profile's ω, whatever the world size.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

from conftest import BIN, REPO, TINY_MODEL, TINY_TRAINING

TIMEOUT_S = 300
DIGEST = re.compile(r"admin: rank (\d+): ω from (.*?), omega digest (\w+)")
# conftest's profile_path flags, less --cpu (the launcher adds it).
TRAIN = ["--user-dir", str(REPO / "fairseq_admin"), *TINY_MODEL, *[a for a in TINY_TRAINING if a != "--cpu"],
         "--admin-profile-tokens", "4096", "--no-epoch-checkpoints", "--disable-validation"]
ENV = {"OMP_NUM_THREADS": "1", "PATH": os.environ.get("PATH", ""), "PYTHONUNBUFFERED": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(*argvs: list[str], cwd: Path = REPO) -> list[subprocess.CompletedProcess]:
    """Run one launcher per argv at the same time (one per simulated node); kill all on a hang."""
    procs = [subprocess.Popen([sys.executable, str(REPO / "scripts" / "launch_cpu_ddp.py"), *argv], cwd=cwd,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV,
                              start_new_session=True) for argv in argvs]
    results = []
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=TIMEOUT_S)
            results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, ""))
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)  # the launcher and its fairseq-train children
                proc.wait()
    return results


def digests(stdout: str) -> dict[int, tuple[str, str]]:
    """{rank: (where ω came from, ω digest)} from the ``admin: rank R: ...`` lines."""
    return {int(rank): (source, digest) for rank, source, digest in DIGEST.findall(stdout)}


def omegas(profile: Path) -> list[tuple[str, int, str, float]]:
    return [(b["side"], b["layer"], b["branch"], b["omega"]) for b in json.loads(profile.read_text())["branches"]]


def measured(profile: Path) -> dict:
    """What profiling measured (ω, variances, data facts), without the fields that name the run."""
    raw = json.loads(profile.read_text())
    return {"data": raw["data"], "branches": raw["branches"]}


def test_one_step_admin_in_one_process_writes_the_profiling_runs_profile_and_trains(
        data_bin, profile_path, tmp_path):
    save_dir = tmp_path / "ck"
    save_dir.mkdir()
    result = subprocess.run(
        [str(BIN / "fairseq-train"), str(data_bin), *TRAIN, "--cpu", "--init-type", "adaptive",
         "--save-dir", str(save_dir), "--max-update", "3"],
        cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT_S, env=ENV,
        preexec_fn=lambda: os.umask(0o027),
    )
    assert result.returncode == 0, result.stderr[-4000:]
    log = result.stdout + result.stderr
    written = save_dir / "admin_profile.json"
    assert measured(written) == measured(profile_path)  # bit for bit the two-step profile
    assert stat.S_IMODE(written.stat().st_mode) == 0o640  # the umask is honoured
    (source, _), = digests(log).values()
    assert "profiled now" in source
    assert "num_updates=3" in log or "num_updates 3" in log
    assert (save_dir / "checkpoint_last.pt").exists()


def test_one_step_admin_on_two_ranks_profiles_on_rank0_only_and_broadcasts(data_bin, profile_path, tmp_path):
    # Each rank runs in its own directory with a relative --save-dir: disks that share nothing.
    nodes = tmp_path / "nodes"
    result, = launch(["2", "--rank-dir", str(nodes), str(data_bin), *TRAIN, "--init-type", "adaptive",
                      "--save-dir", "ck", "--max-update", "3"])
    assert result.returncode == 0, result.stdout[-4000:]
    ranks = digests(result.stdout)
    assert set(ranks) == {0, 1}, result.stdout[-3000:]
    assert ranks[0][1] == ranks[1][1]
    assert all("profiled now" in source for source, _ in ranks.values())
    profiled = re.findall(r"\[rank (\d+)\] .*admin: profiled \d+ branches", result.stdout)
    assert profiled == ["0"], result.stdout[-3000:]  # profiled once, by rank 0
    assert measured(nodes / "rank0" / "ck" / "admin_profile.json") == measured(profile_path)
    assert not (nodes / "rank1" / "ck" / "admin_profile.json").exists()
    assert sorted(p.name for p in (nodes / "rank0" / "ck").iterdir()) == ["admin_profile.json",
                                                                          "checkpoint_last.pt"]
    assert "num_updates=3" in result.stdout


def test_two_nodes_with_their_own_disks_train_from_rank0s_profile_and_resume(data_bin, profile_path, tmp_path):
    """Two launchers (nodes) on 127.0.0.1, one process each; only node 0's relative save dir holds the profile."""
    nodes = tmp_path / "nodes"
    (nodes / "rank0" / "ck").mkdir(parents=True)
    shutil.copy(profile_path, nodes / "rank0" / "ck" / "admin_profile.json")

    def both_nodes(updates: int) -> str:
        port = str(free_port())
        argvs = [["--nnodes", "2", "--node-rank", str(node), "--master-addr", "127.0.0.1", "--master-port", port,
                  "--rank-dir", str(nodes), "1", str(data_bin), *TRAIN, "--init-type", "adaptive",
                  "--save-dir", "ck", "--max-update", str(updates)] for node in (0, 1)]
        results = launch(*argvs)
        out = "".join(r.stdout for r in results)
        assert [r.returncode for r in results] == [0, 0], "\n".join(r.stdout[-3000:] for r in results)
        return out

    first = both_nodes(3)
    ranks = digests(first)
    assert set(ranks) == {0, 1}, first[-3000:]  # global ranks 0 (node 0) and 1 (node 1)
    assert ranks[0][1] == ranks[1][1]
    assert all(source == "ck/admin_profile.json" for source, _ in ranks.values()), ranks
    assert "distributed init (rank 1)" in first
    assert "num_updates=3" in first
    assert not (nodes / "rank1" / "ck" / "admin_profile.json").exists()

    # fairseq resumes only where every rank sees checkpoint_last.pt (each rank checks its own disk
    # before rank 0 broadcasts the state), so copy it to node 1 as a user would; the profile stays on node 0.
    (nodes / "rank1" / "ck").mkdir(exist_ok=True)  # fairseq makes the save dir on rank 0 only
    shutil.copy(nodes / "rank0" / "ck" / "checkpoint_last.pt", nodes / "rank1" / "ck" / "checkpoint_last.pt")
    resumed = both_nodes(5)
    ranks = digests(resumed)
    assert set(ranks) == {0, 1}, resumed[-3000:]
    assert all(source == "ck/checkpoint_last.pt" for source, _ in ranks.values()), ranks
    assert ranks[0][1] == ranks[1][1]
    assert re.search(r"loaded checkpoint \S+ \(epoch 1 @ 3 updates\)", resumed, re.IGNORECASE), resumed[-3000:]
    assert "num_updates=5" in resumed


def test_the_monitor_on_two_ranks_is_written_by_rank0_only(data_bin, profile_path, tmp_path):
    nodes = tmp_path / "nodes"
    (nodes / "rank0" / "ck").mkdir(parents=True)
    shutil.copy(profile_path, nodes / "rank0" / "ck" / "admin_profile.json")
    result, = launch(["2", "--rank-dir", str(nodes), str(data_bin), *TRAIN, "--init-type", "adaptive",
                      "--save-dir", "ck", "--max-update", "4", "--admin-monitor-interval", "2"])
    assert result.returncode == 0, result.stdout[-4000:]
    assert set(digests(result.stdout)) == {0, 1}, result.stdout[-3000:]
    records = [json.loads(line) for line in (nodes / "rank0" / "ck" / "admin_monitor.jsonl").read_text().splitlines()]
    assert [(r["kind"], r["update"]) for r in records] == [("start", 0), ("measure", 2), ("measure", 4)]
    assert all(layer["grad_norm"] > 0 for r in records[1:] for layer in r["layers"])  # all-reduced gradients
    assert not (nodes / "rank1" / "ck" / "admin_monitor.jsonl").exists()


def torchrun(*train_args: str | Path) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node 2 --no-python fairseq-train ...``: torchrun's environment, fairseq's own code."""
    command = [str(BIN / "torchrun"), "--nproc_per_node", "2", "--master_port", str(free_port()), "--no-python",
               str(BIN / "fairseq-train"), *map(str, train_args)]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT_S, env=ENV)


def test_torchrun_on_cpu_joins_one_world_with_one_omega(data_bin, profile_path, tmp_path):
    save_dir = tmp_path / "ck"
    result = torchrun(data_bin, *TRAIN, "--cpu", "--distributed-backend", "gloo", "--ddp-backend", "legacy_ddp",
                      "--init-type", "adaptive", "--save-dir", save_dir, "--max-update", "3")
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    assert "distributed init (rank 0)" in out and "distributed init (rank 1)" in out
    ranks = digests(out)
    assert set(ranks) == {0, 1} and ranks[0][1] == ranks[1][1], out[-3000:]
    assert len(re.findall(r"admin: profiled \d+ branches", out)) == 1  # rank 0 profiled, rank 1 received ω
    assert measured(save_dir / "admin_profile.json") == measured(profile_path)
    assert "num_updates=3" in out


def test_torchrun_on_cpu_without_gloo_stops_at_start(data_bin, tmp_path):
    result = torchrun(data_bin, *TRAIN, "--cpu", "--init-type", "adaptive", "--save-dir", tmp_path / "ck",
                      "--max-update", "3")
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert "torchrun started 2 CPU ranks" in out and "add --distributed-backend gloo --ddp-backend legacy_ddp" in out
    assert not (tmp_path / "ck").exists()
