"""rlhf._dask.fit_dask: RewardModel fitted to comparisons in Dask collections.

Oracle: RewardModel.fit on the same data in memory (an independent path:
one kernel call over all comparisons, the C solvers).  Newton's method
reaches the optimum to rounding, so the two agree to 1e-10 relative
whatever the partitioning; L-BFGS stops on a relative decrease of 64 eps
(a fixed rule of the kernel), so with several partitions it agrees only to
that rule's precision, and with one partition it follows the in-memory
fit bit for bit.  The cluster tests run one LocalCluster of two worker
processes for the whole module.
"""
import os
import sys
import warnings

import numpy as np
import pytest

import rlhf

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")
sparse = pytest.importorskip("scipy.sparse")

from rlhf._dask import fit_dask  # noqa: E402

pytestmark = [pytest.mark.no_sanitizer]


def sigmoid(z):
    return np.exp(-np.logaddexp(0.0, -z))


def problem(seed=0, n_items=40, n_features=5, n=3000):
    """Bradley-Terry comparisons of a random linear world, with weights,
    margins and ties."""
    rng = np.random.default_rng(seed)
    F = rng.normal(size=(n_items, n_features))
    w = rng.normal(size=n_features)
    a = rng.integers(0, n_items, n)
    b = (a + rng.integers(1, n_items, n)) % n_items
    r = F @ w
    first = rng.random(n) < sigmoid(r[a] - r[b])
    pairs = np.where(first[:, None], np.stack([a, b], 1),
                     np.stack([b, a], 1))
    weight = rng.uniform(0.2, 3.0, n)
    margin = rng.uniform(0.0, 0.3, n)
    tie = rng.random(n) < 0.15
    return F, pairs, weight, margin, tie


def relative(x, reference):
    return float(np.max(np.abs(x - reference)) / np.max(np.abs(reference)))


def threads():
    return dask.config.set(scheduler="threads")


def same_state(fitted, reference, features, rtol=1e-10):
    """The fitted state of RewardModel.fit, numbers to rtol."""
    assert relative(fitted._x, reference._x) <= rtol
    np.testing.assert_allclose(fitted.coef_, reference.coef_, rtol=rtol,
                               atol=rtol * np.max(np.abs(reference.coef_)))
    for name in ("n_iter_", "solver_", "n_items_", "_fitted_with_features"):
        assert getattr(fitted, name) == getattr(reference, name), name
    if reference._columns is None:
        assert fitted._columns is None
    else:
        np.testing.assert_array_equal(fitted._columns, reference._columns)
    assert hasattr(fitted, "n_features_in_") == hasattr(reference,
                                                        "n_features_in_")
    if reference.tie_param_ is None:
        assert fitted.tie_param_ is None
    else:
        assert fitted.tie_param_ == pytest.approx(reference.tie_param_,
                                                  rel=rtol)
    assert fitted.objective_ == pytest.approx(reference.objective_,
                                              rel=1e-12)
    info, want = fitted._fit_info, reference._fit_info
    assert set(info) == set(want)
    for key in ("n_rows", "n_ties", "weighted", "status", "accuracy"):
        assert info[key] == want[key], key
    for key in ("log_likelihood", "penalty"):
        assert info[key] == pytest.approx(want[key], rel=1e-9, abs=1e-12)
    np.testing.assert_allclose(fitted.reward_std(features),
                               reference.reward_std(features), rtol=1e-8)
    a, b = fitted.summary(), reference.summary()
    np.testing.assert_allclose(a.std_err, b.std_err, rtol=1e-8)


def features_of(kind, F):
    if kind == "dense":
        return F
    if kind == "sparse":
        # wide, and some columns and items never reached: the in-memory
        # fit compresses them away, so must the Dask fit
        S = sparse.random(F.shape[0], 60, density=0.1, random_state=1,
                          format="csr")
        return S
    return None


