"""Pictures of the RLHF pipeline, with matplotlib (optional).

Each function draws on ``ax`` (``axes`` for :func:`training_curves`) or, by
default, on a new figure of 16:9 slide proportions (10 x 5.625 inches, laid
out by matplotlib's constrained layout) and returns what it drew on, so that
a notebook can add to it.  Text is at least 12 points (more when the
rcParams ask for more, as under :func:`lecture_style`); long category
labels are wrapped, and bar charts whose labels would not fit under the
bars turn horizontal; legends are placed where they cover no data.

matplotlib is imported only when a function is called; without it the call
raises an ImportError that says how to install it
(``pip install rlhf-lab[plot]``).

Examples
--------
>>> import matplotlib
>>> matplotlib.use("Agg")
>>> import rlhf
>>> with rlhf.plot.lecture_style():
...     ax = rlhf.plot.policy_bars([0.5, 0.5], [0.8, 0.2],
...                                responses=["helpful", "vague"])
>>> ax.figure.get_size_inches().tolist()
[10.0, 5.625]
"""
import contextlib
import math
import numbers
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple, Union

import numpy as np

from ._typing import ArrayLike, NDArray
from ._validation import _as_float_array, _check_finite, format_value

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["reward_kl_frontier", "cost_reward_tradeoff", "policy_bars",
           "calibration", "training_curves", "overoptimization",
           "lecture_style"]

# a figure of a 16:9 slide's proportions: at 12 pt, text is about 1/34 of
# its height, readable at the back of a lecture hall when it fills a slide
SLIDE_SIZE = (10.0, 5.625)
# smallest font sizes, in points, used whatever the rcParams say
_MIN_POINTS = {"tick": 12.0, "label": 13.0, "title": 14.0, "legend": 12.0,
               "annotation": 12.0}
_RC_FONT_KEYS = {"tick": "xtick.labelsize", "label": "axes.labelsize",
                 "title": "axes.titlesize", "legend": "legend.fontsize",
                 "annotation": "font.size"}

_LECTURE_RC = {
    "figure.figsize": SLIDE_SIZE,
    "figure.dpi": 150,
    "savefig.dpi": 200,
    "font.size": 16,
    "axes.titlesize": 18,
    "axes.labelsize": 17,
    "xtick.labelsize": 15,
    "ytick.labelsize": 15,
    "legend.fontsize": 15,
    "figure.titlesize": 20,
    "lines.linewidth": 2.5,
    "lines.markersize": 8,
    "axes.linewidth": 1.3,
    "xtick.major.width": 1.3,
    "ytick.major.width": 1.3,
    "xtick.major.size": 6,
    "ytick.major.size": 6,
    "grid.linewidth": 1.0,
}


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError(
            "rlhf.plot needs matplotlib, which is not installed. Install it "
            "with `pip install rlhf-lab[plot]` (or `pip install matplotlib`)."
        ) from error
    return plt


@contextlib.contextmanager
def lecture_style(rc: Optional[Dict[str, Any]] = None) -> Iterator[None]:
    """Large fonts, thick lines and a high resolution, for a projector.

    A context manager around :func:`matplotlib.rc_context`: inside it,
    fonts are 15-18 points (20 for a figure title), lines 2.5 points wide,
    new figures 10 x 5.625 inches (16:9) at 150 dpi on screen and 200 dpi
    when saved (2,000 x 1,125 pixels).  On exit every rcParam is restored to
    the value it had before, also after an exception.  It can decorate a
    function as well (``@rlhf.plot.lecture_style()``), which then draws in
    the style each time it is called.

    Parameters
    ----------
    rc : dict, optional
        More rcParams, applied after (and over) the style's own.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import rlhf
    >>> with rlhf.plot.lecture_style():
    ...     matplotlib.rcParams["font.size"]
    16.0
    >>> matplotlib.rcParams["font.size"] == 16
    False
    >>> @rlhf.plot.lecture_style(rc={"lines.linewidth": 4})
    ... def slide():
    ...     return rlhf.plot.calibration([0.2, 0.7, 0.9], [0, 1, 1])
    >>> slide().lines[1].get_linewidth()
    4.0
    """
    _pyplot()
    import matplotlib
    settings: Any = dict(_LECTURE_RC)
    if rc is not None:
        if not isinstance(rc, dict):
            raise TypeError(
                f"rc must be a dict of rcParams; got {type(rc).__name__}.")
        settings.update(rc)
    with matplotlib.rc_context(settings):
        yield


