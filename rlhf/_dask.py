"""RewardModel fitted to comparisons held in Dask collections.

The comparisons (and their weights, margins and ties) stay in their
partitions, on the workers or on disk; the item features, small next to
them, are replicated to every worker once, or, when they are a Dask
array or too large for a worker (``_REPLICATE_SHARE`` of its memory
limit), kept in row blocks (see ``_FeatureRows``).  Each evaluation of the
objective maps the C kernel ``rlhf._core.bt_loss_grad`` over the
partitions with no penalty (``alpha = 0``), sums the partial losses and
gradients in a fixed tree over the partition order (so the result does
not depend on which worker ran what, or when) and adds the penalty once on
the client.  The minimisers are the in-memory fit's: L-BFGS is the C
kernel's own, driven through its Python entry point, and Newton's method
is ``csrc/newton.c`` step for step (Cholesky with Levenberg's ridge,
Armijo backtracking; Nocedal & Wright 2006, algorithms 3.1 and 3.2), with
the Hessian summed over the partitions (``rlhf._core.bt_hessian``).

Only the order of the floating-point additions differs from the in-memory
fit, so the two optima agree to rounding once both have converged tightly
(``tol`` of about 1e-12, or Newton's method, which reaches the optimum to
machine precision).
"""
import importlib
import math
import uuid
import warnings
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

import numpy as np

from . import _core
from ._progress import Progress
from ._validation import (
    MAX_TABLE_ENTRIES,
    _as_float_array,
    _feature_names,
    _is_sparse,
    check_array,
    check_scalar,
    format_value,
    kernel_max_iter,
)
from .exceptions import ConvergenceWarning, sklearn_twin
from .reward import (
    _LAPLACE_MAX_PARAMS,
    _NEWTON_MAX_PARAMS,
    _STOPS,
    _TIES,
    _compress_rows,
    _kernel_features,
    _unwrap,
    _warn_not_converged,
)

if TYPE_CHECKING:
    from .reward import RewardModel

__all__ = ["fit_dask", "COLUMN_NAMES"]

_INSTALL = "pip install 'rlhf-lab[dask]'"

#: The column names fit_dask reads from a Dask DataFrame, per role, in
#: the order they are looked for (the first present is used).
COLUMN_NAMES: Dict[str, Tuple[str, ...]] = {
    "preferred": ("preferred", "chosen", "winner", "first", "a"),
    "other": ("other", "rejected", "loser", "second", "b"),
    "weight": ("weight", "sample_weight", "weights"),
    "margin": ("margin", "margins"),
    "tie": ("tie", "ties", "tied", "is_tie"),
}

# partial results are summed in groups of this many, partition order
# within a group, groups in order: a fixed tree
_FAN_IN = 8
# persist the prepared comparisons when they take at most this share of
# the workers' memory (of the machine's available memory without a
# distributed client)
_PERSIST_SHARE = 0.5
# in-memory features larger than this share of the smallest worker's
# memory limit are partitioned by rows (in blocks of about _BLOCK_BYTES)
# rather than replicated
_REPLICATE_SHARE = 0.25
_BLOCK_BYTES = 64 * 2**20
# values shared with every partition travel in the graph up to this size
# and are scattered to every worker beyond it
_SCATTER_BYTES = 4 * 2**20
# comparisons given in memory with features on Dask: rows per partition
_IN_MEMORY_ROWS = 1_000_000
# the Armijo constant and the most halvings of newton.c
_ARMIJO = 1e-4
_MAX_HALVINGS = 60


def _import_dask():
    try:
        import dask
        import dask.array  # noqa: F401
    except ImportError as error:
        raise ImportError(
            "Fitting a RewardModel on Dask collections needs dask; install "
            f"it with {_INSTALL}.") from error
    return dask


def _active_client(dask):
    """The distributed Client dask.compute will use, or None (none, or
    another scheduler chosen with dask.config.set(scheduler=...))."""
    if dask.config.get("scheduler", None) not in ("dask.distributed",
                                                   "distributed"):
        return None
    try:
        from distributed import default_client
    except ImportError:
        return None
    try:
        return default_client()
    except ValueError:
        return None


class _Held:
    """A value passed to the workers as one object (a scattered tuple or a
    delayed tuple would otherwise be taken apart)."""

    def __init__(self, value):
        self.value = value


# -- reading a partition ---------------------------------------------------

def _extract(raw, spec):
    """(pairs, weight, margin, tie) of one raw partition, as NumPy arrays
    (None where absent).  spec: ("array", has_weight, has_margin,
    has_tie) for the blocks of Dask arrays, or ("frame", columns) with
    the column of each role (None where absent) for a DataFrame
    partition."""
    if spec[0] == "array":
        pairs, weight, margin, tie = raw
        return (np.asarray(pairs), None if weight is None else
                np.asarray(weight), None if margin is None else
                np.asarray(margin), None if tie is None else np.asarray(tie))
    columns = spec[1]
    frame = raw
    pairs = np.column_stack([frame[columns["preferred"]].to_numpy(),
                             frame[columns["other"]].to_numpy()]) \
        if len(frame) else np.zeros((0, 2), np.int64)

    def column(role):
        name = columns.get(role)
        return None if name is None else frame[name].to_numpy()

    return pairs, column("weight"), column("margin"), column("tie")


def _block_tuple(pairs, weight, margin, tie):
    return pairs, weight, margin, tie


