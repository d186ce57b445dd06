"""rlhf.RewardModel: Bradley-Terry, ties and Plackett-Luce in item space.

Oracles, in order of strength: closed forms and finite differences (of the
kernel's own loss and gradient); the lecture's mirrored rows fitted by
rlhf.LogisticRegression and scikit-learn's LogisticRegression; the NumPy
twins in rlhf._reference; choix (Maystre) and a maximum-likelihood fit with
SciPy written here; Monte Carlo recovery of simulated parameters with
tolerances from the Laplace standard errors.
"""
import copy
import math
import subprocess
import sys
import warnings

import numpy as np
import pytest

import rlhf
from rlhf import _core, _reference
from rlhf.__main__ import lecture_data, mirrored_rows

sparse = pytest.importorskip("scipy.sparse")
optimize = pytest.importorskip("scipy.optimize")


def sigmoid(z):
    return np.exp(-np.logaddexp(0.0, -np.asarray(z, dtype=np.float64)))


def random_pairs(rng, n_items, n_pairs):
    """Random distinct ordered pairs (a, b)."""
    a = rng.integers(0, n_items, n_pairs)
    b = (a + rng.integers(1, n_items, n_pairs)) % n_items
    return np.stack([a, b], axis=1)


def simulate_bt(rng, rewards, pairs):
    """Orient each pair by a Bradley-Terry draw: the winner first."""
    d = rewards[pairs[:, 0]] - rewards[pairs[:, 1]]
    first_wins = rng.random(len(pairs)) < sigmoid(d)
    return np.where(first_wins[:, None], pairs, pairs[:, ::-1])


def feature_problem(seed, n_items=30, n_features=4, n_pairs=90):
    rng = np.random.default_rng(seed)
    F = rng.normal(size=(n_items, n_features))
    w = rng.normal(size=n_features)
    pairs = simulate_bt(rng, F @ w, random_pairs(rng, n_items, n_pairs))
    weight = rng.uniform(0.2, 3.0, n_pairs)
    return F, pairs, weight


# Paired-comparison data from the literature.
#
# Stigler (1994), Citation patterns in the journals of statistics and
# probability, Statistical Science 9, 94-108, as tabulated by Agresti
# (2002), Categorical Data Analysis, 2nd ed., p. 448 (also the `citations`
# data of the R package BradleyTerry2): CITATIONS[i, j] is the number of
# times journal i was cited by journal j -- a "win" of i over j.
JOURNALS = ["Biometrika", "Comm Statist", "JASA", "JRSS-B"]
CITATIONS = np.array([
    [0, 730, 498, 221],
    [33, 0, 68, 17],
    [320, 813, 0, 142],
    [284, 276, 325, 0],
])

# Agresti (2002), Table 10.10: 1987 American League East, wins of the row
# team over the column team (home and away games together; 13 games per
# pair), from the `baseball` data of BradleyTerry2.
TEAMS = ["Milwaukee", "Detroit", "Toronto", "New York", "Boston",
         "Cleveland", "Baltimore"]
BASEBALL = np.array([
    [0, 7, 9, 7, 7, 9, 11],
    [6, 0, 7, 5, 11, 9, 9],
    [4, 6, 0, 7, 7, 8, 12],
    [6, 8, 6, 0, 6, 7, 10],
    [6, 2, 6, 7, 0, 7, 12],
    [4, 4, 5, 6, 6, 0, 6],
    [2, 4, 1, 3, 1, 7, 0],
])


def table_pairs(wins):
    """(pairs, counts) of a square win table, winner first."""
    i, j = np.nonzero(wins)
    return np.stack([i, j], axis=1), wins[i, j].astype(np.float64)


def table_list(wins):
    """Every single win as a (winner, loser) tuple, as choix takes it."""
    return [(int(i), int(j)) for i in range(len(wins))
            for j in range(len(wins)) for _ in range(int(wins[i, j]))]


def ml_strengths(wins):
    """Maximum-likelihood Bradley-Terry strengths of a win table, mean zero,
    by SciPy on a negative log-likelihood written here (first strength
    fixed at zero while optimising, then centred)."""
    n = len(wins)

    def nll(t):
        s = np.concatenate([[0.0], t])
        d = s[:, None] - s[None, :]
        loss = np.sum(wins * np.logaddexp(0.0, -d))
        g = wins * -sigmoid(-d)
        grad = g.sum(axis=1) - g.sum(axis=0)
        return loss, grad[1:]

    res = optimize.minimize(nll, np.zeros(n - 1), jac=True, method="BFGS",
                            options={"gtol": 1e-11, "maxiter": 10_000})
    assert np.abs(nll(res.x)[1]).max() < 1e-7 * wins.sum()
    s = np.concatenate([[0.0], res.x])
    return s - s.mean()


# -- 1. the lecture's mirrored rows -------------------------------------------

def test_lecture_equivalence_with_mirrored_rows():
    _, features, preferences = lecture_data()
    X, y = mirrored_rows(features, preferences)
    for C in (0.3, 1.0, 4.0):
        clf = rlhf.LogisticRegression(C=C, solver="newton").fit(X, y)
        model = rlhf.RewardModel(C=2 * C, solver="newton", tol=1e-12).fit(
            features, np.array(preferences))
        np.testing.assert_allclose(model.coef_, clf.coef_.ravel(), rtol=0,
                                   atol=1e-8)
        # the mirrored rows make the intercept exactly uninformative
        assert abs(clf.intercept_[0]) < 1e-8
        np.testing.assert_allclose(model.predict(features),
                                   clf.decision_function(features)
                                   - clf.intercept_[0], rtol=0, atol=1e-8)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("C", [0.05, 1.0, 20.0])
def test_random_problems_equal_mirrored_rows(seed, C):
    F, pairs, weight = feature_problem(seed)
    X, y = mirrored_rows(F, pairs)
    clf = rlhf.LogisticRegression(C=C, solver="newton").fit(
        X, y, sample_weight=np.repeat(weight, 2))
    model = rlhf.RewardModel(C=2 * C, solver="newton", tol=1e-12).fit(
        F, pairs, sample_weight=weight)
    np.testing.assert_allclose(model.coef_, clf.coef_.ravel(), rtol=0,
                               atol=1e-8)
    lbfgs = rlhf.RewardModel(C=2 * C, solver="lbfgs", tol=1e-10).fit(
        F, pairs, sample_weight=weight)
    np.testing.assert_allclose(lbfgs.coef_, model.coef_, rtol=0, atol=1e-6)


def test_objective_is_the_documented_one():
    """objective_ = sum_p s_p log(1 + exp(-(r_a - r_b - m_p))) +
    ||w||^2 / (2 C), evaluated here at the fitted weights."""
    F, pairs, weight = feature_problem(9)
    margin = np.random.default_rng(9).uniform(-1, 1, len(pairs))
    for C, penalty in ((0.7, "l2"), (1.0, None), (np.inf, "l2")):
        model = rlhf.RewardModel(C=C, penalty=penalty).fit(
            F, pairs, sample_weight=weight, margin=margin)
        w = model.coef_
        r = F @ w
        d = r[pairs[:, 0]] - r[pairs[:, 1]] - margin
        expected = np.sum(weight * np.logaddexp(0.0, -d))
        if penalty == "l2" and np.isfinite(C):
            expected += w @ w / (2 * C)
        assert model.objective_ == pytest.approx(expected, rel=1e-12)
    # C = inf is no penalty
    np.testing.assert_allclose(
        rlhf.RewardModel(C=np.inf).fit(F, pairs).coef_,
        rlhf.RewardModel(penalty=None).fit(F, pairs).coef_, rtol=0,
        atol=1e-9)


@pytest.mark.parametrize("C", [0.1, 1.0, 10.0])
def test_sklearn_on_signed_rows(C):
    """One row per pair, +d labelled 1 or -d labelled 0 at random: with no
    intercept both rows have the pair's loss, so scikit-learn's C is the
    pairwise model's C."""
    LogisticRegression = pytest.importorskip(
        "sklearn.linear_model").LogisticRegression
    F, pairs, weight = feature_problem(7, n_pairs=120)
    rng = np.random.default_rng(3)
    sign = np.where(rng.random(len(pairs)) < 0.5, 1.0, -1.0)
    X = sign[:, None] * (F[pairs[:, 0]] - F[pairs[:, 1]])
    y = (sign > 0).astype(int)
    ref = LogisticRegression(C=C, fit_intercept=False, tol=1e-12,
                             max_iter=10_000).fit(X, y, sample_weight=weight)
    model = rlhf.RewardModel(C=C, solver="newton", tol=1e-12).fit(
        F, pairs, sample_weight=weight)
    np.testing.assert_allclose(model.coef_, ref.coef_.ravel(), rtol=0,
                               atol=1e-6)


# -- 2. the C kernel against its NumPy twin and finite differences ------------

