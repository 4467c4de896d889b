"""fairseq-admin: Admin (Adaptive Model Initialization) for fairseq, loaded with ``--user-dir``.

Importing the package registers the ``transformer_admin`` model and architectures and the
``radam`` optimizer, applies the fairseq 0.12 workarounds of :mod:`fairseq_admin.compat`, and prints our
user errors without a traceback.
"""

import os

from fairseq_admin.compat import allow_bf16_without_tpu, allow_fairseq_checkpoints, load_broadcast_checkpoints
from fairseq_admin.errors import install_excepthook

allow_fairseq_checkpoints()
allow_bf16_without_tpu()
load_broadcast_checkpoints()
install_excepthook()

from fairseq_admin import model, radam  # noqa: E402,F401  (registers with fairseq)

__version__ = "0.1.0"

USER_DIR = os.path.dirname(os.path.abspath(__file__))
"""What to pass to ``--user-dir`` when the package is installed: ``--user-dir "$(fairseq-admin-dir)"``."""


def print_user_dir() -> None:
    """Console script ``fairseq-admin-dir``: prints the directory for fairseq's ``--user-dir``."""
    print(USER_DIR)