def _points(kind):
    """The font size for text of this kind: the rcParams' own, but at least
    _MIN_POINTS[kind]."""
    import matplotlib
    from matplotlib.font_manager import FontProperties
    size = FontProperties(
        size=matplotlib.rcParams[_RC_FONT_KEYS[kind]]).get_size_in_points()
    return max(float(size), _MIN_POINTS[kind])


def _axes(ax, figsize=SLIDE_SIZE):
    if ax is None:
        fig = _pyplot().figure(figsize=figsize, layout="constrained")
        ax = fig.add_subplot()
    else:
        _pyplot()
    return ax


def _label_axes(ax, xlabel, ylabel):
    ax.set_xlabel(xlabel, fontsize=_points("label"))
    ax.set_ylabel(ylabel, fontsize=_points("label"))
    _tick_fonts(ax)
    ax.title.set_fontsize(_points("title"))


def _tick_fonts(ax):
    """Tick labels, and the offset or power of ten written beside them,
    at the tick font size."""
    size = _points("tick")
    ax.tick_params(labelsize=size)
    ax.xaxis.get_offset_text().set_fontsize(size)
    ax.yaxis.get_offset_text().set_fontsize(size)


def _legend(ax, **kwargs):
    """A legend where it covers the fewest data (matplotlib's 'best')."""
    kwargs.setdefault("loc", "best")
    return ax.legend(fontsize=_points("legend"), **kwargs)


def _axes_size_points(ax):
    """(width, height) of ax in points, before any layout engine runs (the
    constrained layout only enlarges it for the labels used here)."""
    position = ax.get_position()
    width, height = ax.figure.get_size_inches()
    return position.width * width * 72.0, position.height * height * 72.0


def _text_width(text, size):
    """Width in points of one line of text at this font size."""
    if not text.strip():
        return 0.0
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import text_to_path
    width, _, _ = text_to_path.get_text_width_height_descent(
        text, FontProperties(size=size), ismath=False)
    # the renderers' hinting makes text up to a few per cent wider
    return 1.03 * float(width)


def _wrap(text, width, size):
    """Lines of text, each at most ``width`` points wide where its words
    allow, as even in length as their number allows.  Words break at
    spaces, and after a hyphen only where a word is too wide otherwise."""
    words = str(text).split()
    lines = _wrap_greedy([(w, False) for w in words], width, size)
    if max(_text_width(line, size) for line in lines) > width:
        pieces = []     # (piece, joins the previous piece without a space)
        for word in words:
            parts = re.split(r"(?<=-)(?=[^-])", word)
            pieces += [(part, i > 0) for i, part in enumerate(parts)]
        lines = _wrap_greedy(pieces, width, size)
    else:
        pieces = [(w, False) for w in words]
    if len(lines) > 1:
        # the narrowest width that needs no more lines: balanced lines
        narrow = sum(_text_width(line, size) for line in lines) / len(lines)
        while narrow < width:
            even = _wrap_greedy(pieces, narrow, size)
            if len(even) <= len(lines):
                return even
            narrow *= 1.05
    return lines


def _wrap_greedy(pieces, width, size):
    lines, line = [], ""
    for piece, glued in pieces:
        candidate = line + piece if glued else (
            f"{line} {piece}" if line else piece)
        if line and _text_width(candidate, size) > width:
            lines.append(line)
            line = piece
        else:
            line = candidate
    if line or not lines:
        lines.append(line)
    return lines


def _fit_one_line(text, width, size):
    """text cut with an ellipsis to fit ``width`` points."""
    if _text_width(text, size) <= width:
        return text
    while len(text) > 1 and _text_width(text + "\u2026", size) > width:
        text = text[:-1]
    return text.rstrip() + "\u2026"