def kernel_problem(features, likelihood, tie_model, alpha, *, weighted=True,
                   with_margin=True, seed=0, n_items=7, n_features=3,
                   n_units=25):
    """A problem tuple for _core.bt_* and a random point x."""
    rng = np.random.default_rng(seed)
    F = rng.normal(size=(n_items, n_features))
    F[rng.random(F.shape) < 0.3] = 0.0
    if features == "dense":
        feat = F
    elif features == "csr":
        csr = sparse.csr_matrix(F)
        feat = (csr.data, csr.indices.astype(np.int64),
                csr.indptr.astype(np.int64), n_features)
    else:
        feat = None
    n_coef = n_items if feat is None else n_features
    margin = tie = None
    if likelihood == 0:
        data = random_pairs(rng, n_items, n_units)
        if with_margin:
            margin = rng.uniform(-0.5, 1.0, n_units)
        if tie_model or with_margin:
            tie = (rng.random(n_units) < 0.3).astype(np.uint8)
    else:
        K = 4
        data = np.full((n_units, K), -1, dtype=np.int64)
        for g in range(n_units):
            length = 1 + g % K  # lengths 1..4: a single item and padding too
            data[g, :length] = rng.permutation(n_items)[:length]
    weight = rng.uniform(0.1, 2.0, n_units) if weighted else None
    problem = (feat, n_items, likelihood, np.asarray(data, np.int64), weight,
               margin, tie, tie_model, alpha)
    x = rng.normal(scale=0.7, size=n_coef + (tie_model != 0))
    if tie_model:
        x[-1] = rng.uniform(-1.0, 0.5)  # u: log kappa or log nu
    return problem, x


KERNEL_CASES = [
    pytest.param(f, 0, t, a, m, True, id=f"{f}-bt-ties{t}-alpha{a}-margin{m}")
    for f in ("dense", "csr", None) for t in (0, 1, 2) for a in (0.0, 0.7)
    for m in (False, True)
] + [
    pytest.param(f, 1, 0, a, True, True, id=f"{f}-pl-alpha{a}")
    for f in ("dense", "csr", None) for a in (0.0, 0.7)
] + [
    pytest.param(f, lik, t, 0.0, True, False,
                 id=f"{f}-{'pl' if lik else 'bt'}-ties{t}-unweighted")
    for f in ("dense", "csr", None) for lik, t in ((0, 0), (0, 1), (0, 2),
                                                   (1, 0))
]


def central_gradient(fun, x, h=1e-6):
    g = np.empty(len(x))
    for j in range(len(x)):
        up, down = x.copy(), x.copy()
        up[j] += h
        down[j] -= h
        g[j] = (fun(up) - fun(down)) / (2 * h)
    return g


@pytest.mark.parametrize(
    "features,likelihood,tie_model,alpha,with_margin,weighted", KERNEL_CASES)
