"""rlhf.overoptimization_curves and the over-optimisation world.

Oracles: the best-of-n expectations by enumerating every tuple of n draws
(exact, independent of best_of_n_policy's formula) and by Monte Carlo with
a 4-sigma bound; the closed form pi ∝ pi_ref exp(r / beta) written out in
NumPy; the KL bound of best-of-n (Beirami et al. 2024); Gao et al.'s
functional forms recovered from curves built from them.
"""
import itertools
import json
from pathlib import Path

import numpy as np
import pytest

import rlhf

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / \
    "05_overoptimization.ipynb"

# the notebook's world and proxy (the notebook's source is checked below to
# make these same calls)
WORLD_SEED = 0
N_COMPARISONS = 300
COMPARISON_SEED = 1


def notebook_problem(proxy_features="linear", n_comparisons=N_COMPARISONS):
    problem = rlhf.make_overoptimization_world(
        proxy_features=proxy_features, random_state=WORLD_SEED)
    comparisons = problem.comparisons(n_comparisons,
                                      random_state=COMPARISON_SEED)
    _, proxy = problem.fit_proxy(comparisons)
    return problem, problem.temperature * proxy


def random_problem(seed, n_prompts=3, k=4):
    rng = np.random.default_rng(seed)
    reference = rng.dirichlet(np.ones(k), size=n_prompts)
    gold = rng.normal(size=(n_prompts, k))
    proxy = gold + rng.normal(size=(n_prompts, k))
    return reference, gold, proxy


# -- the curves equal direct computations -----------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_best_of_n_by_enumeration(seed):
    """E[gold] and E[proxy] of the best of n proxy-ranked draws, summed over
    all k^n ordered tuples of draws (no ties, so the winner is unique)."""
    reference, gold, proxy = random_problem(seed)
    n_values = [1, 2, 3, 5]
    curves = rlhf.overoptimization_curves(reference, gold, proxy,
                                          n_values=n_values)
    n_prompts, k = reference.shape
    for i, n in enumerate(n_values):
        expected_gold = expected_proxy = 0.0
        for x in range(n_prompts):
            for draws in itertools.product(range(k), repeat=n):
                probability = np.prod(reference[x, list(draws)])
                winner = max(draws, key=lambda y: proxy[x, y])
                expected_gold += probability * gold[x, winner] / n_prompts
                expected_proxy += probability * proxy[x, winner] / n_prompts
        assert curves.gold[i] == pytest.approx(expected_gold, abs=1e-12)
        assert curves.proxy[i] == pytest.approx(expected_proxy, abs=1e-12)
        policy = rlhf.best_of_n_policy(reference, proxy, n)
        np.testing.assert_allclose(curves.policies[i], policy)
        np.testing.assert_allclose(
            curves.kl[i], np.mean(np.sum(policy * np.log(policy / reference),
                                         axis=1)), atol=1e-13)
    assert curves.reference_gold == pytest.approx(
        np.sum(reference * gold) / n_prompts)


@pytest.mark.slow
def test_best_of_n_monte_carlo():
    """Sample n = 16 responses from the reference of the notebook's world,
    keep the proxy's favourite, average the gold reward: within 4 standard
    errors of the curve's exact value."""
    problem, proxy = notebook_problem()
    reference, gold = problem.reference_policy, problem.gold_rewards
    n = 16
    curves = rlhf.overoptimization_curves(reference, gold, proxy,
                                          n_values=[n])
    rng = np.random.default_rng(5)
    n_prompts, k = reference.shape
    reps = 2000
    cdf = np.cumsum(reference, axis=1)
    u = rng.random((n_prompts, reps, n))
    draws = np.minimum(
        np.stack([np.searchsorted(cdf[x], u[x], side="right")
                  for x in range(n_prompts)]), k - 1)
    scores = np.take_along_axis(proxy[:, None, :].repeat(reps, 1),
                                draws, axis=2)
    winners = np.take_along_axis(draws, scores.argmax(axis=2)[..., None],
                                 axis=2)[..., 0]
    gold_won = np.take_along_axis(gold, winners, axis=1)  # (prompts, reps)
    proxy_won = np.take_along_axis(proxy, winners, axis=1)
    for sample, exact in ((gold_won, curves.gold[0]),
                          (proxy_won, curves.proxy[0])):
        # repetitions are independent; average over prompts first
        per_rep = sample.mean(axis=0)
        sigma = per_rep.std(ddof=1) / np.sqrt(reps)
        assert abs(per_rep.mean() - exact) < 4 * sigma