@pytest.mark.parametrize("kind", ["dense", "sparse", "none"])
@pytest.mark.parametrize("ties", [None, "rao-kupper", "davidson"])
def test_newton_equals_in_memory(kind, ties):
    F, pairs, weight, margin, tie = problem()
    features = features_of(kind, F)
    if kind == "sparse":
        # items 0..4 never compared: their rows drop out
        pairs = pairs[(pairs >= 5).all(axis=1)]
        weight, margin, tie = (v[:len(pairs)] for v in (weight, margin,
                                                        tie))
    params = dict(C=2.0, ties=ties, solver="newton")
    reference = rlhf.RewardModel(**params).fit(features, pairs, weight,
                                               margin, tie)
    with threads():
        fitted = fit_dask(rlhf.RewardModel(**params), features,
                          da.from_array(pairs, chunks=(700, 2)),
                          da.from_array(weight, chunks=500), margin, tie)
    same_state(fitted, reference, features)
    assert fitted._fit_info["n_ties"] == tie.sum() > 0
    if kind == "sparse":
        assert fitted._columns is not None


def test_free_strengths_without_penalty_and_n_items():
    F, pairs, weight, _, _ = problem(seed=3, n_items=25)
    params = dict(penalty=None)
    reference = rlhf.RewardModel(**params).fit(None, pairs, weight,
                                               n_items=30)
    with threads(), warnings.catch_warnings():
        # items 25..29 are never compared, as in memory: no warning test
        warnings.simplefilter("ignore")
        fitted = fit_dask(rlhf.RewardModel(**params), None,
                          da.from_array(pairs, chunks=(1000, 2)), weight,
                          n_items=30)
    assert fitted.n_items_ == 30 and fitted.solver_ == "newton"
    # the 5 items never compared are not identified (nor, then, is the
    # mean of the others); their differences are
    compared = fitted.coef_[:25] - fitted.coef_[:25].mean()
    want = reference.coef_[:25] - reference.coef_[:25].mean()
    assert relative(compared, want) <= 1e-10
    assert abs(fitted.coef_.mean()) < 1e-12


def test_lbfgs_one_partition_is_the_in_memory_fit_bitwise():
    F, pairs, weight, margin, tie = problem(seed=1)
    params = dict(solver="lbfgs", ties="rao-kupper")
    reference = rlhf.RewardModel(**params).fit(F, pairs, weight, margin, tie)
    with threads():
        fitted = fit_dask(rlhf.RewardModel(**params), F,
                          da.from_array(pairs, chunks=(len(pairs), 2)),
                          weight, margin, tie)
    assert np.array_equal(fitted._x, reference._x)
    assert fitted.n_iter_ == reference.n_iter_
    assert fitted._fit_info == reference._fit_info


def test_lbfgs_partitions_reach_the_optimum_as_in_memory():
    """Several partitions change the rounding of each evaluation; L-BFGS
    then stops elsewhere within its stopping rule, as near the optimum
    (Newton's) as the in-memory L-BFGS is."""
    F, pairs, weight, margin, tie = problem(seed=2)
    optimum = rlhf.RewardModel(solver="newton", tol=1e-14).fit(
        F, pairs, weight, margin, tie)
    in_memory = rlhf.RewardModel(solver="lbfgs").fit(F, pairs, weight,
                                                     margin, tie)
    with threads():
        fitted = fit_dask(rlhf.RewardModel(solver="lbfgs"), F,
                          da.from_array(pairs, chunks=(400, 2)), weight,
                          margin, tie)
    bound = max(relative(in_memory.coef_, optimum.coef_), 1e-10)
    assert relative(fitted.coef_, optimum.coef_) <= 10 * bound
    assert bound < 1e-5


def frame(pairs, weight, margin, tie, names=("chosen", "rejected")):
    import pandas as pd
    return pd.DataFrame({names[0]: pairs[:, 0], names[1]: pairs[:, 1],
                         "weight": weight, "margin": margin, "tie": tie})


