"""Pictures of the RLHF pipeline, with matplotlib (optional).

Each function draws on ``ax`` (a new figure when None) and returns the
matplotlib Axes, so that a notebook can add to it.  matplotlib is imported
only when a function is called; without it the call raises an ImportError
that says how to install it (``pip install rlhf-lab[plot]``).
"""
import numbers

import numpy as np

from ._validation import _as_float_array, _check_finite, format_value

__all__ = ["reward_kl_frontier", "cost_reward_tradeoff", "policy_bars",
           "calibration", "training_curves", "overoptimization"]


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError(
            "rlhf.plot needs matplotlib, which is not installed. Install it "
            "with `pip install rlhf-lab[plot]` (or `pip install matplotlib`)."
        ) from error
    return plt


def _axes(ax):
    if ax is None:
        _, ax = _pyplot().subplots()
    else:
        _pyplot()
    return ax


def _vector(values, name, length=None):
    values = _as_float_array(values, name)
    if values.ndim != 1:
        raise ValueError(
            f"{name} must be 1-dimensional; got shape {values.shape}.")
    if length is not None and values.shape[0] != length:
        raise ValueError(
            f"{name} must have length {length} (as the first array); got "
            f"{values.shape[0]}.")
    _check_finite(values, name)
    return values


def reward_kl_frontier(kl, reward, *, labels=None, ax=None, label=None,
                       **line_kwargs):
    """Expected reward against KL(pi || pi_ref): the price of reward in
    distance from the reference.

    Points are joined in order of increasing KL; sweeping ``beta`` of the
    KL-regularised optimum traces the best attainable frontier (no policy
    gets more reward at the same KL).

    Parameters
    ----------
    kl, reward : array-like of shape (n_points,)
    labels : sequence of str or numbers, optional
        Written next to the points (e.g. the beta of each).
    ax : matplotlib Axes, optional
    label : str, optional
        Legend entry.
    **line_kwargs
        Passed to ``ax.plot``.

    Returns
    -------
    matplotlib Axes
    """
    kl = _vector(kl, "kl")
    reward = _vector(reward, "reward", kl.size)
    if (kl < 0).any():
        raise ValueError("kl must be non-negative; a KL divergence is >= 0.")
    ax = _axes(ax)
    order = np.argsort(kl, kind="stable")
    line_kwargs.setdefault("marker", "o")
    ax.plot(kl[order], reward[order], label=label, **line_kwargs)
    if labels is not None:
        if len(labels) != kl.size:
            raise ValueError(f"labels must have length {kl.size}; got "
                             f"{len(labels)}.")
        for x, y, text in zip(kl, reward, labels):
            ax.annotate(_text(text), (x, y), textcoords="offset points",
                        xytext=(4, 4), fontsize="small")
    ax.set_xlabel("KL(pi || pi_ref)")
    ax.set_ylabel("expected reward")
    if label is not None:
        ax.legend()
    return ax


def cost_reward_tradeoff(cost, reward, *, budget=None, ax=None, label=None,
                         **line_kwargs):
    """Expected reward against expected cost, as a price ``lam`` or a
    budget sweeps; an optional vertical line marks a budget.

    Parameters
    ----------
    cost, reward : array-like of shape (n_points,)
        Expected cost and reward of each policy, in sweep order (the points
        are joined in that order).
    budget : float, optional
    ax : matplotlib Axes, optional
    label : str, optional
    **line_kwargs
        Passed to ``ax.plot``.

    Returns
    -------
    matplotlib Axes
    """
    cost = _vector(cost, "cost")
    reward = _vector(reward, "reward", cost.size)
    ax = _axes(ax)
    line_kwargs.setdefault("marker", ".")
    ax.plot(cost, reward, label=label, **line_kwargs)
    if budget is not None:
        ax.axvline(float(budget), color="grey", linestyle="--",
                   label="budget")
    ax.set_xlabel("expected cost")
    ax.set_ylabel("expected reward")
    if label is not None or budget is not None:
        ax.legend()
    return ax