def test_kl_family_is_the_closed_form():
    reference, gold, proxy = random_problem(3, n_prompts=4, k=6)
    betas = [5.0, 1.0, 0.3, 0.05]
    curves = rlhf.overoptimization_curves(reference, gold, proxy,
                                          method="kl", betas=betas)
    assert curves.parameter == "beta"
    for i, beta in enumerate(betas):
        logits = np.log(reference) + proxy / beta
        policy = np.exp(logits - logits.max(axis=1, keepdims=True))
        policy /= policy.sum(axis=1, keepdims=True)
        np.testing.assert_allclose(curves.policies[i], policy, atol=1e-12)
        assert curves.gold[i] == pytest.approx(
            np.mean(np.sum(policy * gold, axis=1)), abs=1e-12)
        assert curves.proxy[i] == pytest.approx(
            np.mean(np.sum(policy * proxy, axis=1)), abs=1e-12)
        assert curves.kl[i] == pytest.approx(
            np.mean(np.sum(policy * np.log(policy / reference), axis=1)),
            abs=1e-12)


def test_one_prompt_as_a_vector():
    reference, gold, proxy = random_problem(4, n_prompts=1)
    for method, kwargs in (("best-of-n", {"n_values": [1, 3]}),
                           ("kl", {"betas": [1.0, 0.1]})):
        two = rlhf.overoptimization_curves(reference, gold, proxy,
                                           method=method, **kwargs)
        one = rlhf.overoptimization_curves(reference[0], gold[0], proxy[0],
                                           method=method, **kwargs)
        np.testing.assert_allclose(one.gold, two.gold)
        np.testing.assert_allclose(one.kl, two.kl)
        assert one.policies.shape == (2, reference.shape[1])


# -- KL: monotone, and the best-of-n bound ----------------------------------

def test_kl_monotone_and_best_of_n_bound():
    problem, proxy = notebook_problem()
    reference, gold = problem.reference_policy, problem.gold_rewards
    n_values = [1, 2, 3, 4, 8, 16, 64, 256, 1024, 4096]
    bon = rlhf.overoptimization_curves(reference, gold, proxy,
                                       n_values=n_values)
    assert bon.kl[0] == pytest.approx(0.0, abs=1e-12)
    assert np.all(np.diff(bon.kl) > 0)
    bound = np.log(n_values) - (np.array(n_values) - 1) / n_values
    assert np.all(bon.kl <= bound + 1e-12)
    for i, n in enumerate(n_values):
        per_prompt = rlhf.kl_divergence(bon.policies[i], reference)
        assert np.all(per_prompt <= bound[i] + 1e-12)
    # continuous-looking rewards and a spread reference: close to the bound
    # for small n
    assert bon.kl[1] > 0.9 * bound[1]
    betas = np.geomspace(100, 0.01, 25)  # decreasing: 1 / beta increasing
    kl_family = rlhf.overoptimization_curves(reference, gold, proxy,
                                             method="kl", betas=betas)
    assert np.all(np.diff(kl_family.kl) > 0)
    # the proxy reward of the KL-regularised optimum rises as beta falls
    assert np.all(np.diff(kl_family.proxy) > 0)


# -- over-optimisation in the notebook's world ------------------------------