def test_dataframe_partitionings_agree():
    dd = pytest.importorskip("dask.dataframe")
    F, pairs, weight, margin, tie = problem(seed=4)
    reference = rlhf.RewardModel(ties="davidson").fit(F, pairs, weight,
                                                      margin, tie)
    table = frame(pairs, weight, margin, tie)
    fits = {}
    with threads():
        for n_parts in (1, 3, 7):
            ddf = dd.from_pandas(table, npartitions=n_parts)
            fits[n_parts] = fit_dask(rlhf.RewardModel(ties="davidson"), F,
                                     ddf)
        again = fit_dask(rlhf.RewardModel(ties="davidson"), F,
                         dd.from_pandas(table, npartitions=7), persist=False)
    for fitted in fits.values():
        same_state(fitted, reference, F)
    assert np.array_equal(again._x, fits[7]._x)
    # ties=None with tie data: half a win each way, as in memory
    reference = rlhf.RewardModel().fit(F, pairs, None, None, tie)
    with threads():
        fitted = fit_dask(rlhf.RewardModel(), F,
                          dd.from_pandas(table[["chosen", "rejected", "tie"]],
                                         npartitions=3))
    same_state(fitted, reference, F)


def test_dataframe_column_names():
    dd = pytest.importorskip("dask.dataframe")
    F, pairs, weight, margin, tie = problem(seed=5, n=500)
    table = frame(pairs, weight, margin, tie, names=("winner", "loser"))
    table["w2"] = 2.0 * weight
    reference = rlhf.RewardModel().fit(F, pairs, 2.0 * weight, margin, tie)
    with threads():
        fitted = fit_dask(rlhf.RewardModel(), F,
                          dd.from_pandas(table, npartitions=2),
                          sample_weight="w2")
    same_state(fitted, reference, F)
    bad = dd.from_pandas(table.rename(columns={"winner": "x"}), npartitions=2)
    with pytest.raises(ValueError, match="column of the preferred items"):
        fit_dask(rlhf.RewardModel(), F, bad)
    with pytest.raises(ValueError, match="'nope' is not a column"):
        fit_dask(rlhf.RewardModel(), F, dd.from_pandas(table, npartitions=2),
                 margin="nope")
    with pytest.raises(TypeError, match="name of a column"):
        fit_dask(rlhf.RewardModel(), F, dd.from_pandas(table, npartitions=2),
                 sample_weight=weight)


def test_bad_partitions_are_named():
    F, pairs, weight, _, _ = problem(seed=6, n=400)
    bad = pairs.copy()
    bad[250] = [3, 41]  # item 41 of 40, in the third partition of 100
    with threads(), pytest.raises(ValueError, match=r"Partition 2 of the "
                                  r"comparisons.*item 41.*row 50"):
        fit_dask(rlhf.RewardModel(), F, da.from_array(bad, chunks=(100, 2)))
    nan_weight = weight.copy()
    nan_weight[150] = np.nan
    with threads(), pytest.raises(ValueError, match=r"Partition 1 of the "
                                  r"comparisons.*sample_weight contains NaN "
                                  r"\(row 50\)"):
        fit_dask(rlhf.RewardModel(), F, da.from_array(pairs, chunks=(100, 2)),
                 nan_weight)
    same = pairs.copy()
    same[399] = [7, 7]
    with threads(), pytest.raises(ValueError, match=r"Partition 3 .*row 99 "
                                  r"compares item 7 with itself"):
        fit_dask(rlhf.RewardModel(), None,
                 da.from_array(same, chunks=(100, 2)))


def test_bad_arguments():
    F, pairs, weight, _, _ = problem(seed=7, n=200)
    chunked = da.from_array(pairs, chunks=(50, 2))
    with pytest.raises(TypeError, match="dask.array of shape"):
        fit_dask(rlhf.RewardModel(), F, pairs)
    with pytest.raises(ValueError, match=r"shape \(n_comparisons, 2\)"):
        fit_dask(rlhf.RewardModel(), F, da.zeros((10, 3), dtype=int))
    with pytest.raises(ValueError, match=r"sample_weight must have shape "
                                         r"\(200,\)"):
        fit_dask(rlhf.RewardModel(), F, chunked, weight[:-1])
    with pytest.raises(ValueError, match="likelihood='bradley-terry'"):
        fit_dask(rlhf.RewardModel(likelihood="plackett-luce"), F, chunked)
    with pytest.raises(ValueError, match="The 'C' parameter of RewardModel"):
        fit_dask(rlhf.RewardModel(C=-1.0), F, chunked)
    with pytest.raises(ValueError, match="n_items is implied by features"):
        fit_dask(rlhf.RewardModel(), F, chunked, n_items=50)
    with threads(), pytest.raises(ValueError, match="zero for every"):
        fit_dask(rlhf.RewardModel(), F, chunked, np.zeros(200))


