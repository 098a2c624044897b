"""Plots more than one notebook draws: learning curves, digits, confusion matrices."""

from __future__ import annotations

import numpy as np


def _plt():
    import matplotlib.pyplot as plt

    return plt


def plot_learning_curves(history: dict, *, title: str = "Learning curves"):
    """Loss and accuracy per epoch, training against validation, side by side."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    epochs = np.arange(1, len(history["loss"]) + 1)
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        ax.plot(epochs, history[metric], "o-", label="training")
        if f"val_{metric}" in history:
            ax.plot(epochs, history[f"val_{metric}"], "s--", label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.set_xticks(epochs)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def confusion_matrix(y_true, y_pred, num_classes: int = 10) -> np.ndarray:
    """Counts[true, predicted] for integer class labels."""
    y_true, y_pred = np.asarray(y_true, dtype=int), np.asarray(y_pred, dtype=int)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has shape {y_true.shape} but y_pred has {y_pred.shape}.")
    counts = np.zeros((num_classes, num_classes), dtype=int)
    np.add.at(counts, (y_true, y_pred), 1)
    return counts


def plot_confusion_matrix(y_true, y_pred, *, ax=None, title: str = "Confusion matrix"):
    """A labelled heat map of the confusion matrix; the diagonal holds the correct answers."""
    plt = _plt()
    counts = confusion_matrix(y_true, y_pred)
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 5))
    ax.imshow(counts, cmap="Blues")
    for (true, pred), n in np.ndenumerate(counts):
        if n:
            color = "white" if n > counts.max() / 2 else "black"
            ax.text(pred, true, str(n), ha="center", va="center", fontsize=8, color=color)
    ax.set_xticks(range(10))
    ax.set_yticks(range(10))
    ax.set_xlabel("predicted digit")
    ax.set_ylabel("true digit")
    accuracy = np.trace(counts) / max(counts.sum(), 1)
    ax.set_title(f"{title} (accuracy {accuracy:.1%})")
    return ax


def plot_digits(images, labels=None, predictions=None, probabilities=None, *, ncols: int = 8):
    """A grid of digits; with predictions, each title shows it and wrong ones are red."""
    plt = _plt()
    images = np.asarray(images)
    n = len(images)
    nrows = max(1, -(-n // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.3 * ncols, 1.5 * nrows))
    for i, ax in enumerate(np.ravel(axes)):
        ax.axis("off")
        if i >= n:
            continue
        ax.imshow(images[i].reshape(28, 28), cmap="gray_r")
        parts, color = [], "black"
        if predictions is not None:
            parts.append(f"pred {int(predictions[i])}")
            if probabilities is not None:
                parts.append(f"{float(np.max(probabilities[i])):.0%}")
            if labels is not None and int(predictions[i]) != int(labels[i]):
                color = "red"
                parts.append(f"(true {int(labels[i])})")
        elif labels is not None:
            parts.append(f"label {int(labels[i])}")
        ax.set_title(" ".join(parts), fontsize=8, color=color)
    fig.tight_layout()
    return fig


# --- predictions from a served model (notebooks 04-07) ----------------------------------


def plot_probabilities(images, probabilities, labels=None, *, title: str | None = None):
    """Each digit beside its 10 probabilities: the predicted bar is blue, a wrong one red.

    Shows how sure the model is and what it hesitated between, which a label alone hides.
    """
    plt = _plt()
    images, probabilities = np.asarray(images), np.asarray(probabilities)
    n = len(images)
    fig, axes = plt.subplots(
        n, 2, figsize=(6, max(2.0, 1.4 * n)), squeeze=False, gridspec_kw={"width_ratios": [1, 3]}
    )
    for i in range(n):
        image_ax, bar_ax = axes[i]
        image_ax.imshow(images[i].reshape(28, 28), cmap="gray_r")
        image_ax.axis("off")
        predicted = int(np.argmax(probabilities[i]))
        wrong = labels is not None and predicted != int(labels[i])
        colors = ["#bbbbbb"] * probabilities.shape[1]
        colors[predicted] = "tab:red" if wrong else "tab:blue"
        bar_ax.bar(range(probabilities.shape[1]), probabilities[i], color=colors)
        if labels is not None:
            bar_ax.plot(int(labels[i]), 1.02, "v", color="black", markersize=6)
        bar_ax.set_ylim(0, 1.1)
        bar_ax.set_xticks(range(probabilities.shape[1]))
        bar_ax.set_yticks([0, 0.5, 1])
        bar_ax.tick_params(labelsize=8)
        caption = f"predicted {predicted} ({probabilities[i, predicted]:.0%})"
        if labels is not None:
            caption += f", true {int(labels[i])}"
        bar_ax.set_title(caption, fontsize=9, color="tab:red" if wrong else "black")
    if labels is not None:
        note = "\u25bc marks the true digit"
        title = f"{title} ({note})" if title else note
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_confidence_histogram(probabilities, labels, *, bins: int = 20, ax=None):
    """How sure the model was, for right and for wrong answers, on one set of axes.

    A good model is rarely sure when it is wrong; mistakes piled up near 100% are a warning.
    """
    plt = _plt()
    probabilities, labels = np.asarray(probabilities), np.asarray(labels)
    predicted = probabilities.argmax(axis=1)
    confidence = probabilities.max(axis=1)
    correct = predicted == labels
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3))
    edges = np.linspace(0, 1, bins + 1)
    ax.hist(confidence[correct], bins=edges, alpha=0.7, label=f"right ({correct.sum()})")
    ax.hist(
        confidence[~correct],
        bins=edges,
        alpha=0.8,
        color="tab:red",
        label=f"wrong ({(~correct).sum()})",
    )
    ax.set_yscale("log")
    ax.set_xlabel("confidence (highest probability)")
    ax.set_ylabel("images (log scale)")
    ax.legend()
    ax.set_title("Confidence of right and wrong answers")
    return ax


def plot_latencies(samples_ms: dict, *, title: str = "Latency per call", ax=None):
    """Latency distributions side by side (box plot over the points), with medians written in.

    Medians say what a typical call costs; the spread and the outliers say what users feel.
    """
    plt = _plt()
    names = list(samples_ms)
    values = [np.asarray(samples_ms[name], dtype=float) for name in names]
    if ax is None:
        _, ax = plt.subplots(figsize=(1.2 + 2.2 * len(names), 3.5))
    ax.boxplot(values, showfliers=False, widths=0.5)
    ax.set_xticks(range(1, len(names) + 1), names)
    rng = np.random.default_rng(0)
    for i, data in enumerate(values, start=1):
        ax.plot(i + rng.uniform(-0.15, 0.15, len(data)), data, ".", alpha=0.3, markersize=3)
        ax.annotate(
            f"median\n{np.median(data):.2f} ms",
            (i + 0.28, np.median(data)),
            va="center",
            fontsize=8,
        )
    everything = np.concatenate(values) if values else np.ones(1)
    if everything.min() > 0 and everything.max() / everything.min() > 20:
        ax.set_yscale("log")  # spreads over orders of magnitude: a log scale shows them all
        ax.set_ylabel("milliseconds (log scale)")
    else:
        ax.set_ylim(bottom=0)
        ax.set_ylabel("milliseconds")
    ax.set_xlim(0.5, len(names) + 0.8)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    return ax


def plot_version_timeline(events, *, ax=None, title: str = "Model versions over time"):
    """Which state each model version was in, over time, from polled GetModelStatus answers.

    `events` is a list of (seconds, version, state) tuples; each version gets one lane whose
    colour changes with its state (LOADING, AVAILABLE, UNLOADING, END).
    """
    plt = _plt()
    colors = {
        "START": "#dddddd",
        "LOADING": "tab:orange",
        "AVAILABLE": "tab:green",
        "UNLOADING": "tab:purple",
        "END": "#999999",
    }
    events = sorted(events)
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 1 + 0.5 * len({v for _, v, _ in events})))
    end_time = max((t for t, _, _ in events), default=0.0) + 0.2
    versions = sorted({v for _, v, _ in events})
    for lane, version in enumerate(versions):
        mine = [(t, s) for t, v, s in events if v == version]
        for (start, state), (stop, _) in zip(mine, [*mine[1:], (end_time, None)], strict=True):
            ax.barh(
                lane,
                stop - start,
                left=start,
                color=colors.get(state, "black"),
                edgecolor="white",
                height=0.6,
            )
    ax.set_yticks(range(len(versions)), [f"version {v}" for v in versions])
    ax.set_xlabel("seconds")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in colors.values()]
    ax.legend(
        handles,
        list(colors),
        ncol=len(colors),
        fontsize=8,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.35),
        frameon=False,
    )
    ax.set_title(title)
    return ax


def plot_paired_comparison(comparison, *, names=("A", "B"), axes=None):
    """What a paired comparison (helpers.compare) rests on, in two pictures.

    Left: the images where exactly one model is right, the only ones that tell the models
    apart. Right: the bootstrap distribution of the accuracy gain, its interval, and zero.
    """
    plt = _plt()
    name_a, name_b = names
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(10, 3.2), gridspec_kw={"width_ratios": [1, 2]})
    split_ax, gain_ax = axes
    bars = split_ax.bar(
        [f"only {name_a}\nright", f"only {name_b}\nright"],
        [comparison.only_a_right, comparison.only_b_right],
        color=["tab:gray", "tab:blue"],
    )
    split_ax.bar_label(bars)
    split_ax.set_ylabel("test images")
    split_ax.set_title(f"Disagreements (p = {comparison.p_value:.2g})")

    gains = np.asarray(comparison.gains) * 100
    low, high = (100 * value for value in comparison.interval)
    gain_ax.hist(gains, bins=40, color="tab:blue", alpha=0.6)
    gain_ax.axvspan(
        low, high, color="tab:blue", alpha=0.12, label=f"{comparison.confidence:.0%} interval"
    )
    gain_ax.axvline(0, color="black", linewidth=1, label="no difference")
    gain_ax.axvline(100 * comparison.gain, color="tab:blue", linestyle="--", label="measured gain")
    gain_ax.set_xlabel(f"accuracy gain of {name_b} over {name_a} (points)")
    gain_ax.set_ylabel("bootstrap resamples")
    gain_ax.set_title(f"Verdict: {name_b} is {comparison.verdict}")
    gain_ax.legend(fontsize=8)
    split_ax.figure.tight_layout()
    return axes


def _medians(runs, key: str) -> list[float]:
    """The median of `key` over each group of repeated runs."""
    return [float(np.median([r[key] for r in group])) for group in runs]


def plot_load_curves(curves: dict, *, title: str = "", axes=None):
    """Throughput (left) and p50/p99 latency (right) against the number of concurrent callers.

    `curves` maps a label (e.g. "no batching") to rows of numbers with the keys `concurrency`,
    `req_per_s`, `p50_ms` and `p99_ms` (what `helpers.bench.measure_throughput` measures). Rows
    that repeat a concurrency are repeated runs: each run is a dot, and the line joins the
    medians, so the spread between runs is on the plot next to the trend.
    """
    plt = _plt()
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    ax_rate, ax_latency = axes
    x = []
    for label, rows in curves.items():
        x = sorted({r["concurrency"] for r in rows})
        runs = [[r for r in rows if r["concurrency"] == c] for c in x]
        (line,) = ax_rate.plot(x, _medians(runs, "req_per_s"), marker="o", label=label)
        color = line.get_color()
        ax_latency.plot(x, _medians(runs, "p50_ms"), marker="o", color=color, label=f"{label} p50")
        ax_latency.plot(
            x, _medians(runs, "p99_ms"), marker="^", ls="--", color=color, label=f"{label} p99"
        )
        if any(len(group) > 1 for group in runs):  # repeated runs: one faint dot each
            for ax, key, marker in (
                (ax_rate, "req_per_s", "o"),
                (ax_latency, "p50_ms", "o"),
                (ax_latency, "p99_ms", "^"),
            ):
                xs = [r["concurrency"] for group in runs for r in group]
                ys = [r[key] for group in runs for r in group]
                ax.plot(xs, ys, marker, color=color, alpha=0.35, ls="none", markersize=4)
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xticks(x, [str(c) for c in x])
        ax.set_xlabel("concurrent callers")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    ax_rate.set_ylim(bottom=0)
    ax_rate.set_ylabel("requests per second")
    ax_latency.set_yscale("log")
    ax_latency.set_ylabel("latency, ms (log scale)")
    if title:
        ax_rate.set_title(f"{title}: throughput")
        ax_latency.set_title(f"{title}: latency")
    return axes


def plot_call_timeline(records, events=(), *, ax=None, title: str = "Every call, and who answered"):
    """One dot per call at the time it started, at the height of the version that answered it;
    failed calls are red crosses on a lane of their own. `events` are (seconds, label) marks.

    `records` are `helpers.load.CallRecord`s (or anything with .started, .outcome, .version).
    """
    plt = _plt()
    if ax is None:
        _, ax = plt.subplots(figsize=(10, 2.8))
    records = list(records)
    versions = sorted({r.version for r in records if r.version is not None})
    lanes = {v: i + 1 for i, v in enumerate(versions)}
    rng = np.random.default_rng(0)
    size = 2 if len(records) > 300 else 5  # a few slow calls need bigger dots to be seen
    for version in versions:
        times = [r.started for r in records if r.version == version]
        y = lanes[version] + rng.uniform(-0.2, 0.2, len(times))
        ax.plot(times, y, ".", markersize=size, alpha=0.5, label=f"version {version}")
    failed = [r.started for r in records if r.outcome != "OK"]
    ax.plot(failed, np.zeros(len(failed)), "x", color="tab:red", label=f"failed ({len(failed)})")
    # Event labels read horizontally, one row each, so that events a moment apart do not overlap.
    top = len(versions) + 0.6
    last = max([r.ended for r in records] + [seconds for seconds, _ in events] + [1e-9])
    for row, (seconds, label) in enumerate(events):
        ax.axvline(seconds, color="black", lw=0.8, ls=":")
        ax.annotate(
            f" {label} ",
            (seconds, top + 0.45 * row),
            ha="right" if seconds > 0.6 * last else "left",
            va="center",
            fontsize=8,
            bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1},
        )
    ax.set_yticks([0, *lanes.values()], ["failed", *[f"version {v}" for v in versions]])
    ax.set_ylim(-0.6, top + 0.45 * len(events) + 0.1)
    ax.set_xlabel("seconds")
    ax.set_title(title)
    return ax


def plot_replica_counts(results: dict, *, labels=None, title: str = "Calls per replica"):
    """One bar chart per experiment: how many calls each replica answered.

    `results` maps an experiment's name to its per-replica counts; the bars of an even spread
    are level, and a trap shows one tall bar.
    """
    plt = _plt()
    fig, axes = plt.subplots(1, len(results), figsize=(3.2 * len(results), 3), sharey=True)
    axes = np.atleast_1d(axes)
    for ax, (name, counts) in zip(axes, results.items(), strict=True):
        counts = np.asarray(counts)
        names = labels or [f"replica {i}" for i in range(len(counts))]
        bars = ax.bar(names, counts, color=["C0" if c else "lightgray" for c in counts])
        ax.bar_label(bars, [str(int(c)) for c in counts])
        ax.set_title(name, fontsize=10)
        ax.tick_params(axis="x", labelsize=8)
    axes[0].set_ylabel("calls answered")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_calls_over_time(times, per_interval, *, events=(), title: str = "Calls per replica"):
    """Calls each replica answered per sampling interval, one line each, with marked events.

    `times` are the ends of the intervals (s), `per_interval[i][r]` the calls of replica r in
    interval i, and `events` (seconds, label) pairs drawn as vertical lines.
    """
    plt = _plt()
    times = np.asarray(times, dtype=float)
    rates = np.asarray(per_interval, dtype=float)
    widths = np.diff(np.concatenate([[0.0], times]))
    fig, ax = plt.subplots(figsize=(8, 3.2))
    for replica in range(rates.shape[1]):
        ax.step(times, rates[:, replica] / widths, where="pre", label=f"replica {replica}")
    for seconds, label in events:
        ax.axvline(seconds, color="gray", linestyle="--", linewidth=1)
        ax.annotate(
            label, (seconds, ax.get_ylim()[1]), rotation=90, va="top", ha="right", fontsize=8
        )
    ax.set_xlabel("seconds since the load started")
    ax.set_ylabel("calls per second")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