def test_kernel_equals_twin_and_finite_differences(features, likelihood,
                                                   tie_model, alpha,
                                                   with_margin, weighted):
    problem, x = kernel_problem(features, likelihood, tie_model, alpha,
                                with_margin=with_margin and likelihood == 0,
                                weighted=weighted)
    loss, grad = _core.bt_loss_grad(problem, x)
    twin_loss, twin_grad = _reference.bt_loss_grad(problem, x)
    assert loss == pytest.approx(twin_loss, rel=1e-12)
    np.testing.assert_allclose(grad, twin_grad, rtol=1e-10, atol=1e-10)

    assert (problem[4] is None) == (not weighted)
    # the gradient is that of the kernel's own loss
    fd = central_gradient(lambda z: _core.bt_loss_grad(problem, z)[0], x)
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-6)

    # the Hessian is the derivative of the kernel's own gradient
    H = _core.bt_hessian(problem, x)
    cols = [central_gradient(
        lambda z, j=j: _core.bt_loss_grad(problem, z)[1][j], x, h=1e-5)
        for j in range(len(x))]
    H_fd = np.array(cols)
    H_fd = 0.5 * (H_fd + H_fd.T)
    if features is None and alpha == 0.0:
        # documented: plus mean(diag) 1 1^T / n_items on the strengths
        n = problem[1]
        H_fd[:n, :n] += np.mean(np.diag(H_fd)[:n]) / n
    np.testing.assert_array_equal(H, H.T)
    np.testing.assert_allclose(H, H_fd, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(H, _reference.bt_hessian(problem, x),
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("features", ["dense", "csr", None])
@pytest.mark.parametrize("likelihood,tie_model", [(0, 0), (0, 1), (0, 2),
                                                  (1, 0)])
def test_fit_kernel_equals_twin(features, likelihood, tie_model):
    """_core.bt_fit against _reference.bt_fit: L-BFGS on the kernel and on
    the twin objective take the same path to the same point (the two
    objectives agree to rounding); Newton (the twin's Hessian is one of
    differences) ends at the same optimum."""
    problem, _ = kernel_problem(features, likelihood, tie_model, 0.7,
                                n_items=6, n_units=40)
    x0 = np.zeros(len(_))
    ours = _core.bt_fit(problem, x0, "lbfgs", 1e-9, 200)
    twin = _reference.bt_fit(problem, x0, "lbfgs", 1e-9, 200)
    assert (ours[3], ours[5]) == (twin[3], twin[5])
    np.testing.assert_allclose(ours[0], twin[0], rtol=1e-8, atol=1e-10)
    assert ours[1] == pytest.approx(twin[1], rel=1e-13)
    ours = _core.bt_fit(problem, x0, "newton", 1e-10, 50)
    twin = _reference.bt_fit(problem, x0, "newton", 1e-10, 50)
    assert ours[5] in (0, 1) and twin[5] in (0, 1)
    np.testing.assert_allclose(ours[0], twin[0], rtol=1e-7, atol=1e-9)


def test_kernel_does_not_write_into_its_inputs():
    problem, x = kernel_problem("dense", 0, 2, 0.3)
    before = copy.deepcopy((problem, x))
    _core.bt_loss_grad(problem, x)
    _core.bt_hessian(problem, x)
    _core.bt_fit(problem, x, "newton", 1e-8, 50)
    for a, b in zip(problem + (x,), before[0] + (before[1],)):
        if isinstance(a, np.ndarray):
            np.testing.assert_array_equal(a, b)


def big_problem(kind, seed=5):
    """More than 4096 units (and items, for dense features): several
    blocks, so that two threads split the work."""
    rng = np.random.default_rng(seed)
    n_items = 5000
    if kind == "pl":
        data = np.array([rng.choice(n_items, 4, replace=False)
                         for _ in range(4200)])
        return (None, n_items, 1, data, rng.uniform(0.5, 2, len(data)),
                None, None, 0, 0.0), rng.normal(size=n_items)
    pairs = random_pairs(rng, n_items, 12_000)
    weight = rng.uniform(0.5, 2.0, len(pairs))
    margin = rng.uniform(0, 1, len(pairs))
    tie = (rng.random(len(pairs)) < 0.2).astype(np.uint8)
    if kind == "dense":
        F = rng.normal(size=(n_items, 6))
        return (F, n_items, 0, pairs, weight, margin, tie, 2, 0.1), \
            rng.normal(size=7)
    return (None, n_items, 0, pairs, weight, margin, tie, 1, 0.0), \
        np.concatenate([rng.normal(size=n_items), [0.1]])


@pytest.mark.parametrize("kind", [
    "dense",
    pytest.param("identity", marks=pytest.mark.slow),
    pytest.param("pl", marks=pytest.mark.slow)])
def test_threads_give_bitwise_identical_results(kind):
    problem, x = big_problem(kind)
    one = _core.bt_loss_grad(problem, x, n_threads=1)
    two = _core.bt_loss_grad(problem, x, n_threads=2)
    assert one[0] == two[0]
    np.testing.assert_array_equal(one[1], two[1])
    twin = _reference.bt_loss_grad(problem, x)
    assert one[0] == pytest.approx(twin[0], rel=1e-12)
    np.testing.assert_allclose(one[1], twin[1], rtol=1e-9, atol=1e-10)
    fit_one = _core.bt_fit(problem, np.zeros(len(x)), "lbfgs", 1e-6, 15,
                           n_threads=1)
    fit_two = _core.bt_fit(problem, np.zeros(len(x)), "lbfgs", 1e-6, 15,
                           n_threads=2)
    np.testing.assert_array_equal(fit_one[0], fit_two[0])
    np.testing.assert_array_equal(fit_one[2], fit_two[2])
    assert fit_one[1] == fit_two[1] and fit_one[3:] == fit_two[3:]
    assert fit_one[3] > 1  # several iterations, several evaluations


def test_estimator_threads_bitwise_identical():
    rng = np.random.default_rng(11)
    F = rng.normal(size=(5000, 5))
    pairs = simulate_bt(rng, F @ rng.normal(size=5),
                        random_pairs(rng, 5000, 9000))
    one = rlhf.RewardModel(n_threads=1, solver="lbfgs").fit(F, pairs)
    two = rlhf.RewardModel(n_threads=2, solver="lbfgs").fit(F, pairs)
    np.testing.assert_array_equal(one.coef_, two.coef_)
    assert one.n_iter_ == two.n_iter_


# -- 3. per-item strengths: choix and a SciPy maximum likelihood --------------

@pytest.mark.parametrize("alpha", [0.01, 0.3])
def test_penalised_strengths_equal_choix_opt_pairwise(alpha):
    """choix.opt_pairwise minimises -loglik + alpha * ||theta||^2 (its
    PairwiseFcts.objective: ``penalty * np.sum(params**2)``), so the
    matching RewardModel has 1 / (2 C) = alpha."""
    choix = pytest.importorskip("choix")
    data = table_list(BASEBALL)
    expected = choix.opt_pairwise(len(TEAMS), data, alpha=alpha,
                                  method="Newton-CG", tol=1e-12)
    pairs = np.array(data)
    model = rlhf.RewardModel(C=1.0 / (2.0 * alpha), tol=1e-12).fit(
        None, pairs)
    np.testing.assert_allclose(model.coef_, expected, rtol=0, atol=1e-7)
    # the same from the table's counts as sample weights
    pairs, counts = table_pairs(BASEBALL)
    weighted = rlhf.RewardModel(C=1.0 / (2.0 * alpha), tol=1e-12).fit(
        None, pairs, sample_weight=counts)
    np.testing.assert_allclose(weighted.coef_, model.coef_, rtol=0,
                               atol=1e-10)


@pytest.mark.parametrize("name", ["citations", "baseball"])
@pytest.mark.parametrize("solver", ["newton", "lbfgs"])
def test_maximum_likelihood_equals_scipy(name, solver):
    wins = CITATIONS if name == "citations" else BASEBALL
    pairs, counts = table_pairs(wins)
    model = rlhf.RewardModel(penalty=None, solver=solver, tol=1e-12).fit(
        None, pairs, sample_weight=counts)
    expected = ml_strengths(wins)
    assert abs(model.coef_.mean()) < 1e-12
    np.testing.assert_allclose(model.coef_, expected, rtol=0,
                               atol=1e-7 if solver == "newton" else 1e-6)
    # the likelihood equations: each item's expected wins equal its wins
    s = model.coef_
    P = sigmoid(s[:, None] - s[None, :])
    games = wins + wins.T
    np.testing.assert_allclose((games * P).sum(axis=1), wins.sum(axis=1),
                               rtol=1e-8 if solver == "newton" else 1e-6)


def test_maximum_likelihood_equals_choix_ilsr_and_lsr_fixed_point():
    """I-LSR converges to the ML estimate (Maystre & Grossglauser 2015);
    one LSR step started at the ML estimate returns it (its fixed point).
    choix's parameters are centred, as RewardModel(penalty=None)'s."""
    choix = pytest.importorskip("choix")
    data = table_list(CITATIONS)
    pairs, counts = table_pairs(CITATIONS)
    model = rlhf.RewardModel(penalty=None, tol=1e-12).fit(
        None, pairs, sample_weight=counts)
    ilsr = choix.ilsr_pairwise(len(JOURNALS), data, tol=1e-12,
                               max_iter=10_000)
    np.testing.assert_allclose(model.coef_, ilsr - ilsr.mean(), rtol=0,
                               atol=1e-7)
    step = choix.lsr_pairwise(len(JOURNALS), data,
                              initial_params=model.coef_)
    np.testing.assert_allclose(step - step.mean(), model.coef_, rtol=0,
                               atol=1e-9)


# -- 4. ties and Plackett-Luce: recovery of simulated parameters --------------

def simulate_ties(rng, rewards, pairs, model, tie_param):
    """Rows (winner first) and tie mask drawn from Rao-Kupper or Davidson
    probabilities written from the models' definitions."""
    pa, pb = np.exp(rewards[pairs[:, 0]]), np.exp(rewards[pairs[:, 1]])
    if model == "rao-kupper":
        # Rao & Kupper (1967): P(a > b) = pi_a / (pi_a + theta pi_b)
        theta = tie_param
        win_a = pa / (pa + theta * pb)
        win_b = pb / (pb + theta * pa)
    else:
        # Davidson (1970): P(a > b) = pi_a / (pi_a + pi_b + nu sqrt(pi_a pi_b))
        total = pa + pb + tie_param * np.sqrt(pa * pb)
        win_a, win_b = pa / total, pb / total
    u = rng.random(len(pairs))
    a_wins, b_wins = u < win_a, (u >= win_a) & (u < win_a + win_b)
    tied = ~(a_wins | b_wins)
    rows = np.where(b_wins[:, None], pairs[:, ::-1], pairs)
    return rows, tied


@pytest.mark.parametrize("model,tie_param", [("rao-kupper", 1.6),
                                             ("davidson", 0.7)])
def test_tie_models_recover_simulated_parameters(model, tie_param):
    rng = np.random.default_rng(2024)
    n_items = 6
    truth = rng.normal(scale=0.8, size=n_items)
    truth -= truth.mean()
    pairs = random_pairs(rng, n_items, 20_000)
    rows, tied = simulate_ties(rng, truth, pairs, model, tie_param)
    assert 0.1 < tied.mean() < 0.5  # the data do hold ties
    fitted = rlhf.RewardModel(penalty=None, ties=model, tol=1e-10).fit(
        None, rows, ties=tied)
    std = fitted.reward_std()
    assert np.all(std > 0) and np.all(std < 0.1)
    assert np.all(np.abs(fitted.coef_ - truth) <= 4 * std)
    # the tie parameter, on the solver's scale u, within 4 of its
    # Laplace standard errors (Hessian of the NumPy twin)
    u_hat = (math.log(math.log(fitted.tie_param_)) if model == "rao-kupper"
             else math.log(fitted.tie_param_))
    u_true = (math.log(math.log(tie_param)) if model == "rao-kupper"
              else math.log(tie_param))
    problem = (None, n_items, 0, rows, None, None, tied.astype(np.uint8),
               1 if model == "rao-kupper" else 2, 0.0)
    x = np.concatenate([fitted.coef_, [u_hat]])
    # at the optimum: the gradient of the twin's objective vanishes
    loss, grad = _reference.bt_loss_grad(problem, x)
    assert loss == pytest.approx(fitted.objective_, rel=1e-12)
    assert np.abs(grad).max() < 1e-6
    cov = np.linalg.inv(_reference.bt_hessian(problem, x))
    assert abs(u_hat - u_true) <= 4 * math.sqrt(cov[-1, -1])
    assert abs(u_hat - u_true) < 0.1


@pytest.mark.parametrize("ties", ["rao-kupper", "davidson"])
def test_tie_model_without_observed_ties_is_bradley_terry(ties):
    """No tie in the data: the tie parameter's maximum likelihood is at
    its boundary (theta = 1, nu = 0), where both models are Bradley-Terry."""
    F, pairs, _ = feature_problem(71)
    plain = rlhf.RewardModel(tol=1e-12).fit(F, pairs)
    model = rlhf.RewardModel(ties=ties).fit(F, pairs)
    np.testing.assert_allclose(model.coef_, plain.coef_, rtol=0, atol=1e-6)
    boundary = 1.0 if ties == "rao-kupper" else 0.0
    assert abs(model.tie_param_ - boundary) < 1e-6


def test_ties_without_a_tie_model_count_half_a_win():
    """With ties=None a tie is half a win each way: the same fit as both
    orders with weight 1/2."""
    rng = np.random.default_rng(4)
    pairs = random_pairs(rng, 5, 60)
    tied = rng.random(60) < 0.3
    model = rlhf.RewardModel(tol=1e-12).fit(None, pairs, ties=tied)
    rows = np.concatenate([pairs[~tied], pairs[tied], pairs[tied][:, ::-1]])
    weight = np.concatenate([np.ones((~tied).sum()),
                             np.full(2 * tied.sum(), 0.5)])
    expected = rlhf.RewardModel(tol=1e-12).fit(None, rows,
                                               sample_weight=weight)
    np.testing.assert_allclose(model.coef_, expected.coef_, rtol=0,
                               atol=1e-10)
    assert model.tie_param_ is None


def gumbel_rankings(rng, rewards, n_groups, sizes):
    """Plackett-Luce rankings by Gumbel-max: sorting r + Gumbel noise in
    decreasing order draws a ranking with the Plackett-Luce law (Yellott
    1977); padded with -1 to the largest size."""
    K = max(sizes)
    out = np.full((n_groups, K), -1, dtype=np.int64)
    for g in range(n_groups):
        size = sizes[g % len(sizes)]
        items = rng.choice(len(rewards), size, replace=False)
        noisy = rewards[items] + rng.gumbel(size=size)
        out[g, :size] = items[np.argsort(-noisy)]
    return out


@pytest.mark.slow
def test_plackett_luce_recovers_strengths():
    rng = np.random.default_rng(99)
    truth = rng.normal(size=8)
    truth -= truth.mean()
    rankings = gumbel_rankings(rng, truth, 4000, sizes=(4, 3, 4, 2))
    model = rlhf.RewardModel(likelihood="plackett-luce", penalty=None).fit(
        None, rankings=rankings)
    std = model.reward_std()
    assert np.all(std < 0.1)
    assert np.all(np.abs(model.coef_ - truth) <= 4 * std)
    # the positional argument works as well as the keyword
    again = rlhf.RewardModel(likelihood="plackett-luce", penalty=None).fit(
        None, rankings)
    np.testing.assert_array_equal(again.coef_, model.coef_)


def test_plackett_luce_with_features_recovers_weights():
    rng = np.random.default_rng(7)
    F = rng.normal(size=(300, 3))
    w = np.array([1.0, -0.5, 0.25])
    rankings = gumbel_rankings(rng, F @ w, 2000, sizes=(5,))
    model = rlhf.RewardModel(likelihood="plackett-luce", penalty=None).fit(
        F, rankings=rankings)
    # reward_std of the unit vectors: the standard errors of the weights
    std_w = model.reward_std(np.eye(3))
    assert np.all(std_w < 0.05)
    assert np.all(np.abs(model.coef_ - w) <= 4 * std_w)


@pytest.mark.parametrize("features", ["dense", None])
def test_plackett_luce_with_two_items_is_bradley_terry(features):
    F, pairs, weight = feature_problem(3, n_items=12, n_pairs=70)
    F = F if features == "dense" else None
    bt = rlhf.RewardModel(C=3.0, tol=1e-12).fit(F, pairs,
                                                sample_weight=weight)
    pl = rlhf.RewardModel(C=3.0, tol=1e-12, likelihood="plackett-luce").fit(
        F, rankings=pairs, sample_weight=weight)
    np.testing.assert_allclose(pl.coef_, bt.coef_, rtol=1e-10, atol=1e-12)
    assert pl.objective_ == pytest.approx(bt.objective_, rel=1e-13)
    np.testing.assert_allclose(pl.reward_std(F), bt.reward_std(F),
                               rtol=1e-8)


# -- 5. reward_std ------------------------------------------------------------

@pytest.mark.slow
def test_laplace_intervals_cover_true_rewards():
    """95% Laplace intervals of the rewards over 400 simulated data sets:
    the share covering the true rewards is 0.95 up to the approximation
    and Monte Carlo error (the 12 intervals of a replicate are correlated;
    the standard deviation of a replicate's share is about 0.15, so the
    overall share has a standard error of about 0.008 and [0.90, 0.99] is
    about five of them either side)."""
    rng = np.random.default_rng(12345)
    n_items, w = 12, np.array([1.0, -0.7])
    F = rng.normal(size=(n_items, 2))
    truth = F @ w
    covered = []
    for _ in range(400):
        pairs = simulate_bt(rng, truth, random_pairs(rng, n_items, 150))
        model = rlhf.RewardModel(penalty=None, solver="newton").fit(F, pairs)
        half = 1.959964 * model.reward_std(F)
        covered.append(np.abs(model.predict(F) - truth) <= half)
    coverage = np.mean(covered)
    assert 0.90 <= coverage <= 0.99, coverage


def laplacian(strengths, pairs, weight):
    """sum_p s_p sigma'(d_p) (e_a - e_b)(e_a - e_b)^T: the Hessian of the
    Bradley-Terry log-likelihood in the strengths, in closed form."""
    n = len(strengths)
    L = np.zeros((n, n))
    d = strengths[pairs[:, 0]] - strengths[pairs[:, 1]]
    h = weight * sigmoid(d) * sigmoid(-d)
    for (a, b), hp in zip(pairs, h):
        L[a, a] += hp
        L[b, b] += hp
        L[a, b] -= hp
        L[b, a] -= hp
    return L


def test_reward_std_of_free_strengths_is_that_of_mean_zero_strengths():
    pairs, counts = table_pairs(BASEBALL)
    n = len(TEAMS)
    model = rlhf.RewardModel(penalty=None).fit(None, pairs,
                                               sample_weight=counts)
    L = laplacian(model.coef_, pairs, counts)
    expected = np.sqrt(np.diag(np.linalg.pinv(L)))
    np.testing.assert_allclose(model.reward_std(), expected, rtol=1e-7)
    # the twin's Hessian without the kernel's ones term is the same matrix:
    # H = L + c 1 1^T with c = mean(diag L) / n, so mean(diag H) = (n+1) c
    problem = (None, n, 0, pairs, counts, None, None, 0, 0.0)
    H = _reference.bt_hessian(problem, model.coef_)
    c = np.mean(np.diag(H)) / (n + 1)
    np.testing.assert_allclose(H - c, L, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(
        np.sqrt(np.diag(np.linalg.pinv(H - c, rcond=1e-6, hermitian=True))),
        expected, rtol=1e-5)
    # the variance of a mean-zero vector's sum is zero
    P = np.eye(n) - 1.0 / n
    cov = np.linalg.pinv(L)
    np.testing.assert_allclose(P @ cov @ P, cov, atol=1e-12)


@pytest.mark.parametrize("C", [0.5, 5.0])
def test_reward_std_with_a_penalty(C):
    pairs, counts = table_pairs(CITATIONS)
    model = rlhf.RewardModel(C=C).fit(None, pairs, sample_weight=counts)
    H = laplacian(model.coef_, pairs, counts) + np.eye(4) / C
    np.testing.assert_allclose(model.reward_std(),
                               np.sqrt(np.diag(np.linalg.inv(H))),
                               rtol=1e-7)
    # with features: sqrt(f^T (F^T L F + I / C)^-1 f)
    F, pairs, weight = feature_problem(8)
    model = rlhf.RewardModel(C=C).fit(F, pairs, sample_weight=weight)
    H = F.T @ laplacian(F @ model.coef_, pairs, weight) @ F + np.eye(4) / C
    cov = np.linalg.inv(H)
    np.testing.assert_allclose(model.reward_std(F),
                               np.sqrt(np.einsum("ij,jk,ik->i", F, cov, F)),
                               rtol=1e-7)
    np.testing.assert_allclose(model.reward_std(sparse.csr_matrix(F)),
                               model.reward_std(F), rtol=1e-12)


# -- 6. behaviour -------------------------------------------------------------

def test_not_fitted_errors():
    model = rlhf.RewardModel()
    F = np.eye(3)
    for call in (lambda: model.predict(F),
                 lambda: model.predict_proba(F, [[0, 1]]),
                 lambda: model.score(F, [[0, 1]]),
                 lambda: model.reward_std(F)):
        with pytest.raises(rlhf.NotFittedError, match="not fitted"):
            call()


def test_predict_proba_and_score_values():
    F, pairs, weight = feature_problem(21, n_items=15, n_pairs=60)
    model = rlhf.RewardModel(C=2.0).fit(F, pairs, sample_weight=weight)
    r = model.predict(F)
    assert r.shape == (15,)
    np.testing.assert_allclose(r, F @ model.coef_, rtol=1e-14)
    rng = np.random.default_rng(0)
    test_pairs = random_pairs(rng, 15, 40)
    proba = model.predict_proba(F, test_pairs)
    assert proba.shape == (40,)
    np.testing.assert_allclose(
        proba, 1 / (1 + np.exp(-(r[test_pairs[:, 0]] - r[test_pairs[:, 1]]))),
        rtol=1e-13)
    np.testing.assert_allclose(model.predict_proba(F, test_pairs[:, ::-1]),
                               1 - proba, rtol=1e-12)
    d = r[test_pairs[:, 0]] - r[test_pairs[:, 1]]
    assert model.score(F, test_pairs) == np.mean(d > 0)
    # equal rewards count a half
    twins = np.vstack([F[:2], F[:1]])
    assert model.score(twins, [[0, 2], [0, 1]]) == pytest.approx(
        0.5 * 0.5 + 0.5 * float(r[0] > r[1]))
    # free strengths: predict() with no features
    free = rlhf.RewardModel().fit(None, pairs)
    np.testing.assert_array_equal(free.predict(), free.coef_)
    assert free.predict() is not free.coef_
    assert not hasattr(free, "n_features_in_")
    assert model.n_features_in_ == 4 and model.n_items_ == 15


@pytest.mark.parametrize("ties", ["rao-kupper", "davidson"])
def test_predict_proba_under_tie_models(ties):
    rng = np.random.default_rng(3)
    pairs = random_pairs(rng, 5, 300)
    tied = rng.random(300) < 0.25
    model = rlhf.RewardModel(ties=ties).fit(None, pairs, ties=tied)
    r = model.predict()
    pa, pb = np.exp(r[pairs[:, 0]]), np.exp(r[pairs[:, 1]])
    t = model.tie_param_
    if ties == "rao-kupper":
        expected = pa / (pa + t * pb)
        lose = pb / (pb + t * pa)
    else:
        expected = pa / (pa + pb + t * np.sqrt(pa * pb))
        lose = pb / (pa + pb + t * np.sqrt(pa * pb))
    np.testing.assert_allclose(model.predict_proba(None, pairs), expected,
                               rtol=1e-12)
    np.testing.assert_allclose(model.predict_proba(None, pairs[:, ::-1]),
                               lose, rtol=1e-12)
    # a strict win is less likely than without ties
    assert np.all(expected + lose < 1)


def test_margin_shifts_the_optimum():
    """Two items, k wins of 0 and j of 1, a margin m on every row: the
    gap x = r_0 - r_1 solves k sigmoid(m - x) = j sigmoid(m + x) (root by
    brentq); m > 0 widens the gap the data ask for, m < 0 narrows it."""
    k, j = 7, 3
    pairs = np.array([[0, 1]] * k + [[1, 0]] * j)

    def gap(m):
        model = rlhf.RewardModel(penalty=None, tol=1e-12).fit(
            None, pairs, margin=np.full(k + j, m))
        return model.coef_[0] - model.coef_[1]

    plain = gap(0.0)
    assert plain == pytest.approx(math.log(k / j), abs=1e-10)
    for m in (-0.5, 0.5, 2.0):
        root = optimize.brentq(
            lambda x: k * sigmoid(m - x) - j * sigmoid(m + x), -20, 20,
            xtol=1e-14)
        assert gap(m) == pytest.approx(root, abs=1e-9)
        assert (gap(m) - plain) * m > 0
    # a margin on the winner's rows only pushes the winner further up
    margin = np.r_[np.full(k, 1.0), np.zeros(j)]
    model = rlhf.RewardModel(penalty=None, tol=1e-12).fit(None, pairs,
                                                          margin=margin)
    assert model.coef_[0] - model.coef_[1] > plain + 0.5


def test_sample_weight_two_equals_duplicated_rows():
    F, pairs, _ = feature_problem(31)
    weight = np.ones(len(pairs))
    weight[::3] = 2.0
    doubled = np.concatenate([pairs, pairs[::3]])
    a = rlhf.RewardModel(tol=1e-12).fit(F, pairs, sample_weight=weight)
    b = rlhf.RewardModel(tol=1e-12).fit(F, doubled)
    np.testing.assert_allclose(a.coef_, b.coef_, rtol=0, atol=1e-10)
    assert a.objective_ == pytest.approx(b.objective_, rel=1e-12)
    # zero weight drops a row
    weight = np.ones(len(pairs))
    weight[5] = 0.0
    c = rlhf.RewardModel(tol=1e-12).fit(F, pairs, sample_weight=weight)
    d = rlhf.RewardModel(tol=1e-12).fit(F, np.delete(pairs, 5, axis=0))
    np.testing.assert_allclose(c.coef_, d.coef_, rtol=0, atol=1e-10)


@pytest.mark.parametrize("solver", ["newton", "lbfgs"])
@pytest.mark.parametrize("fmt", ["csr", "csc", "coo"])
def test_sparse_features_equal_dense(fmt, solver):
    F, pairs, weight = feature_problem(41)
    F[np.abs(F) < 0.6] = 0.0
    dense = rlhf.RewardModel(solver=solver, tol=1e-12).fit(
        F, pairs, sample_weight=weight)
    S = sparse.csr_matrix(F).asformat(fmt)
    model = rlhf.RewardModel(solver=solver, tol=1e-12).fit(
        S, pairs, sample_weight=weight)
    np.testing.assert_allclose(model.coef_, dense.coef_, rtol=0, atol=1e-9)
    np.testing.assert_allclose(model.predict(S), dense.predict(F),
                               rtol=0, atol=1e-9)
    np.testing.assert_allclose(model.reward_std(S), dense.reward_std(F),
                               rtol=1e-7)


def test_feature_layouts_and_dtypes_accepted():
    F, pairs, weight = feature_problem(51)
    ref = rlhf.RewardModel(tol=1e-12).fit(F, pairs, sample_weight=weight)
    readonly = F.copy()
    readonly.setflags(write=False)
    wide = np.zeros((F.shape[0], 2 * F.shape[1]))
    wide[:, ::2] = F
    variants = {
        "fortran": np.asfortranarray(F),
        "readonly": readonly,
        "strided": wide[:, ::2],
        "list": F.tolist(),
    }
    for name, G in variants.items():
        model = rlhf.RewardModel(tol=1e-12).fit(G, pairs,
                                                sample_weight=weight)
        np.testing.assert_allclose(model.coef_, ref.coef_, rtol=0,
                                   atol=1e-10, err_msg=name)
    F32 = F.astype(np.float32)
    model = rlhf.RewardModel(tol=1e-12).fit(F32, pairs, sample_weight=weight)
    expected = rlhf.RewardModel(tol=1e-12).fit(
        F32.astype(np.float64), pairs, sample_weight=weight)
    np.testing.assert_allclose(model.coef_, expected.coef_, rtol=0,
                               atol=1e-10)
    # index arrays: int32, uint, Fortran order, integral floats
    for P in (pairs.astype(np.int32), pairs.astype(np.uint16),
              np.asfortranarray(pairs), pairs.astype(np.float64)):
        model = rlhf.RewardModel(tol=1e-12).fit(F, P, sample_weight=weight)
        np.testing.assert_allclose(model.coef_, ref.coef_, rtol=0,
                                   atol=1e-12)


def test_inputs_are_never_modified():
    rng = np.random.default_rng(61)
    F, pairs, weight = feature_problem(61)
    margin = rng.uniform(0, 1, len(pairs))
    tied = rng.random(len(pairs)) < 0.2
    args = (F, pairs, weight, margin, tied)
    before = [a.copy() for a in args]
    for ties in (None, "rao-kupper", "davidson"):
        model = rlhf.RewardModel(ties=ties).fit(*args)
        model.predict(F)
        model.predict_proba(F, pairs)
        model.score(F, pairs)
        model.reward_std(F)
    S = sparse.csr_matrix(F)
    S_before = S.copy()
    rlhf.RewardModel().fit(S, pairs)
    rankings = gumbel_rankings(rng, F @ np.ones(4), 50, sizes=(4, 2))
    rankings_before = rankings.copy()
    rlhf.RewardModel(likelihood="plackett-luce").fit(F, rankings=rankings)
    for a, b in zip(args, before):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(S.toarray(), S_before.toarray())
    np.testing.assert_array_equal(rankings, rankings_before)


def test_params_and_clone():
    base = pytest.importorskip("sklearn.base")
    model = rlhf.RewardModel(C=3.0, ties="davidson", solver="lbfgs")
    params = model.get_params()
    assert params == {"C": 3.0, "penalty": "l2", "solver": "lbfgs",
                      "tol": 1e-8, "max_iter": 1000,
                      "likelihood": "bradley-terry", "ties": "davidson",
                      "n_threads": None, "verbose": 0, "progress": None}
    assert model.set_params(C=0.5, max_iter=500) is model
    assert model.C == 0.5 and model.max_iter == 500
    with pytest.raises(ValueError, match="Invalid parameter"):
        model.set_params(alpha=1.0)
    F, pairs, _ = feature_problem(71)
    model.fit(F, pairs)
    twin = base.clone(model)
    assert twin.get_params() == model.get_params()
    assert not hasattr(twin, "coef_")
    np.testing.assert_allclose(twin.fit(F, pairs).coef_, model.coef_,
                               rtol=0, atol=0)
    assert repr(rlhf.RewardModel(C=2.0)) == "RewardModel(C=2.0)"


def test_verbose_prints_how_the_solver_stopped(capsys):
    rlhf.RewardModel(verbose=1).fit(None, [[0, 1], [1, 2], [2, 0], [0, 2]])
    out = capsys.readouterr().out
    assert "RewardModel: newton stopped after" in out


# -- 7. bad input -------------------------------------------------------------

F4 = np.arange(8.0).reshape(4, 2) / 8.0
PAIRS4 = np.array([[0, 1], [2, 3], [1, 2], [3, 0]])


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(comparisons=[[0, 4]]), ValueError, "comparisons refers to item 4"),
    (dict(comparisons=[[0, -1]]), ValueError,
     "comparisons must hold non-negative"),
    (dict(comparisons=[[0.5, 1.0]]), TypeError,
     "comparisons must hold integer"),
    (dict(comparisons=[[0.0, np.nan]]), TypeError,
     "comparisons must hold integer"),
    (dict(comparisons=[["a", "b"]]), TypeError,
     "comparisons must hold integer"),
    (dict(comparisons=[[0, 1, 2]]), ValueError,
     r"comparisons must have shape \(n, 2\)"),
    (dict(comparisons=[0, 1]), ValueError,
     r"comparisons must have shape \(n, 2\)"),
    (dict(comparisons=np.zeros((0, 2), int)), ValueError,
     "comparisons is empty"),
    (dict(comparisons=None), ValueError, "comparisons must be given"),
    (dict(comparisons=sparse.csr_matrix(np.array([[0, 1]]))), TypeError,
     "comparisons must be a dense"),
    (dict(comparisons=[[1, 1]]), ValueError,
     "row 0 compares item 1 with itself"),
    (dict(comparisons=PAIRS4, sample_weight=[1, 1, np.nan, 1]), ValueError,
     "sample_weight contains NaN"),
    (dict(comparisons=PAIRS4, sample_weight=[1, 1, np.inf, 1]), ValueError,
     "sample_weight contains infinity"),
    (dict(comparisons=PAIRS4, sample_weight=[1, -1, 1, 1]), ValueError,
     "sample_weight must be non-negative"),
    (dict(comparisons=PAIRS4, sample_weight=[1, 1]), ValueError,
     r"sample_weight must have shape \(4,\)"),
    (dict(comparisons=PAIRS4, sample_weight=np.zeros(4)), ValueError,
     "sample_weight is zero for every comparison"),
    (dict(comparisons=PAIRS4, margin=[0, np.nan, 0, 0]), ValueError,
     "margin contains NaN"),
    (dict(comparisons=PAIRS4, margin=[0, -np.inf, 0, 0]), ValueError,
     "margin contains infinity"),
    (dict(comparisons=PAIRS4, margin=[0, 1]), ValueError,
     r"margin must have shape \(4,\)"),
    (dict(comparisons=PAIRS4, ties=[0.5, 0, 0, 0]), TypeError,
     "ties must be a boolean mask"),
    (dict(comparisons=PAIRS4, ties=[True, False]), ValueError,
     r"ties must have shape \(4,\)"),
    (dict(comparisons=PAIRS4, rankings=PAIRS4), ValueError,
     "rankings are for likelihood='plackett-luce'"),
    (dict(comparisons=PAIRS4, n_items=4), ValueError,
     "n_items is implied by features"),
])
def test_bad_fit_input(kwargs, error, match):
    with pytest.raises(error, match=match):
        rlhf.RewardModel().fit(F4, **kwargs)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("fmt", ["dense", "csr"])