def _check_partition(pairs, weight, margin, tie, n_items):
    """The kernel's arrays of one partition, checked as RewardModel.fit
    checks the whole: int64 pairs, float64 weights and margins, uint8
    ties.  n_items None: not known yet (not checked)."""
    if pairs.dtype.kind not in "iu":
        if pairs.dtype.kind == "f" and (not pairs.size or (
                np.all(np.isfinite(pairs)) and np.all(
                    pairs == np.round(pairs)))):
            pairs = pairs.astype(np.int64)
        else:
            raise TypeError(
                "comparisons must hold integer item indices, got an array "
                f"of dtype {pairs.dtype}."
                + (" Non-integer or non-finite values are not indices."
                   if pairs.dtype.kind == "f" else ""))
    if pairs.ndim != 2 or pairs.shape[1] != 2:
        raise ValueError(f"comparisons must have shape (n, 2), got "
                         f"{pairs.shape}.")
    if pairs.dtype.kind == "u" and pairs.size and pairs.max() > np.iinfo(
            np.int64).max:
        raise ValueError("comparisons holds an index too large for int64.")
    pairs = np.ascontiguousarray(pairs, dtype=np.int64)
    n = len(pairs)
    if n:
        if pairs.min() < 0:
            row = int(np.argwhere(pairs < 0)[0][0])
            raise ValueError("comparisons must hold non-negative item "
                             f"indices; row {row} is {pairs[row].tolist()}.")
        same = np.flatnonzero(pairs[:, 0] == pairs[:, 1])
        if same.size:
            raise ValueError(f"comparisons: row {same[0]} compares item "
                             f"{pairs[same[0], 0]} with itself.")
        if n_items is not None and pairs.max() >= n_items:
            row = int(np.argwhere(pairs >= n_items)[0][0])
            raise ValueError(
                f"comparisons refers to item {pairs.max()} (row {row} is "
                f"{pairs[row].tolist()}), but there are only {n_items} "
                "items.")
    if weight is not None:
        weight = _vector(weight, "sample_weight", n)
        if (weight < 0).any():
            raise ValueError("sample_weight must be non-negative; got a "
                             f"minimum of {format_value(weight.min())}.")
    if margin is not None:
        margin = _vector(margin, "margin", n)
    if tie is not None:
        tie = np.asarray(tie)
        if tie.dtype.kind != "b":
            if tie.dtype.kind in "iuf" and np.isin(tie, [0, 1]).all():
                tie = tie.astype(bool)
            else:
                raise TypeError("ties must be a boolean mask over the "
                                f"comparisons, got dtype {tie.dtype}"
                                + (" holding values other than 0 and 1."
                                   if tie.dtype.kind in "iuf" else "."))
        if tie.shape != (n,):
            raise ValueError(f"ties must have shape ({n},), got "
                             f"{tie.shape}.")
        tie = np.ascontiguousarray(tie.view(np.uint8))
    return pairs, weight, margin, tie


def _vector(values, name, n):
    arr = _as_float_array(values, name)
    if arr.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {arr.shape}.")
    if not np.isfinite(arr).all():
        what = "NaN" if np.isnan(arr).any() else "infinity"
        row = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise ValueError(f"Input {name} contains {what} (row {row}); every "
                         "value must be finite.")
    return np.ascontiguousarray(arr)


def _named(index, error, what="Partition {} of the comparisons (rows "
           "counted from the start of the partition)"):
    """The error of a partition (or of what names), with it named."""
    message = f"{what.format(index)}: {error}"
    if isinstance(error, (ValueError, TypeError)):
        return type(error)(message)
    return RuntimeError(f"{message} ({type(error).__name__})")


def _partition_stats(raw, index, spec, n_items, want_items):
    """The first pass: counts and checks of one partition."""
    try:
        pairs, weight, margin, tie = _check_partition(
            *_extract(raw, spec), n_items)
    except Exception as error:
        raise _named(index, error) from None
    return {
        "n_rows": len(pairs),
        "largest": int(pairs.max()) if len(pairs) else -1,
        "weight_sum": float(weight.sum()) if weight is not None else
        float(len(pairs)),
        "n_ties": int(tie.sum()) if tie is not None else 0,
        "items": np.unique(pairs) if want_items else None,
    }


def _prepare(raw, index, spec, n_items, items, use_ties):
    """The kernel's arrays of one partition (item indices renumbered into
    items, the compressed problem's, when given)."""
    try:
        pairs, weight, margin, tie = _check_partition(
            *_extract(raw, spec), n_items)
    except Exception as error:
        raise _named(index, error) from None
    if items is not None:
        pairs = np.ascontiguousarray(np.searchsorted(items.value, pairs),
                                     dtype=np.int64)
    return pairs, weight, margin, tie if use_ties else None


def _problem(features, setting, prepared, alpha):
    n_items, tie_model = setting["n_items"], setting["tie_model"]
    pairs, weight, margin, tie = prepared
    return (features.value, n_items, 0, pairs, weight, margin, tie,
            tie_model, alpha)


def _partial_loss_grad(prepared, index, features, x, setting):
    """The data term's loss and gradient over one partition."""
    try:
        loss, grad = _core.bt_loss_grad(
            _problem(features, setting, prepared, 0.0), x.value,
            n_threads=setting["n_threads"])
    except Exception as error:
        raise _named(index, error) from None
    return {"loss": loss, "grad": grad}


def _partial_hessian(prepared, index, features, x, setting):
    """The data term's Hessian over one partition.  For free strengths
    the kernel adds a multiple of 1 1^T without a penalty (see
    rlhf_bt_hessian): with a penalty the partition is given it and it is
    taken off the diagonal again, so that it is added once in all."""
    alpha = setting["alpha"] if setting["free"] else 0.0
    try:
        H = _core.bt_hessian(_problem(features, setting, prepared, alpha),
                             x.value)
    except Exception as error:
        raise _named(index, error) from None
    if alpha:
        n_coef = setting["n_coef"]
        H[np.arange(n_coef), np.arange(n_coef)] -= alpha
    return {"hessian": H}