def reward_kl_frontier(kl: ArrayLike, reward: ArrayLike, *,
                       labels: Optional[Sequence[Any]] = None,
                       ax: Optional["Axes"] = None,
                       label: Optional[str] = None,
                       **line_kwargs: Any) -> "Axes":
    """Expected reward against KL(pi || pi_ref): the price of reward in
    distance from the reference.

    Points are joined in order of increasing KL; sweeping ``beta`` of the
    KL-regularised optimum traces the best attainable frontier (no policy
    gets more reward at the same KL).

    Parameters
    ----------
    kl, reward : array-like of shape (n_points,)
        ``KL(pi || pi_ref)`` in nats and the expected reward ``E_pi[r]`` of
        each policy.
    labels : sequence of str or numbers, optional
        Written next to the points (e.g. the beta of each).  Where points
        crowd, a label that would overlap one already written (in order of
        increasing KL) is left out.
    ax : matplotlib Axes, optional
        Draw here; by default on a new 16:9 figure.
    label : str, optional
        Legend entry.
    **line_kwargs
        Passed to ``ax.plot``.

    Returns
    -------
    matplotlib Axes
        ``ax.lines[0]`` is the frontier, ``ax.texts`` the labels written.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np, rlhf
    >>> reference, rewards = np.full(4, 0.25), np.array([1.9, 0.6, 1.85, 0.2])
    >>> betas = [2.0, 1.0, 0.5, 0.2]
    >>> policies = [rlhf.kl_regularized_policy(reference, rewards, b)
    ...             for b in betas]
    >>> kl = [rlhf.kl_divergence(p, reference) for p in policies]
    >>> ax = rlhf.plot.reward_kl_frontier(
    ...     kl, [p @ rewards for p in policies], labels=betas,
    ...     label="KL-regularised optimum")
    >>> [text.get_text() for text in ax.texts]
    ['2', '1', '0.5', '0.2']
    """
    kl = _vector(kl, "kl")
    reward = _vector(reward, "reward", kl.size)
    if (kl < 0).any():
        raise ValueError("kl must be non-negative; a KL divergence is >= 0.")
    if labels is not None and len(labels) != kl.size:
        raise ValueError(f"labels must have length {kl.size}; got "
                         f"{len(labels)}.")
    ax = _axes(ax)
    order = np.argsort(kl, kind="stable")
    line_kwargs.setdefault("marker", "o")
    ax.plot(kl[order], reward[order], label=label, **line_kwargs)
    _label_axes(ax, r"KL($\pi\,\|\,\pi_\mathrm{ref}$) (nats)",
                r"expected reward $E_\pi[r]$")
    if labels is not None:
        _annotate_points(ax, kl[order], reward[order],
                         [_text(labels[i]) for i in order])
    if label is not None:
        _legend(ax)
    return ax


def _annotate_points(ax, x, y, texts):
    """Write texts next to the points (x, y) of a curve, on the side away
    from it (along the normal to the curve, pointing down and to the right
    for a rising curve, below a flat one); a text that would overlap one
    already written is left out."""
    size = _points("annotation")
    ax.autoscale_view()
    to_points = 72.0 / ax.figure.dpi
    xy = ax.transData.transform(np.column_stack([x, y])) * to_points
    written = []   # boxes in points: (left, bottom, right, top)
    gap = 5.0
    for i, text in enumerate(texts):
        # the curve's direction at the point, from its neighbours
        ahead, behind = xy[min(i + 1, len(xy) - 1)], xy[max(i - 1, 0)]
        dx, dy = ahead - behind
        length = math.hypot(dx, dy)
        if length == 0:
            dx, dy, length = 1.0, 1.0, math.sqrt(2.0)
        if dx < 0:
            dx, dy = -dx, -dy
        nx, ny = dy / length, -dx / length
        ha = "left" if nx > 0.3 else ("right" if nx < -0.3 else "center")
        va = "top" if ny < -0.3 else ("bottom" if ny > 0.3 else "center")
        width = _text_width(text, size)
        px, py = xy[i] + gap * np.array([nx, ny])
        left = {"left": px, "right": px - width, "center": px - width / 2}[ha]
        bottom = {"bottom": py, "top": py - size, "center": py - size / 2}[va]
        box = (left - 2, bottom - 2, left + width + 2, bottom + size + 2)
        if any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3]
               and b[1] < box[3] for b in written):
            continue
        written.append(box)
        ax.annotate(text, (x[i], y[i]), textcoords="offset points",
                    xytext=(gap * nx, gap * ny), fontsize=size, ha=ha,
                    va=va)