def _text(value):
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return f"{value:g}"
    return str(value)


def policy_bars(before, after, *, responses=None, names=("before", "after"),
                ax=None):
    """Side-by-side bars of two distributions over the same responses.

    Parameters
    ----------
    before, after : array-like of shape (n_responses,)
        Probabilities, e.g. the reference and the updated policy.
    responses : sequence of str, optional
        Tick labels (default 0, 1, ...).
    names : (str, str), default=("before", "after")
        Legend entries.
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib Axes
        ``ax.containers[0]`` holds the bars of ``before``,
        ``ax.containers[1]`` those of ``after``.
    """
    before = _vector(before, "before")
    after = _vector(after, "after", before.size)
    if responses is not None and len(responses) != before.size:
        raise ValueError(f"responses must have length {before.size}; got "
                         f"{len(responses)}.")
    ax = _axes(ax)
    x = np.arange(before.size)
    width = 0.4
    ax.bar(x - width / 2, before, width, label=names[0])
    ax.bar(x + width / 2, after, width, label=names[1])
    ax.set_xticks(x)
    ax.set_xticklabels([str(r) for r in responses] if responses is not None
                       else [str(i) for i in x])
    ax.set_ylabel("probability")
    ax.legend()
    return ax


def _calibration_bins(probabilities, outcomes, n_bins):
    """(mean predicted, observed frequency, count) of the non-empty bins of
    [0, 1] cut into n_bins equal widths (1.0 falls in the last bin)."""
    index = np.minimum((probabilities * n_bins).astype(np.intp), n_bins - 1)
    count = np.bincount(index, minlength=n_bins)
    predicted = np.bincount(index, weights=probabilities, minlength=n_bins)
    observed = np.bincount(index, weights=outcomes, minlength=n_bins)
    used = count > 0
    return (predicted[used] / count[used], observed[used] / count[used],
            count[used])


def calibration(probabilities, outcomes, *, n_bins=10, ax=None, label=None):
    """Reliability diagram: predicted preference probability against the
    observed frequency.

    The predictions (for example ``sigmoid(r(a) - r(b))`` of a reward model,
    the Bradley-Terry probability that ``a`` is preferred) are cut into
    ``n_bins`` equal-width bins of [0, 1]; each non-empty bin is plotted at
    its mean prediction and the fraction of its pairs where ``a`` was in
    fact preferred.  A calibrated model lies on the diagonal (drawn
    dashed).

    Parameters
    ----------
    probabilities : array-like of shape (n_pairs,), values in [0, 1]
    outcomes : array-like of shape (n_pairs,), values 0 / 1 (or bool)
    n_bins : int >= 1, default=10
    ax : matplotlib Axes, optional
    label : str, optional

    Returns
    -------
    matplotlib Axes
        ``ax.lines[0]`` is the diagonal, ``ax.lines[1]`` the bins.
    """
    probabilities = _vector(probabilities, "probabilities")
    outcomes = _vector(outcomes, "outcomes", probabilities.size)
    if probabilities.size == 0:
        raise ValueError("probabilities is empty.")
    if ((probabilities < 0) | (probabilities > 1)).any():
        raise ValueError("probabilities must lie in [0, 1].")
    if not np.isin(outcomes, (0.0, 1.0)).all():
        raise ValueError("outcomes must be 0 or 1 (or booleans).")
    if not isinstance(n_bins, numbers.Integral) or isinstance(n_bins, bool) \
            or n_bins < 1:
        raise ValueError(
            f"n_bins must be an int >= 1; got {format_value(n_bins)}.")
    predicted, observed, _ = _calibration_bins(probabilities, outcomes,
                                               int(n_bins))
    ax = _axes(ax)
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey",
            label="calibrated")
    ax.plot(predicted, observed, marker="o", label=label or "model")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("predicted probability")
    ax.set_ylabel("observed frequency")
    ax.legend()
    return ax


