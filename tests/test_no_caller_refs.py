"""A fitted estimator never depends on the arrays passed to fit.

fit may read the caller's buffers directly (the kernels take read-only,
contiguous float64 and int64 arrays as they are), but nothing it keeps may
share memory with them or hold a reference to them: editing them in place
after fit must change neither predictions nor standard errors, and a
pickle must not carry the training data along.
"""
import gc
import sys
import warnings

import numpy as np
import pytest

import rlhf

sparse = pytest.importorskip("scipy.sparse")


def _arrays(value, path="model", seen=None):
    """(path, array) of every ndarray reachable from value's attributes,
    tuples, lists and dicts (sparse matrices by their three arrays)."""
    seen = set() if seen is None else seen
    if id(value) in seen:
        return
    seen.add(id(value))
    if isinstance(value, np.ndarray):
        yield path, value
    elif sparse.issparse(value):
        for name in ("data", "indices", "indptr"):
            yield f"{path}.{name}", getattr(value, name)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _arrays(item, f"{path}[{key!r}]", seen)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _arrays(item, f"{path}[{i}]", seen)
    elif type(value).__module__.startswith("rlhf") and hasattr(value,
                                                               "__dict__"):
        for key, item in vars(value).items():
            yield from _arrays(item, f"{path}.{key}", seen)


def _input_arrays(kwargs):
    out = {}
    for name, value in kwargs.items():
        if sparse.issparse(value):
            for part in ("data", "indices", "indptr"):
                out[f"{name}.{part}"] = getattr(value, part)
        elif isinstance(value, np.ndarray):
            out[name] = value
    return out


def _pairs(rng, n_items, n):
    a = rng.integers(0, n_items, n)
    b = (a + rng.integers(1, n_items, n)) % n_items
    return np.stack([a, b], axis=1)


def _reward_case(name):
    """(estimator, fit keyword arguments) of a RewardModel fit whose
    arguments are already float64 / int64 / bool and contiguous, so that
    fit could use them as they are."""
    rng = np.random.default_rng(7)
    F = rng.normal(size=(40, 3))
    pairs = _pairs(rng, 40, 300)
    weight = rng.uniform(0.5, 2.0, 300)
    if name == "dense newton":
        return rlhf.RewardModel(), dict(features=F, comparisons=pairs)
    if name == "dense lbfgs":
        return (rlhf.RewardModel(solver="lbfgs"),
                dict(features=F, comparisons=pairs, sample_weight=weight))
    if name == "many features":
        # L-BFGS with more features than the auto rule gives Newton
        G = rng.normal(size=(40, 20))
        return rlhf.RewardModel(), dict(features=G, comparisons=pairs)
    if name == "margins and ties":
        ties = rng.random(300) < 0.2
        return (rlhf.RewardModel(ties="davidson"),
                dict(features=F, comparisons=pairs, sample_weight=weight,
                     margin=rng.uniform(0.0, 0.5, 300), ties=ties))
    if name == "sparse":
        S = sparse.csr_matrix(F)
        S.indices = S.indices.astype(np.int64)
        S.indptr = S.indptr.astype(np.int64)
        return rlhf.RewardModel(), dict(features=S, comparisons=pairs)
    if name == "free strengths":
        return (rlhf.RewardModel(C=3.0),
                dict(features=None, comparisons=pairs,
                     sample_weight=weight))
    if name == "free strengths, many comparisons":
        # the Hessian (8 x 8) is kept at fit instead of the comparisons
        return (rlhf.RewardModel(penalty=None),
                dict(features=None, comparisons=_pairs(rng, 8, 3000)))
    if name == "plackett-luce":
        rankings = np.array([rng.permutation(40)[:4] for _ in range(200)])
        rankings[::7, 3] = -1
        return (rlhf.RewardModel(likelihood="plackett-luce"),
                dict(features=F, rankings=rankings))
    raise ValueError(name)


REWARD_CASES = ["dense newton", "dense lbfgs", "many features",
                "margins and ties", "sparse", "free strengths",
                "free strengths, many comparisons", "plackett-luce"]