def test_non_finite_features(bad, fmt):
    F = F4.copy()
    F[2, 1] = bad
    F = F if fmt == "dense" else sparse.csr_matrix(F)
    what = "NaN" if np.isnan(bad) else "infinity"
    with pytest.raises(ValueError, match=f"features contains {what}"):
        rlhf.RewardModel().fit(F, PAIRS4)
    model = rlhf.RewardModel().fit(F4, PAIRS4)
    for call in (model.predict, model.reward_std,
                 lambda G: model.predict_proba(G, PAIRS4),
                 lambda G: model.score(G, PAIRS4)):
        with pytest.raises(ValueError, match=f"features contains {what}"):
            call(F)


@pytest.mark.parametrize("params,match", [
    (dict(C=0), "'C' parameter of RewardModel must be a float in \\(0, inf"),
    (dict(C=-1.0), "'C' parameter"),
    (dict(C=np.nan), "'C' parameter"),
    (dict(C="1"), "'C' parameter"),
    (dict(tol=0.0), "'tol' parameter"),
    (dict(max_iter=-1), "'max_iter' parameter"),
    (dict(max_iter=2.5), "'max_iter' parameter"),
    (dict(n_threads=0), "'n_threads' parameter"),
    (dict(verbose=-1), "'verbose' parameter"),
    (dict(penalty="l1"), "'penalty' parameter of RewardModel must be one"),
    (dict(solver="sag"), "'solver' parameter of RewardModel must be one"),
    (dict(likelihood="thurstone"), "'likelihood' parameter"),
    (dict(ties="glenn-david"), "'ties' parameter"),
    (dict(likelihood="plackett-luce", ties="davidson"),
     "ties apply to pairwise comparisons"),
])
def test_bad_parameters(params, match):
    with pytest.raises(ValueError, match=match):
        rlhf.RewardModel(**params).fit(F4, PAIRS4)