def cost_reward_tradeoff(cost: ArrayLike, reward: ArrayLike, *,
                         budget: Optional[float] = None,
                         ax: Optional["Axes"] = None,
                         label: Optional[str] = None,
                         **line_kwargs: Any) -> "Axes":
    """Expected reward against expected cost, as a price ``lam`` or a
    budget sweeps; an optional vertical line marks a budget.

    Parameters
    ----------
    cost, reward : array-like of shape (n_points,)
        Expected cost ``E_pi[c]`` and expected reward ``E_pi[r]`` of each
        policy, in sweep order (the points are joined in that order).
    budget : float, optional
        Drawn as a dashed vertical line.
    ax : matplotlib Axes, optional
        Draw here (call again with the returned Axes to add a second
        sweep); by default on a new 16:9 figure.
    label : str, optional
        Legend entry.
    **line_kwargs
        Passed to ``ax.plot``.

    Returns
    -------
    matplotlib Axes
        The sweep is the last of ``ax.lines`` but one when a budget is
        drawn (the budget line is last), the last otherwise.

    Notes
    -----
    The vertical axis is the expected reward alone, ``E_pi[r]``, not the
    objective RLHF maximises, ``E_pi[r] - beta KL(pi || pi_ref)``; the axis
    label says so.  Shaped and constrained optima (``pi ∝ pi_ref
    exp((r - lam c) / beta)``) trace the best *objective* at each expected
    cost, not the most reward: a policy that is not of that form, such as
    the free optimum with its unsafe responses masked out, can sit above
    the curve by moving further from the reference, which the KL term
    charges for and this picture does not show.  Compare such policies by
    ``E_pi[r] - beta KL`` at equal cost (or draw
    :func:`reward_kl_frontier`).

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np, rlhf
    >>> reference = np.full(4, 0.25)
    >>> rewards, costs = np.array([1.9, 0.6, 1.85, 0.2]), np.array(
    ...     [0.5, -0.3, -0.6, -0.8])
    >>> lams = np.linspace(0, 4, 9)
    >>> policies = [rlhf.reweight(reference,
    ...                           rlhf.shape_rewards(rewards, costs, lam),
    ...                           eta=2.0, eps=0.0) for lam in lams]
    >>> ax = rlhf.plot.cost_reward_tradeoff(
    ...     [p @ costs for p in policies], [p @ rewards for p in policies],
    ...     budget=0.0, label="shaping, lam from 0 to 4")
    >>> ax.get_ylabel()
    'expected reward $E_\\\\pi[r]$\\n(the KL term not counted)'
    """
    cost = _vector(cost, "cost")
    reward = _vector(reward, "reward", cost.size)
    if budget is not None:
        if not isinstance(budget, numbers.Real) or isinstance(budget, bool) \
                or not math.isfinite(budget):
            raise ValueError("budget must be a finite number; got "
                             f"{format_value(budget)}.")
    ax = _axes(ax)
    line_kwargs.setdefault("marker", ".")
    ax.plot(cost, reward, label=label, **line_kwargs)
    if budget is not None:
        ax.axvline(float(budget), color="grey", linestyle="--",
                   label="budget")
    _label_axes(ax, r"expected cost $E_\pi[c]$",
                "expected reward $E_\\pi[r]$\n(the KL term not counted)")
    if label is not None or budget is not None:
        _legend(ax)
    return ax


def _text(value):
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return f"{value:g}"
    return str(value)


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


# a vertical bar chart's labels may wrap to this many lines; longer ones
# turn the chart horizontal
_MAX_LABEL_LINES = 3