def _other_case(name):
    rng = np.random.default_rng(3)
    if name == "CostModel":
        F = rng.normal(size=(30, 3))
        return (rlhf.CostModel(),
                dict(features=F, comparisons=_pairs(rng, 30, 100),
                     safe=rng.random(30) < 0.5,
                     sample_weight=rng.uniform(0.5, 2.0, 100)))
    if name == "LogisticRegression":
        X = rng.normal(size=(50, 3))
        return (rlhf.LogisticRegression(),
                dict(X=X, y=(X[:, 0] > 0).astype(np.float64),
                     sample_weight=rng.uniform(0.5, 2.0, 50)))
    reference = rng.dirichlet(np.ones(6), size=5)
    rewards = rng.normal(size=(5, 6))
    features = rng.normal(size=(5, 6, 3))
    if name == "PPO":
        return (rlhf.PPO(n_iterations=3, policy="linear", cost_budget=0.5,
                         random_state=0),
                dict(reference_policy=reference, rewards=rewards,
                     features=features, costs=rng.uniform(size=(5, 6))))
    if name == "REINFORCE":
        return (rlhf.REINFORCE(n_iterations=3, random_state=0),
                dict(reference_policy=reference, rewards=rewards))
    if name == "DPO":
        comparisons = np.column_stack([rng.integers(0, 5, 40),
                                       rng.integers(0, 3, 40),
                                       rng.integers(3, 6, 40)])
        return (rlhf.DPO(n_iterations=3, policy="linear", random_state=0),
                dict(reference_policy=reference, comparisons=comparisons,
                     sample_weight=rng.uniform(0.5, 2.0, 40),
                     features=features))
    if name == "SFT":
        demonstrations = np.column_stack([rng.integers(0, 5, 40),
                                          rng.integers(0, 6, 40)])
        return (rlhf.SFT(policy="linear"),
                dict(demonstrations=demonstrations,
                     sample_weight=rng.uniform(0.5, 2.0, 40),
                     features=features))
    raise ValueError(name)


OTHER_CASES = ["CostModel", "LogisticRegression", "PPO", "REINFORCE", "DPO",
               "SFT"]


def _case(case):
    """(unfitted estimator, fit keyword arguments) of a named case."""
    return (_reward_case if case in REWARD_CASES else _other_case)(case)


def _fit(case):
    model, kwargs = _case(case)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rlhf.ConvergenceWarning)
        model.fit(**kwargs)
    return model, kwargs


def _shared(model, kwargs):
    inputs = _input_arrays(kwargs)
    return [f"{path} shares memory with {name}"
            for path, array in _arrays(model)
            for name, given in inputs.items()
            if np.shares_memory(array, given)]


@pytest.mark.parametrize("case", REWARD_CASES + OTHER_CASES)
def test_fitted_attributes_share_no_memory_with_fit_arguments(case):
    model, kwargs = _fit(case)
    assert _shared(model, kwargs) == []
    if case in REWARD_CASES:
        # and still none once reward_std has formed (and kept) its Hessian
        features = kwargs["features"]
        model.reward_std(None if features is None else features.copy())
        assert _shared(model, kwargs) == []


@pytest.mark.slow
@pytest.mark.parametrize("case", REWARD_CASES + OTHER_CASES)
def test_fitted_model_holds_no_reference_to_fit_arguments(case):
    """A view keeps its base alive: the reference counts of the arguments
    are back where they were while the fitted model lives on."""
    model, kwargs = _case(case)
    inputs = list(_input_arrays(kwargs).values())
    gc.collect()
    before = [sys.getrefcount(a) for a in inputs]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rlhf.ConvergenceWarning)
        model.fit(**kwargs)
    gc.collect()
    assert [sys.getrefcount(a) for a in inputs] == before


def _edit_in_place(kwargs):
    """Overwrite every array argument in place with other valid values."""
    for name, value in kwargs.items():
        if sparse.issparse(value):
            value.data *= 10.0
        elif not isinstance(value, np.ndarray):
            continue
        elif value.dtype == bool:
            value[:] = ~value
        elif value.dtype.kind == "f":
            value *= 10.0
        else:
            # the rows of the second half (or the second ranking) over the
            # first: other items, still valid indices
            half = len(value) // 2
            value[:half] = value[half:2 * half]


def _outputs(model, features):
    if features is None:
        return [model.predict(), model.reward_std(),
                model.predict_proba(None, [[0, 1], [2, 3]])]
    return [model.predict(features), model.reward_std(features),
            model.predict_proba(features, [[0, 1], [2, 3]])]


@pytest.mark.parametrize("case", REWARD_CASES)
@pytest.mark.parametrize("first_call", ["before", "after"])
def test_reward_model_ignores_later_edits_of_fit_arguments(case,
                                                           first_call):
    """Regression: reward_std read the fitted features and comparisons
    from the caller's arrays, so editing them after fit changed it.
    Whether reward_std first runs before the edit (its Hessian then
    formed and kept) or after it (formed from the model's own copy), the
    results are bitwise those of an untouched model."""
    model, kwargs = _fit(case)
    features = kwargs["features"]
    if features is not None:
        features = features.copy()
    expected = _outputs(_fit(case)[0], features)
    if first_call == "before":
        _outputs(model, features)
    _edit_in_place(kwargs)
    for got, want in zip(_outputs(model, features), expected):
        assert got.tobytes() == want.tobytes()


def test_cost_model_ignores_later_edits_of_fit_arguments():
    model, kwargs = _fit("CostModel")
    features = kwargs["features"].copy()
    expected = model.predict(features)
    _edit_in_place(kwargs)
    assert model.predict(features).tobytes() == expected.tobytes()
