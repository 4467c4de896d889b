"""fairseq-admin: Admin (Adaptive Model Initialization) for fairseq, loaded with ``--user-dir``.

Importing the package registers the ``transformer_admin`` model and architectures and the
``radam`` optimizer, applies the fairseq 0.12 workarounds of :mod:`fairseq_admin.compat`, routes fairseq's
trainer through the training monitor of models that have one (:mod:`fairseq_admin.monitor`), and prints our
user errors without a traceback. This is what fairseq's ``--user-dir`` loads; the tools
(:mod:`fairseq_admin_tools`) and the evidence (:mod:`fairseq_admin_evidence`) are separate packages, so
importing a tool does not load fairseq. ``fairseq-admin-dir`` prints this directory.
"""

from fairseq_admin_tools.errors import install_excepthook

install_excepthook()

from fairseq_admin.compat import (  # noqa: E402
    allow_fairseq_checkpoints,
    fix_call_main,
    load_broadcast_checkpoints,
    overflow_handler_on_any_device,
    require_fairseq,
)

require_fairseq()

from fairseq_admin.monitor import attach_to_fairseq_trainer  # noqa: E402

allow_fairseq_checkpoints()
fix_call_main()
load_broadcast_checkpoints()
overflow_handler_on_any_device()
attach_to_fairseq_trainer()

from fairseq_admin import model, radam  # noqa: E402,F401  (registers with fairseq)
