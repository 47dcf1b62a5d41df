"""Reports of a benchmark run: the summary table, the JSON record, the learning curves."""

import json
import math

import numpy as np

__all__ = ["summarise", "format_table", "write_json", "plot_curves"]

SETTINGS = ("iid", "class_incremental")
SETTING_TITLES = {"iid": "i.i.d. (one phase)", "class_incremental": "class-incremental"}


def _mean_std(values):
    values = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if values.size == 0:
        return math.nan, math.nan
    std = values.std(ddof=1) if values.size > 1 else 0.0
    return float(values.mean()), float(std)


def summarise(runs):
    """Mean and standard deviation over seeds, per method.

    Parameters
    ----------
    runs : dict
        ``runs[method][seed_index]`` is a dict with ``setup_time`` and one
        :func:`skkvb.bench._runner.run_stream` result per setting.

    Returns
    -------
    summary : dict
        ``summary[method][metric] = (mean, std)``.
    """
    summary = {}
    for method, per_seed in runs.items():
        ci = [run["class_incremental"] for run in per_seed]
        summary[method] = {
            "iid_accuracy": _mean_std(run["iid"]["accuracy"] for run in per_seed),
            "iid_mean_class_accuracy": _mean_std(
                run["iid"]["mean_class_accuracy"] for run in per_seed
            ),
            "ci_accuracy": _mean_std(r["accuracy"] for r in ci),
            "ci_mean_class_accuracy": _mean_std(r["mean_class_accuracy"] for r in ci),
            "average_incremental_accuracy": _mean_std(
                r["average_incremental_accuracy"] for r in ci
            ),
            "forgetting": _mean_std(r["forgetting"] for r in ci),
            "time": _mean_std(
                run["setup_time"] + run["class_incremental"]["fit_time"] for run in per_seed
            ),
        }
    return summary


def _cell(mean_std, digits=3):
    mean, std = mean_std
    if math.isnan(mean):
        return "-"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


COLUMNS = [
    ("method", None, 0),
    ("i.i.d. acc", "iid_accuracy", 3),
    ("class-incr. acc", "ci_accuracy", 3),
    ("avg incr. acc", "average_incremental_accuracy", 3),
    ("forgetting", "forgetting", 3),
    ("time (s)", "time", 1),
]


def format_table(summary):
    """A plain-text table, one row per method (mean ± std over seeds)."""
    rows = [[title for title, _, _ in COLUMNS]]
    for method, metrics in summary.items():
        rows.append([method] + [_cell(metrics[key], d) for _, key, d in COLUMNS[1:]])
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths))
        )
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def write_json(path, record):
    """Write ``record`` as JSON (NaN becomes null, numpy values plain numbers)."""
    with open(path, "w") as f:
        json.dump(_jsonable(record), f, indent=1)


def _curves(per_seed, setting):
    """Epochs and accuracies (seeds x points) of one method's learning curves."""
    curves = [run[setting]["curve"] for run in per_seed]
    epochs = np.array([point["epoch"] for point in curves[0]])
    accuracy = np.array([[point["accuracy"] for point in curve] for curve in curves])
    return epochs, accuracy


def _phase_ends(per_seed):
    curve = per_seed[0]["class_incremental"]["curve"]
    return [a["epoch"] for a, b in zip(curve, curve[1:]) if b["phase"] != a["phase"]]


def plot_curves(path, runs, title="", dashed=()):
    """Test accuracy against training epochs, in the style of the paper's Figure 3.

    One panel per setting; a line per method (mean over seeds, shaded ± one
    standard deviation); dotted lines mark the phase boundaries. Methods in
    ``dashed`` (exact statistics, evaluated at phase ends only) are drawn
    dashed.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(12, 4.2), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 2, sharey=True, width_ratios=[1, 2.2])
    for ax, setting in zip(axes, SETTINGS):
        for method, per_seed in runs.items():
            epochs, accuracy = _curves(per_seed, setting)
            epochs = np.concatenate([[0], epochs])
            mean = np.concatenate([[np.nan], accuracy.mean(0)])
            std = np.concatenate([[np.nan], accuracy.std(0)])
            (line,) = ax.plot(
                epochs,
                mean,
                marker="." if len(epochs) < 40 else None,
                linestyle="--" if method in dashed else "-",
                label=method,
            )
            ax.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.2)
        if setting == "class_incremental" and runs:
            for boundary in _phase_ends(next(iter(runs.values()))):
                ax.axvline(boundary, color="0.6", linestyle=":", linewidth=1)
        ax.set_title(SETTING_TITLES[setting])
        ax.set_xlabel("epochs")
        ax.set_xlim(left=0)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy (all classes)")
    axes[0].set_ylim(0, 1.02)
    handles, labels = axes[1].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside right center", fontsize="small")
    if title:
        figure.suptitle(title)
    figure.savefig(path, dpi=120)