def test_no_maximum_warns_as_in_memory():
    pairs = np.array([[0, 1], [1, 2], [0, 2], [2, 1]] * 5)  # 0 never loses
    with pytest.warns(rlhf.ConvergenceWarning, match="do not exist"):
        rlhf.RewardModel(penalty=None).fit(None, pairs)
    with threads(), pytest.warns(rlhf.ConvergenceWarning,
                                 match="do not exist"):
        fit_dask(rlhf.RewardModel(penalty=None), None,
                 da.from_array(pairs, chunks=(6, 2)))


def test_missing_dask_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "dask", None)
    F, pairs, _, _, _ = problem(n=50)
    with pytest.raises(ImportError, match=r"pip install 'rlhf-lab\[dask\]'"):
        fit_dask(rlhf.RewardModel(), F, pairs)


# -- on a cluster of worker processes ----------------------------------------

@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cluster = distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True,
            dashboard_address=None, silence_logs=50)
        client = distributed.Client(cluster)
    yield client
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        client.close()
        cluster.close()


@pytest.mark.slow
def test_cluster_parquet_equals_threads_and_in_memory(client, tmp_path):
    dd = pytest.importorskip("dask.dataframe")
    pytest.importorskip("pyarrow")
    F, pairs, weight, margin, tie = problem(seed=8, n=6000)
    table = frame(pairs, weight, margin, tie)
    for i, part in enumerate(np.array_split(np.arange(len(table)), 4)):
        table.iloc[part].to_parquet(tmp_path / f"part-{i}.parquet")
    params = dict(ties="rao-kupper", C=0.5)
    reference = rlhf.RewardModel(**params).fit(F, pairs, weight, margin, tie)
    ddf = dd.read_parquet(str(tmp_path))
    on_cluster = fit_dask(rlhf.RewardModel(**params), F, ddf)
    out_of_core = fit_dask(rlhf.RewardModel(**params), F, ddf, persist=False)
    with threads():
        threaded = fit_dask(rlhf.RewardModel(**params), F, ddf)
    same_state(on_cluster, reference, F)
    assert np.array_equal(on_cluster._x, threaded._x)
    assert np.array_equal(on_cluster._x, out_of_core._x)
    # sparse features, scattered to the workers
    S = features_of("sparse", F)
    reference = rlhf.RewardModel(solver="newton").fit(S, pairs, weight)
    fitted = fit_dask(rlhf.RewardModel(solver="newton"), S,
                      da.from_array(pairs, chunks=(1500, 2)),
                      da.from_array(weight, chunks=1500))
    same_state(fitted, reference, S)


@pytest.mark.slow
def test_cluster_partition_error_is_named(client):
    F, pairs, _, _, _ = problem(seed=9, n=400)
    bad = pairs.copy()
    bad[310] = [-1, 2]
    with pytest.raises(ValueError, match=r"Partition 3 of the comparisons.*"
                                         r"non-negative.*row 10"):
        fit_dask(rlhf.RewardModel(), F, da.from_array(bad, chunks=(100, 2)))


