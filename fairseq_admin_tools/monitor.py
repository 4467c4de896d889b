"""``fairseq-admin-monitor``: the training monitor's file as plots, tables and a short account of what changed.

    fairseq-admin-monitor SAVE_DIR [--out DIR] [--collapse-below 0.05]

Reads ``SAVE_DIR/admin_monitor.jsonl`` (written by ``fairseq-train ... --admin-monitor-interval N``) and writes,
into ``--out`` (default ``SAVE_DIR/monitor``), each figure as PNG beside its CSV:

* ``ratio.png`` / ``branches.csv``: the dependency ratio ‖f(x)‖ / ‖ω ⊙ x‖ of every layer over updates, one panel
  per side and branch kind (the paper's dependency figure, for this run);
* ``omega.png``: mean ω per layer over updates; ``headroom.png``: the fp16 headroom (bits) per layer, its least
  over the branches of the layer;
* ``grad_norm.png`` / ``layers.csv``: each layer's gradient norm;
* ``skipped.png`` / ``skipped.csv``: skipped updates over updates, and where each one's first non-finite value was;
* ``summary.txt``: what :func:`account` prints.

Needs matplotlib, not torch or fairseq.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from fairseq_admin_tools.errors import AdminError, command_line_tool
from fairseq_admin_tools.files import write_atomically
from fairseq_admin_tools.monitor_records import MONITOR_FILE, read_records

BRANCH_FIELDS = ["update", "side", "layer", "branch", "ratio", "omega_mean", "omega_min", "omega_max", "max_abs",
                 "headroom"]
LAYER_FIELDS = ["update", "side", "layer", "grad_norm"]
SKIP_FIELDS = ["update", "loss_scale", "reason", "fatal", "consecutive", "skipped_total", "where"]
BRANCH_LABELS = {"self_attn": "self-attention", "cross_attn": "cross-attention", "ffn": "ffn"}


def where(record: dict[str, Any]) -> str:
    """A skip record's place, as the training log says it."""
    if record.get("nonfinite_parameters"):
        return f"parameter {record['nonfinite_parameters'][0]}"
    first = record.get("first_nonfinite")
    if not first:
        return "not reproduced"
    if first.get("layer") is None:
        return f"{first['tensor']} ({first['phase']})"
    return f"{first['side']} layer {first['layer']} {first['branch']}: {first['tensor']} ({first['phase']})"


def branch_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"update": r["update"], **b} for r in records if r["kind"] == "measure" for b in r["branches"]]


def layer_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"update": r["update"], **row} for r in records if r["kind"] == "measure" for row in r["layers"]]


def skip_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**{k: r.get(k) for k in SKIP_FIELDS}, "where": where(r)} for r in records if r["kind"] == "skipped"]