def test_bad_items_without_features():
    with pytest.raises(ValueError, match="'n_items' parameter"):
        rlhf.RewardModel().fit(None, [[0, 1]], n_items=0)
    with pytest.raises(ValueError, match="only 3 items \\(n_items\\)"):
        rlhf.RewardModel().fit(None, [[0, 5]], n_items=3)
    with pytest.raises(ValueError, match="comparisons refers to item 4, but "
                       "there are only 4 items \\(rows of features\\)"):
        rlhf.RewardModel().fit(F4, [[4, 0]])


@pytest.mark.parametrize("rankings,match", [
    ([[0, -1, 2]], "-1 may only pad the end of a ranking"),
    ([[0, 1, 0]], "row 0 ranks an item twice"),
    ([[0, 1, -2]], "rankings must hold non-negative item indices"),
    ([[0, 1, 7]], "rankings refers to item 7"),
    ([[0.5, 1.0]], "rankings must hold integer"),
])
def test_bad_rankings(rankings, match):
    error = TypeError if "integer" in match else ValueError
    with pytest.raises(error, match=match):
        rlhf.RewardModel(likelihood="plackett-luce").fit(F4,
                                                         rankings=rankings)


def test_rankings_reject_margins_ties_and_absence():
    model = rlhf.RewardModel(likelihood="plackett-luce")
    with pytest.raises(ValueError, match="margin and ties apply to pairwise"):
        model.fit(F4, rankings=[[0, 1, 2]], margin=[1.0])
    with pytest.raises(ValueError, match="margin and ties apply to pairwise"):
        model.fit(F4, rankings=[[0, 1, 2]], ties=[True])
    with pytest.raises(ValueError, match="needs rankings"):
        model.fit(F4)


