"""The methods the recipes, the evidence and the summaries compare: the one list, importable without torch.

Each method is a ``--init-type`` plus the fairseq flags that make it (Pre-LN: stock fairseq's two flags),
a label for tables and one colour for every figure. ``recipes/run.sh`` and the hydra ``method`` group
(``fairseq_admin_tools/hydra/method``) list the same names (a test compares them with this table).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    name: str
    label: str
    init_type: str
    flags: tuple[str, ...]
    colour: str

    @property
    def profiles(self) -> bool:
        """Whether the method needs an Admin profile (the paper's first step)."""
        return self.init_type == "adaptive"

    def train_flags(self) -> list[str]:
        return ["--init-type", self.init_type, *self.flags]


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("admin", "Admin", "adaptive", (), "tab:green"),
    Method("postln", "Post-LN", "default", (), "tab:red"),
    Method("preln", "Pre-LN", "default", ("--encoder-normalize-before", "--decoder-normalize-before"), "tab:blue"),
    Method("admin-closed-form", "Admin (closed form)", "admin-closed-form", (), "tab:olive"),
    Method("deepnorm", "DeepNorm", "deepnorm", (), "tab:purple"),
    Method("rezero", "ReZero", "rezero", (), "tab:orange"),
)}
COLOURS = {name: method.colour for name, method in METHODS.items()}