def _history_columns(history):
    """{name: float array} from a dict of sequences or a list of dicts."""
    if isinstance(history, dict):
        columns = {str(k): v for k, v in history.items()}
    elif isinstance(history, (list, tuple)) and all(
            isinstance(row, dict) for row in history):
        names = []
        for row in history:
            names += [str(k) for k in row if str(k) not in names]
        columns = {name: [row.get(name, np.nan) for row in history]
                   for name in names}
    else:
        raise TypeError(
            "history must be a dict of sequences or a list of dicts; got "
            f"{type(history).__name__}.")
    out = {}
    for name, values in columns.items():
        values = _as_float_array(values, f"history[{name!r}]")
        if values.ndim != 1:
            raise ValueError(f"history[{name!r}] must be 1-dimensional; got "
                             f"shape {values.shape}.")
        out[name] = values
    lengths = {v.size for v in out.values()}
    if len(lengths) > 1:
        raise ValueError("the columns of history have different lengths: "
                         f"{ {k: v.size for k, v in out.items()} }.")
    return out


def training_curves(history, *, keys=None, x="step", ax=None):
    """Training curves from a history.

    Parameters
    ----------
    history : dict of sequences, or list of dicts
        ``{"step": [...], "reward": [...], "kl": [...]}`` or
        ``[{"step": 0, "reward": 1.2, "kl": 0.0}, ...]``; a missing value
        in a list of dicts is NaN (a gap in the curve).
    keys : sequence of str, optional
        Which columns to draw (default: all but ``x``).
    x : str, default="step"
        The column on the horizontal axis; when absent, the row index.
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib Axes
        One line per key, in order.
    """
    columns = _history_columns(history)
    if not columns:
        raise ValueError("history is empty.")
    n = next(iter(columns.values())).size
    steps = columns[x] if x in columns else np.arange(n, dtype=np.float64)
    if keys is None:
        keys = [k for k in columns if k != x]
    missing = [k for k in keys if k not in columns]
    if missing:
        raise ValueError(f"keys {missing} are not in history (it has "
                         f"{list(columns)}).")
    ax = _axes(ax)
    for key in keys:
        ax.plot(steps, columns[key], label=key)
    ax.set_xlabel(x if x in columns else "iteration")
    ax.legend()
    return ax


def overoptimization(kl, gold, proxy, *, sqrt_kl=False, ax=None):
    """Reward over-optimisation: the proxy (learned) reward keeps rising
    with KL while the gold (true) reward peaks and falls (Gao et al. 2023,
    "Scaling laws for reward model overoptimization", who plot against
    ``sqrt(KL)``; pass ``sqrt_kl=True`` for that axis).

    Parameters
    ----------
    kl, gold, proxy : array-like of shape (n_points,)
    sqrt_kl : bool, default=False
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib Axes
        ``ax.lines[0]`` the proxy, ``ax.lines[1]`` the gold reward, and a
        vertical line at the largest gold reward.
    """
    kl = _vector(kl, "kl")
    gold = _vector(gold, "gold", kl.size)
    proxy = _vector(proxy, "proxy", kl.size)
    if kl.size == 0:
        raise ValueError("kl is empty: no point to draw.")
    if (kl < 0).any():
        raise ValueError("kl must be non-negative; a KL divergence is >= 0.")
    order = np.argsort(kl, kind="stable")
    x = np.sqrt(kl[order]) if sqrt_kl else kl[order]
    ax = _axes(ax)
    ax.plot(x, proxy[order], label="proxy reward")
    ax.plot(x, gold[order], label="gold reward")
    best = int(np.argmax(gold[order]))
    ax.axvline(x[best], color="grey", linestyle=":", label="gold peak")
    ax.set_xlabel("sqrt(KL(pi || pi_ref))" if sqrt_kl
                  else "KL(pi || pi_ref)")
    ax.set_ylabel("reward")
    ax.legend()
    return ax