def _series(rows: list[dict[str, Any]], key: str) -> dict[tuple[str, str], dict[int, list[tuple[int, float]]]]:
    """{(side, branch): {layer: [(update, value), ...]}} for the rows where ``key`` is a number."""
    out: dict[tuple[str, str], dict[int, list[tuple[int, float]]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        if row.get(key) is not None:
            out[(row["side"], row["branch"])][row["layer"]].append((row["update"], row[key]))
    return out


def collapses(rows: list[dict[str, Any]], below: float) -> list[str]:
    """For each side and branch kind: the update from which the ratio stays below ``below`` in every layer."""
    lines = []
    for (side, branch), layers in _series(rows, "ratio").items():
        updates = sorted({u for points in layers.values() for u, _ in points})
        worst = {u: max(v for points in layers.values() for uu, v in points if uu == u) for u in updates}
        start = None
        for update in updates:
            start = (start or update) if worst[update] < below else None
        if start is not None:
            lines.append(f"{side} {BRANCH_LABELS[branch]} ratio below {below:g} in every layer from update {start}")
    return lines


def changes(rows: list[dict[str, Any]]) -> list[str]:
    """First and last measurement of the mean ratio and mean ω per side and branch kind."""
    lines = []
    for (side, branch), layers in sorted(_series(rows, "ratio").items()):
        by_update: dict[int, list[float]] = defaultdict(list)
        for points in layers.values():
            for update, value in points:
                by_update[update].append(value)
        first, last = min(by_update), max(by_update)
        mean = {u: sum(v) / len(v) for u, v in by_update.items()}
        lines.append(f"{side} {BRANCH_LABELS[branch]}: mean ratio {mean[first]:.3f} at update {first} -> "
                     f"{mean[last]:.3f} at update {last} (layers {min(layers)}-{max(layers)})")
    for (side, branch), layers in sorted(_series(rows, "omega_mean").items()):
        firsts = [points[0][1] for points in layers.values()]
        lasts = [points[-1][1] for points in layers.values()]
        moved = max(abs(a - b) for a, b in zip(firsts, lasts, strict=True))
        lines.append(f"{side} {BRANCH_LABELS[branch]}: ω moved by at most {moved:.3f} "
                     f"(mean {sum(firsts) / len(firsts):.3f} -> {sum(lasts) / len(lasts):.3f})")
    return lines


def account(records: list[dict[str, Any]], below: float) -> list[str]:
    """The short text summary: collapsed ratios, how ratio and ω moved, the least headroom, the skipped updates."""
    rows = branch_rows(records)
    lines = [f"{sum(r['kind'] == 'measure' for r in records)} measurements, the last at update "
             f"{max((r['update'] for r in records if r['kind'] == 'measure'), default=0)}"]
    lines += collapses(rows, below) + changes(rows)
    headrooms = [row for row in rows if row["headroom"] is not None]
    if headrooms:
        low = min(headrooms, key=lambda row: row["headroom"])
        lines.append(f"least fp16 headroom {low['headroom']:.1f} bits (max |x| {low['max_abs']:.4g}) in {low['side']} "
                     f"layer {low['layer']} {low['branch']} at update {low['update']}")
    skips = skip_rows(records)
    if skips:
        lines.append(f"{len(skips)} skipped updates, the first at update {skips[0]['update']} in {skips[0]['where']}")
        places = defaultdict(int)
        for skip in skips:
            places[skip["where"]] += 1
        lines += [f"  {count} x {place}" for place, count in sorted(places.items(), key=lambda kv: -kv[1])]
    else:
        lines.append("no skipped updates")
    return lines


def _csv(rows: list[dict[str, Any]], fields: list[str], path: Path) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_atomically(str(path), buffer.getvalue())


def plot_per_layer(rows: list[dict[str, Any]], key: str, ylabel: str, path: Path, log_y: bool = False,
                   per_branch: bool = True) -> None:
    """One panel per side (and branch kind), one line per layer, coloured from the first layer to the last."""
    from fairseq_admin_tools.figures import pyplot, save_figure

    plt = pyplot()
    series = _series(rows, key) if per_branch else _series([{**r, "branch": "ffn"} for r in rows], key)
    panels = sorted(series, key=lambda sb: (sb[0] != "encoder", list(BRANCH_LABELS).index(sb[1])))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, (side, branch) in zip(axes[0], panels, strict=True):
        layers = series[(side, branch)]
        top = max(layers) or 1
        for layer, points in sorted(layers.items()):
            ax.plot(*zip(*points, strict=True), color=plt.cm.viridis(layer / top), lw=1)
        ax.set_title(f"{side} {BRANCH_LABELS[branch]}" if per_branch else side)
        ax.set_xlabel("update")
        ax.set_ylabel(ylabel)
        if log_y:
            ax.set_yscale("log")
    fig.colorbar(plt.cm.ScalarMappable(cmap="viridis", norm=plt.Normalize(0, top)), ax=axes[0, -1], label="layer")
    save_figure(fig, path)


def plot_skipped(skips: list[dict[str, Any]], last_update: int, path: Path) -> None:
    from fairseq_admin_tools.figures import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.4))
    updates = [s["update"] for s in skips]
    ax.step([0, *updates, max([last_update, *updates])], [0, *range(1, len(updates) + 1), len(updates)], where="post")
    ax.set_xlabel("update")
    ax.set_ylabel("skipped updates (cumulative)")
    save_figure(fig, path)


def write_outputs(records: list[dict[str, Any]], out: Path, below: float) -> list[str]:
    rows, layers, skips = branch_rows(records), layer_rows(records), skip_rows(records)
    _csv(rows, BRANCH_FIELDS, out / "branches.csv")
    _csv(layers, LAYER_FIELDS, out / "layers.csv")
    _csv(skips, SKIP_FIELDS, out / "skipped.csv")
    if rows:
        plot_per_layer(rows, "ratio", "‖f(x)‖ / ‖ω ⊙ x‖", out / "ratio.png", log_y=True)
        plot_per_layer(rows, "omega_mean", "mean ω", out / "omega.png")
        plot_per_layer(rows, "headroom", "fp16 headroom (bits)", out / "headroom.png")
    if layers:
        plot_per_layer(layers, "grad_norm", "gradient norm", out / "grad_norm.png", log_y=True, per_branch=False)
    last = max((r["update"] for r in records), default=0)
    plot_skipped(skips, last, out / "skipped.png")
    lines = account(records, below)
    write_atomically(str(out / "summary.txt"), "\n".join(lines) + "\n")
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="fairseq-admin-monitor", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("save_dir", type=Path, help=f"a --save-dir holding {MONITOR_FILE}")
    parser.add_argument("--out", type=Path,
                        help="where to write the plots, CSVs and summary (default SAVE_DIR/monitor)")
    parser.add_argument("--collapse-below", type=float, default=0.05, metavar="R",
                        help="report a branch kind whose ratio stays below R in every layer (default 0.05)")
    return parser.parse_args(argv)


@command_line_tool("fairseq-admin-monitor")
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    path = args.save_dir / MONITOR_FILE
    if not path.is_file():
        raise AdminError(f"no {MONITOR_FILE} in {args.save_dir}: train with --admin-monitor-interval N "
                         "(and this --save-dir) to write one")
    records = read_records(os.fspath(path))
    if not any(r["kind"] in ("measure", "skipped") for r in records):
        raise AdminError(f"{path} has no measurements yet: the first comes after --admin-monitor-interval updates")
    out = args.out or args.save_dir / "monitor"
    for line in write_outputs(records, out, args.collapse_below):
        print(line)
    print(f"fairseq-admin-monitor: plots, CSVs and summary.txt in {out}")
    return 0