def test_bad_prediction_input():
    model = rlhf.RewardModel().fit(F4, PAIRS4)
    with pytest.raises(ValueError, match="features has 1 columns, but "
                       "RewardModel was fitted with 2"):
        model.predict(F4[:, :1])
    with pytest.raises(ValueError, match="comparisons refers to item 9"):
        model.predict_proba(F4, [[0, 9]])
    with pytest.raises(ValueError, match="comparisons must hold non-neg"):
        model.score(F4, [[0, -1]])
    with pytest.raises(ValueError, match="fitted with features"):
        model.predict()
    with pytest.raises(ValueError, match="fitted with features"):
        model.reward_std()
    free = rlhf.RewardModel().fit(None, PAIRS4)
    with pytest.raises(ValueError, match="features=None"):
        free.predict(F4)


@pytest.mark.parametrize("solver", ["newton", "lbfgs"])
def test_convergence_warning_when_max_iter_is_too_small(solver):
    pairs, counts = table_pairs(BASEBALL)
    with pytest.warns(rlhf.ConvergenceWarning, match="max_iter"):
        model = rlhf.RewardModel(solver=solver, max_iter=1).fit(
            None, pairs, sample_weight=counts)
    assert model.n_iter_ == 1
    assert np.all(np.isfinite(model.coef_))
    # scikit-learn's filters catch it as their own class
    exceptions = pytest.importorskip("sklearn.exceptions")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore",
                                category=exceptions.ConvergenceWarning)
        rlhf.RewardModel(solver=solver, max_iter=1).fit(
            None, pairs, sample_weight=counts)


def test_all_wins_without_penalty_stays_finite():
    """0 beats 1 beats 2 (and 0 beats 2), never the other way: no maximum
    likelihood exists (the strengths diverge), which the fit says with a
    warning.  It stops at large finite, ordered strengths whose implied
    probabilities are ~1."""
    with pytest.warns(rlhf.ConvergenceWarning, match="do not exist"):
        model = rlhf.RewardModel(penalty=None).fit(None, [[0, 1], [1, 2],
                                                          [0, 2]])
    r = model.coef_
    assert np.all(np.isfinite(r)) and r[0] > r[1] > r[2]
    assert np.all(model.predict_proba(None, [[0, 1], [1, 2]]) > 1 - 1e-6)
    # with features as well (the lecture's pairs are separable)
    _, features, preferences = lecture_data()
    with pytest.warns(rlhf.ConvergenceWarning, match="do not exist"):
        model = rlhf.RewardModel(penalty=None).fit(features, preferences)
    assert np.all(np.isfinite(model.coef_))
    assert model.score(features, preferences) == 1.0