def _partial_final(prepared, index, features, x, rewards, setting):
    """What the fitted model keeps, over one partition: the Hessian (for
    the Laplace standard errors), the training accuracy's counts, and
    what the warnings of RewardModel.fit need."""
    out = (_partial_hessian(prepared, index, features, x, setting)
           if setting["hessian"] else {})
    pairs, weight, margin, tie = prepared
    r = rewards.value
    tied = np.zeros(len(pairs), bool) if tie is None else tie.astype(bool)
    wins, equal, total = _core.pair_counts(r, pairs, tie)
    out["right"] = wins + 0.5 * equal
    out["total"] = float(total)
    keep = np.ones(len(pairs), bool) if weight is None else weight > 0
    if setting["separable"]:
        d = r[pairs[keep, 0]] - r[pairs[keep, 1]]
        if margin is not None:
            d = d - margin[keep]
        out["ordered"] = float(np.sum(d > 0))
        out["kept"] = float(d.size)
    if setting["edges"]:
        kept, kept_tied = pairs[keep], tied[keep]
        # a beats b: an edge b -> a; a tie: both ways
        src = np.r_[kept[:, 1], kept[kept_tied, 0]]
        dst = np.r_[kept[:, 0], kept[kept_tied, 1]]
        out["edges"] = np.unique(src * setting["n_items"] + dst)
    return out


def _combine(*parts):
    """Partial results added in the order given (arrays of codes are
    united)."""
    out = dict(parts[0])
    for key, value in out.items():
        if isinstance(value, np.ndarray) and key != "edges":
            out[key] = value.copy()
    for part in parts[1:]:
        for key, value in part.items():
            if key == "edges":
                out[key] = np.union1d(out[key], value)
            elif key == "largest":
                out[key] = max(out[key], value)
            elif key == "items":
                out[key] = (None if value is None else
                            np.union1d(out[key], value))
            else:
                out[key] = out[key] + value
    return out


# -- item features partitioned by rows ------------------------------------

def _feature_block(raw, index, n_cols):
    """One row block of the features, checked as RewardModel.fit checks
    the whole: C-contiguous float64, or canonical CSR, every value
    finite."""
    try:
        block = check_array(raw, "features", min_samples=0)
        if block.shape[1] != n_cols:
            raise ValueError(f"the block has {block.shape[1]} columns, not "
                             f"{n_cols}.")
    except Exception as error:
        raise _named(index, error, "Row block {} of the features (rows "
                     "counted from the start of the block)") from None
    return block


def _block_scores(block, w):
    """Rewards of one row block at weights w."""
    if _is_sparse(block):
        return np.asarray(block @ w.value).ravel()
    return np.einsum("ij,j->i", block, w.value)


def _scores(u, *blocks):
    """The blocks' rewards in row order, and u (the tie parameter, when a
    tie model is on) after them: the free-strength kernel's x."""
    r = np.concatenate(blocks) if blocks else np.zeros(0)
    return r if u is None else np.r_[r, u]


def _partial_item(prepared, index, x, setting):
    """The data term over one partition with one free strength per item
    (x: the items' rewards, then u): its loss and item-space gradient."""
    pairs, weight, margin, tie = prepared
    try:
        loss, grad = _core.bt_loss_grad(
            (None, setting["n_items"], 0, pairs, weight, margin, tie,
             setting["tie_model"], 0.0), x, n_threads=setting["n_threads"])
    except Exception as error:
        raise _named(index, error) from None
    return {"loss": loss, "grad": grad}


def _block_gradient(block, start, total):
    """The block's rows' share of the gradient in the weights: F_k^T g_k."""
    g = total["grad"][start:start + block.shape[0]]
    if _is_sparse(block):
        return {"grad": np.asarray(block.T @ g).ravel()}
    return {"grad": g @ block}


def _loss_and_du(total, n_items, has_tie):
    return total["loss"], (float(total["grad"][n_items]) if has_tie
                           else 0.0)


def _tree(dask, level, key):
    """The delayed dicts of level summed by _combine in a fixed tree:
    groups of _FAN_IN in order, then the groups' sums, and so on."""
    delayed = dask.delayed
    while len(level) > 1:
        level = [delayed(_combine, pure=False)(
            *level[i:i + _FAN_IN], dask_key_name=key())
            for i in range(0, len(level), _FAN_IN)]
    return level[0]


def _nbytes(value):
    """Bytes of the arrays in value (an array, a tuple of them, or None)."""
    if isinstance(value, tuple):
        return sum(_nbytes(v) for v in value)
    return int(getattr(value, "nbytes", 0))


def _matrix_bytes(F):
    if _is_sparse(F):
        return F.data.nbytes + F.indices.nbytes + F.indptr.nbytes
    return F.nbytes


