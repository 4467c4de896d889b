"""Run ``fairseq-train`` data-parallel on CPU: N processes, gloo, fairseq's own distributed code.

fairseq 0.12 cannot start CPU processes itself: its spawn path counts GPUs, and its
torchrun path divides by ``torch.cuda.device_count()``. This shim starts N ordinary
``fairseq-train`` processes with the explicit flags fairseq already has for that case
(``--distributed-no-spawn --distributed-rank R --distributed-init-method tcp://...``),
``--distributed-backend gloo`` and ``--ddp-backend legacy_ddp`` (PyTorch DDP wants a
device id on CPU), prefixes each line with its rank, and exits with the worst status.

    python scripts/launch_cpu_ddp.py 2 DATA --user-dir fairseq_admin --arch transformer_admin ...
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import threading


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("nprocs", type=int, help="number of CPU processes (world size)")
    parser.add_argument("train_args", nargs=argparse.REMAINDER, help="fairseq-train arguments")
    args = parser.parse_args()
    if args.nprocs < 1:
        sys.exit("launch_cpu_ddp: error: nprocs must be at least 1")
    train = os.path.join(os.path.dirname(sys.executable), "fairseq-train")
    init = f"tcp://127.0.0.1:{free_port()}"
    procs = []
    for rank in range(args.nprocs):
        command = [train, *args.train_args, "--cpu", "--distributed-world-size", str(args.nprocs),
                   "--distributed-rank", str(rank), "--distributed-init-method", init,
                   "--distributed-no-spawn", "--distributed-backend", "gloo", "--ddp-backend", "legacy_ddp"]
        procs.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))

    def relay(rank: int, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            sys.stdout.write(f"[rank {rank}] {line}")
            sys.stdout.flush()

    threads = [threading.Thread(target=relay, args=(rank, p)) for rank, p in enumerate(procs)]
    for t in threads:
        t.start()
    codes = [p.wait() for p in procs]
    for t in threads:
        t.join()
    sys.exit(max(codes, key=abs))


if __name__ == "__main__":
    main()