def test_disconnected_graph_without_penalty():
    """Two components: within each the differences are the ML ones (here
    log 2), the offset between them is not identified; the strengths
    stay finite and mean zero, and reward_std says they are not
    identified."""
    pairs = [[0, 1], [0, 1], [1, 0], [2, 3], [3, 2], [3, 2]]
    for solver in ("newton", "lbfgs"):
        model = rlhf.RewardModel(penalty=None, solver=solver,
                                 tol=1e-10).fit(None, pairs)
        r = model.coef_
        assert np.all(np.isfinite(r)) and abs(r.mean()) < 1e-12
        assert r[0] - r[1] == pytest.approx(math.log(2), abs=1e-7)
        assert r[3] - r[2] == pytest.approx(math.log(2), abs=1e-7)
    with pytest.raises(ValueError, match="Hessian at the optimum is "
                       "singular"):
        rlhf.RewardModel(penalty=None).fit(
            None, [[0, 1], [1, 0], [2, 3], [3, 2]]).reward_std()


def test_rankings_of_padding_only():
    with pytest.raises(ValueError, match="rankings"):
        rlhf.RewardModel(likelihood="plackett-luce").fit(
            None, rankings=[[-1, -1], [-1, -1]])


def test_reward_std_of_an_item_never_compared():
    model = rlhf.RewardModel(penalty=None).fit(
        None, [[0, 1], [1, 0], [0, 1]], n_items=3)
    assert np.all(np.isfinite(model.coef_))
    with pytest.raises(ValueError, match="singular"):
        model.reward_std()


def constant_feature_problem():
    rng = np.random.default_rng(0)
    G = rng.normal(size=(10, 2))
    pairs = simulate_bt(rng, G @ np.array([0.5, -1.0]),
                        random_pairs(rng, 10, 60))
    return np.c_[np.ones(10), G], G, pairs


def test_constant_feature_without_penalty_leaves_differences_unchanged():
    """A feature constant over the items shifts every reward equally, which
    no comparison sees: the other weights are those fitted without it."""
    F, G, pairs = constant_feature_problem()
    with_constant = rlhf.RewardModel(penalty=None, tol=1e-12).fit(F, pairs)
    without = rlhf.RewardModel(penalty=None, tol=1e-12).fit(G, pairs)
    assert np.all(np.isfinite(with_constant.coef_))
    np.testing.assert_allclose(with_constant.coef_[1:], without.coef_,
                               rtol=0, atol=1e-8)
    assert np.all(without.reward_std(G) > 0)


def test_reward_std_with_a_constant_feature_and_no_penalty():
    F, _, pairs = constant_feature_problem()
    model = rlhf.RewardModel(penalty=None).fit(F, pairs)
    with pytest.raises(ValueError, match="singular"):
        std = model.reward_std(F)
        # failing that, at least no zero uncertainty for unidentified
        # rewards
        assert np.all(std > 0), std


INVALID_CSR_SCRIPT = """
import sys
import numpy as np
from rlhf import _core

data, indptr = np.ones(2), np.array([0, 1, 2, 2], dtype=np.int64)
indices = np.array([0, 5], dtype=np.int64)  # column 5 of 2
keep = [data, indices, indptr] * 5  # extra references: no early free
problem = ((data, indices, indptr, 2), 3, 0, np.array([[0, 1], [1, 2]]),
           None, None, None, 0, 0.0)
before = [sys.getrefcount(a) for a in (data, indices, indptr)]
for call in (lambda: _core.bt_loss_grad(problem, np.zeros(2)),
             lambda: _core.bt_hessian(problem, np.zeros(2)),
             lambda: _core.bt_fit(problem, np.zeros(2), "newton", 1e-8, 5)):
    try:
        call()
    except ValueError as error:
        assert "column index 5" in str(error), error
    else:
        raise AssertionError("no ValueError")
after = [sys.getrefcount(a) for a in (data, indices, indptr)]
print(before, after)
sys.exit(0 if before == after else 3)
"""


KERNEL_F = np.ones((3, 2))
KERNEL_PAIRS = np.array([[0, 1], [1, 2]])


@pytest.mark.parametrize("problem,x,match", [
    ((KERNEL_F, 3, 0, np.array([[0, 3]]), None, None, None, 0, 0.0),
     np.zeros(2), r"item index 3 is outside \[0, 3\)"),
    ((KERNEL_F, 3, 0, np.array([[0, -1]]), None, None, None, 0, 0.0),
     np.zeros(2), r"item index -1 is outside"),
    ((KERNEL_F, 3, 0, KERNEL_PAIRS, None, None, None, 0, 0.0),
     np.zeros(3), "x must have length 2"),
    ((KERNEL_F, 3, 0, KERNEL_PAIRS, np.ones(3), None, None, 0, 0.0),
     np.zeros(2), "sample_weight must have length 2"),
    ((KERNEL_F, 4, 0, KERNEL_PAIRS, None, None, None, 0, 0.0),
     np.zeros(2), "features has 3 rows for 4 items"),
    ((None, 3, 1, np.array([[0, -1, 2]]), None, None, None, 0, 0.0),
     np.zeros(3), "-1 may only pad the end"),
    ((None, 3, 1, np.array([[0, 1, 2]]), None, np.ones(1), None, 0, 0.0),
     np.zeros(3), "margin and ties apply to Bradley-Terry"),
    ((KERNEL_F, 3, 0, KERNEL_PAIRS, None, None, None, 3, 0.0),
     np.zeros(2), "tie_model 0, 1 or 2"),
    ((KERNEL_F, 3, 0, KERNEL_PAIRS, None, None, None, 0, -1.0),
     np.zeros(2), "alpha finite and >= 0"),
])
def test_kernel_rejects_invalid_problems(problem, x, match):
    """The wrapper checks every index the kernels trust, and releases what
    it holds on the way out."""
    arrays = [a for a in problem + (x,) if isinstance(a, np.ndarray)]
    before = [sys.getrefcount(a) for a in arrays]
    for call in (_core.bt_loss_grad, _core.bt_hessian,
                 lambda p, z: _core.bt_fit(p, z, "lbfgs", 1e-8, 5)):
        with pytest.raises(ValueError, match=match):
            call(problem, x)
    assert [sys.getrefcount(a) for a in arrays] == before