@pytest.mark.slow
def test_cluster_worker_killed_mid_fit_is_retried(client, tmp_path):
    """A worker process dies while it reads a partition in the third pass
    over the data (out of core, every evaluation reads them again): Dask
    reruns the task on the other or the restarted worker, and the answer
    is the undisturbed fit's, bit for bit."""
    F, pairs, weight, margin, tie = problem(seed=10, n=4000)
    marker = str(tmp_path)

    def read(block):
        # the third pass starts after 2 * 4 block reads
        calls = os.path.join(marker, "calls")
        with open(calls, "a") as fh:
            fh.write(".")
        if os.path.getsize(calls) > 9:
            try:
                fd = os.open(os.path.join(marker, "killed"),
                             os.O_CREAT | os.O_EXCL)
            except FileExistsError:
                return block
            os.close(fd)
            os._exit(1)
        return block

    source = da.from_array(pairs, chunks=(1000, 2)).map_blocks(
        read, dtype=pairs.dtype)
    fitted = fit_dask(rlhf.RewardModel(ties="davidson"), F, source, weight,
                      margin, tie, persist=False)
    assert os.path.exists(os.path.join(marker, "killed"))
    undisturbed = fit_dask(rlhf.RewardModel(ties="davidson"), F,
                           da.from_array(pairs, chunks=(1000, 2)), weight,
                           margin, tie)
    assert np.array_equal(fitted._x, undisturbed._x)
    reference = rlhf.RewardModel(ties="davidson").fit(F, pairs, weight,
                                                      margin, tie)
    same_state(fitted, reference, F)


def test_reward_model_fit_dispatches_dask_collections():
    """RewardModel.fit itself takes a dask.array or DataFrame: the same
    state as fit_dask, and the in-memory fit's coefficients to 1e-10."""
    dd = pytest.importorskip("dask.dataframe")
    pd = pytest.importorskip("pandas")
    F, pairs, weight, margin, tie = problem(seed=3)
    memory = rlhf.RewardModel(ties="rao-kupper").fit(
        F, pairs, weight, margin, tie)
    with threads():
        lazy = da.from_array(pairs, chunks=(700, 2))
        via_fit = rlhf.RewardModel(ties="rao-kupper").fit(
            F, lazy, weight, margin, tie)
        direct = fit_dask(rlhf.RewardModel(ties="rao-kupper"), F, lazy,
                          weight, margin, tie)
        frame = dd.from_pandas(pd.DataFrame(
            {"preferred": pairs[:, 0], "other": pairs[:, 1],
             "weight": weight, "margin": margin, "tie": tie}),
            npartitions=4)
        from_frame = rlhf.RewardModel(ties="rao-kupper").fit(F, frame)
    np.testing.assert_array_equal(via_fit._x, direct._x)
    same_state(via_fit, memory, F)
    same_state(from_frame, memory, F)


def test_unknown_chunk_sizes_are_named_before_lengths():
    """Comparisons of unknown chunk sizes (a boolean selection) with an
    in-memory weight: the error says what to do, not a shape of nan."""
    F, pairs, weight, margin, tie = problem(seed=4)
    lazy = da.from_array(pairs, chunks=(700, 2))
    selected = lazy[lazy[:, 0] >= 0]
    with threads(), pytest.raises(ValueError, match="known chunk sizes"):
        fit_dask(rlhf.RewardModel(), F, selected, weight)


# -- item features partitioned by rows ---------------------------------------
#
# A Dask array of features, or in-memory features too large to copy to
# every worker, is kept in row blocks: each evaluation computes the
# rewards block by block, the item gradient over the comparisons' parts,
# then F^T g block by block.  Only L-BFGS (Newton's Hessian F^T H F pairs
# rows of different blocks), so the fit agrees with the optimum to the
# stopping rule's precision, as the in-memory L-BFGS does.

def near_optimum(fitted, F, pairs, weight=None, margin=None, tie=None,
                 **params):
    optimum = rlhf.RewardModel(solver="newton", tol=1e-14, **params).fit(
        F, pairs, weight, margin, tie)
    in_memory = rlhf.RewardModel(solver="lbfgs", **params).fit(
        F, pairs, weight, margin, tie)
    bound = max(relative(in_memory._x, optimum._x), 1e-10)
    assert bound < 1e-5
    assert relative(fitted._x, optimum._x) <= 10 * bound
    assert fitted.solver_ == "lbfgs"
    assert fitted.objective_ == pytest.approx(optimum.objective_, rel=1e-9)
    np.testing.assert_allclose(fitted.predict(F), optimum.predict(F),
                               rtol=1e-5, atol=1e-6)
    assert fitted._fit_info["accuracy"] == pytest.approx(
        optimum._fit_info["accuracy"], abs=2.0 / len(pairs))