def policy_bars(before: ArrayLike, after: ArrayLike, *,
                responses: Optional[Sequence[str]] = None,
                names: Tuple[str, str] = ("before", "after"),
                orientation: Optional[str] = None,
                ax: Optional["Axes"] = None) -> "Axes":
    """Side-by-side bars of two distributions over the same responses.

    Long response texts are wrapped to the width of their group of bars
    (breaking at spaces and after hyphens).  When a text would need more
    than three lines, or a single word is wider than its group, the chart
    is drawn horizontally by default, one response per row from the top,
    with its text on the left, wrapped to at most a third of the figure's
    width; a text that still does not fit its row is shortened with an
    ellipsis.  Vertical bars asked for with such texts get them standing
    on end (rotated 90 degrees).  Unnamed responses too many to number
    each are numbered every few.  The axis of probabilities leaves room
    for the legend beyond the tallest bar.

    Parameters
    ----------
    before, after : array-like of shape (n_responses,)
        Probabilities, e.g. the reference and the updated policy.
    responses : sequence of str, optional
        Tick labels (default 0, 1, ...).
    names : (str, str), default=("before", "after")
        Legend entries.
    orientation : {None, 'vertical', 'horizontal'}, default=None
        Bars standing up (responses along the bottom) or lying down
        (responses down the left); None chooses as above.
    ax : matplotlib Axes, optional
        Draw here; by default on a new 16:9 figure.

    Returns
    -------
    matplotlib Axes
        ``ax.containers[0]`` holds the bars of ``before``,
        ``ax.containers[1]`` those of ``after`` (their heights are the
        probabilities, or their widths when horizontal).

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import rlhf
    >>> responses = ["Concise answer with sources.",
    ...              "Vague answer with speculation.",
    ...              "Helpful step-by-step reasoning.", "Off-topic joke."]
    >>> ax = rlhf.plot.policy_bars(
    ...     [0.25] * 4, [0.340, 0.178, 0.335, 0.147], responses=responses,
    ...     names=("reference", "after one step"))
    >>> [label.get_text() for label in ax.get_xticklabels()]
    ['Concise answer\\nwith sources.', 'Vague answer\\nwith speculation.', \
'Helpful\\nstep-by-step\\nreasoning.', 'Off-topic joke.']
    """
    before = _vector(before, "before")
    after = _vector(after, "after", before.size)
    if responses is not None and len(responses) != before.size:
        raise ValueError(f"responses must have length {before.size}; got "
                         f"{len(responses)}.")
    if isinstance(names, str) or len(names) != 2:
        raise ValueError("names must be two legend entries, (before, "
                         f"after); got {format_value(names)}.")
    if orientation not in (None, "vertical", "horizontal"):
        raise ValueError("orientation must be None, 'vertical' or "
                         f"'horizontal'; got {format_value(orientation)}.")
    ax = _axes(ax)
    n = before.size
    texts = ([_text(r) for r in responses] if responses is not None
             else [str(i) for i in range(n)])
    size = _points("tick")
    axes_width, axes_height = _axes_size_points(ax)
    # a group of bars spans 1 of the about 1.1 n data units on the axis
    slot = axes_width / max(1.1 * n, 1.0) * 0.92
    wrapped = [_wrap(text, slot, size) for text in texts]
    fits = all(len(lines) <= _MAX_LABEL_LINES and
               max(_text_width(line, size) for line in lines) <= slot
               for lines in wrapped)
    if orientation is None:
        orientation = ("vertical" if fits or responses is None
                       else "horizontal")
    positions = np.arange(n)
    width = 0.4
    top = max(before.max(initial=0.0), after.max(initial=0.0))
    if orientation == "vertical":
        ax.bar(positions - width / 2, before, width, label=names[0])
        ax.bar(positions + width / 2, after, width, label=names[1])
        rotation, step = 0, 1
        if not fits and responses is not None:
            # texts standing on end, their lines side by side in the group
            rotation = 90
            wrapped, step = _stand_on_end(texts, slot, size,
                                          0.4 * axes_height)
            label_lines = 1
        else:
            # numbers too wide for their group: label every step-th group
            widest = max((_text_width(line, size) for lines in wrapped
                          for line in lines), default=0.0)
            step = max(1, int(math.ceil(widest / max(slot, 1e-9))))
            label_lines = max(len(lines) for lines in wrapped) if n else 1
        ax.set_xticks(positions[::step])
        ax.set_xticklabels(["\n".join(lines) for lines in wrapped][::step],
                           rotation=rotation,
                           multialignment="right" if rotation else "center")
        room = _legend_room(axes_height - (label_lines - 1) * size * 1.2)
        _label_axes(ax, "", "probability")
        if top > 0:
            ax.set_ylim(0, top / (1 - room))
    else:
        ax.barh(positions - width / 2, before, width, label=names[0])
        ax.barh(positions + width / 2, after, width, label=names[1])
        ax.invert_yaxis()
        row = axes_height / max(1.1 * n, 1.0)
        line_height = size * 1.2
        max_lines = int(row // line_height)
        label_width = ax.figure.get_size_inches()[0] * 72.0 / 3
        step = 1
        if max_lines < 1:
            step = int(math.ceil(line_height / row))
            max_lines = 1
        lines_of = []
        for text in texts:
            lines = _wrap(text, label_width, size)
            if len(lines) > max_lines:
                lines = lines[:max_lines - 1] + [
                    " ".join(lines[max_lines - 1:])]
            lines[-1] = _fit_one_line(lines[-1], label_width, size)
            lines_of.append("\n".join(
                _fit_one_line(line, label_width, size) for line in lines))
        ax.set_yticks(positions[::step])
        ax.set_yticklabels(lines_of[::step])
        room = _legend_room(axes_width - label_width)
        _label_axes(ax, "probability", "")
        if top > 0:
            ax.set_xlim(0, top / (1 - room))
    _legend(ax, ncol=2)
    return ax


def _stand_on_end(texts, slot, size, length):
    """Each text in as many lines as fit side by side across ``slot``
    points (each line at most ``length`` points long, cut with an ellipsis
    beyond), and the step between labelled groups (1 unless not even one
    line fits)."""
    line_height = size * 1.2
    max_lines = int(slot // line_height)
    step = 1
    if max_lines < 1:
        step, max_lines = int(math.ceil(line_height / max(slot, 1e-9))), 1
    out = []
    for text in texts:
        # lines of about 60% of the length allowed, in as few as fit
        width = max(_text_width(text, size) / max_lines, 0.6 * length,
                    max((_text_width(w, size) for w in text.split()),
                        default=0.0))
        lines = _wrap(text, width, size)
        while len(lines) > max_lines:
            width *= 1.1
            lines = _wrap(text, width, size)
        out.append([_fit_one_line(line, length, size) for line in lines])
    return out, step


def _legend_room(axes_extent):
    """Share of an axis (``axes_extent`` points long) to leave free beyond
    the tallest bar for a one-row legend."""
    needed = 2.6 * _points("legend")
    return min(0.45, max(0.15, needed / max(axes_extent, 1.0) * 1.3))


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


def calibration(probabilities: ArrayLike, outcomes: ArrayLike, *,
                n_bins: int = 10, ax: Optional["Axes"] = None,
                label: Optional[str] = None) -> "Axes":
    """Reliability diagram: predicted preference probability against the
    observed frequency.

    The predictions (for example ``sigmoid(r(a) - r(b))`` of a reward model,
    the Bradley-Terry probability that ``a`` is preferred) are cut into
    ``n_bins`` equal-width bins of [0, 1]; each non-empty bin is plotted at
    its mean prediction and the fraction of its pairs where ``a`` was in
    fact preferred.  A calibrated model lies on the diagonal (drawn
    dashed).  The axes are square.

    Parameters
    ----------
    probabilities : array-like of shape (n_pairs,), values in [0, 1]
    outcomes : array-like of shape (n_pairs,), values 0 / 1 (or bool)
    n_bins : int >= 1, default=10
    ax : matplotlib Axes, optional
        Draw here; by default on a new 16:9 figure.
    label : str, optional
        Legend entry of the bins (default "model").

    Returns
    -------
    matplotlib Axes
        ``ax.lines[0]`` is the diagonal, ``ax.lines[1]`` the bins.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np, rlhf
    >>> rng = np.random.default_rng(0)
    >>> p = rng.random(1000)
    >>> ax = rlhf.plot.calibration(p, rng.random(1000) < p, n_bins=5,
    ...                            label="a calibrated model")
    >>> bins = ax.lines[1]
    >>> bool(np.abs(bins.get_xdata() - bins.get_ydata()).max() < 0.1)
    True
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
    ax.set_aspect("equal", adjustable="box")
    _label_axes(ax, "predicted probability",
                "observed frequency")
    _legend(ax)
    return ax


# what each column of the estimators' history_ is: (panel title, y label
# with units); "loss" depends on the estimator
_QUANTITIES = {
    "reward": ("expected reward", r"$E_\pi[r]$"),
    "kl": (r"KL($\pi\,\|\,\pi_\mathrm{ref}$)", "nats"),
    "entropy": ("entropy", "nats"),
    "length": ("expected length", "tokens"),
    "clip_fraction": ("clip fraction", "share of samples"),
    "beta": (r"KL coefficient $\beta$", "reward per nat"),
    "value_loss": ("value loss", "squared error"),
    "explained_variance": ("explained variance", "share of Var(R)"),
    "cost": ("expected cost", r"$E_\pi[c]$"),
    "lambda": (r"Lagrange multiplier $\lambda$", "reward per cost"),
    "chosen_log_ratio": (r"chosen: log $\pi/\pi_\mathrm{ref}$", "nats"),
    "rejected_log_ratio": (r"rejected: log $\pi/\pi_\mathrm{ref}$", "nats"),
    "margin": ("implicit reward margin", "reward"),
    "accuracy": ("ranking accuracy", "share of pairs"),
    "lr": ("learning rate", "step size"),
    "grad_norm": ("gradient norm", "L2 norm"),
}
_LOSSES = {
    "dpo": ("DPO loss", "nats per pair"),
    "lm": ("training loss", "nats per token"),
    "policy": ("policy loss", "surrogate objective"),
}


_GID = re.compile(r"training_curves:(.*)", re.DOTALL)


def _history_kind(columns):
    if "chosen_log_ratio" in columns:
        return "dpo"
    if "grad_norm" in columns or "lr" in columns:
        return "lm"
    if "clip_fraction" in columns:
        return "policy"
    return None


def _describe(key, kind):
    if key == "loss" and kind in _LOSSES:
        return _LOSSES[kind]
    return _QUANTITIES.get(key, (key, key))


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


def _uninformative(values):
    """All NaN, or 0 up to rounding throughout (as REINFORCE's clip
    fraction and loss: it does not clip, and its surrogate at the policy
    that sampled is the mean advantage, 0 with a group baseline)."""
    if values.size == 0:
        return False
    with np.errstate(invalid="ignore"):
        return bool(np.isnan(values).all() or np.nanmax(np.abs(values))
                    <= 1e-12)


def _grid(n_panels):
    """(rows, columns) of small multiples: one row up to three panels, then
    two columns for four, three up to nine, four beyond."""
    if n_panels <= 3:
        columns = max(n_panels, 1)
    elif n_panels == 4:
        columns = 2
    elif n_panels <= 9:
        columns = 3
    else:
        columns = 4
    return int(math.ceil(n_panels / columns)), columns


def training_curves(
        history: Union[Mapping[str, Sequence[float]], Sequence[Mapping[str, Any]]],
        *,
        keys: Optional[Sequence[str]] = None,
        x: str = "step",
        axes: Any = None,
        label: Optional[str] = None,
        **line_kwargs: Any,
) -> NDArray[Any]:
    """Training curves as small multiples: one panel per quantity, all
    sharing the horizontal axis.

    Each panel has a title saying what it shows and a y label with its
    units, for the columns of the estimators' ``history_`` (PPO and
    REINFORCE: reward, KL, entropy, clip fraction, beta, loss, and with
    costs cost and lambda, with sequences or a TinyLM length, value loss
    and explained variance; DPO: loss, chosen and rejected log-ratios,
    margin, accuracy; ``TinyLM.fit``: loss, learning rate, gradient
    norm); any other column is titled by its name.  One panel in a row,
    up to three in a row, then a grid of two, three or four columns.

    Parameters
    ----------
    history : dict of sequences, or list of dicts
        ``{"step": [...], "reward": [...], "kl": [...]}`` (an estimator's
        ``history_``) or ``[{"step": 0, "reward": 1.2, "kl": 0.0}, ...]``;
        a missing value in a list of dicts is NaN (a gap in the curve).
    keys : sequence of str, optional
        Which columns to draw, in this order (default: all but ``x``,
        leaving out columns with nothing to show: all NaN, such as the
        explained variance of an exact fit, or 0 up to rounding
        throughout, such as REINFORCE's clip fraction and loss).
    x : str, default="step"
        The column on the horizontal axis; when absent, the row index
        (labelled "iteration", or "step" for a TinyLM's history).
    axes : sequence of matplotlib Axes, optional
        One per key, to draw on; by default a new 16:9 figure.  The panels
        returned by an earlier call remember their quantities: passed
        here without ``keys``, each gets the same quantity of this history
        (to compare two runs).
    label : str, optional
        Legend entry of these curves, shown on the first panel.
    **line_kwargs
        Passed to ``ax.plot`` on every panel.

    Returns
    -------
    ndarray of matplotlib Axes, shape (n_keys,)
        The panels, in the order of the keys; ``axes[i].lines[-1]`` is the
        curve just drawn.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np, rlhf
    >>> reference = np.full((2, 3), 1 / 3)
    >>> rewards = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.2]])
    >>> exact = rlhf.PPO(beta=0.5, exact=True, n_iterations=50).fit(
    ...     reference, rewards)
    >>> axes = rlhf.plot.training_curves(exact.history_, label="exact")
    >>> [ax.get_title() for ax in axes][:3]
    ['expected reward', 'KL($\\\\pi\\\\,\\\\|\\\\,\\\\pi_\\\\mathrm{ref}$)', \
'entropy']
    >>> sampled = rlhf.PPO(beta=0.5, n_iterations=50, random_state=0).fit(
    ...     reference, rewards)
    >>> axes = rlhf.plot.training_curves(sampled.history_, axes=axes,
    ...                                  label="sampled")
    >>> [line.get_label() for line in axes[0].lines]
    ['exact', 'sampled']
    """
    columns = _history_columns(history)
    if not columns:
        raise ValueError("history is empty: it has no column to draw.")
    n = next(iter(columns.values())).size
    steps = columns[x] if x in columns else np.arange(n, dtype=np.float64)
    if keys is None and axes is not None:
        # the panels of an earlier call say which quantity each shows
        drawn = [_GID.fullmatch(str(ax.get_gid())) for ax in
                 np.asarray(axes, dtype=object).ravel()]
        if all(drawn):
            keys = [match.group(1) for match in drawn if match]
    if keys is None:
        keys = [k for k in columns if k != x and not _uninformative(
            columns[k])]
    else:
        keys = [str(k) for k in keys]
        missing = [k for k in keys if k not in columns]
        if missing:
            raise ValueError(f"keys {missing} are not in history (it has "
                             f"{list(columns)}).")
    if not keys:
        raise ValueError(f"history has no column to draw besides {x!r} "
                         f"(it has {list(columns)}).")
    kind = _history_kind(columns)
    xlabel = x if x in columns else ("step" if kind == "lm" else "iteration")
    if axes is None:
        panels, panel_width = _panels(len(keys))
        _step_ticks(panels[0], steps, panel_width)
    else:
        _pyplot()
        panels = np.asarray(axes, dtype=object).ravel()
        if panels.size != len(keys):
            raise ValueError(f"axes must hold one Axes per key ({len(keys)}"
                             f"); got {panels.size}.")
    for ax, key in zip(panels, keys):
        ax.plot(steps, columns[key], label=label, **line_kwargs)
        ax.set_gid(f"training_curves:{key}")
        title, ylabel = _describe(key, kind)
        ax.set_title(title, fontsize=_points("title"))
        ax.set_ylabel(ylabel, fontsize=_points("label"))
        _tick_fonts(ax)
    _bottom_labels(panels, xlabel)
    if label is not None:
        _legend(panels[0])
    return panels


def _panels(n_panels):
    """n_panels Axes on a new 16:9 figure, sharing x; the x tick labels on
    the lowest panel of each column."""
    rows, columns = _grid(n_panels)
    width = SLIDE_SIZE[0] if columns < 3 else 12.8
    # 16:9, but one row of panels no taller than a panel is wide
    height = width * 9 / 16 if rows > 1 or columns == 1 else width * 0.4
    fig = _pyplot().figure(figsize=(width, height), layout="constrained")
    grid = fig.subplots(rows, columns, sharex=True, squeeze=False)
    for ax in grid.ravel()[n_panels:]:
        ax.remove()
    panels = grid.ravel()[:n_panels]
    return panels, width * 72.0 / columns * 0.75


def _step_ticks(ax, steps, panel_width):
    """At most as many integer x ticks as labels as wide as the largest
    step, with three characters' space between them, fit a panel."""
    from matplotlib.ticker import MaxNLocator
    finite = steps[np.isfinite(steps)]
    largest = np.abs(finite).max(initial=1.0)
    characters = len(f"{largest:g}") + 3
    nbins = max(2, int(panel_width // (_points("tick") * 0.6 * characters)))
    ax.xaxis.set_major_locator(MaxNLocator(nbins=nbins, integer=True))


def _bottom_labels(panels, xlabel):
    """The x label (and tick labels) on each panel with no panel below it
    in its column."""
    for ax in panels:
        spec = ax.get_subplotspec()
        below = False
        if spec is not None:
            rows = spec.rowspan
            for other in panels:
                other_spec = other.get_subplotspec()
                if other is ax or other_spec is None \
                        or other.figure is not ax.figure:
                    continue
                if other_spec.get_gridspec() is spec.get_gridspec() and \
                        other_spec.rowspan.start >= rows.stop and \
                        set(other_spec.colspan) & set(spec.colspan):
                    below = True
        if not below:
            ax.xaxis.set_tick_params(labelbottom=True)
            ax.set_xlabel(xlabel, fontsize=_points("label"))


def overoptimization(kl: ArrayLike, gold: ArrayLike, proxy: ArrayLike, *,
                     sqrt_kl: bool = False,
                     ax: Optional["Axes"] = None) -> "Axes":
    """Reward over-optimisation: the proxy (learned) reward keeps rising
    with KL while the gold (true) reward peaks and falls (Gao et al. 2023,
    "Scaling laws for reward model overoptimization", who plot against
    ``sqrt(KL)``; pass ``sqrt_kl=True`` for that axis).

    Parameters
    ----------
    kl, gold, proxy : array-like of shape (n_points,)
        ``KL(pi || pi_ref)`` in nats and the expected gold and proxy
        reward of each policy.
    sqrt_kl : bool, default=False
    ax : matplotlib Axes, optional
        Draw here; by default on a new 16:9 figure.

    Returns
    -------
    matplotlib Axes
        ``ax.lines[0]`` the proxy, ``ax.lines[1]`` the gold reward, and a
        vertical line at the largest gold reward.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np, rlhf
    >>> kl = np.linspace(0, 9, 19)
    >>> gold = np.sqrt(kl) * (1 - np.sqrt(kl) / 4)
    >>> ax = rlhf.plot.overoptimization(kl, gold, np.sqrt(kl), sqrt_kl=True)
    >>> float(ax.lines[2].get_xdata()[0])   # the gold peak, at sqrt(KL) = 2
    2.0
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
    _label_axes(ax, r"$\sqrt{\mathrm{KL}(\pi\,\|\,\pi_\mathrm{ref})}$ "
                "(nats$^{1/2}$)" if sqrt_kl
                else r"KL($\pi\,\|\,\pi_\mathrm{ref}$) (nats)",
                r"expected reward $E_\pi[r]$")
    _legend(ax)
    return ax
