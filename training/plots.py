"""Figures for training runs and evaluation reports (matplotlib, the `train` extra).

Every function writes one PNG and closes its figure; matplotlib is imported here only, with
the non-interactive Agg backend so plotting works on a headless box.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: never try to open a window

import matplotlib.pyplot as plt
import numpy as np

FIG_DPI = 100  # small PNGs for the HTML report


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=FIG_DPI)
    plt.close(fig)
    return path


def training_curves(history: Sequence[dict], path: Path) -> Path:
    """Losses, validation macro-F1 / ROC-AUC and learning rate per epoch."""
    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(epochs, [h["train_loss"] for h in history], label="train")
    axes[0].plot(epochs, [h["val_loss"] for h in history], label="validation")
    axes[0].set_title("loss")
    axes[1].plot(epochs, [h["val_macro_f1"] for h in history], label="macro-F1")
    axes[1].plot(epochs, [h["val_roc_auc"] for h in history], label="ROC-AUC")
    axes[1].set_ylim(0, 1.02)
    axes[1].set_title("validation")
    axes[2].plot(epochs, [h["lr"] for h in history])
    axes[2].set_yscale("log")
    axes[2].set_title("learning rate")
    for ax in axes:
        ax.set_xlabel("epoch")
    axes[0].legend()
    axes[1].legend()
    return _save(fig, path)


def roc_curve(fpr: np.ndarray, tpr: np.ndarray, auc: float, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(4.2, 4))
    ax.plot(fpr, tpr, drawstyle="steps-post", label=f"AUC {auc:.3f}")
    ax.plot([0, 1], [0, 1], "--", color="grey", linewidth=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate (defect)", title="ROC")
    ax.legend(loc="lower right")
    return _save(fig, path)


def pr_curve(recall: np.ndarray, precision: np.ndarray, ap: float, base: float, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(4.2, 4))
    ax.plot(recall, precision, drawstyle="steps-post", label=f"AP {ap:.3f}")
    ax.axhline(base, linestyle="--", color="grey", linewidth=0.8, label=f"prevalence {base:.2f}")
    ax.set(xlabel="recall (defect)", ylabel="precision (defect)", title="precision-recall")
    ax.set_ylim(0, 1.02)
    ax.legend(loc="lower left")
    return _save(fig, path)


def reliability_diagram(
    count: np.ndarray, mean_p: np.ndarray, rate: np.ndarray, ece: float, path: Path
) -> Path:
    fig, ax = plt.subplots(figsize=(4.2, 4))
    used = count > 0
    ax.plot([0, 1], [0, 1], "--", color="grey", linewidth=0.8)
    ax.plot(mean_p[used], rate[used], "o-", label=f"ECE {ece:.3f}")
    for x, y, n in zip(mean_p[used], rate[used], count[used], strict=True):
        ax.annotate(str(int(n)), (x, y), textcoords="offset points", xytext=(3, 3), fontsize=7)
    ax.set(xlabel="mean p_defect in bin", ylabel="observed defect rate", title="reliability")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.legend(loc="upper left")
    return _save(fig, path)


def confusion_matrix(tp: int, fp: int, tn: int, fn: int, path: Path) -> Path:
    grid = np.array([[tn, fp], [fn, tp]])
    fig, ax = plt.subplots(figsize=(3.8, 3.4))
    ax.imshow(grid, cmap="Blues")
    for (i, j), v in np.ndenumerate(grid):
        ax.text(j, i, str(v), ha="center", va="center", fontsize=12)
    ax.set_xticks([0, 1], ["good_weld", "defect"])
    ax.set_yticks([0, 1], ["good_weld", "defect"])
    ax.set(xlabel="predicted", ylabel="true", title="confusion")
    return _save(fig, path)


def window_timelines(
    items: Sequence[tuple[str, np.ndarray, float]], threshold: float, path: Path
) -> Path:
    """One row per file: window probabilities over time (s), with the pooled p_defect."""
    n = max(len(items), 1)
    fig, axes = plt.subplots(n, 1, figsize=(8, 1.6 * n), squeeze=False)
    for ax, (title, probs, p_defect) in zip(axes[:, 0], items, strict=False):
        ax.step(np.arange(len(probs)), probs, where="post")
        ax.axhline(threshold, linestyle="--", color="red", linewidth=0.8)
        ax.set_ylim(0, 1.02)
        ax.set_title(f"{title}  p_defect={p_defect:.3f}", fontsize=8)
        ax.set_ylabel("p(window)", fontsize=7)
    axes[-1, 0].set_xlabel("window index (1 window = chunk_seconds)")
    return _save(fig, path)


def threshold_sweep(
    thresholds: np.ndarray,
    precision: np.ndarray,
    recall: np.ndarray,
    false_alarm: np.ndarray,
    threshold: float,
    path: Path,
) -> Path:
    """Precision, recall (defect) and false-alarm rate against the decision threshold."""
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    ax.plot(thresholds, precision, label="precision (defect)")
    ax.plot(thresholds, recall, label="recall (defect)")
    ax.plot(thresholds, false_alarm, label="false-alarm rate (good)")
    ax.axvline(
        threshold, linestyle="--", color="red", linewidth=0.8, label=f"artifact {threshold:.2f}"
    )
    ax.set(xlabel="threshold on p_defect", ylabel="rate", title="threshold vs precision/recall")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.legend(loc="best", fontsize=7)
    return _save(fig, path)