@pytest.mark.parametrize("method", ["best-of-n", "kl"])
def test_gold_rises_then_falls_while_proxy_rises(method):
    problem, proxy = notebook_problem()
    curves = rlhf.overoptimization_curves(
        problem.reference_policy, problem.gold_rewards, proxy,
        method=method)
    best = curves.best
    assert 0 < best < curves.kl.size - 1
    assert np.all(np.diff(curves.proxy) > 0)
    assert np.all(np.diff(curves.kl) > 0)
    # the gold reward rises to the peak and then falls, by a clear margin
    assert curves.gold[best] > curves.reference_gold + 0.5
    assert curves.gold[-1] < curves.gold[best] - 0.2
    assert np.all(np.diff(curves.gold[:best + 1]) > 0)
    assert np.all(np.diff(curves.gold[best:]) < 0)


@pytest.mark.slow
def test_enough_data_with_the_right_features_removes_the_peak():
    """With length^2 among its features and 3,000 comparisons, the proxy
    no longer leads best-of-n past the gold optimum (up to n = 4096); with
    the linear features the same data still does."""
    problem, proxy = notebook_problem("quadratic", 3000)
    curves = rlhf.overoptimization_curves(
        problem.reference_policy, problem.gold_rewards, proxy)
    assert curves.best == curves.kl.size - 1
    problem, proxy = notebook_problem("linear", 3000)
    curves = rlhf.overoptimization_curves(
        problem.reference_policy, problem.gold_rewards, proxy)
    assert curves.gold[-1] < curves.peak_gold - 0.2


def test_notebook_builds_the_same_world():
    source = "\n".join("".join(cell["source"]) for cell in json.loads(
        NOTEBOOK.read_text())["cells"] if cell["cell_type"] == "code")
    assert f"make_overoptimization_world(random_state={WORLD_SEED})" in \
        source
    assert (f"problem.comparisons({N_COMPARISONS}, random_state="
            f"{COMPARISON_SEED})") in source
    assert "proxy = problem.temperature * proxy" in source


def test_world():
    problem = rlhf.make_overoptimization_world(n_prompts=5, n_candidates=7,
                                               n_styles=2, random_state=3)
    features = problem.world.features
    helpfulness, length = features[:, 0], features[:, 1]
    np.testing.assert_allclose(
        problem.gold_rewards.ravel(),
        helpfulness + 4.0 * length - 4.0 * length ** 2)
    reference = np.exp(-8.0 * length).reshape(5, 7)
    np.testing.assert_allclose(
        problem.reference_policy, reference / reference.sum(1,
                                                            keepdims=True))
    np.testing.assert_array_equal(problem.proxy_features, features)
    quadratic = rlhf.make_overoptimization_world(
        n_prompts=5, n_candidates=7, n_styles=2, proxy_features="quadratic",
        random_state=3)
    np.testing.assert_array_equal(quadratic.proxy_features[:, 2],
                                  length ** 2)
    assert quadratic.proxy_feature_names[:3] == ("helpfulness", "length",
                                                 "length^2")
    # the comparisons are pairs of one prompt's responses, labelled with
    # the gold reward: a temperature-0 annotator agrees with it everywhere
    exact = rlhf.make_overoptimization_world(
        n_prompts=5, n_candidates=7, n_styles=2, temperature=0.0,
        random_state=3)
    comparisons = exact.comparisons(200, random_state=0)
    prompt = exact.world.prompt_of_response
    assert np.all(prompt[comparisons.comparisons[:, 0]]
                  == prompt[comparisons.comparisons[:, 1]])
    assert comparisons.accuracy(exact.gold_rewards.ravel()) == 1.0
    again = exact.comparisons(200, random_state=0)
    np.testing.assert_array_equal(again.comparisons, comparisons.comparisons)
    model, proxy = exact.fit_proxy(comparisons)
    np.testing.assert_allclose(proxy.ravel(),
                               exact.proxy_features @ model.coef_)


@pytest.mark.slow
def test_proxy_accuracy_grows_with_data():
    """Held-out accuracy against the gold ordering, averaged over three
    draws, is higher with 1,000 comparisons than with 30."""
    problem = rlhf.make_overoptimization_world(random_state=WORLD_SEED)
    held_out = rlhf.make_overoptimization_world(
        temperature=0.0, random_state=WORLD_SEED).comparisons(
            2000, random_state=99)
    accuracy = {}
    for m in (30, 1000):
        accuracy[m] = np.mean([held_out.accuracy(problem.fit_proxy(
            problem.comparisons(m, random_state=s))[1].ravel())
            for s in range(3)])
    assert accuracy[1000] > accuracy[30] + 0.02


