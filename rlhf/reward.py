"""Reward models fitted to preference comparisons, in item space.

``RewardModel`` is the pairwise Bradley-Terry model of the lecture's reward
step, ``P(a preferred to b) = sigmoid(r(a) - r(b))`` with ``r = features @
coef_``, fitted without ever building the lecture's (comparisons x
features) matrix of differences: each evaluation reads the item features
twice and each comparison once.  It also fits Plackett-Luce rankings
(InstructGPT's K-wise comparisons), Rao-Kupper or Davidson ties, Llama 2's
margins, and gives Laplace standard errors of the rewards.
"""
import math
import numbers
import warnings
from typing import (TYPE_CHECKING, Any, Literal, Optional, Tuple, Union,
                    overload)

import numpy as np

from . import _core
from ._base import ParamsMixin
from ._typing import ArrayLike, FloatArray
from ._progress import Progress, check_progress
from ._progress import resolve as resolve_progress
from ._validation import (
    MAX_TABLE_ENTRIES,
    _as_float_array,
    _check_finite,
    _feature_names,
    _is_sparse,
    check_array,
    check_is_fitted,
    check_n_threads,
    format_value,
    check_option,
    check_sample_weight,
    check_scalar,
    kernel_max_iter,
)
from .exceptions import ConvergenceWarning, sklearn_twin

if TYPE_CHECKING:
    from ._summary import Summary

__all__ = ["RewardModel"]

_LIKELIHOODS = {"bradley-terry": 0, "plackett-luce": 1}
_TIES = {None: 0, "rao-kupper": 1, "davidson": 2}
# Newton forms a dense Hessian of the parameters and, with features, an
# (n_items x n_features) intermediate; beyond these sizes L-BFGS is used
_NEWTON_MAX_PARAMS = 1000
_NEWTON_MAX_INTERMEDIATE = 50_000_000
_NEWTON_AUTO_FEATURES = 16
_NEWTON_AUTO_WORK = 20_000_000
# reward_std inverts a dense Hessian of the parameters: at most this many
_LAPLACE_MAX_PARAMS = 4 * _NEWTON_MAX_PARAMS
# progress=None watches the clock from a thread (about 0.15 ms to start
# and stop) only for problems of at least this size (numbers read per
# evaluation, plus a Newton step's factorisation), which take milliseconds
_PROGRESS_MIN_SIZE = 4_000_000
_STOPS = {
    0: "the largest gradient component fell below tol",
    1: "the objective stopped decreasing (rounding level)",
    2: "the iteration limit max_iter was reached",
    3: "the line search found no acceptable step",
}


def _check_indices(values, name, *, n_columns=None, allow_pad=False):
    """A 2-d int64 array of item indices (rows of n_columns)."""
    if _is_sparse(values):
        raise TypeError(f"{name} must be a dense integer array, got a sparse "
                        "matrix.")
    arr = np.asarray(values)
    if arr.dtype.kind not in "iu":
        if arr.dtype.kind == "f" and arr.size and np.all(
                np.isfinite(arr)) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise TypeError(
                f"{name} must hold integer item indices, got an array of "
                f"dtype {arr.dtype}."
                + (" Non-integer or non-finite values are not indices."
                   if arr.dtype.kind == "f" else "")
            )
    if arr.ndim != 2 or (n_columns is not None and arr.shape[1] != n_columns):
        want = f"(n, {n_columns})" if n_columns else "(n_groups, K)"
        raise ValueError(f"{name} must have shape {want}, got {arr.shape}.")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty; at least one row is needed.")
    if arr.dtype.kind == "u" and arr.size and arr.max() > np.iinfo(
            np.int64).max:
        raise ValueError(f"{name} holds an index too large for int64.")
    arr = np.ascontiguousarray(arr, dtype=np.int64)
    low = -1 if allow_pad else 0
    if arr.min() < low:
        row = int(np.argwhere(arr < low)[0][0])
        raise ValueError(
            f"{name} must hold non-negative item indices"
            + (" (-1 pads the end of a ranking)" if allow_pad else "")
            + f"; row {row} is {arr[row].tolist()}."
        )
    return arr


def _unwrap(comparisons):
    """(comparisons, ties, sample_weight, n_items) of an rlhf.Comparisons
    or an rlhf.datasets.PreferenceDataset; (comparisons, None, None, None)
    otherwise."""
    if hasattr(comparisons, "comparisons") and hasattr(comparisons, "ties"):
        n_items = getattr(comparisons, "n_items", None)
        texts = getattr(comparisons, "texts", None)
        if n_items is None and texts is not None:
            n_items = len(texts)
        return (np.asarray(comparisons.comparisons), comparisons.ties,
                getattr(comparisons, "sample_weight", None), n_items)
    return comparisons, None, None, None


def _check_vector(values, name, n, *, nonneg=False):
    arr = _as_float_array(values, name)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},), got {arr.shape}.")
    _check_finite(arr, name)
    if nonneg and (arr < 0).any():
        raise ValueError(f"{name} must be non-negative; got a minimum of "
                         f"{format_value(arr.min())}.")
    return np.ascontiguousarray(arr)


def _compress(F, problem):
    """The same problem on the items the comparisons name and the feature
    columns non-zero on them.  Exact: every other coefficient has a zero
    data gradient, so it stays at its starting value 0 (and is 0 at the
    optimum with or without the penalty).  Returns the new problem and the
    kept columns (None when nothing would be dropped)."""
    data = problem[3]
    # masks rather than np.unique: linear, not a sort of every index
    named = np.zeros(F.shape[0], bool)
    named[data[data >= 0]] = True
    items = np.flatnonzero(named)
    sub, columns = _compress_rows(F, items)
    if columns is None:
        return problem, None
    new_item = np.cumsum(named, dtype=np.int64) - 1
    remapped = np.where(data >= 0, new_item[data], -1)
    return (( _kernel_features(sub), len(items), problem[2],
             np.ascontiguousarray(remapped, dtype=np.int64))
            + problem[4:]), columns


def _compress_rows(F, items):
    """The rows items (sorted) of the CSR matrix F on the columns non-zero
    on them, renumbered in order, and those columns; (None, None) when
    that is all of F."""
    import scipy.sparse as sp
    rows = F[items]
    used = np.zeros(F.shape[1], bool)
    used[rows.indices] = True
    columns = np.flatnonzero(used)
    if len(items) == F.shape[0] and len(columns) == F.shape[1]:
        return None, None
    # each row's indices stay sorted under an increasing renumbering
    new_column = np.cumsum(used, dtype=np.int64) - 1
    sub = sp.csr_matrix((rows.data, new_column[rows.indices],
                         rows.indptr.astype(np.int64, copy=False)),
                        shape=(len(items), len(columns)))
    return sub, columns


def _sparse_row_sq_outside(F, columns):
    """Row sums of squares of the sparse F outside the given columns."""
    data = np.where(np.isin(F.indices, columns), 0.0, F.data)
    counts = np.diff(F.indptr)
    return np.add.reduceat(np.r_[data * data, 0.0],
                           np.r_[F.indptr[:-1]]) * (counts > 0)


def _kernel_features(F):
    if F is None:
        return None
    if _is_sparse(F):
        return (F.data, F.indices.astype(np.int64, copy=False),
                F.indptr.astype(np.int64, copy=False), F.shape[1])
    return F


def _problem_arrays(problem):
    """The arrays of a kernel problem tuple: the features (or the three
    arrays of sparse ones), the comparisons or rankings, and the weights,
    margins and ties that were given."""
    features = problem[0]
    parts = list(features) if isinstance(features, tuple) else [features]
    return [a for a in parts + list(problem[3:7])
            if isinstance(a, np.ndarray)]


def _private_problem(problem):
    """The problem tuple with a copy of each of its arrays.  Those of fit
    are, where no conversion was needed, the caller's own buffers (the
    kernel only reads them); a fitted model must not depend on them."""
    def own(value):
        return value.copy() if isinstance(value, np.ndarray) else value

    features = problem[0]
    features = (tuple(own(a) for a in features)
                if isinstance(features, tuple) else own(features))
    return ((features,) + problem[1:3] + tuple(own(a) for a in problem[3:7])
            + problem[7:])