@pytest.mark.parametrize("ties", [None, "davidson"])
def test_dask_features_by_rows_reach_the_optimum(ties):
    F, pairs, weight, margin, tie = problem(seed=11, n_items=70, n=4000)
    lazy_F = da.from_array(F, chunks=(16, 5))  # 5 row blocks, one short
    with threads():
        fitted = rlhf.RewardModel(ties=ties).fit(
            lazy_F, da.from_array(pairs, chunks=(900, 2)), weight, margin,
            tie)
        # comparisons in memory, features on Dask
        in_memory_pairs = rlhf.RewardModel(ties=ties).fit(
            lazy_F, pairs, weight, margin, tie)
    near_optimum(fitted, F, pairs, weight, margin, tie, ties=ties)
    near_optimum(in_memory_pairs, F, pairs, weight, margin, tie, ties=ties)
    assert fitted.n_features_in_ == 5
    # the Laplace Hessian is not formed by rows: said, not guessed
    with pytest.raises(ValueError, match="partitioned by rows"):
        fitted.reward_std(F)
    assert "partitioned by rows" in str(fitted.summary())


def test_dask_features_by_rows_errors_are_named():
    F, pairs, _, _, _ = problem(seed=12, n=500)
    bad = F.copy()
    bad[23, 1] = np.nan
    with threads():
        with pytest.raises(ValueError,
                           match=r"Row block 2 of the features.*NaN"):
            rlhf.RewardModel().fit(da.from_array(bad, chunks=(10, 5)), pairs)
        with pytest.raises(ValueError, match="solver='newton'.*by rows"):
            rlhf.RewardModel(solver="newton").fit(
                da.from_array(F, chunks=(10, 5)), pairs)
        with pytest.raises(ValueError, match="2-dimensional"):
            rlhf.RewardModel().fit(da.from_array(F[:, 0], chunks=10), pairs)
        with pytest.raises(ValueError, match="refers to item 40"):
            rlhf.RewardModel().fit(da.from_array(F[:40], chunks=(10, 5)),
                                   np.r_[pairs, [[40, 1]]])


@pytest.mark.slow
def test_cluster_features_too_large_for_a_worker_go_by_rows(client,
                                                            monkeypatch):
    """In-memory features above the share of a worker's memory are split
    into row blocks scattered to the workers (one each), not copied to
    all: here the share is set to nothing so that small sparse and dense
    features take that path."""
    import rlhf._dask as module
    monkeypatch.setattr(module, "_REPLICATE_SHARE", 0.0)
    monkeypatch.setattr(module, "_BLOCK_BYTES", 2000)
    F, pairs, weight, margin, tie = problem(seed=13, n_items=60, n=3000)
    S = sparse.random(60, 40, density=0.2, random_state=2, format="csr")
    lazy = da.from_array(pairs, chunks=(800, 2))
    for features in (F, S):
        fitted = fit_dask(rlhf.RewardModel(ties="rao-kupper"), features,
                          lazy, weight, margin, tie)
        near_optimum(fitted, features, pairs, weight, margin, tie,
                     ties="rao-kupper")
        with pytest.raises(ValueError, match="partitioned by rows"):
            fitted.reward_std(features)


def test_dask_features_take_the_ties_and_weights_of_a_comparisons_object():
    """Comparisons in memory as an rlhf.Comparisons-like object (its
    ties and sample_weight ride along, as RewardModel.fit reads them) with
    features on Dask: fitted as with the arrays given one by one."""
    from types import SimpleNamespace
    F, pairs, weight, _, tie = problem(seed=14, n_items=50, n=3000)
    votes = SimpleNamespace(comparisons=pairs, ties=tie,
                            sample_weight=weight)
    with threads():
        fitted = rlhf.RewardModel(ties="davidson").fit(
            da.from_array(F, chunks=(20, 5)), votes)
    assert fitted._fit_info["n_ties"] == int(tie.sum()) > 0
    assert fitted._fit_info["weighted"]
    near_optimum(fitted, F, pairs, weight, None, tie, ties="davidson")
