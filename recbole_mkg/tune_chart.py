"""A sweep's chart, ``trials.png``: what the trial table says, as a picture.

Left: every trial's validation metric after each evaluation, coloured by status, so the scheduler's stops
show where a line ends; the sweep's best trial drawn bold. Right: each trial's best validation metric
against each numeric tuned parameter (a log axis when its values span 10x or more), the best one ringed.
"""
import math

#: line colour of each trial status (a status not listed: grey)
STATUS_COLOURS = {"finished": "#4c72b0", "reached the cap": "#4c72b0", "stopped early": "#dd8452", "ERROR": "#c44e52"}


def trial_curve(history, metric_name, epoch_key="epoch"):
    """``(epochs [n], scores [n])`` of one trial's validation reports, from Ray's ``metrics_dataframe``: the
    rows that carry ``valid_<metric_name>`` (a separate final report, which repeats the last epoch with the
    best score and no validation metrics, is left out)."""
    column = f"valid_{metric_name}"
    if history is None or column not in history or epoch_key not in history:
        return [], []
    rows = history[[epoch_key, column]].dropna()
    return [int(e) for e in rows[epoch_key]], [float(s) for s in rows[column]]


def _numeric_params(trials, tuned):
    """The tuned parameters whose values are numbers and differ between trials."""
    out = []
    for name in tuned:
        values = [t["params"].get(name) for t in trials]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values) \
                and len(set(values)) > 1:
            out.append(name)
    return out


def trials_chart(path, trials, metric_name, tuned, best_trial=None, title=None, max_params=4):
    """Write ``path`` (PNG) and return it, or None when no trial reported a validation.

    ``trials``: dicts with ``trial``, ``status``, ``params`` (name -> value), ``curve`` (``(epochs, scores)``,
    :func:`trial_curve`) and ``best`` (best validation metric or None); ``tuned``: the tuned parameters'
    names; ``best_trial``: the id of the sweep's best."""
    from recbole_mkg.results_report import _save_figure

    reported = [t for t in trials if t["curve"][0]]
    if not reported:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.ticker
    import matplotlib.pyplot as plt

    scored = [t for t in trials if t["best"] is not None]
    params = _numeric_params(scored, tuned)[:max_params]
    fig, axes = plt.subplots(1, 1 + len(params), figsize=(5.5 + 3.2 * len(params), 3.8), squeeze=False)
    ax = axes[0][0]
    for t in reported:
        is_best = t["trial"] == best_trial
        ax.plot(*t["curve"], "o-", ms=2.5, lw=2.4 if is_best else 1.0, alpha=1.0 if is_best else 0.7,
                color=STATUS_COLOURS.get(t["status"], "#8c8c8c"), zorder=3 if is_best else 2)
    legend = {"finished": ("finished", "reached the cap"), "stopped early": ("stopped early",), "ERROR": ("ERROR",)}
    for label, statuses in legend.items():
        if any(t["status"] in statuses for t in reported):
            ax.plot([], [], "o-", ms=2.5, color=STATUS_COLOURS[statuses[0]], label=" / ".join(statuses))
    if best_trial is not None:
        ax.plot([], [], "-", lw=2.4, color="black", label="best trial (bold)")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"valid {metric_name}")
    ax.set_title(f"{len(reported)} trials: validation {metric_name} per epoch", fontsize=9)
    ax.legend(fontsize=7)
    for ax, name in zip(axes[0][1:], params):
        x = [t["params"][name] for t in scored]
        y = [t["best"] for t in scored]
        ax.scatter(x, y, s=22, c=[STATUS_COLOURS.get(t["status"], "#8c8c8c") for t in scored], zorder=2)
        for t in scored:
            if t["trial"] == best_trial:
                ax.scatter([t["params"][name]], [t["best"]], s=110, facecolors="none", edgecolors="black", zorder=3)
        if min(x) > 0 and max(x) / min(x) >= 10:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # labelled decades only
        ax.set_xlabel(name)
        ax.set_ylabel(f"best valid {metric_name}")
    if title:
        fig.suptitle(title, fontsize=9)
    return _save_figure(fig, path)