def _lbfgs_reporting(problem, x0, start, tol, max_iter, n_threads, bar):
    """rlhf_bt_fit's L-BFGS (m = 10, relative gtol, ftol = 64 eps,
    maxls = 50) through the minimiser's Python entry point, counting each
    evaluation on the bar: the same kernel on the same objective, so the
    same bits.  start is the objective at x0, its first evaluation."""
    first = [start]

    def objective(x):
        if first and np.array_equal(x, x0):
            f, g = first.pop()
        else:
            first.clear()
            f, g = _core.bt_loss_grad(problem, x, n_threads=n_threads)
        bar.update()
        bar.set_postfix(objective=f, grad=lambda: float(np.abs(g).max()))
        return f, g

    return _core.lbfgs_minimize(objective, x0, m=10, gtol=-tol,
                                ftol=64.0 * np.finfo(np.float64).eps,
                                max_iter=max_iter, maxls=50)


def _step_tol(threshold, gmax):
    """The largest tol with tol * max(1, gmax) <= threshold: a Newton
    restart at a point of largest gradient component gmax then stops at
    the threshold of the first start."""
    scale = max(1.0, gmax)
    tol = threshold / scale
    while tol > 0 and tol * scale > threshold:
        tol = np.nextafter(tol, 0.0)
    while np.nextafter(tol, np.inf) * scale <= threshold:
        tol = np.nextafter(tol, np.inf)
    return max(float(tol), 5e-324)


def _newton_reporting(problem, x0, start, tol, max_iter, n_threads, bar):
    """rlhf_bt_fit's Newton method one step at a time, each step reported.

    Newton's method keeps nothing from one step to the next but the point
    and the stopping threshold ``tol * max(1, max |g(x0)|)``, which each
    restart is given back: the same steps as one call, at the cost of one
    more evaluation of the objective per step (at the restart point)."""
    f, g = start
    gmax = float(np.abs(g).max()) if len(g) else 0.0
    threshold = tol * max(1.0, gmax)
    bar.set_postfix(objective=f, grad=gmax)
    x, n_iter, n_fev, restarts = x0, 0, 0, 0
    while True:
        steps = min(1, max_iter - n_iter)
        x, f, g, k, fev, status = _core.bt_fit(
            problem, x, "newton", _step_tol(threshold, gmax), steps,
            n_threads=n_threads)
        n_iter, n_fev, restarts = n_iter + k, n_fev + fev, restarts + 1
        gmax = float(np.abs(g).max()) if len(g) else 0.0
        bar.update(k)
        bar.set_postfix(objective=f, grad=gmax)
        if status != 2 or n_iter >= max_iter:
            break
    # each restart evaluated its starting point again
    return x, f, g, n_iter, n_fev - (restarts - 1), status


def _warn_not_converged(solver, status, n_iter, stacklevel):
    """The ConvergenceWarning of a solver that stopped short (status >= 2)."""
    warnings.warn(
        f"{solver} failed to converge: {_STOPS[status]} after "
        f"{n_iter} iterations. Increase max_iter, add a penalty "
        "(penalty='l2'), or check that every item both wins and "
        "loses somewhere in a connected comparison graph.",
        sklearn_twin(ConvergenceWarning), stacklevel=stacklevel)


def _warn_if_beats_graph_splits(src, dst, n_items, stacklevel):
    """Warn when the "beats" graph (an edge from each loser to its winner,
    both ways for a tie) is not strongly connected within each connected
    part: then the maximum-likelihood strengths do not exist (Zermelo
    1929; Ford 1957)."""
    try:
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components
    except ImportError:
        # without SciPy, the plainest case: an item that only wins or
        # only loses
        lone = np.setxor1d(src, dst).size > 0
    else:
        graph = coo_matrix((np.ones(len(src)), (src, dst)),
                           shape=(n_items, n_items))
        weak = connected_components(graph, connection="weak")[0]
        strong = connected_components(graph, connection="strong")[0]
        lone = strong > weak
    if lone:
        warnings.warn(
            "The maximum-likelihood strengths do not exist: some items "
            "never lose (or never win) against the others they are "
            "compared with, so their strengths grow without bound "
            "(Ford 1957); coef_ is where the solver stopped. Use "
            "penalty='l2' (a prior) for finite strengths.",
            sklearn_twin(ConvergenceWarning), stacklevel=stacklevel)