@pytest.mark.slow
def test_rejected_csr_tuple_keeps_reference_counts():
    # in a child process: the bug frees arrays still in use
    result = subprocess.run([sys.executable, "-c", INVALID_CSR_SCRIPT],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, (result.returncode, result.stdout,
                                    result.stderr)


def test_solver_choice_and_size_limits():
    rng = np.random.default_rng(13)
    small = rlhf.RewardModel().fit(None, random_pairs(rng, 50, 200))
    assert small.solver_ == "newton"
    pairs = random_pairs(rng, 4001, 12_000)
    with pytest.raises(ValueError, match="use solver='lbfgs'"):
        rlhf.RewardModel(solver="newton").fit(None, pairs)
    with pytest.warns(rlhf.ConvergenceWarning):  # kept short: max_iter=5
        large = rlhf.RewardModel(max_iter=5).fit(None, pairs)
    assert large.solver_ == "lbfgs"
    with pytest.raises(ValueError, match="reward_std inverts"):
        large.reward_std()


def test_pickle_round_trip():
    import pickle
    F, pairs, weight = feature_problem(17)
    model = rlhf.RewardModel(ties="davidson").fit(F, pairs)
    again = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(again.predict(F), model.predict(F))
    np.testing.assert_array_equal(again.reward_std(F), model.reward_std(F))


def _pickled_size(model):
    import pickle
    return len(pickle.dumps(model))


def pickle_round_trip(model):
    import pickle
    return pickle.loads(pickle.dumps(model))


def _parameter_bound(n_params):
    """Bytes a pickle of a fitted model may take: its Hessian, a few
    vectors of parameters, and the estimator's names and settings."""
    return 8 * n_params ** 2 + 8 * 4 * n_params + 4096


@pytest.mark.slow
def test_pickle_holds_the_parameters_not_the_data():
    """Regression: a fitted model kept the caller's features and
    comparisons for reward_std, so its pickle grew with the data (32.8 MB
    for 10 weights fitted on 2M comparisons).  It keeps the Hessian of
    its parameters instead: after a Newton fit or with free strengths at
    once, after an L-BFGS fit once reward_std has formed it; with more
    parameters than reward_std handles, nothing."""
    rng = np.random.default_rng(21)
    n_items, n = 2000, 400_000
    F = rng.normal(size=(n_items, 10))
    pairs = simulate_bt(rng, F @ rng.normal(size=10),
                        random_pairs(rng, n_items, n))
    assert F.nbytes + pairs.nbytes > 6e6
    model = rlhf.RewardModel(solver="newton").fit(F, pairs)
    assert _pickled_size(model) < _parameter_bound(10)
    std = model.reward_std(F)
    again = pickle_round_trip(model)
    assert again.reward_std(F).tobytes() == std.tobytes()

    strengths = rlhf.RewardModel().fit(None, random_pairs(rng, 50, n))
    assert _pickled_size(strengths) < _parameter_bound(50)

    G = rng.normal(size=(n_items, 40))
    wide = rlhf.RewardModel().fit(G, pairs)
    assert wide.solver_ == "lbfgs"
    std = wide.reward_std(G)
    assert _pickled_size(wide) < _parameter_bound(40)
    assert pickle_round_trip(wide).reward_std(G).tobytes() == std.tobytes()

    with pytest.warns(rlhf.ConvergenceWarning):  # kept short: max_iter=5
        large = rlhf.RewardModel(max_iter=5).fit(
            None, random_pairs(rng, 4001, 12_000))
    assert _pickled_size(large) < 8 * 4 * 4001 + 4096


def test_auto_takes_newton_only_where_its_hessian_is_cheap():
    """'auto': Newton for a few features and comparisons x features^2 up
    to 2e7, L-BFGS beyond (Newton's Hessian costs about n_features / 2
    gradients: on 1M comparisons of 16 features it took 4x as long)."""
    rng = np.random.default_rng(5)
    F = rng.normal(size=(300, 4))
    small = random_pairs(rng, 300, 5000)          # 5000 * 16 = 8e4
    assert rlhf.RewardModel().fit(F, small).solver_ == "newton"
    G = rng.normal(size=(300, 16))
    many = random_pairs(rng, 300, 100_000)        # 1e5 * 256 = 2.6e7
    assert rlhf.RewardModel().fit(G, many).solver_ == "lbfgs"
    assert rlhf.RewardModel().fit(G, many[:70_000]).solver_ == "newton"
    # free strengths: Newton up to 1000 items, whatever the comparisons
    assert rlhf.RewardModel().fit(None, many).solver_ == "newton"


def test_n_threads_is_at_most_four_per_core():
    """Regression: any n_threads was passed on to OpenMP, which can end
    the process when it fails to create that many threads."""
    import os
    limit = max(16, 4 * (os.cpu_count() or 1))
    for n_threads in {limit + 1, max(1000, limit + 1)}:
        with pytest.raises(ValueError, match=(
                "The 'n_threads' parameter of RewardModel must be an int "
                rf"in \[1, {limit}\]. Got {n_threads} instead.")):
            rlhf.RewardModel(n_threads=n_threads).fit(F4, PAIRS4)
    one = rlhf.RewardModel(n_threads=1).fit(F4, PAIRS4)
    most = rlhf.RewardModel(n_threads=limit).fit(F4, PAIRS4)
    assert most.coef_.tobytes() == one.coef_.tobytes()


@pytest.mark.parametrize("max_iter", [2**31, 2**64])
@pytest.mark.parametrize("solver", ["newton", "lbfgs"])
def test_max_iter_beyond_a_c_int(max_iter, solver):
    """Regression: max_iter went to the kernel as a C int, so 2**31 raised
    OverflowError.  The kernel gets at most 2**31 - 1 (no limit in
    practice); the parameter keeps the value given, and n_iter_ counts
    the iterations that ran."""
    F, pairs, weight = feature_problem(5)
    expected = rlhf.RewardModel(solver=solver).fit(F, pairs, weight)
    model = rlhf.RewardModel(solver=solver, max_iter=max_iter).fit(
        F, pairs, weight)
    assert model.max_iter == max_iter
    assert model.get_params()["max_iter"] == max_iter
    assert 0 < model.n_iter_ == expected.n_iter_ < 1000
    assert model.coef_.tobytes() == expected.coef_.tobytes()
    free = rlhf.RewardModel(solver=solver, max_iter=max_iter).fit(None,
                                                                  pairs)
    assert free.n_iter_ == rlhf.RewardModel(solver=solver).fit(
        None, pairs).n_iter_


def test_warns_when_a_group_never_loses_to_the_rest():
    """0 and 1 beat each other (a strongly connected pair), and both beat 2,
    which never wins: the connected graph is not strongly connected, so
    the strength of 2 runs off to minus infinity (Ford 1957).  A tie
    between 2 and 0 connects them both ways and makes the maximum exist."""
    pairs = [[0, 1], [1, 0], [0, 2], [1, 2]]
    with pytest.warns(rlhf.ConvergenceWarning, match="do not exist"):
        rlhf.RewardModel(penalty=None).fit(None, pairs)
    rlhf.RewardModel(penalty=None, ties="davidson").fit(
        None, pairs + [[2, 0]], ties=[False] * 4 + [True])
    # with a penalty the maximum always exists: no warning
    rlhf.RewardModel().fit(None, pairs)


def test_score_and_predict_proba_take_comparison_objects():
    """score leaves ties out (they have no preferred item), as
    Comparisons.accuracy does; a PreferenceDataset works as comparisons."""
    pairs = np.tile([[0, 1], [0, 2], [1, 2], [2, 3], [0, 3], [1, 3]],
                    (40, 1))
    votes = rlhf.simulate_preferences([1.0, 0.5, 0.0, -0.5], pairs,
                                      temperature=0.5, tie_margin=0.3,
                                      random_state=0)
    assert votes.n_ties > 0
    model = rlhf.RewardModel(ties="rao-kupper").fit(None, votes)
    r = model.predict()
    strict = votes.comparisons[~votes.ties]
    by_hand = np.mean(r[strict[:, 0]] > r[strict[:, 1]])
    assert model.score(None, votes) == pytest.approx(by_hand, abs=1e-15)
    assert model.score(None, votes.comparisons, ties=votes.ties) == \
        model.score(None, votes)
    np.testing.assert_array_equal(
        model.predict_proba(None, votes),
        model.predict_proba(None, votes.comparisons))

    data = rlhf.datasets.load_finegrained_qa().subset(np.arange(300))
    model = rlhf.RewardModel().fit(None, data)
    assert model.score(None, data) == pytest.approx(
        data.accuracy(model.predict()), abs=1e-15)
    with pytest.raises(ValueError, match="ties must have shape"):
        model.score(None, data.comparisons, ties=[True])


def test_reward_std_after_sparse_fit_takes_dense_features():
    """A sparse fit drops the columns no compared item uses; reward_std of
    dense or sparse features then equals the dense fit's (the dropped
    coefficients keep their prior variance C)."""
    rng = np.random.default_rng(0)
    F = rng.normal(size=(8, 5))
    F[:7, 4] = 0.0  # column 4 only on item 7, never compared
    pairs = np.array([[0, 1], [1, 2], [2, 3], [3, 4], [4, 5], [5, 6],
                      [6, 0], [1, 0], [3, 2]])
    dense = rlhf.RewardModel(C=2.0).fit(F, pairs)
    compressed = rlhf.RewardModel(C=2.0).fit(sparse.csr_matrix(F), pairs)
    expected = dense.reward_std(F)
    np.testing.assert_allclose(compressed.reward_std(F), expected,
                               rtol=1e-12)
    np.testing.assert_allclose(
        compressed.reward_std(sparse.csr_matrix(F)), expected, rtol=1e-12)
    # no column is non-zero on the compared items: nothing is learnt, and
    # item 5's reward keeps the prior variance C ||f||^2
    F = np.zeros((6, 3))
    F[5] = [1.0, 2.0, 3.0]
    model = rlhf.RewardModel(C=1.0).fit(sparse.csr_matrix(F),
                                        [[0, 1], [1, 2], [2, 3], [3, 4]])
    np.testing.assert_allclose(model.reward_std(F),
                               [0, 0, 0, 0, 0, math.sqrt(14.0)], rtol=1e-12)


def test_warns_when_the_maximum_does_not_exist():
    """Separable features without a penalty, and Plackett-Luce rankings
    where one item always comes first: the likelihood has no maximum."""
    features = np.array([[1.0, 0.0], [0.5, 1.0], [0.0, 0.3]])
    with pytest.warns(rlhf.ConvergenceWarning, match="do not exist"):
        rlhf.RewardModel(penalty=None).fit(features,
                                           [[0, 1], [1, 2], [0, 2]])
    with pytest.warns(rlhf.ConvergenceWarning, match="do not exist"):
        rlhf.RewardModel(penalty=None, likelihood="plackett-luce").fit(
            None, rankings=[[0, 1, 2], [0, 2, 1], [0, 1, 2]])
    # a comparison the features get wrong: a finite maximum, no warning
    rlhf.RewardModel(penalty=None).fit(features,
                                       [[0, 1], [1, 2], [0, 2], [2, 0]])
    rlhf.RewardModel(penalty=None, likelihood="plackett-luce").fit(
        None, rankings=[[0, 1, 2], [2, 0, 1], [1, 2, 0]])


def test_an_item_index_beyond_any_table_is_a_named_error():
    # without features there is one strength per item: 2**40 items would
    # ask for 8 TiB; the error says which index and what to check
    with pytest.raises(ValueError, match=r"item 1099511627776.*2\*\*31"):
        rlhf.RewardModel().fit(None, [[0, 2**40]])