class _FeatureRows:
    """The item features as row blocks on the workers: a Dask array's row
    chunks, or an in-memory matrix split into blocks and scattered (each
    block to one worker).  Each evaluation takes three rounds: the
    rewards r = F w block by block, the comparisons' item gradient g at r
    (the free-strength kernel over every partition), then F^T g block by
    block; each sum in a fixed tree, in order."""

    def __init__(self, parts, features, persist):
        dask, delayed = parts.dask, parts.dask.delayed
        self.parts = parts
        self.n_rows, self.n_cols = (int(features.shape[0]),
                                    int(features.shape[1]))
        if hasattr(features, "__dask_graph__"):
            if len(features.chunks[1]) > 1:
                features = features.rechunk({1: -1})
            raw = features.to_delayed().ravel().tolist()
            sizes = features.chunks[0]
        else:
            step = max(1, int(_BLOCK_BYTES // max(
                1, _matrix_bytes(features) // max(1, self.n_rows))))
            sizes = [min(step, self.n_rows - i)
                     for i in range(0, self.n_rows, step)]
            blocks = [features[i:i + step]
                      for i in range(0, self.n_rows, step)]
            # only with a distributed client: one process's memory holds
            # the features anyway without one
            raw = parts.client.scatter(blocks, hash=False)
        self.starts = np.r_[0, np.cumsum(sizes)[:-1]].astype(int).tolist()
        self.blocks = [delayed(_feature_block, pure=True)(
            b, i, self.n_cols, dask_key_name=parts.key("features"))
            for i, b in enumerate(raw)]
        if persist:
            self.blocks = list(dask.persist(*self.blocks))

    def scores(self, held_w, u):
        delayed = self.parts.dask.delayed
        return delayed(_scores, pure=False)(
            u, *[delayed(_block_scores, pure=False)(
                b, held_w, dask_key_name=self.parts.key("scores"))
                for b in self.blocks], dask_key_name=self.parts.key("r"))

    def evaluate(self, x, n_coef, setting, has_tie):
        """(data loss, gradient in w and u) at x."""
        parts, dask = self.parts, self.parts.dask
        delayed = dask.delayed
        held_w = parts.share(np.array(x[:n_coef], dtype=np.float64))
        r = self.scores(held_w, float(x[n_coef]) if has_tie else None)
        total = _tree(dask, [delayed(_partial_item, pure=False)(
            part, i, r, setting, dask_key_name=parts.key("items"))
            for i, part in enumerate(parts.prepared)],
            lambda: parts.key("sum"))
        grad = _tree(dask, [delayed(_block_gradient, pure=False)(
            b, start, total, dask_key_name=parts.key("features-t"))
            for b, start in zip(self.blocks, self.starts)],
            lambda: parts.key("sum"))
        head = delayed(_loss_and_du, pure=False)(
            total, self.n_rows, has_tie, dask_key_name=parts.key("loss"))
        (loss, du), grad = dask.compute(head, grad)
        out = np.empty(n_coef + has_tie)
        out[:n_coef] = grad["grad"]
        if has_tie:
            out[n_coef] = du
        return loss, out

    def rewards(self, coef):
        held = self.parts.share(np.array(coef, dtype=np.float64))
        return self.parts.dask.compute(self.scores(held, None))[0]


# -- the driver ------------------------------------------------------------

class _Partitions:
    """The comparisons as a list of delayed partitions, and the calls
    mapped over them."""

    def __init__(self, dask, raw, spec):
        self.dask = dask
        self.raw = raw
        self.spec = spec
        self.tag = uuid.uuid4().hex
        self.count = 0
        self.prepared = None
        self.client = _active_client(dask)
        self.features = None

    def key(self, what):
        self.count += 1
        return f"rlhf-{what}-{self.tag}-{self.count}"

    def share(self, value):
        """value where every partition can read it: with a distributed
        client, scattered to every worker once when it is large (features,
        many items); otherwise a named piece of the graph, sent again with
        each computation, so that a worker lost mid-fit loses nothing that
        cannot be sent again (a scattered value is gone once every worker
        holding it is)."""
        held = _Held(value)
        if self.client is not None and _nbytes(value) > _SCATTER_BYTES:
            return self.client.scatter(held, broadcast=True, hash=False)
        return self.dask.delayed(held, name=self.key("data"), traverse=False)

    def reduce(self, function, args, what):
        """function(partition, index, *args) over every partition, the
        results summed in a fixed tree; computed."""
        delayed = self.dask.delayed
        level = [delayed(function, pure=False)(
            part, i, *args, dask_key_name=self.key(what))
            for i, part in enumerate(self.prepared)]
        return self.dask.compute(
            _tree(self.dask, level, lambda: self.key("sum")))[0]

    def stats(self, n_items, want_items):
        self.prepared = self.raw  # the first pass reads the raw partitions
        result = self.reduce(_partition_stats,
                             (self.spec, n_items, want_items), "stats")
        self.prepared = None
        return result

    def prepare(self, n_items, items, use_ties, persist):
        delayed = self.dask.delayed
        held = None if items is None else self.share(items)
        self.prepared = [delayed(_prepare, pure=True)(
            part, i, self.spec, n_items, held, use_ties)
            for i, part in enumerate(self.raw)]
        if persist:
            self.prepared = list(self.dask.persist(*self.prepared))


def _memory_budget(client):
    """Bytes of the workers' memory (the machine's available memory
    without a distributed client); None when unknown."""
    if client is not None:
        workers = client.scheduler_info().get("workers", {})
        limits = [w.get("memory_limit") or 0 for w in workers.values()]
        if limits and all(limits):
            return float(sum(limits))
    try:
        # by name: psutil (a dependency of distributed) has no type stubs
        psutil = importlib.import_module("psutil")
    except ImportError:
        return None
    return float(psutil.virtual_memory().available)


def _smallest_worker(client):
    """The smallest worker memory limit in bytes (infinite when a worker
    has none or none is known)."""
    workers = client.scheduler_info().get("workers", {})
    limits = [w.get("memory_limit") or 0 for w in workers.values()]
    return float(min(limits)) if limits and all(limits) else math.inf


def _dask_features(features):
    """A Dask array of item features, checked for what can be checked
    without reading it: two dimensions, known row chunks, a numeric
    dtype."""
    if not hasattr(features, "chunks") or not hasattr(features, "ndim"):
        raise TypeError(
            "features as a Dask collection must be a dask.array of shape "
            f"(n_items, n_features), got {type(features).__name__}; for a "
            "DataFrame, call .to_dask_array(lengths=True).")
    if features.ndim != 2:
        raise ValueError("features must be 2-dimensional, got shape "
                         f"{features.shape}.")
    if any(math.isnan(c) for c in features.chunks[0]) or any(
            math.isnan(c) for c in features.shape):
        raise ValueError("features must have known chunk sizes; call "
                         "compute_chunk_sizes() on it.")
    if features.dtype.kind not in "biuf":
        raise ValueError(f"features must be numeric, got dtype "
                         f"{features.dtype}.")
    if features.shape[0] < 1:
        raise ValueError("features has no rows; one row per item is "
                         "needed.")
    return features


def _raw_partitions(dask, comparisons, sample_weight, margin, ties):
    """The delayed raw partitions and how to read them."""
    import dask.array as da
    if isinstance(comparisons, da.Array):
        if comparisons.ndim != 2 or comparisons.shape[1] != 2:
            raise ValueError("comparisons must have shape (n_comparisons, "
                             f"2), got {comparisons.shape}.")
        if len(comparisons.chunks[1]) > 1:
            comparisons = comparisons.rechunk({1: 2})
        chunks = comparisons.chunks[0]
        extras = []
        for name, values in (("sample_weight", sample_weight),
                             ("margin", margin), ("ties", ties)):
            if values is None:
                extras.append(None)
                continue
            if isinstance(values, str):
                raise TypeError(f"{name} names a column, but comparisons is "
                                "a Dask array; pass an array.")
            if any(math.isnan(c) for c in chunks):
                raise ValueError(
                    f"comparisons must have known chunk sizes to be aligned "
                    f"with {name}; call compute_chunk_sizes() on it.")
            if not isinstance(values, da.Array):
                values = np.asarray(values)
                if values.ndim != 1 or len(values) != comparisons.shape[0]:
                    raise ValueError(
                        f"{name} must have shape ({comparisons.shape[0]},), "
                        f"got {values.shape}.")
                values = da.from_array(values, chunks=(chunks,))
            if values.ndim != 1:
                raise ValueError(f"{name} must be 1-dimensional, got shape "
                                 f"{values.shape}.")
            if any(math.isnan(c) for c in chunks) or any(
                    math.isnan(c) for c in values.chunks[0]):
                raise ValueError(
                    f"comparisons and {name} must have known chunk sizes to "
                    "be aligned; call compute_chunk_sizes() on them.")
            if values.shape[0] != comparisons.shape[0]:
                raise ValueError(
                    f"{name} must have shape ({comparisons.shape[0]},), got "
                    f"{values.shape}.")
            extras.append(values.rechunk((chunks,)).to_delayed().ravel())
        blocks = comparisons.to_delayed().ravel()
        raw = [dask.delayed(_block_tuple, pure=True)(
            block, *(None if e is None else e[i] for e in extras))
            for i, block in enumerate(blocks)]
        return raw, ("array",), [e is not None for e in extras]
    if hasattr(comparisons, "to_delayed") and hasattr(
            comparisons, "columns") and hasattr(comparisons, "npartitions"):
        present = list(comparisons.columns)
        columns: Dict[str, Optional[str]] = {}
        for role in ("preferred", "other"):
            found = [c for c in COLUMN_NAMES[role] if c in present]
            if not found:
                raise ValueError(
                    "comparisons as a Dask DataFrame needs a column of the "
                    f"{role} items, named one of {list(COLUMN_NAMES[role])}; "
                    f"its columns are {present}.")
            columns[role] = found[0]
        for role, name, given in (("weight", "sample_weight", sample_weight),
                                  ("margin", "margin", margin),
                                  ("tie", "ties", ties)):
            if given is None:
                found = [c for c in COLUMN_NAMES[role] if c in present]
                columns[role] = found[0] if found else None
            elif isinstance(given, str):
                if given not in present:
                    raise ValueError(f"{name}={given!r} is not a column of "
                                     f"comparisons; its columns are "
                                     f"{present}.")
                columns[role] = given
            else:
                raise TypeError(
                    f"With comparisons as a Dask DataFrame, {name} must be "
                    "None (its column, if present) or the name of a column; "
                    f"got {type(given).__name__}.")
        raw = list(comparisons.to_delayed())
        return raw, ("frame", columns), [
            columns[r] is not None for r in ("weight", "margin", "tie")]
    raise TypeError(
        "comparisons must be a dask.array of shape (n_comparisons, 2) or a "
        "dask.dataframe with columns such as 'preferred' and 'other'; got "
        f"{type(comparisons).__name__}.")


def _norm2(w):
    return float(np.cumsum(w * w)[-1]) if len(w) else 0.0


def _newton(evaluate, hessian, x0, tol, max_iter):
    """csrc/newton.c's rlhf_newton_minimize on Python callables:
    (x, f, g, n_iter, n_fev, status)."""
    x = x0.copy()
    n_iter, n_fev = 0, 1
    f, g = evaluate(x)

    def largest(v):
        return float(np.max(np.abs(v))) if len(v) else 0.0

    if not (math.isfinite(f) and math.isfinite(largest(g))):
        raise ValueError("The objective or its gradient is not finite at the "
                         "starting point.")
    threshold = tol * max(1.0, largest(g))
    n = len(x)
    while True:
        if largest(g) <= threshold:
            return x, f, g, n_iter, n_fev, 0
        if n_iter >= max_iter:
            return x, f, g, n_iter, n_fev, 2
        H = hessian(x)
        max_diag = max(0.0, float(np.max(np.diag(H)))) if n else 0.0
        if not math.isfinite(max_diag):
            raise ValueError("The Hessian of the objective is not finite.")
        tau = 0.0
        for attempt in range(32):
            try:
                L = np.linalg.cholesky(H + tau * np.eye(n) if tau else H)
                break
            except np.linalg.LinAlgError:
                tau = (1e-12 * max(max_diag, np.finfo(float).tiny)
                       if tau == 0.0 else tau * 10.0)
        else:
            raise ValueError("The Hessian is not positive definite, even "
                             "with a ridge.")
        d = -np.linalg.solve(L.T, np.linalg.solve(L, g)) if n else g
        gd = float(g @ d)
        if not gd < 0.0:
            return x, f, g, n_iter, n_fev, 3
        # below this the change of f is lost in rounding: judge the full
        # step by the gradient instead, as newton.c does
        unmeasurable = -gd <= 4.0 * np.finfo(float).eps * max(1.0, abs(f))
        t, accepted = 1.0, False
        for _ in range(_MAX_HALVINGS):
            x_trial = x + t * d
            n_fev += 1
            f_trial, g_trial = evaluate(x_trial)
            if unmeasurable:
                if not largest(g_trial) < largest(g):
                    return x, f, g, n_iter, n_fev, 1
                accepted = True
                break
            if f_trial <= f + _ARMIJO * t * gd:
                accepted = True
                break
            t *= 0.5
        if not accepted:
            return x, f, g, n_iter, n_fev, 3
        x, f, g = x_trial, f_trial, g_trial
        n_iter += 1


def fit_dask(model: "RewardModel", features: Any, comparisons: Any,
             sample_weight: Any = None, margin: Any = None, ties: Any = None,
             n_items: Optional[int] = None, *,
             persist: Optional[bool] = None) -> "RewardModel":
    """Fit a RewardModel to comparisons held in a Dask collection.

    The model ends in the state ``model.fit`` would leave it in on the same
    data held in memory (``coef_``, ``tie_param_``, ``n_iter_``,
    ``objective_``, ``solver_``, ``summary()``, ``reward_std``), its
    coefficients equal to rounding: each evaluation maps the C kernel over
    the partitions and sums the partial results in a fixed order, and the
    solvers are the in-memory fit's (see :mod:`rlhf._dask`).  Works with
    any Dask scheduler: the default threads, or a ``distributed.Client``
    (then the features are scattered to every worker once).  Only
    ``likelihood='bradley-terry'`` (pairwise comparisons).

    Parameters
    ----------
    model : RewardModel
        Its parameters (``C``, ``penalty``, ``solver``, ``tol``,
        ``max_iter``, ``ties``, ``verbose``, ``progress``) as for ``fit``;
        ``n_threads`` is the kernel's threads per partition (default 1,
        since Dask runs the partitions in parallel).
    features : array-like, scipy.sparse matrix or dask.array of shape \
(n_items, n_features), or None
        One row per item, in memory or as a Dask array (then kept in its
        row chunks; see Notes).  None fits one free strength per item.
    comparisons : dask.array of int of shape (n_comparisons, 2), or \
dask.dataframe
        Item indices, the preferred item first.  A DataFrame (e.g. from
        ``dask.dataframe.read_parquet``) names the preferred item's column
        ``preferred`` (or ``chosen``, ``winner``, ``first``, ``a``) and the
        other's ``other`` (or ``rejected``, ``loser``, ``second``, ``b``);
        a column ``weight`` (or ``sample_weight``, ``weights``),
        ``margin`` (``margins``) and ``tie`` (``ties``, ``tied``,
        ``is_tie``) is used when present (see ``COLUMN_NAMES``).
    sample_weight, margin, ties : array-like, dask.array or str, \
default=None
        As for ``RewardModel.fit``.  With a Dask array of comparisons: an
        array of shape (n_comparisons,) (rechunked as the comparisons);
        with a DataFrame: the name of a column.
    n_items : int, default=None
        Number of items when ``features`` is None (default: the largest
        index + 1).
    persist : bool or None, default=None
        Keep the checked partitions (and a Dask array of features) in the
        workers' memory between iterations (True) or read them again from
        their source at each evaluation (False: out of core).  None: persist when they take at
        most half of the workers' memory limits (of the available memory
        without a distributed client).

    Returns
    -------
    model
        Fitted in place.

    Notes
    -----
    The model keeps the Hessian at the optimum for the Laplace standard
    errors (up to 4000 parameters), never the data.  Partitions are read
    once to check and count them (and, with sparse features, to find the
    items they name), then at every evaluation (Newton: the Hessian too)
    unless persisted, and once more at the end (Hessian, accuracy).  A
    partition's error names the partition.

    Item features are copied to every worker when they fit (a quarter of
    the smallest worker's memory limit).  A Dask array of features, or
    in-memory features larger than that, are kept in row blocks instead
    (scattered one block to a worker, or the array's row chunks): each
    evaluation then computes the rewards block by block, the item
    gradient over the comparisons, and ``F^T g`` block by block, each sum
    in a fixed order.  That path fits with L-BFGS only (Newton's Hessian
    ``F^T H F`` pairs rows of different blocks), so it agrees with the
    in-memory fit to the stopping rule's precision, not to rounding, and
    keeps no Laplace Hessian (``reward_std`` and the standard errors of
    ``summary`` say so).

    Examples
    --------
    >>> import numpy as np, dask, dask.array as da, rlhf
    >>> from rlhf._dask import fit_dask
    >>> features = np.array([[0.9, 0.8], [0.4, 0.9], [0.8, 0.5], [0.2, 0.1]])
    >>> pairs = np.array([[0, 1], [0, 3], [2, 3], [1, 3], [2, 1]])
    >>> with dask.config.set(scheduler="threads"):
    ...     model = fit_dask(rlhf.RewardModel(C=2.0), features,
    ...                      da.from_array(pairs, chunks=2))
    >>> model.predict(features).round(3)
    array([1.728, 1.089, 1.411, 0.338])
    >>> rlhf.RewardModel(C=2.0).fit(features, pairs).predict(features).round(3)
    array([1.728, 1.089, 1.411, 0.338])
    """
    dask = _import_dask()
    model._validate_params()
    name = type(model).__name__
    if model.likelihood != "bradley-terry":
        raise ValueError(
            "fit_dask fits pairwise comparisons (likelihood='bradley-terry');"
            f" got likelihood={model.likelihood!r}.")
    if hasattr(features, "__dask_graph__") and not hasattr(
            comparisons, "__dask_graph__"):
        # features on Dask, comparisons in memory (an rlhf.Comparisons
        # brings its ties and weights, as for RewardModel.fit)
        import dask.array as da
        pairs, source_ties, source_weight, _ = _unwrap(comparisons)
        if ties is None and source_ties is not None and np.any(
                source_ties):
            ties = source_ties
        if sample_weight is None:
            sample_weight = source_weight
        pairs = np.asarray(pairs)
        comparisons = da.from_array(
            pairs, chunks=(_IN_MEMORY_ROWS,) + pairs.shape[1:])
    raw, spec, present = _raw_partitions(dask, comparisons, sample_weight,
                                         margin, ties)
    if spec[0] == "array":
        spec = ("array",) + tuple(present)
    if not raw:
        raise ValueError("comparisons is empty; at least one row is needed.")
    dask_features = hasattr(features, "__dask_graph__")
    if dask_features:
        F = _dask_features(features)
        names = None
    else:
        names = _feature_names(features)
        F = model._check_features(features)
    if F is None and _is_sparse(features):
        raise TypeError("features must be an array or None.")
    if F is not None and n_items is not None:
        raise ValueError("n_items is implied by features (one row per "
                         "item); pass one or the other.")
    if F is None and n_items is not None:
        check_scalar(n_items, "n_items", name, kind="int", low=1)
    known_items = F.shape[0] if F is not None else n_items

    parts = _Partitions(dask, raw, spec)
    # features partitioned by item rows: a Dask array's, or in-memory ones
    # too large to replicate on every worker
    by_rows = dask_features or (
        F is not None and parts.client is not None and
        _matrix_bytes(F) > _REPLICATE_SHARE * _smallest_worker(parts.client))
    sparse = F is not None and not by_rows and _is_sparse(F)
    stats = parts.stats(known_items, sparse)
    n_rows = stats["n_rows"]
    if n_rows == 0:
        raise ValueError("comparisons is empty; at least one row is needed.")
    if present[0] and not stats["weight_sum"] > 0:
        raise ValueError("sample_weight is zero for every comparison; at "
                         "least one must be positive.")
    n_items = known_items if known_items is not None else \
        stats["largest"] + 1
    if stats["largest"] >= n_items:  # defensive: the partitions check it
        raise ValueError(f"comparisons refers to item {stats['largest']}, "
                         f"but there are only {n_items} items.")
    if F is None and n_items > MAX_TABLE_ENTRIES:
        raise ValueError(
            "Without features the model has one strength per item, and the "
            f"comparisons name item {n_items - 1}: more than 2**31 "
            "strengths. Check the item indices in comparisons (or n_items), "
            "or pass features.")
    n_ties = stats["n_ties"]
    use_ties = present[2] and n_ties > 0

    # the problem the in-memory fit solves: sparse features compressed to
    # the items named and the columns non-zero on them (reward._compress)
    columns = items = None
    kernel_F = F
    n_kernel_items = n_items
    if sparse:
        named = stats["items"]
        sub, columns = _compress_rows(F, named)
        if columns is not None:
            kernel_F, items, n_kernel_items = sub, named, len(named)
    n_coef = (n_items if F is None else F.shape[1] if columns is None
              else len(columns))
    has_tie = model.ties is not None
    n_params = n_coef + has_tie
    solver = model._choose_solver(F, n_coef, n_items)
    if by_rows:
        if model.solver == "newton":
            raise ValueError(
                "solver='newton' needs the Hessian F^T H F, whose terms pair "
                "rows of different blocks: with features partitioned by "
                "rows (a Dask array, or too large for a worker) use "
                "solver='lbfgs' or 'auto'.")
        solver = "lbfgs"
    if solver == "newton" and n_params > 4 * _NEWTON_MAX_PARAMS:
        raise ValueError(
            f"solver='newton' forms a dense ({n_params} x {n_params}) "
            "Hessian; use solver='lbfgs' for this many parameters.")
    alpha = model._alpha()

    budget = _memory_budget(parts.client)
    row_bytes = 16 + 8 * present[0] + 8 * present[1] + use_ties
    asked = persist
    if persist is None:
        persist = budget is not None and \
            n_rows * row_bytes <= _PERSIST_SHARE * budget
    parts.prepare(n_items, items, use_ties, bool(persist))
    rows = shared_F = None
    if by_rows:
        # a Dask array of features is kept in memory too, unless told not
        # to, when it fits in the same share beside the comparisons kept
        kept = n_rows * row_bytes if persist else 0
        rows = _FeatureRows(parts, F, persist=dask_features and (
            asked is not False and budget is not None and
            8.0 * F.shape[0] * F.shape[1] + kept <= _PERSIST_SHARE * budget))
    else:
        shared_F = parts.share(_kernel_features(kernel_F))
    setting = {"n_items": n_kernel_items, "tie_model": _TIES[model.ties],
               "n_threads": 1 if model.n_threads is None else
               int(model.n_threads), "alpha": alpha, "free": F is None,
               "n_coef": n_coef, "hessian": False, "separable": False,
               "edges": False}
    diagonal = np.arange(n_coef)
    tol, max_iter = float(model.tol), kernel_max_iter(model.max_iter)

    with Progress(model.progress, None, f"{name}.fit (dask, {solver})",
                  unit="eval") as bar:
        def evaluate(x):
            if rows is not None:
                data_loss, grad = rows.evaluate(x, n_coef, setting, has_tie)
            else:
                held = parts.share(np.array(x, dtype=np.float64))
                total = parts.reduce(_partial_loss_grad,
                                     (shared_F, held, setting), "loss")
                data_loss, grad = total["loss"], total["grad"]
            w = x[:n_coef]
            # the kernel's penalty, summed in its order (cumsum is
            # sequential): one partition gives the in-memory fit's bits
            loss = data_loss + (0.5 * alpha * _norm2(w)
                                if alpha != 0.0 else 0.0)
            grad[:n_coef] += alpha * w
            bar.update()
            bar.set_postfix(objective=loss,
                            grad=lambda: float(np.abs(grad).max()))
            return loss, grad

        def hessian(x):
            held = parts.share(np.array(x, dtype=np.float64))
            H = parts.reduce(_partial_hessian, (shared_F, held, setting),
                             "hessian")["hessian"]
            H[diagonal, diagonal] += alpha
            return H

        x0 = np.zeros(n_params)
        if solver == "lbfgs":
            x, loss, grad, n_iter, n_fev, status = _core.lbfgs_minimize(
                evaluate, x0, m=10, gtol=-tol,
                ftol=64.0 * np.finfo(np.float64).eps, max_iter=max_iter,
                maxls=50)
        else:
            x, loss, grad, n_iter, n_fev, status = _newton(
                evaluate, hessian, x0, tol, max_iter)

    coef = x[:n_coef].copy()
    if F is None and alpha == 0.0:
        coef -= coef.mean()
    if columns is not None:
        coef = np.zeros(F.shape[1])
        coef[columns] = x[:n_coef]
    if F is None:
        rewards = coef
    elif rows is not None:
        rewards = rows.rewards(coef)
    elif sparse:
        rewards = np.asarray(F @ coef).ravel()
    else:
        rewards = np.einsum("ij,j->i", F, coef)
    if items is not None:
        rewards = rewards[items]
    final = dict(setting)
    # by rows, the Hessian F^T H F pairs rows of different blocks: no
    # Laplace standard errors
    final["hessian"] = n_params <= _LAPLACE_MAX_PARAMS and rows is None
    final["separable"] = F is not None and alpha == 0.0
    final["edges"] = F is None and alpha == 0.0
    held = parts.share(np.array(x, dtype=np.float64))
    end = parts.reduce(_partial_final, (shared_F, held,
                                        parts.share(rewards), final),
                       "final")
    laplace = None
    if rows is not None and n_params <= _LAPLACE_MAX_PARAMS:
        laplace = ("unavailable",
                   "the Hessian at the optimum was not formed: the features "
                   "were partitioned by rows across the Dask workers, and "
                   "its terms pair rows of different blocks.")
    if final["hessian"]:
        H = end["hessian"]
        H[diagonal, diagonal] += alpha
        laplace = ("hessian", H)
    del parts, shared_F, held, rows

    model._store_fit(x, n_coef, coef, columns, laplace, F, names, n_iter,
                     loss, solver, n_items)
    w = x[:n_coef]
    penalty = 0.5 * alpha * float(w @ w) if alpha else 0.0
    model._fit_info = {
        "n_rows": int(n_rows),
        "n_ties": int(n_ties) if present[2] else 0,
        "weighted": bool(present[0]),
        "log_likelihood": -(float(loss) - penalty),
        "penalty": penalty,
        "accuracy": end["right"] / end["total"] if end["total"] else
        math.nan,
        "status": int(status),
        "n_fev": int(n_fev),
    }
    if model.verbose:
        print(f"{name}: {solver} (dask, {len(raw)} partitions) stopped after "
              f"{n_iter} iterations and {n_fev} evaluations: "
              f"{_STOPS[status]} (objective {loss:.10g}).")
    if final["edges"]:
        _warn_if_no_maximum(end["edges"], n_items)
    elif final["separable"] and not use_ties and end["kept"] and \
            end["ordered"] == end["kept"]:
        warnings.warn(
            "The maximum-likelihood reward weights do not exist: the "
            "features order every comparison the way it went, so the "
            "likelihood grows without bound along coef_, which is where "
            "the solver stopped. Use penalty='l2' for finite weights.",
            sklearn_twin(ConvergenceWarning), stacklevel=2)
    if status >= 2:
        _warn_not_converged(solver, status, n_iter, stacklevel=3)
    return model


def _warn_if_no_maximum(edges, n_items):
    """RewardModel._warn_if_no_maximum on the comparison graph's edges
    (codes src * n_items + dst)."""
    from .reward import _warn_if_beats_graph_splits
    src, dst = np.divmod(edges, n_items)
    # the user called RewardModel.fit, which called fit_dask
    _warn_if_beats_graph_splits(src, dst, n_items, stacklevel=5)