class RewardModel(ParamsMixin):
    """Bradley-Terry (or Plackett-Luce) reward model over item features.

    Minimises ``sum_p s_p * loss_p + ||w||^2 / (2 C)`` with rewards
    ``r = features @ w`` (no intercept: preferences only see reward
    differences) and, for a comparison where item a was preferred to b,
    ``loss_p = -log sigmoid(r(a) - r(b) - margin_p)`` (Bradley & Terry
    1952; the margin as in Llama 2, Touvron et al. 2023).  The lecture's
    mirrored rows fitted by ``LogisticRegression(C)`` have the same optimum
    as ``RewardModel(C=2 C)`` on the pairs.

    Parameters
    ----------
    C : float, default=1.0
        Inverse strength of the L2 penalty; ``np.inf`` means none.
    penalty : {'l2', None}, default='l2'
        ``None``: the maximum-likelihood rewards.  With one strength per
        item they are identified only up to a shift; their mean is fixed
        at zero.
    solver : {'auto', 'lbfgs', 'newton'}, default='auto'
        'newton' forms the Hessian ``F^T L F`` (L the weighted Laplacian of
        the comparison graph) and converges to the exact optimum; 'lbfgs'
        needs only gradients (wide or sparse features, many items).
        'auto' takes Newton for free strengths of at most 1000 items, or
        at most 16 features when comparisons x features^2 is at most 2e7,
        where its Hessian is cheap; L-BFGS otherwise.
    tol : float, default=1e-8
        Stop when the largest gradient component is at most ``tol`` times
        its size at the start (or 1, if larger).
    max_iter : int, default=1000
    likelihood : {'bradley-terry', 'plackett-luce'}, default='bradley-terry'
        'plackett-luce' fits rankings of K items, best first (Plackett
        1975): ``P = prod_k exp(r_k) / sum_{j >= k} exp(r_j)``.
    ties : {None, 'rao-kupper', 'davidson'}, default=None
        How a tied comparison is modelled.  Rao & Kupper (1967):
        ``P(a > b) = sigmoid(d - kappa)``, ``theta = exp(kappa)``;
        Davidson (1970): ``P(tie) = nu sqrt(pi_a pi_b) / (pi_a + pi_b +
        nu sqrt(pi_a pi_b))``, ``pi = exp(r)``.  The tie parameter is
        fitted (``tie_param_`` is theta or nu).  With ``None``, a tie
        passed to ``fit`` counts as half a win each way.
    n_threads : int, default=None
        OpenMP threads (None: all); results are bitwise the same for any
        number.
    verbose : int, default=0
    progress : bool or None, default=None
        A progress bar (see :mod:`rlhf._progress`).  The solvers run in C
        and report nothing until they return, so:

        - None (the default): the fit runs as with False, and a line
          shows how long it has run once that is 3 seconds (a thread
          watches the clock; no count, no numbers; only for problems of
          more than a few million numbers, and never under pytest);
        - True: each evaluation of the objective (L-BFGS, through the
          minimiser's Python entry point) or each step (Newton, restarted
          after every step), with the objective and the largest gradient
          component.  The iterates are the same as without it, but it
          costs time: the C wrapper checks the comparisons and allocates
          its scratch again at each evaluation (15-20% more per L-BFGS
          evaluation measured on 200,000 comparisons x 40 features), and
          each Newton restart evaluates the objective once more (from a
          few percent when the factorisation dominates, as with 1000 free
          strengths, to a third or a half with 4 to 16 features);
        - False: nothing.

    Attributes
    ----------
    coef_ : ndarray of shape (n_features,) or (n_items,)
        Reward weights, or one strength per item when fitted without
        features.
    tie_param_ : float or None
    n_iter_ : int
    objective_ : float
        The minimised objective.
    n_items_ : int
    n_features_in_ : int
        Only when fitted with features.
    feature_names_in_ : ndarray of shape (``n_features_in_``,)
        The column names, when the features were a DataFrame with string
        column names.

    Notes
    -----
    A fitted model never refers to the arrays passed to ``fit``: changing
    them afterwards changes neither its predictions nor ``reward_std``.
    Besides the attributes above it holds what ``reward_std`` needs, the
    Hessian of the objective at the optimum, in one of two forms (and
    nothing with more than 4000 parameters, where ``reward_std`` is not
    available):

    - the Hessian itself, ``n_params x n_params`` (``n_params`` =
      ``len(coef_)``, plus one with a tie model), formed at the end of
      ``fit`` when the solver was Newton's method (which formed it at every
      iteration anyway) or for free strengths (one pass over the
      comparisons), provided it is no larger than the training data;
    - otherwise a private copy of the training data (features, comparisons
      or rankings, weights, margins, ties), from which the first call to
      ``reward_std`` forms the Hessian, keeping it instead of the copy
      when it is the smaller.

    A pickle holds the same: with few parameters it is small however many
    comparisons were fitted.

    Examples
    --------
    >>> import numpy as np, rlhf
    >>> features = np.array([[0.9, 0.8], [0.4, 0.9], [0.8, 0.5], [0.2, 0.1]])
    >>> pairs = np.array([[0, 1], [0, 3], [2, 3], [1, 3], [2, 1]])
    >>> model = rlhf.RewardModel(C=2.0).fit(features, pairs)
    >>> model.predict(features).round(3)
    array([1.728, 1.089, 1.411, 0.338])
    """

    def __init__(self, C: float = 1.0, penalty: Optional[str] = "l2",
                 solver: str = "auto", tol: float = 1e-8, max_iter: int = 1000,
                 likelihood: str = "bradley-terry", ties: Optional[str] = None,
                 n_threads: Optional[int] = None, verbose: int = 0,
                 progress: Optional[bool] = None) -> None:
        self.C = C
        self.penalty = penalty
        self.solver = solver
        self.tol = tol
        self.max_iter = max_iter
        self.likelihood = likelihood
        self.ties = ties
        self.n_threads = n_threads
        self.verbose = verbose
        self.progress = progress

    # -- parameters --------------------------------------------------------

    def _validate_params(self):
        name = type(self).__name__
        check_scalar(self.C, "C", name, low=0, low_open=True)
        check_option(self.penalty, "penalty", name, ["l2", None])
        check_option(self.solver, "solver", name, ["auto", "lbfgs", "newton"])
        check_scalar(self.tol, "tol", name, low=0, low_open=True)
        check_scalar(self.max_iter, "max_iter", name, kind="int", low=0)
        check_option(self.likelihood, "likelihood", name,
                     ["bradley-terry", "plackett-luce"])
        check_option(self.ties, "ties", name, [None, "rao-kupper",
                                               "davidson"])
        if self.n_threads is not None:
            check_n_threads(self.n_threads, "n_threads", name)
        check_scalar(self.verbose, "verbose", name, kind="int", low=0)
        check_progress(self.progress, name)
        if self.likelihood == "plackett-luce" and self.ties is not None:
            raise ValueError(
                "ties apply to pairwise comparisons; use "
                "likelihood='bradley-terry' with ties, or ties=None with "
                "likelihood='plackett-luce'."
            )

    def _alpha(self):
        if self.penalty is None or self.C == np.inf:
            return 0.0
        return 1.0 / self.C

    # -- data --------------------------------------------------------------

    def _check_features(self, features, n_items=None):
        if features is None:
            return None
        F = check_array(features, "features")
        if n_items is not None and F.shape[0] != n_items:
            raise ValueError(
                f"features has {F.shape[0]} rows but the comparisons refer "
                f"to {n_items} items; give one row per item."
            )
        return F

    def _problem(self, features, comparisons, sample_weight, margin, ties,
                 rankings, n_items):
        """Validate fit's arguments into the kernel's problem tuple."""
        pl = self.likelihood == "plackett-luce"
        if pl:
            data = rankings if rankings is not None else comparisons
            if data is None:
                raise ValueError("likelihood='plackett-luce' needs rankings "
                                 "(n_groups, K), best first.")
            data = _check_indices(data, "rankings", allow_pad=True)
            if margin is not None or ties is not None:
                raise ValueError("margin and ties apply to pairwise "
                                 "comparisons, not to rankings.")
            for g, row in enumerate(data):
                items = row[row >= 0]
                if (row[len(items):] != -1).any():
                    raise ValueError(
                        f"rankings: -1 may only pad the end of a ranking; "
                        f"row {g} is {row.tolist()}.")
                if len(np.unique(items)) != len(items):
                    raise ValueError(
                        f"rankings: row {g} ranks an item twice: "
                        f"{row.tolist()}.")
        else:
            if rankings is not None:
                raise ValueError("rankings are for likelihood="
                                 "'plackett-luce'; pass comparisons.")
            if comparisons is None:
                raise ValueError("comparisons must be given: an integer "
                                 "array of shape (n_comparisons, 2).")
            data = _check_indices(comparisons, "comparisons", n_columns=2)
            same = np.flatnonzero(data[:, 0] == data[:, 1])
            if same.size:
                raise ValueError(
                    f"comparisons: row {same[0]} compares item "
                    f"{data[same[0], 0]} with itself.")
        largest = int(data.max())
        if largest < 0:
            raise ValueError("rankings: no ranking names any item (every "
                             "entry is the padding -1).")
        if features is not None:
            if n_items is not None:
                raise ValueError("n_items is implied by features (one row "
                                 "per item); pass one or the other.")
            n_items = features.shape[0]
        elif n_items is None:
            n_items = largest + 1
        else:
            check_scalar(n_items, "n_items", type(self).__name__,
                         kind="int", low=1)
        if largest >= n_items:
            name = "rankings" if pl else "comparisons"
            where = "rows of features" if features is not None else "n_items"
            raise ValueError(
                f"{name} refers to item {largest}, but there are only "
                f"{n_items} items ({where}).")
        n = data.shape[0]
        if sample_weight is not None:
            sample_weight = check_sample_weight(sample_weight, n)
            if not sample_weight.sum() > 0:
                raise ValueError("sample_weight is zero for every "
                                 "comparison; at least one must be positive.")
            sample_weight = np.ascontiguousarray(sample_weight)
        if margin is not None:
            margin = _check_vector(margin, "margin", n)
        if ties is not None:
            tie_arr = np.asarray(ties)
            if tie_arr.dtype.kind != "b":
                if tie_arr.dtype.kind in "iu" and np.isin(tie_arr,
                                                          [0, 1]).all():
                    tie_arr = tie_arr.astype(bool)
                else:
                    raise TypeError(
                        "ties must be a boolean mask over the comparisons, "
                        f"got dtype {tie_arr.dtype}.")
            if tie_arr.shape != (n,):
                raise ValueError(f"ties must have shape ({n},), got "
                                 f"{tie_arr.shape}.")
            ties = np.ascontiguousarray(tie_arr.view(np.uint8))
        return (_kernel_features(features), int(n_items),
                _LIKELIHOODS[self.likelihood], data, sample_weight, margin,
                ties, _TIES[self.ties], self._alpha())

    def _choose_solver(self, features, n_coef, n_items, n_comparisons=None):
        """Newton when its Hessian is cheap next to a few gradient
        evaluations: free strengths of up to 1000 items, or up to 16
        features with at most 2e7 multiply-adds per Hessian (comparisons
        times features squared).  A Hessian costs about n_features / 2
        gradients, so beyond that L-BFGS reaches the optimum first (on
        1M comparisons of 16 features, Newton took 4x as long).  Without
        ``n_comparisons`` (the Dask path, where each evaluation and each
        Hessian is a pass over data on disk, and Newton needs the fewer
        passes) the bound on the comparisons is not applied."""
        if self.solver != "auto":
            return self.solver
        if features is None:
            return "newton" if n_coef <= _NEWTON_MAX_PARAMS else "lbfgs"
        if n_coef <= _NEWTON_AUTO_FEATURES and n_items * n_coef <= \
                _NEWTON_MAX_INTERMEDIATE and (
                    n_comparisons is None or n_comparisons * n_coef ** 2
                    <= _NEWTON_AUTO_WORK):
            return "newton"
        return "lbfgs"

    # -- fitting -----------------------------------------------------------

    def fit(self, features: Any, comparisons: Optional[ArrayLike] = None,
            sample_weight: Optional[ArrayLike] = None,
            margin: Optional[ArrayLike] = None,
            ties: Optional[ArrayLike] = None, *,
            rankings: Optional[ArrayLike] = None,
            n_items: Optional[int] = None) -> "RewardModel":
        """Fit the reward model.

        Parameters
        ----------
        features : array-like or scipy.sparse matrix of shape \
(n_items, n_features), or None
            One row per item.  ``None`` fits one free strength per item
            (as choix does).
        comparisons : array-like of int of shape (n_comparisons, 2)
            Item indices, the preferred item first.  An
            ``rlhf.Comparisons`` or ``rlhf.datasets.PreferenceDataset``
            also brings its ties, weights and number of items.  With
            ``likelihood='plackett-luce'``: rankings (see ``rankings``).
        sample_weight : array-like of shape (n_comparisons,), default=None
            Non-negative weights (per ranking for Plackett-Luce).
        margin : array-like of shape (n_comparisons,), default=None
            Required reward gap: ``loss = -log sigmoid(r_a - r_b - m)``;
            not applied to ties.
        ties : array-like of bool of shape (n_comparisons,), default=None
            True where the two items tied (the order in the row then does
            not matter).
        rankings : array-like of int of shape (n_groups, K), default=None
            Plackett-Luce rankings, best first; -1 pads a shorter ranking.
        n_items : int, default=None
            Number of items when ``features`` is None (default: the
            largest index + 1).

        Returns
        -------
        self

        Notes
        -----
        Comparisons too many for memory can be a ``dask.array`` of shape
        (n_comparisons, 2) or a ``dask.dataframe`` (for example from
        ``dd.read_parquet``, with columns ``preferred`` and ``other`` and
        optionally ``weight``, ``margin`` and ``tie``): the model is then
        fitted partition by partition on whatever Dask scheduler is in use,
        the features copied to every worker, the partial sums added on the
        client in partition order.  With Newton's method the result equals
        the in-memory fit's to rounding (``pip install 'rlhf-lab[dask]'``).
        Features too large for a worker, or given as a ``dask.array``, are
        kept in row blocks instead of copied (L-BFGS only; see
        ``rlhf._dask.fit_dask``).
        """
        if rankings is None and (hasattr(comparisons, "__dask_graph__") or
                                 hasattr(features, "__dask_graph__")):
            # a dask.array or dask.dataframe: fitted partition by partition
            from ._dask import fit_dask
            return fit_dask(self, features, comparisons, sample_weight,
                            margin, ties, n_items=n_items)
        self._validate_params()
        comparisons, source_ties, source_weight, source_items = _unwrap(
            comparisons)
        if ties is None and source_ties is not None and np.any(source_ties):
            ties = source_ties
        if sample_weight is None:
            sample_weight = source_weight
        if n_items is None and features is None:
            n_items = source_items
        names = _feature_names(features)
        F = self._check_features(features)
        if F is None and _is_sparse(features):
            raise TypeError("features must be an array or None.")
        problem = self._problem(F, comparisons, sample_weight, margin, ties,
                                rankings, n_items)
        n_items = problem[1]
        if F is None and n_items > MAX_TABLE_ENTRIES:
            raise ValueError(
                f"Without features the model has one strength per item, and "
                f"the comparisons name item {n_items - 1}: more than 2**31 "
                "strengths. Check the item indices in comparisons (or "
                "n_items), or pass features.")
        columns = None
        uncompressed = problem
        if F is not None and _is_sparse(F):
            problem, columns = _compress(F, problem)
        n_coef = (n_items if F is None else F.shape[1] if columns is None
                  else len(columns))
        has_tie = self.ties is not None
        n_params = n_coef + has_tie
        solver = self._choose_solver(F, n_coef, n_items, len(problem[3]))
        if solver == "newton" and n_params > 4 * _NEWTON_MAX_PARAMS:
            raise ValueError(
                f"solver='newton' forms a dense ({n_params} x {n_params}) "
                "Hessian; use solver='lbfgs' for this many parameters.")
        x0 = np.zeros(n_params)
        n_threads = 0 if self.n_threads is None else int(self.n_threads)
        try:
            x, loss, grad, n_iter, n_fev, status = self._minimize(
                problem, x0, solver, n_threads)
        except ValueError:
            if F is not None:
                _check_finite(F.data if _is_sparse(F) else F, "features")
            raise
        coef = x[:n_coef].copy()
        if F is None and self._alpha() == 0.0:
            coef -= coef.mean()
        if columns is not None:
            coef = np.zeros(F.shape[1])
            coef[columns] = x[:n_coef]
        self._store_fit(x, n_coef, coef, columns,
                        self._laplace_state(problem, x, solver, F is None),
                        F, names, n_iter, loss, solver, n_items)
        self._fit_info = self._describe_fit(uncompressed, F, coef, loss,
                                            n_coef, status, n_fev)
        if self.verbose:
            print(f"{type(self).__name__}: {solver} stopped after {n_iter} "
                  f"iterations and {n_fev} evaluations: {_STOPS[status]} "
                  f"(objective {loss:.10g}).")
        if F is None and self._alpha() == 0.0:
            self._warn_if_no_maximum(problem)
        elif self._alpha() == 0.0 and self.likelihood == "bradley-terry":
            self._warn_if_separable(problem, x[:n_coef])
        if status >= 2:
            _warn_not_converged(solver, status, n_iter, stacklevel=3)
        return self

    def _minimize(self, problem, x0, solver, n_threads):
        """The kernel's fit, (x, loss, grad, n_iter, n_fev, status), with
        a progress bar when the 'progress' parameter asks for one (see
        the class's docstring): the same iterates either way."""
        tol, max_iter = float(self.tol), kernel_max_iter(self.max_iter)
        mode = resolve_progress(self.progress)
        desc = f"{type(self).__name__}.fit ({solver})"
        if mode is None:
            # the numbers the kernel reads per evaluation, and the
            # Cholesky factorisation's multiply-adds of a Newton step
            size = sum(a.size for a in _problem_arrays(problem)) + (
                len(x0) ** 3 / 3 if solver == "newton" else 0)
            if size >= _PROGRESS_MIN_SIZE:
                with Progress(None, None, desc) as bar, bar.ticking():
                    return _core.bt_fit(problem, x0, solver, tol, max_iter,
                                        n_threads=n_threads)
        if mode is not True:
            return _core.bt_fit(problem, x0, solver, tol, max_iter,
                                n_threads=n_threads)
        start = _core.bt_loss_grad(problem, x0, n_threads=n_threads)
        if solver == "lbfgs":
            with Progress(True, None, desc, unit="eval") as bar:
                return _lbfgs_reporting(problem, x0, start, tol, max_iter,
                                        n_threads, bar)
        with Progress(True, None, desc, unit="step") as bar:
            return _newton_reporting(problem, x0, start, tol, max_iter,
                                     n_threads, bar)

    def _store_fit(self, x, n_coef, coef, columns, laplace, F, names,
                   n_iter, loss, solver, n_items):
        """Set the fitted attributes (in memory and on Dask alike)."""
        self._columns = columns
        self.coef_ = coef
        self.tie_param_ = None
        if self.ties is not None:
            u = x[n_coef]
            self.tie_param_ = (math.exp(math.exp(u)) if self.ties ==
                               "rao-kupper" else math.exp(u))
        self._x = x
        self._laplace = laplace
        self._fitted_with_features = F is not None
        self.n_iter_ = int(n_iter)
        self.objective_ = float(loss)
        self.solver_ = solver
        self.n_items_ = n_items
        if F is not None:
            self.n_features_in_ = F.shape[1]
        elif hasattr(self, "n_features_in_"):
            del self.n_features_in_
        if names is not None and F is not None:
            self.feature_names_in_ = names
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_

    def _describe_fit(self, problem, F, coef, loss, n_coef, status, n_fev):
        """What summary() reports and fit's arguments are needed for:
        counts, the log-likelihood, the training accuracy, how the solver
        stopped (numbers only; no reference to the data).  problem is the
        one before _compress (its indices are rows of F)."""
        data, weight, ties, alpha = problem[3], problem[4], problem[6], \
            problem[8]

        def gap(first, second):
            # the indices may be the caller's array, which another thread
            # may have written into during the fit (the kernel read a
            # private copy): "clip" keeps a stray index in range
            return (np.take(rewards, first, mode="clip")
                    - np.take(rewards, second, mode="clip"))

        if F is None:
            rewards = coef
        elif _is_sparse(F):
            rewards = np.asarray(F @ coef).ravel()
        else:
            rewards = np.einsum("ij,j->i", F, coef)
        pl = self.likelihood == "plackett-luce"
        tied = None if ties is None or pl else ties.astype(bool)
        if pl:
            # every ranked item against each one ranked below it
            right = total = 0.0
            K = data.shape[1]
            for i in range(K):
                for j in range(i + 1, K):
                    both = (data[:, i] >= 0) & (data[:, j] >= 0)
                    d = gap(data[both, i], data[both, j])
                    right += float(np.sum(d > 0) + 0.5 * np.sum(d == 0))
                    total += d.size
            accuracy = right / total if total else math.nan
        else:
            # one pass in C (indices clamped as read: see gap above)
            wins, equal, total = _core.pair_counts(
                rewards, data, None if ties is None else tied)
            accuracy = (wins + 0.5 * equal) / total if total else math.nan
        w = self._x[:n_coef]  # the kernel's penalty is on these
        penalty = 0.5 * alpha * float(w @ w) if alpha else 0.0
        return {
            "n_rows": int(len(data)),
            "n_ties": 0 if tied is None else int(np.count_nonzero(tied)),
            "weighted": weight is not None,
            "log_likelihood": -(float(loss) - penalty),
            "penalty": penalty,
            "accuracy": accuracy,
            "status": int(status),
            "n_fev": int(n_fev),
        }

    @staticmethod
    def _laplace_state(problem, x, solver, free):
        """What reward_std needs, sharing no memory with fit's arguments
        (see the class's Notes): ("hessian", H), ("problem", a private
        copy of the problem), or None beyond reward_std's size limit."""
        n_params = len(x)
        if n_params > _LAPLACE_MAX_PARAMS:
            return None
        data_bytes = sum(a.nbytes for a in _problem_arrays(problem))
        cheap = solver == "newton" or free
        if cheap and 8 * n_params * n_params <= data_bytes:
            return ("hessian", _core.bt_hessian(problem, x))
        return ("problem", _private_problem(problem))

    def _laplace_hessian(self):
        """The Hessian at the optimum, formed from the private copy of the
        problem on first use (then kept instead of the copy if smaller)."""
        # one attribute, read once: a concurrent call may replace it
        kind, value = self._laplace
        if kind == "hessian":
            return value
        if kind == "unavailable":
            raise ValueError(value)
        H = _core.bt_hessian(value, self._x)
        if H.nbytes <= sum(a.nbytes for a in _problem_arrays(value)):
            self._laplace = ("hessian", H)
        return H

    @staticmethod
    def _warn_if_no_maximum(problem):
        """Free strengths without a penalty have a finite maximum-likelihood
        estimate only if the "beats" graph is strongly connected within
        each connected part (Zermelo 1929; Ford 1957): if some group of
        items never loses to the rest, its strengths run off to infinity
        and the solver stops somewhere on the way."""
        n_items, data, weight, ties = problem[1], problem[3], problem[4], \
            problem[6]
        keep = np.ones(len(data), bool) if weight is None else weight > 0
        data = data[keep]
        if problem[2] == _LIKELIHOODS["plackett-luce"]:
            # a ranking: every item beats each one ranked below it
            K = data.shape[1]
            above, below = np.triu_indices(K, 1)
            src, dst = data[:, below].ravel(), data[:, above].ravel()
            real = (src >= 0) & (dst >= 0)
            src, dst = src[real], dst[real]
        else:
            tied = (np.zeros(len(data), bool) if ties is None
                    else ties[keep].astype(bool))
            # a beats b: an edge b -> a; a tie: both ways
            src = np.r_[data[:, 1], data[tied, 0]]
            dst = np.r_[data[:, 0], data[tied, 1]]
        _warn_if_beats_graph_splits(src, dst, n_items, stacklevel=4)

    @staticmethod
    def _warn_if_separable(problem, coef):
        """With features and no penalty, the maximum likelihood does not
        exist when the rewards can order every strict comparison the way
        it went (and nothing ties): the likelihood then keeps growing along
        that direction.  Detected at the fitted point."""
        features, data, weight, margin, ties = (problem[0], problem[3],
                                                problem[4], problem[5],
                                                problem[6])
        if ties is not None and np.any(ties):
            return
        if isinstance(features, tuple):
            values, indices, indptr, n_cols = features
            scores = np.zeros(len(indptr) - 1)
            for i in range(len(indptr) - 1):
                lo, hi = indptr[i], indptr[i + 1]
                scores[i] = values[lo:hi] @ coef[indices[lo:hi]]
            r = scores
        else:
            r = features @ coef
        keep = np.ones(len(data), bool) if weight is None else weight > 0
        d = r[data[keep, 0]] - r[data[keep, 1]]
        if margin is not None:
            d = d - margin[keep]
        if d.size and np.all(d > 0):
            warnings.warn(
                "The maximum-likelihood reward weights do not exist: the "
                "features order every comparison the way it went, so the "
                "likelihood grows without bound along coef_, which is where "
                "the solver stopped. Use penalty='l2' for finite weights.",
                sklearn_twin(ConvergenceWarning), stacklevel=3)

    # -- prediction --------------------------------------------------------

    def _rewards(self, features):
        check_is_fitted(self, "coef_")
        if features is None:
            if self._fitted_with_features:
                raise ValueError(
                    "This model was fitted with features; pass the "
                    "features of the items to score.")
            return self.coef_.copy()
        if not self._fitted_with_features:
            raise ValueError(
                "This model has one strength per item (fitted with "
                "features=None); call with features=None.")
        F = check_array(features, "features")
        if F.shape[1] != self.n_features_in_:
            raise ValueError(
                f"features has {F.shape[1]} columns, but "
                f"{type(self).__name__} was fitted with "
                f"{self.n_features_in_}.")
        if _is_sparse(F):
            return np.asarray(F @ self.coef_).ravel()
        # einsum sums each row in one fixed order; a BLAS product splits
        # the rows between threads and its last bits depend on how many
        return np.einsum("ij,j->i", F, self.coef_)

    def predict(self, features: Any = None) -> FloatArray:
        """Rewards of items: ``features @ coef_`` (or the fitted strengths
        when fitted without features).

        Returns
        -------
        ndarray of shape (n_items,)
        """
        return self._rewards(features)

    @overload
    def predict_proba(self, features: Any, comparisons: ArrayLike,
                      return_std: Literal[False] = ..., *,
                      moderated: bool = ...) -> FloatArray: ...

    @overload
    def predict_proba(self, features: Any, comparisons: ArrayLike,
                      return_std: Literal[True], *,
                      moderated: bool = ...) -> Tuple[FloatArray,
                                                      FloatArray]: ...

    @overload
    def predict_proba(self, features: Any, comparisons: ArrayLike,
                      return_std: bool, *, moderated: bool = ...
                      ) -> Union[FloatArray, Tuple[FloatArray,
                                                   FloatArray]]: ...

    def predict_proba(self, features: Any, comparisons: ArrayLike,
                      return_std: bool = False, *, moderated: bool = False
                      ) -> Union[FloatArray, Tuple[FloatArray, FloatArray]]:
        """Probability that the first item of each pair is preferred (a
        strict win; under a tie model the rest is split between a tie and
        a loss).

        Parameters
        ----------
        features : array-like of shape (n_items, n_features), or None
        comparisons : array-like of int of shape (n_comparisons, 2), an
            ``rlhf.Comparisons`` or an ``rlhf.datasets.PreferenceDataset``
        return_std : bool, default=False
            Also return the standard deviation of ``sigmoid(margin)`` under
            the Laplace posterior of the coefficients (see Notes).  It only
            adds an output: the probabilities are the same with or without
            it (as ``return_std`` does in scikit-learn), so switching it on
            never changes a number already computed.
        moderated : bool, default=False
            Return the posterior-predictive probability ``E[sigmoid(margin)]``
            (MacKay's moderated output, by the probit approximation: see
            Notes) instead of ``sigmoid`` of the mean margin.  With ``return_std=True`` the pair (moderated, std) is
            the mean and standard deviation of one distribution.

        Returns
        -------
        proba : ndarray of shape (n_comparisons,)
        std : ndarray of shape (n_comparisons,)
            Only with ``return_std=True``.

        Notes
        -----
        Under the Laplace approximation the coefficients are Gaussian with
        mean ``coef_`` and covariance ``Sigma`` (see ``reward_std``), so the
        margin ``(f_a - f_b) . w`` is Gaussian with mean ``m`` and variance
        ``s^2 = (f_a - f_b)^T Sigma (f_a - f_b)`` (``Sigma_aa + Sigma_bb -
        2 Sigma_ab`` for free strengths).  The moderated probability is the
        probit approximation ``sigmoid(m / sqrt(1 + pi s^2 / 8))`` of
        ``E[sigmoid(margin)]`` (MacKay 1992, "The evidence framework applied
        to classification networks"); it is closer to 1/2 than
        ``sigmoid(m)`` wherever the model is unsure.  The probit approximation is
        within 0.015 of the exact mean.  The standard deviation is
        computed by quadrature, accurate to rounding: ``E[(sigmoid(t) -
        mu)^2]`` over ``t ~ N(m, s^2)``, ``mu`` the quadrature mean, by
        Gauss-Legendre on ``m +- 12 s`` (no delta method, ``sigmoid'(m)
        s``: it is wrong when ``s`` is not small, e.g. ``m = 0``, ``s =
        10``, where the spread is nearly 1/2 and the delta method says
        2.5).  Available for models without a
        tie model (``ties=None``); the uncertainty is that of the reward
        coefficients.

        Examples
        --------
        >>> import numpy as np, rlhf
        >>> features = np.array([[0.9, 0.8], [0.4, 0.9], [0.8, 0.5],
        ...                      [0.2, 0.1]])
        >>> pairs = np.array([[0, 1], [0, 3], [2, 3], [1, 3], [2, 1]])
        >>> model = rlhf.RewardModel(C=2.0).fit(features, pairs)
        >>> model.predict_proba(features, [[0, 3]]).round(3)
        array([0.801])
        >>> p, std = model.predict_proba(features, [[0, 3]], return_std=True,
        ...                              moderated=True)
        >>> p.round(3), std.round(3)
        (array([0.761]), array([0.17]))
        """
        if return_std or moderated:
            return self._predict_proba_bayes(features, comparisons,
                                             return_std, moderated)
        r = self._rewards(features)
        pairs = self._pairs(_unwrap(comparisons)[0], len(r))
        d = r[pairs[:, 0]] - r[pairs[:, 1]]
        tie_param = self.tie_param_
        if self.ties == "rao-kupper":
            assert tie_param is not None  # fitted with ties
            d = d - math.log(tie_param)
        if self.ties == "davidson":
            assert tie_param is not None
            nu = tie_param
            # 1 / (1 + e^-d + nu e^(-d/2)), as a log-sum-exp
            stack = np.stack([np.zeros_like(d), -d,
                              math.log(nu) - 0.5 * d])
            return np.exp(-np.logaddexp.reduce(stack, axis=0))
        return np.exp(-np.logaddexp(0.0, -d))

    def score(self, features: Any, comparisons: ArrayLike,
              ties: Optional[ArrayLike] = None) -> float:
        """Pairwise accuracy: the share of strict comparisons whose
        preferred item gets the higher reward (equal rewards count one
        half).  Tied comparisons (``ties``, or those of an
        ``rlhf.Comparisons`` / ``PreferenceDataset``) are left out: a tie
        has no preferred item."""
        r = self._rewards(features)
        comparisons, source_ties, _, _ = _unwrap(comparisons)
        if ties is None:
            ties = source_ties
        pairs = self._pairs(comparisons, len(r))
        tie_arr = None
        if ties is not None:
            tie_arr = np.asarray(ties)
            if tie_arr.shape != (len(pairs),):
                raise ValueError(f"ties must have shape ({len(pairs)},), got "
                                 f"{tie_arr.shape}.")
            tie_arr = tie_arr.astype(bool).view(np.uint8)
        # ties left out in the same pass, not by a copy of the pairs
        wins, equal, total = _core.pair_counts(r, pairs, tie_arr)
        if not total:
            raise ValueError("Every comparison is a tie; pairwise "
                             "accuracy needs strict ones.")
        return (wins + 0.5 * equal) / total

    def _pairs(self, comparisons, n_items):
        pairs = _check_indices(comparisons, "comparisons", n_columns=2)
        if pairs.max() >= n_items:
            raise ValueError(f"comparisons refers to item {pairs.max()}, "
                             f"but there are only {n_items} items.")
        return pairs

    # -- uncertainty -------------------------------------------------------

    def _laplace_covariance(self, caller):
        """The inverse Hessian of the objective at the optimum (of all
        the kernel's parameters: the coefficients, then the tie
        parameter); for free strengths without a penalty, that of the
        mean-zero strengths.  A ValueError beyond the size limit or when
        the Hessian is singular."""
        n_params = len(self._x)
        if n_params > _LAPLACE_MAX_PARAMS:
            raise ValueError(
                f"{caller} inverts the ({n_params} x {n_params}) Hessian; "
                f"it is available for at most {_LAPLACE_MAX_PARAMS} "
                "parameters.")
        H = self._laplace_hessian()
        n_coef = len(self._x) - (self.ties is not None)
        free = not self._fitted_with_features and self._alpha() == 0.0
        # a Hessian singular to rounding makes inv return huge, meaningless
        # numbers rather than fail: judge it by its eigenvalues
        eig = np.linalg.eigvalsh(H) if len(H) else np.ones(1)
        if not eig[0] > eig[-1] * len(H) * 1e-13:
            raise ValueError(
                "The Hessian at the optimum is singular: some rewards are "
                "not identified by the comparisons (penalty=None with a "
                "feature constant over the items, or an item never "
                "compared). Use penalty='l2'.")
        cov = np.linalg.inv(H) if len(H) else np.zeros((0, 0))
        if free:
            # the kernel's Hessian adds mean(diag) 1 1^T / n along the
            # direction the objective ignores; project it out again
            P = np.eye(len(H))
            P[:n_coef, :n_coef] -= 1.0 / n_coef
            cov = P @ cov @ P.T
        return cov

    def reward_std(self, features: Any = None) -> FloatArray:
        """Laplace-approximation standard errors of the rewards.

        The posterior of the parameters is approximated by a Gaussian at
        the optimum with covariance ``H^-1``, H the Hessian of the
        objective (MacKay 1992); a reward ``f . w`` then has variance
        ``f^T H^-1 f``.  Free strengths without a penalty are identified
        up to a shift: the covariance is that of the mean-zero strengths
        (the pseudo-inverse of the Hessian).  H comes from what the model
        kept at fit (see the class's Notes), never from the arrays passed
        to ``fit``; it is available for at most 4000 parameters.

        Returns
        -------
        ndarray of shape (n_items,)
        """
        check_is_fitted(self, "coef_")
        n_coef = len(self._x) - (self.ties is not None)
        cov_w = self._laplace_covariance("reward_std")[:n_coef, :n_coef]
        if features is None:
            if self._fitted_with_features:
                raise ValueError("This model was fitted with features; "
                                 "pass the features of the items.")
            var = np.diag(cov_w).copy()
        else:
            self._rewards(features)  # the checks
            F = check_array(features, "features")
            rest = 0.0
            if self._columns is not None:
                # the coefficients of the other columns never met the data:
                # their Hessian is alpha I, their variance C (infinite
                # without a penalty)
                if _is_sparse(F):
                    sq = _sparse_row_sq_outside(F, self._columns)
                else:
                    other = np.ones(F.shape[1], bool)
                    other[self._columns] = False
                    sq = np.einsum("ij,ij->i", F[:, other], F[:, other])
                alpha = self._alpha()
                with np.errstate(divide="ignore"):
                    rest = np.where(sq > 0, sq / alpha if alpha > 0 else
                                    np.inf, 0.0)
                F = F[:, self._columns]
            FS = np.asarray(F @ cov_w)
            var = np.asarray(F.multiply(FS).sum(axis=1)).ravel() \
                if _is_sparse(F) else np.einsum("ij,ij->i", FS, F)
            var = var + rest
        return np.sqrt(np.maximum(var, 0.0))

    def _coef_covariance(self, caller: str) -> FloatArray:
        """The Laplace covariance of all of ``coef_`` (the tie parameter
        left out), dense: with sparse features, the coefficients of columns
        no comparison reached have the prior's variance C and no
        correlation (a ValueError without a penalty: it is infinite)."""
        check_is_fitted(self, "coef_")
        n_coef = len(self._x) - (self.ties is not None)
        cov_w = self._laplace_covariance(caller)[:n_coef, :n_coef]
        if self._columns is None:
            return np.array(cov_w, dtype=np.float64)
        alpha = self._alpha()
        if alpha == 0.0:
            raise ValueError(
                f"{caller}: some feature columns were never met by the "
                "comparisons and, without a penalty, their coefficients "
                "have infinite variance. Use penalty='l2'.")
        n = len(self.coef_)
        if n > _LAPLACE_MAX_PARAMS:
            raise ValueError(
                f"{caller} forms the dense ({n} x {n}) covariance of the "
                f"coefficients; it is available for at most "
                f"{_LAPLACE_MAX_PARAMS} features.")
        cov = np.diag(np.full(n, 1.0 / alpha))
        cov[np.ix_(self._columns, self._columns)] = cov_w
        return cov

    def _margin_moments(self, features: Any, pairs: Any, caller: str
                        ) -> Tuple[FloatArray, FloatArray]:
        """Mean and variance of each pair's margin ``r_a - r_b`` under the
        Laplace posterior (no tie parameter)."""
        r = self._rewards(features)
        pairs = self._pairs(_unwrap(pairs)[0], len(r))
        a, b = pairs[:, 0], pairs[:, 1]
        mean = r[a] - r[b]
        n_coef = len(self._x) - (self.ties is not None)
        cov_w = self._laplace_covariance(caller)[:n_coef, :n_coef]
        if not self._fitted_with_features:
            var = cov_w[a, a] + cov_w[b, b] - 2.0 * cov_w[a, b]
            return mean, np.maximum(var, 0.0)
        F = check_array(features, "features")
        X = F[a] - F[b]
        rest: Any = 0.0
        if self._columns is not None:
            # the coefficients of the other columns never met the data:
            # independent, with the prior's variance C
            if _is_sparse(X):
                X = X.tocsr()
                sq = _sparse_row_sq_outside(X, self._columns)
            else:
                other = np.ones(X.shape[1], bool)
                other[self._columns] = False
                sq = np.einsum("ij,ij->i", X[:, other], X[:, other])
            alpha = self._alpha()
            with np.errstate(divide="ignore"):
                rest = np.where(sq > 0, sq / alpha if alpha > 0 else np.inf,
                                0.0)
            X = X[:, self._columns]
        XS = np.asarray(X @ cov_w)
        var = (np.asarray(X.multiply(XS).sum(axis=1)).ravel()
               if _is_sparse(X) else np.einsum("ij,ij->i", XS, X))
        return mean, np.maximum(var + rest, 0.0)

    def _predict_proba_bayes(self, features, comparisons, return_std,
                             moderated):
        """predict_proba's moderated probability and standard deviation
        (see its Notes)."""
        name = f"{type(self).__name__}.predict_proba"
        for flag, value in (("return_std", return_std),
                            ("moderated", moderated)):
            if not isinstance(value, (bool, np.bool_)):
                raise TypeError(f"The '{flag}' parameter of {name} must be a "
                                f"bool. Got {format_value(value)} instead.")
        check_is_fitted(self, "coef_")
        if self.ties is not None:
            raise ValueError(
                f"{name}: return_std and moderated are available for models "
                f"without a tie model; this one has ties={self.ties!r}.")
        mean, var = self._margin_moments(features, comparisons, name)
        if moderated:
            with np.errstate(divide="ignore", invalid="ignore"):
                scaled = mean / np.sqrt(1.0 + math.pi * var / 8.0)
            proba = _sigmoid(np.where(np.isfinite(var), scaled, 0.0))
        else:
            proba = _sigmoid(mean)
        if not return_std:
            return proba
        return proba, _sigmoid_std(mean, np.sqrt(var))

    def conservative_reward(self, features: Any = None,
                            k: float = 1.0) -> FloatArray:
        """A pessimistic reward: ``predict(features) - k *
        reward_std(features)``.

        Reward-model ensembles are used this way against over-optimisation
        (the policy is scored by a lower confidence bound of the reward,
        e.g. Coste et al. 2024, "Reward model ensembles help mitigate
        overoptimization"); here the spread comes from the Laplace posterior
        of one model, without an ensemble.  A negative ``k`` gives an
        optimistic (upper confidence) reward.

        Parameters
        ----------
        features : array-like of shape (n_items, n_features), or None
            None for a model fitted without features.
        k : float, default=1.0
            Standard errors subtracted.

        Returns
        -------
        ndarray of shape (n_items,)

        Examples
        --------
        >>> import numpy as np, rlhf
        >>> pairs = np.array([[0, 1], [1, 2], [0, 2], [2, 1], [0, 1]])
        >>> model = rlhf.RewardModel(C=4.0).fit(None, pairs)
        >>> model.conservative_reward(k=2.0).round(3)
        array([-1.664, -3.467, -3.453])
        """
        check_scalar(k, "k", f"{type(self).__name__}.conservative_reward",
                     high=np.inf, high_open=True)
        return self.predict(features) - float(k) * self.reward_std(features)

    # -- what was learned --------------------------------------------------

    def summary(self, max_rows: int = 30, alpha: float = 0.05) -> "Summary":
        """A table of the fitted coefficients, in the style of statsmodels.

        Each coefficient (a feature's reward weight, or an item's strength
        when fitted without features; then the tie parameter, on the scale
        it is fitted on) with its Laplace standard error: the square root
        of the diagonal of the inverse Hessian of the minimised objective
        at the optimum, so with a penalty the Hessian of the penalised
        negative log-likelihood, ``1/C`` included (the posterior under the
        Gaussian prior the penalty is), and without one the observed
        information of the maximum-likelihood fit, as statsmodels' Logit
        on the comparisons' feature differences gives.  ``z = coef / std
        err``, ``P>|z|`` its two-sided normal p-value and the interval
        ``coef +- z_(1 - alpha/2) std err``.  Above the table: the number
        of comparisons, the log-likelihood (the objective without the
        penalty), the share of the training comparisons the rewards order
        right, the penalty, the solver, its iterations and why it stopped.

        Parameters
        ----------
        max_rows : int or None, default=30
            Rows of the table shown (the first ones); None: all.
        alpha : float in (0, 1), default=0.05
            One minus the confidence of the intervals.

        Returns
        -------
        Summary
            ``print`` it, or leave it at the end of a notebook cell.  Its
            attributes ``names``, ``coef``, ``std_err``, ``z``,
            ``p_value`` and ``conf_int`` (shape (n, 2)) hold the table's
            numbers, unrounded and in full (every row), and
            ``log_likelihood``, ``accuracy``, ``n_iter`` and ``converged``
            the header's.
        """
        from ._summary import (Summary, format_columns, format_number,
                               format_p_values, normal_quantile, normal_sf2)
        check_is_fitted(self, "coef_")
        name = type(self).__name__
        if max_rows is not None:
            check_scalar(max_rows, "max_rows", f"{name}.summary", kind="int",
                         low=1)
        check_scalar(alpha, "alpha", f"{name}.summary", low=0.0, high=1.0,
                     low_open=True, high_open=True)
        info = self._fit_info
        n_coef = len(self._x) - (self.ties is not None)
        features = self._fitted_with_features
        if features:
            names = (list(self.feature_names_in_)
                     if hasattr(self, "feature_names_in_") else
                     [f"x{j}" for j in range(len(self.coef_))])
        else:
            names = [f"item {i}" for i in range(len(self.coef_))]
        coef = np.array(self.coef_, dtype=np.float64)
        reg = self._alpha()
        problem_note = None
        try:
            cov = self._laplace_covariance(f"{name}.summary")
            se_x = np.sqrt(np.maximum(np.diag(cov), 0.0))
        except ValueError as error:
            se_x = np.full(len(self._x), np.nan)
            problem_note = f"No standard errors: {error}"
        if self._columns is not None:
            # coefficients of columns no comparison reaches: at 0, with
            # the prior's variance C (infinite without a penalty)
            se = np.full(len(coef), math.sqrt(1.0 / reg) if reg else np.inf)
            se[self._columns] = se_x[:n_coef]
        else:
            se = se_x[:n_coef].copy()
        if self.ties is not None:
            names.append("log log theta" if self.ties == "rao-kupper"
                         else "log nu")
            coef = np.append(coef, self._x[n_coef])
            se = np.append(se, se_x[n_coef])
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(se > 0, coef / se, np.nan)
        p_value = normal_sf2(z)
        q = normal_quantile(1.0 - alpha / 2.0)
        conf_int = np.column_stack([coef - q * se, coef + q * se])

        shown = len(coef) if max_rows is None else min(max_rows, len(coef))
        low = 100 * alpha / 2
        columns = ["coef", "std err", "z", "P>|z|",
                   f"[{format_number(low / 100, 3)}",
                   f"{format_number(1 - low / 100, 3)}]"]
        coef_s, se_s, low_s, high_s = format_columns(
            coef[:shown], se[:shown], conf_int[:shown, 0],
            conf_int[:shown, 1])
        cells = [coef_s, se_s,
                 [f"{v:.2f}" if math.isfinite(v) else format_number(v)
                  for v in z[:shown]],
                 format_p_values(p_value[:shown]), low_s, high_s]
        rows = [(names[i], [c[i] for c in cells]) for i in range(shown)]

        pl = self.likelihood == "plackett-luce"
        model = "Plackett-Luce" if pl else "Bradley-Terry"
        count = ("Rankings" if pl else "Comparisons")
        left = [("Model", model)]
        if self.ties is not None:
            left.append(("Ties model", "Rao-Kupper" if self.ties ==
                         "rao-kupper" else "Davidson"))
        left.append((count, info["n_rows"]))
        if info["n_ties"]:
            left.append(("of which ties", info["n_ties"]))
        left += [("Items", self.n_items_),
                 ("Features", self.n_features_in_ if features else
                  "none (strengths)"),
                 ("Weighted", "yes" if info["weighted"] else "no")]
        converged = info["status"] <= 1
        right = [("Log-likelihood", format_number(info["log_likelihood"])),
                 ("Accuracy (train)", f"{info['accuracy']:.3f}"),
                 ("Penalty", f"L2, C = {format_number(1.0 / reg)}" if reg
                  else "none"),
                 ("Solver", self.solver_),
                 ("Iterations", self.n_iter_),
                 ("Converged", "yes" if converged else "NO")]
        notes = [f"Stopped: {_STOPS[info['status']]}."]
        if reg:
            notes.append(
                "Std. errors: Laplace approximation, the inverse Hessian of "
                "the penalised negative log-likelihood (its L2 term 1/C "
                "included).")
        else:
            notes.append(
                "Std. errors: Laplace approximation, the inverse Hessian of "
                "the negative log-likelihood (no penalty).")
        if not features and not reg:
            notes.append("Strengths are identified up to a shift: they and "
                         "their errors are those of the mean-zero "
                         "strengths.")
        if self._columns is not None and reg:
            notes.append("Columns no comparison reaches stay at 0 with std. "
                         "err sqrt(C).")
        if self.tie_param_ is not None:
            notes.append(
                ("theta" if self.ties == "rao-kupper" else "nu") +
                f" = {format_number(self.tie_param_)} (the tie parameter).")
        accuracy_of = "ranked pairs" if pl else "strict comparisons"
        notes.append(f"Accuracy: the share of the training {accuracy_of} "
                     "whose first item gets the higher reward (equal "
                     "rewards count 1/2).")
        if problem_note:
            notes.append(problem_note)
        title = (f"{name} ({model}) on {format_number(info['n_rows'])} "
                 f"{count.lower()}")
        return Summary(
            title, left, right, columns, rows, notes,
            omitted=len(coef) - shown,
            numbers={"names": names, "coef": coef, "std_err": se, "z": z,
                     "p_value": p_value, "conf_int": conf_int,
                     "log_likelihood": info["log_likelihood"],
                     "accuracy": info["accuracy"], "n_iter": self.n_iter_,
                     "converged": converged})

    def _repr_html_(self):
        """Jupyter: the summary of a fitted model, the parameters of an
        unfitted one."""
        import html
        if "coef_" in self.__dict__:
            return self.summary()._repr_html_()
        return f"<pre>{html.escape(repr(self))}</pre>"