# -- PPO ---------------------------------------------------------------------

def test_ppo_exact_reaches_the_closed_form():
    reference, gold, proxy = random_problem(6, n_prompts=3, k=5)
    betas = [2.0, 0.5]
    template = rlhf.PPO(exact=True, n_iterations=400)
    before = template.get_params()
    ppo = rlhf.overoptimization_curves(reference, gold, proxy, method="ppo",
                                       betas=betas, ppo=template,
                                       random_state=0)
    closed = rlhf.overoptimization_curves(reference, gold, proxy,
                                          method="kl", betas=betas)
    np.testing.assert_allclose(ppo.policies, closed.policies, atol=5e-3)
    np.testing.assert_allclose(ppo.gold, closed.gold, atol=1e-2)
    assert template.get_params() == before


def test_ppo_sampled_is_reproducible():
    reference, gold, proxy = random_problem(7, n_prompts=3, k=5)
    template = rlhf.PPO(n_iterations=30)
    runs = [rlhf.overoptimization_curves(reference, gold, proxy,
                                         method="ppo", betas=[1.0, 0.1],
                                         ppo=template, random_state=4)
            for _ in range(2)]
    np.testing.assert_array_equal(runs[0].policies, runs[1].policies)
    other = rlhf.overoptimization_curves(reference, gold, proxy,
                                         method="ppo", betas=[1.0, 0.1],
                                         ppo=template, random_state=5)
    assert not np.array_equal(other.policies, runs[0].policies)
    # the curve's KL is the exact divergence of the policy PPO reached
    np.testing.assert_allclose(
        runs[0].kl, rlhf.kl_divergence(
            runs[0].policies, np.broadcast_to(reference, (2,) +
                                              reference.shape)).mean(axis=1))


# -- the result object -------------------------------------------------------

@pytest.mark.parametrize("method", ["best-of-n", "kl"])
def test_scaling_law_fit_recovers_gao_forms(method):
    """Curves built exactly from Gao et al.'s forms give back their
    coefficients."""
    d = np.linspace(0.2, 3.0, 15)
    alpha, beta = 1.3, 0.4
    gain = d * (alpha - beta * d) if method == "best-of-n" else \
        d * (alpha - beta * np.log(d))
    curves = rlhf.OveroptimizationCurves(
        method, "n" if method == "best-of-n" else "beta",
        np.arange(d.size), d ** 2, 0.5 + gain, np.zeros_like(d), None, 0.5,
        0.0)
    assert curves.fit_scaling_law() == pytest.approx((alpha, beta))


def test_summary_and_plot():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    reference, gold, proxy = [0.6, 0.3, 0.1], [0.0, 1.0, -1.0], \
        [0.0, 1.0, 2.0]
    curves = rlhf.overoptimization_curves(reference, gold, proxy,
                                          n_values=[1, 2, 8, 64])
    assert curves.best == 1 and curves.peak_value == 2
    assert curves.peak_kl == curves.kl[1]
    np.testing.assert_allclose(curves.sqrt_kl ** 2, curves.kl)
    assert "peak at n=2" in repr(curves)
    try:
        ax = curves.plot()
        proxy_line, gold_line, peak = ax.lines
        np.testing.assert_allclose(gold_line.get_xdata(), curves.sqrt_kl)
        np.testing.assert_allclose(gold_line.get_ydata(), curves.gold)
        np.testing.assert_allclose(peak.get_xdata(), curves.sqrt_kl[[1, 1]])
    finally:
        plt.close("all")


# -- bad input ---------------------------------------------------------------

REF, GOLD, PROXY = [0.5, 0.5], [0.0, 1.0], [1.0, 0.0]


