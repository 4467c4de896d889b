"""Run ``fairseq-train`` data-parallel on CPU: N processes, gloo, fairseq's own distributed code.

For plain data-parallel CPU runs use torchrun (the plugin makes fairseq join torchrun's world; see the
README). This launcher is for what torchrun cannot do: run every rank in its own working directory
(``--rank-dir``), to test node-local disks on one machine. It starts N ordinary
``fairseq-train`` processes with the explicit flags fairseq already has for that case
(``--distributed-no-spawn --distributed-rank R --distributed-init-method tcp://...``),
``--distributed-backend gloo`` and ``--ddp-backend legacy_ddp`` (PyTorch DDP wants a
device id on CPU), prefixes each line with its rank, and exits with the worst status.

    python scripts/launch_cpu_ddp.py 2 DATA --user-dir fairseq_admin --arch transformer_admin ...

Several nodes, simulated on one machine (or real ones): start one launcher per node, each with
the same ``--nnodes`` and ``--master-addr/--master-port`` and its own ``--node-rank``; node R's
processes get global ranks R*nprocs .. R*nprocs+nprocs-1 of a world of nnodes*nprocs.

    python scripts/launch_cpu_ddp.py 1 --nnodes 2 --node-rank 0 --master-port 29611 DATA ... &
    python scripts/launch_cpu_ddp.py 1 --nnodes 2 --node-rank 1 --master-port 29611 DATA ...

``--rank-dir DIR`` runs global rank R in DIR/rank{R} (made if missing), so a relative
``--save-dir`` is private to each rank, as on machines that share no disk. Relative paths in
the fairseq arguments (data, --user-dir) are made absolute first, except --save-dir and
--admin-profile, which are meant to be per rank.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import threading
import time

# Paths that stay relative under --rank-dir: they name each rank's own (node-local) files.
RANK_LOCAL_OPTIONS = ("--save-dir", "--admin-profile", "--tensorboard-logdir")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def absolute_paths(train_args: list[str], cwd: str) -> list[str]:
    """Make every relative path that exists from ``cwd`` absolute, except the rank-local options."""
    out: list[str] = []
    keep_next = False
    for arg in train_args:
        if keep_next:
            out.append(arg)
            keep_next = False
            continue
        if arg in RANK_LOCAL_OPTIONS:
            keep_next = True
        elif any(arg.startswith(option + "=") for option in RANK_LOCAL_OPTIONS):
            pass
        elif not arg.startswith("-") and not os.path.isabs(arg) and os.path.exists(os.path.join(cwd, arg)):
            arg = os.path.abspath(os.path.join(cwd, arg))
        out.append(arg)
    return out


LAUNCHER_OPTIONS = ("--nnodes", "--node-rank", "--master-addr", "--master-port", "--rank-dir")


def split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """(launcher arguments, fairseq-train arguments): fairseq's start at the first word after nprocs that
    is not a launcher option (or after ``--``), so both orders work: ``2 --nnodes 2 DATA ...`` and
    ``--nnodes 2 2 DATA ...``."""
    own: list[str] = []
    seen_nprocs = False
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            return own, argv[i + 1:]
        if arg in ("-h", "--help"):
            own.append(arg)
        elif arg in LAUNCHER_OPTIONS:
            own.extend(argv[i:i + 2])
            i += 1
        elif arg.split("=", 1)[0] in LAUNCHER_OPTIONS:
            own.append(arg)
        elif not seen_nprocs:
            own.append(arg)
            seen_nprocs = True
        else:
            return own, argv[i:]
        i += 1
    return own, []


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    own, train_args = split_argv(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     usage="%(prog)s [launcher options] nprocs [--] DATA fairseq-train-args...")
    parser.add_argument("nprocs", type=int, help="processes on this node (the world size when --nnodes is 1)")
    parser.add_argument("--nnodes", type=int, default=1, help="number of nodes (launchers), default 1")
    parser.add_argument("--node-rank", type=int, default=0, help="this launcher's node, 0 .. nnodes-1")
    parser.add_argument("--master-addr", default="127.0.0.1", help="address of node 0 (default 127.0.0.1)")
    parser.add_argument("--master-port", type=int, default=None,
                        help="port on node 0 for the rendezvous; needed with --nnodes > 1 "
                             "(default for one node: a free port)")
    parser.add_argument("--rank-dir", default=None, metavar="DIR",
                        help="run rank R in DIR/rank{R}, so relative --save-dir paths are per rank")
    args = parser.parse_args(own)
    args.train_args = train_args
    if args.nprocs < 1:
        parser.error("nprocs must be at least 1")
    if args.nnodes < 1:
        parser.error("--nnodes must be at least 1")
    if not 0 <= args.node_rank < args.nnodes:
        parser.error(f"--node-rank must be in 0..{args.nnodes - 1}, got {args.node_rank}")
    if args.nnodes > 1 and args.master_port is None:
        parser.error("--nnodes > 1 needs --master-port (the same on every node), e.g. --master-port 29500")
    if not args.train_args:
        parser.error("no fairseq-train arguments given (DATA and the model flags)")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    train = os.path.join(os.path.dirname(sys.executable), "fairseq-train")
    world_size = args.nnodes * args.nprocs
    port = args.master_port if args.master_port is not None else free_port()
    init = f"tcp://{args.master_addr}:{port}"
    train_args = args.train_args
    if args.rank_dir is not None:
        train_args = absolute_paths(train_args, os.getcwd())
    procs: dict[int, subprocess.Popen] = {}
    for local in range(args.nprocs):
        rank = args.node_rank * args.nprocs + local
        cwd = None
        if args.rank_dir is not None:
            cwd = os.path.join(os.path.abspath(args.rank_dir), f"rank{rank}")
            os.makedirs(cwd, exist_ok=True)
        command = [train, *train_args, "--cpu", "--distributed-world-size", str(world_size),
                   "--distributed-rank", str(rank), "--distributed-init-method", init,
                   "--distributed-no-spawn", "--distributed-backend", "gloo", "--ddp-backend", "legacy_ddp"]
        procs[rank] = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                       text=True)

    def relay(rank: int, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            sys.stdout.write(f"[rank {rank}] {line}")
            sys.stdout.flush()

    threads = [threading.Thread(target=relay, args=item) for item in procs.items()]
    for t in threads:
        t.start()
    sys.exit(wait_all(list(procs.values())))


def wait_all(procs: list[subprocess.Popen], grace_s: float = 15.0) -> int:
    """Wait for every rank; once one fails, the others get ``grace_s`` to end, then are terminated
    (a rank that lost its peer would otherwise wait in a collective until gloo's 30-minute timeout).
    Returns the worst exit status."""
    failed_at = None
    while any(p.poll() is None for p in procs):
        if failed_at is None and any(p.returncode not in (None, 0) for p in procs):
            failed_at = time.monotonic()
        if failed_at is not None and time.monotonic() - failed_at > grace_s:
            for p in procs:
                if p.poll() is None:
                    p.terminate()
            break
        time.sleep(0.2)
    codes = [p.wait() for p in procs]
    return max(codes, key=abs)


if __name__ == "__main__":
    main()