def _sigmoid(z):
    """sigmoid(z) = 1 / (1 + e^-z) without overflow."""
    return np.exp(-np.logaddexp(0.0, -z))


# Gauss-Legendre nodes on [-1, 1] for E[g(sigmoid(T))], T ~ N(m, s^2)
_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(200)
# beyond |t| = 40, sigmoid(t) is 0 or 1 to 4e-18
_SIGMOID_FLAT = 40.0
_erfc = np.frompyfunc(math.erfc, 1, 1)


def _sigmoid_std(mean, std):
    """The standard deviation of sigmoid(T), T ~ N(mean, std^2).

    Quadrature in t: Gauss-Legendre (200 nodes) over the part of
    ``mean +- 12 std`` where the sigmoid is not flat (|t| <= 40), the
    normal's mass beyond each end at the sigmoid's value there.  A
    Gauss-Hermite rule in the standard normal variable would converge
    slowly when std is large (the sigmoid is then a step on the scale of
    the normal); the sigmoid is analytic in the strip |Im t| < pi, so
    this rule is accurate to rounding on that interval.  The deviations
    from the quadrature mean are summed, not E[s^2] - E[s]^2, which
    cancels when the spread is small."""
    mean = np.asarray(mean, dtype=np.float64).ravel()
    std = np.asarray(std, dtype=np.float64).ravel()
    out = np.zeros(mean.shape)
    out[np.isinf(std)] = 0.5  # half the mass at each end
    todo = np.flatnonzero(np.isfinite(std) & (std > 0))
    # in blocks, so that the (n, 200) table stays small
    for block in np.array_split(todo, max(1, len(todo) // 16384)):
        m, s = mean[block, None], std[block, None]
        lo = np.clip(m - 12.0 * s, -_SIGMOID_FLAT, _SIGMOID_FLAT)
        hi = np.clip(m + 12.0 * s, -_SIGMOID_FLAT, _SIGMOID_FLAT)
        half = 0.5 * (hi - lo)
        t = lo + half * (_GL_NODES + 1.0)
        z = (t - m) / s
        weight = half * _GL_WEIGHTS * np.exp(-0.5 * z * z) / (
            s * math.sqrt(2.0 * math.pi))
        left = 0.5 * _erfc((m - lo) / (s * math.sqrt(2.0))).astype(float)
        right = 0.5 * _erfc((hi - m) / (s * math.sqrt(2.0))).astype(float)
        values, s_lo, s_hi = _sigmoid(t), _sigmoid(lo), _sigmoid(hi)
        mu = (np.sum(weight * values, axis=1, keepdims=True)
              + left * s_lo + right * s_hi)
        var = (np.sum(weight * (values - mu) ** 2, axis=1, keepdims=True)
               + left * (s_lo - mu) ** 2 + right * (s_hi - mu) ** 2)
        out[block] = np.sqrt(np.maximum(var, 0.0)).ravel()
    return out