@pytest.mark.parametrize("kwargs, error, match", [
    ({"method": "rl"}, ValueError, "'method'"),
    ({"n_values": [0, 2]}, ValueError, "'n_values'"),
    ({"n_values": [1.5]}, ValueError, "'n_values'"),
    ({"n_values": []}, ValueError, "'n_values'"),
    ({"n_values": 4}, TypeError, "'n_values'"),
    ({"n_values": "12"}, TypeError, "'n_values'"),
    ({"betas": [1.0]}, ValueError, "'betas'"),
    ({"method": "kl", "betas": [0.0]}, ValueError, "'betas'"),
    ({"method": "kl", "betas": [np.inf]}, ValueError, "'betas'"),
    ({"method": "kl", "betas": [-1.0]}, ValueError, "'betas'"),
    ({"method": "kl", "n_values": [2]}, ValueError, "'n_values'"),
    ({"method": "kl", "ppo": rlhf.PPO()}, ValueError, "'ppo'"),
    ({"ppo": rlhf.PPO()}, ValueError, "'ppo'"),
    ({"method": "ppo", "ppo": rlhf.DPO()}, TypeError, "'ppo'"),
    ({"method": "ppo", "ppo": rlhf.PPO(target_kl=1.0)}, ValueError,
     "'ppo'.*target_kl"),
    ({"method": "ppo", "betas": [1.0], "ppo": rlhf.PPO(n_iterations=1),
      "random_state": "seed"}, TypeError, "'random_state'"),
    ({"random_state": -1}, TypeError, "'random_state'"),
])
def test_bad_options(kwargs, error, match):
    with pytest.raises(error, match=match):
        rlhf.overoptimization_curves(REF, GOLD, PROXY, **kwargs)


@pytest.mark.parametrize("args, match", [
    (([0.5, 0.6], GOLD, PROXY), "reference_policy"),
    (([[0.5, 0.5]], GOLD, PROXY), "'gold_rewards'"),
    ((REF, [0.0, 1.0, 2.0], PROXY), "'gold_rewards'"),
    ((REF, GOLD, [0.0, np.nan]), "proxy_rewards"),
    ((REF, [np.inf, 0.0], PROXY), "gold_rewards"),
])
def test_bad_arrays(args, match):
    with pytest.raises(ValueError, match=match):
        rlhf.overoptimization_curves(*args)


@pytest.mark.parametrize("kwargs, match", [
    ({"n_prompts": 0}, "'n_prompts'"),
    ({"n_candidates": 1}, "'n_candidates'"),
    ({"n_styles": -1}, "'n_styles'"),
    ({"proxy_features": "cubic"}, "'proxy_features'"),
    ({"length_penalty": -1.0}, "'length_penalty'"),
    ({"length_decay": np.inf}, "'length_decay'"),
    ({"temperature": -0.1}, "'temperature'"),
    ({"noise": 1.5}, "'noise'"),
])
def test_bad_world(kwargs, match):
    with pytest.raises(ValueError, match=match):
        rlhf.make_overoptimization_world(**kwargs)


def test_bad_world_calls():
    problem = rlhf.make_overoptimization_world(n_prompts=2, n_candidates=3,
                                               random_state=0)
    with pytest.raises(ValueError, match="'n_comparisons'"):
        problem.comparisons(0)
    with pytest.raises(TypeError, match="'random_state'"):
        problem.comparisons(3, random_state=1.5)
    with pytest.raises(TypeError, match="'comparisons'"):
        problem.fit_proxy([[0, 1]])


def test_inputs_unchanged():
    reference, gold, proxy = random_problem(8)
    copies = [a.copy() for a in (reference, gold, proxy)]
    for arr in (reference, gold, proxy):
        arr.flags.writeable = False
    rlhf.overoptimization_curves(reference, gold, proxy, n_values=[1, 4])
    rlhf.overoptimization_curves(reference, gold, proxy, method="kl",
                                 betas=[1.0])
    for arr, copy in zip((reference, gold, proxy), copies):
        np.testing.assert_array_equal(arr, copy)
