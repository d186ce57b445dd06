"""Threads: the GIL is released, concurrent fits agree with serial ones,
and results are bitwise the same for any number of OpenMP threads.

The problems are sized to span several of the kernels' fixed blocks
(2048 rows for the logistic objective, 4096 comparisons for
Bradley-Terry), so that the OpenMP loops really split the work.  The
policy optimisers (PPO, REINFORCE, DPO, SFT), the cost model and the
closed forms (constrained, KL-regularised and best-of-n policies) run four
at a time on different problems and must give the serial bits.
"""
import os
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import rlhf
from rlhf import _core


def _logistic_data(seed, n=9000, d=6):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = (X @ rng.normal(size=d) + rng.normal(size=n) > 0).astype(float)
    return X, y


def _preference_data(seed, n_items=300, d=5, n_pairs=9000):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n_items, d))
    rewards = features @ rng.normal(size=d)
    prefs = rlhf.simulate_preferences(rewards, n_pairs, random_state=seed)
    return features, prefs


def _fit_logistic(seed, n_jobs=None):
    X, y = _logistic_data(seed)
    model = rlhf.LogisticRegression(C=0.5, n_jobs=n_jobs).fit(X, y)
    return np.concatenate([model.coef_.ravel(), model.intercept_])


def _fit_reward(seed, n_threads=None, solver="lbfgs"):
    features, prefs = _preference_data(seed)
    model = rlhf.RewardModel(C=4.0, solver=solver, n_threads=n_threads)
    return model.fit(features, prefs).coef_


def test_heavy_kernel_releases_the_gil():
    """While a long kernel runs in a worker thread, the main thread keeps
    running Python code: it takes timestamps every millisecond, and no gap
    between them covers most of the kernel's run.  Had the kernel kept
    the GIL, one gap would span all of it."""
    # the Hessian costs n d^2 / 2 multiply-adds: 4e8 here, a good part
    # of a second
    X, y = _logistic_data(1, n=20000, d=200)
    sw = np.ones(len(y))
    w = np.zeros(X.shape[1] + 1)
    times = {}

    def work():
        times["start"] = time.perf_counter()
        _core.logistic_hessian(X, y, sw, w, True, 1.0, 1e-3)
        times["stop"] = time.perf_counter()

    worker = threading.Thread(target=work)
    stamps = []
    worker.start()
    while worker.is_alive():
        stamps.append(time.perf_counter())
        time.sleep(0.001)
    worker.join()
    start, stop = times["start"], times["stop"]
    inside = [start] + [t for t in stamps if start < t < stop] + [stop]
    longest_gap = max(np.diff(inside))
    assert longest_gap < 0.5 * (stop - start), (
        f"the main thread stalled {longest_gap:.3f} s of the kernel's "
        f"{stop - start:.3f} s")


@pytest.mark.slow
def test_concurrent_fits_equal_serial_fits():
    seeds = [0, 1, 2, 3]
    serial_logistic = [_fit_logistic(s) for s in seeds]
    serial_reward = [_fit_reward(s) for s in seeds]
    with ThreadPoolExecutor(max_workers=4) as pool:
        logistic = list(pool.map(_fit_logistic, seeds))
        reward = list(pool.map(_fit_reward, seeds))
    for a, b in zip(serial_logistic + serial_reward, logistic + reward):
        assert a.tobytes() == b.tobytes()


def test_concurrent_fits_of_different_models():
    """Different estimators at once (different kernels in flight)."""
    jobs = [lambda: _fit_logistic(5), lambda: _fit_reward(6),
            lambda: _fit_reward(7, solver="newton"),
            lambda: rlhf.reweight(np.full((4000, 50), 0.02),
                                  np.random.default_rng(8).normal(
                                      size=(4000, 50)), eta=2.0)]
    serial = [job() for job in jobs]
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        futures = [pool.submit(job) for job in jobs]
        parallel = [f.result() for f in futures]
    for a, b in zip(serial, parallel):
        assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("n_threads", [2, 3, 4])
def test_bitwise_the_same_for_any_thread_count(n_threads):
    assert _fit_logistic(3, n_jobs=n_threads).tobytes() == \
        _fit_logistic(3, n_jobs=1).tobytes()
    for solver in ("lbfgs", "newton"):
        assert _fit_reward(4, n_threads, solver).tobytes() == \
            _fit_reward(4, 1, solver).tobytes()
    X, y = _logistic_data(9)
    w = np.linspace(-1, 1, X.shape[1] + 1)
    one = _core.logistic_loss_grad(X, y, np.ones(len(y)), w, True, 1.0, 0.1,
                                   n_threads=1)
    many = _core.logistic_loss_grad(X, y, np.ones(len(y)), w, True, 1.0, 0.1,
                                    n_threads=n_threads)
    assert one[0] == many[0] and one[1].tobytes() == many[1].tobytes()


def _scatter_problems():
    """Problems of several blocks of each kind the item pass handles:
    strict comparisons (weighted, with margins and ties), a tie model, and
    Plackett-Luce rankings."""
    rng = np.random.default_rng(5)
    n_items, n = 300, 20_000
    F = rng.normal(size=(n_items, 4))
    pairs = rng.integers(0, n_items, size=(n, 2))
    pairs = pairs[pairs[:, 0] != pairs[:, 1]].astype(np.int64)
    m = len(pairs)
    weight = rng.uniform(0.5, 2.0, m)
    margin = rng.uniform(0.0, 0.5, m)
    ties = (rng.random(m) < 0.1).astype(np.uint8)
    rankings = np.argsort(rng.random((n // 4, n_items)), 1)[:, :5]
    rankings[::3, 4] = -1
    return [
        ((F, n_items, 0, pairs, None, None, None, 0, 0.5), 4),
        ((F, n_items, 0, pairs, weight, margin, ties, 0, 0.5), 4),
        ((None, n_items, 0, pairs, weight, None, ties, 1, 0.0), n_items + 1),
        ((F, n_items, 1, rankings.astype(np.int64), None, None, None, 0,
          0.5), 4),
    ]


@pytest.mark.parametrize("n_threads", [2, 3, 4])
def test_item_pass_the_same_bits_for_any_thread_count(n_threads):
    """The scatter of item gradients overlaps the blocks being computed:
    the loss and gradient must still be the serial pass's bits."""
    for problem, n_params in _scatter_problems():
        x = np.linspace(-0.5, 0.5, n_params)
        one = _core.bt_loss_grad(problem, x, n_threads=1)
        many = _core.bt_loss_grad(problem, x, n_threads=n_threads)
        assert one[0] == many[0]
        assert one[1].tobytes() == many[1].tobytes()


@pytest.mark.parametrize("n_threads", [1, 2])
def test_item_gradients_scattered_in_comparison_order(n_threads):
    """With one strength per item and no penalty the gradient is the item
    gradient: each comparison's derivative (got from a problem where each
    comparison has items of its own) added to its winner and subtracted
    from its loser in the comparisons' order, as np.add.at does."""
    rng = np.random.default_rng(6)
    n_items, n = 300, 20_000
    pairs = rng.integers(0, n_items, size=(n, 2)).astype(np.int64)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    m = len(pairs)
    x = rng.normal(size=n_items)
    d = x[pairs[:, 0]] - x[pairs[:, 1]]
    own = np.stack([np.arange(m), np.full(m, m)], 1).astype(np.int64)
    coef = _core.bt_loss_grad((None, m + 1, 0, own, None, None, None, 0,
                               0.0), np.r_[d, 0.0])[1][:m]
    expected = np.zeros(n_items)
    np.add.at(expected, pairs.ravel(), np.stack([coef, -coef], 1).ravel())
    grad = _core.bt_loss_grad((None, n_items, 0, pairs, None, None, None, 0,
                               0.0), x, n_threads=n_threads)[1]
    assert grad.tobytes() == expected.tobytes()


BLAS_SCRIPT = textwrap.dedent("""
    import hashlib
    import numpy as np
    import rlhf

    def digest(*arrays):
        h = hashlib.sha256()
        for a in arrays:
            h.update(np.ascontiguousarray(a, dtype=np.float64).tobytes())
        return h.hexdigest()

    rng = np.random.default_rng(0)
    features = rng.normal(size=(20_000, 40))
    costs = features @ rng.normal(size=40)
    pairs = rng.integers(0, 20_000, size=(80_000, 2))
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    pairs = np.where((costs[pairs[:, 0]] >= costs[pairs[:, 1]])[:, None],
                     pairs, pairs[:, ::-1])
    cost = rlhf.CostModel(C=10.0).fit(features, pairs, safe=costs <= 0)
    print("CostModel", digest(cost.coef_, [cost.intercept_, cost.loss_],
                              cost.predict(features)))
    # rows of F @ w split between OpenBLAS's threads differ in the last bit
    wide = rng.normal(size=(100_003, 13))
    reward = rlhf.RewardModel(C=1.0).fit(wide, pairs[:20_000] * 5)
    print("RewardModel.predict", digest(reward.predict(wide)))
    # a linear policy's logits (features @ theta) and its gradient chain
    phi = rng.normal(size=(300, 8, 40))
    demos = np.stack([np.arange(3000) % 300,
                      rng.integers(0, 8, size=3000)], 1)
    sft = rlhf.SFT(policy="linear").fit(demos, features=phi)
    print("SFT.linear", digest(sft.theta_, sft.policy_))
    reinforce = rlhf.REINFORCE(policy="linear", n_iterations=20,
                               random_state=0).fit(
        sft.policy_, rng.normal(size=(300, 8)), features=phi)
    print("REINFORCE.linear", digest(reinforce.theta_, reinforce.policy_))
    X = rng.normal(size=(100_003, 13))
    y = (X[:, 0] > 0).astype(int)
    lr = rlhf.LogisticRegression().fit(X[:2000], y[:2000])
    print("LogisticRegression.decision_function",
          digest(lr.decision_function(X)))
    world = rlhf.make_world(20_000, 5, n_features=13, random_state=0)
    print("make_world", digest(world.rewards))
""")


@pytest.mark.slow
def test_bitwise_the_same_for_any_blas_thread_count():
    """Regression: CostModel's objective used BLAS products (features @ w,
    features.T @ dcost, weight @ loss), whose sums OpenBLAS splits between
    its threads: the fit moved by ~1e-8 between OMP_NUM_THREADS=1 and 2.
    The same for RewardModel.predict of dense features, a linear policy's
    logits and gradients (SFT, REINFORCE), LogisticRegression's
    decision_function and make_world's rewards.  Each thread
    count runs in its own process (OpenBLAS reads it at start-up)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    outputs = []
    for threads in ("1", "2"):
        env = dict(os.environ, OMP_NUM_THREADS=threads,
                   OPENBLAS_NUM_THREADS=threads,
                   PYTHONPATH=os.pathsep.join(
                       [root] + [os.environ.get("PYTHONPATH", "")]))
        out = subprocess.run([sys.executable, "-c", BLAS_SCRIPT], env=env,
                             capture_output=True, text=True, check=True,
                             timeout=300)
        outputs.append(dict(line.split() for line in
                            out.stdout.strip().splitlines()))
    assert outputs[0].keys() == {
        "CostModel", "RewardModel.predict", "SFT.linear", "REINFORCE.linear",
        "LogisticRegression.decision_function", "make_world"}
    for name in outputs[0]:
        assert outputs[0][name] == outputs[1][name], name


def test_same_random_state_same_bits():
    """Everything random, run twice with one seed: identical bits."""
    def run():
        world = rlhf.make_world(3, 4, 2, random_state=11)
        prefs = rlhf.simulate_preferences(world.rewards, world.pairs,
                                          temperature=0.5, noise=0.1,
                                          random_state=12)
        ranks = rlhf.simulate_rankings(world.rewards,
                                       np.arange(12).reshape(3, 4),
                                       random_state=13)
        model = rlhf.RewardModel(n_threads=2).fit(world.features, prefs)
        return (world.features, world.rewards, prefs.comparisons,
                prefs.ties, ranks, model.coef_)

    for a, b in zip(run(), run()):
        assert a.tobytes() == b.tobytes()


def _policy_problem(seed, n=64, k=32):
    rng = np.random.default_rng(seed)
    reference = rng.dirichlet(np.ones(k), size=n)
    rewards = rng.normal(size=(n, k))
    costs = rng.uniform(size=(n, k))
    return reference, rewards, costs


def _fit_ppo(seed):
    reference, rewards, costs = _policy_problem(seed)
    model = rlhf.PPO(n_iterations=30, batch_size=16, cost_budget=0.4,
                     random_state=seed)
    return model.fit(reference, rewards, costs=costs).policy_


def _fit_reinforce(seed):
    reference, rewards, _ = _policy_problem(seed)
    return rlhf.REINFORCE(n_iterations=40, baseline="grpo",
                          random_state=seed).fit(reference, rewards).policy_


def _fit_dpo(seed):
    reference, rewards, _ = _policy_problem(seed)
    rng = np.random.default_rng(seed + 100)
    rows = rng.integers(0, reference.shape[0], size=2000)
    pairs = np.array([rng.choice(reference.shape[1], 2, replace=False)
                      for _ in rows])
    better = rewards[rows, pairs[:, 0]] >= rewards[rows, pairs[:, 1]]
    pairs = np.where(better[:, None], pairs, pairs[:, ::-1])
    comparisons = np.column_stack([rows, pairs])
    return rlhf.DPO(n_iterations=20, batch_size=256, random_state=seed).fit(
        reference, comparisons).policy_


def _fit_sft(seed):
    rng = np.random.default_rng(seed)
    demonstrations = np.column_stack([rng.integers(0, 50, 3000),
                                      rng.integers(0, 20, 3000)])
    features = rng.normal(size=(50, 20, 4))
    return rlhf.SFT(policy="linear").fit(demonstrations,
                                         features=features).policy_


def _fit_cost_model(seed):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(400, 5))
    costs = features @ rng.normal(size=5)
    pairs = rng.integers(0, 400, size=(2000, 2))
    pairs = np.where((costs[pairs[:, 0]] >= costs[pairs[:, 1]])[:, None],
                     pairs, pairs[:, ::-1])
    model = rlhf.CostModel(C=10.0).fit(features, pairs, safe=costs <= 0)
    return np.append(model.coef_, model.intercept_)


def _closed_forms(seed):
    reference, rewards, costs = _policy_problem(seed, n=2000, k=40)
    policy, lam = rlhf.constrained_policy(reference, rewards, costs, 0.1,
                                          0.3)
    return np.concatenate([
        policy.ravel(), lam,
        rlhf.kl_regularized_policy(reference, rewards, 0.05).ravel(),
        rlhf.best_of_n_policy(reference, rewards, 8).ravel(),
        rlhf.kl_divergence(policy, reference)])


@pytest.mark.parametrize("job", [
    _fit_ppo, _fit_reinforce, pytest.param(_fit_dpo, marks=pytest.mark.slow),
    _fit_sft, _fit_cost_model,
    pytest.param(_closed_forms, marks=pytest.mark.slow)],
                         ids=lambda job: job.__name__.lstrip("_"))
def test_concurrent_policy_fits_equal_serial_fits(job):
    """Four fits (or closed forms) at once on different problems, each
    bitwise the one computed alone; a fixed random_state fixes the bits."""
    seeds = [0, 1, 2, 3]
    serial = [job(s) for s in seeds]
    with ThreadPoolExecutor(max_workers=4) as pool:
        parallel = list(pool.map(job, seeds))
    for a, b in zip(serial, parallel):
        assert np.isfinite(a).all()
        assert a.tobytes() == b.tobytes()
    assert serial[0].tobytes() != serial[1].tobytes()


@pytest.mark.slow
def test_concurrent_fits_of_different_policy_optimisers():
    """All the optimisers and the constrained closed form in flight at
    once (different kernels interleaved)."""
    jobs = [_fit_ppo, _fit_reinforce, _fit_dpo, _fit_sft, _fit_cost_model,
            _closed_forms]
    serial = [job(5) for job in jobs]
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        futures = [pool.submit(job, 5) for job in jobs]
        parallel = [f.result() for f in futures]
    for a, b in zip(serial, parallel):
        assert a.tobytes() == b.tobytes()


# -- every thread or one, chosen by timing (rlhf._threads) -----------------

def test_thread_cap_is_per_thread_and_restored():
    from rlhf._threads import AdaptiveThreads
    n = _core.default_threads()
    seen = []
    assert _core.thread_cap(1) == 0
    try:
        assert _core.default_threads() == 1
        worker = threading.Thread(
            target=lambda: seen.append(_core.default_threads()))
        worker.start()
        worker.join()
    finally:
        assert _core.thread_cap(0) == 1
    assert seen == [n] and _core.default_threads() == n
    with pytest.raises(ValueError, match="cap must be >= 0"):
        _core.thread_cap(-1)
    # a loop that raises leaves no cap behind
    with pytest.raises(KeyboardInterrupt):
        with AdaptiveThreads() as threads:
            threads.begin()
            raise KeyboardInterrupt
    assert _core.thread_cap(0) == 0


def test_adaptive_threads_keep_the_faster_and_probe_the_other(monkeypatch):
    from rlhf import _threads
    monkeypatch.setattr(_threads._core, "default_threads", lambda: 2)
    caps = []
    monkeypatch.setattr(_threads._core, "thread_cap",
                        lambda cap: caps.append(cap) or 0)
    clock = [0.0]
    monkeypatch.setattr(_threads.time, "perf_counter", lambda: clock[0])
    # one thread takes 1 s an iteration, two take 3 s (a busy machine)
    with _threads.AdaptiveThreads(probe_every=10) as threads:
        for _ in range(150):
            threads.begin()
            clock[0] += 1.0 if threads.history[-1] == 1 else 3.0
            threads.end()
    assert threads.history[:3] == [2, 1, 2]
    # then one thread, but for a probe of two threads 10 iterations after
    # the trials; it confirmed the choice at 2 s of extra time, so the next
    # waits until the probes cost at most 2%: 2 / (0.02 * 1) = 100
    assert [i for i, n in enumerate(threads.history) if n == 2] == \
        [0, 2, 12, 112]
    assert threads.choice == 1
    # the load lifts at iteration 15 (two threads now take 0.5 s): the
    # probe at 112 is faster than one thread, so the next comes 10 later,
    # and at 122 the median of two threads' last three, [3, 0.5, 0.5],
    # beats one thread: two threads from then on, but for a probe of one
    # thread at 132 (slower by 0.5 s: the next 50 iterations later)
    with _threads.AdaptiveThreads(probe_every=10) as threads:
        for index in range(200):
            threads.begin()
            clock[0] += (1.0 if threads.history[-1] == 1 else
                         0.5 if index >= 15 else 3.0)
            threads.end()
    twos = [i for i, n in enumerate(threads.history) if n == 2]
    assert twos[:4] == [0, 2, 12, 112]
    assert twos[4:14] == list(range(122, 132))
    assert threads.history[132] == 1 and threads.history[182] == 1
    assert threads.history[133:182] == [2] * 49 and threads.choice == 2
    # the caps set are those of the iterations, then the cap found before
    assert caps[-1] == 0


@pytest.mark.skipif(_core.default_threads() < 2,
                    reason="one thread: nothing to choose")
def test_ppo_with_its_threads_switched_gives_the_same_bits(monkeypatch):
    """PPO's loop changes threads between iterations (forced here to
    alternate): the same bits as one thread throughout."""
    from rlhf import _threads
    rng = np.random.default_rng(3)
    reference = rng.dirichlet(np.ones(16), size=3000)
    rewards = rng.normal(size=(3000, 16))

    def fit():
        return rlhf.PPO(beta=0.2, n_iterations=12, random_state=0).fit(
            reference, rewards)

    monkeypatch.setattr(_threads.AdaptiveThreads, "_threads_for",
                        lambda self, index: 1 + index % 2)
    switching = fit()
    previous = _core.thread_cap(1)
    try:
        monkeypatch.setattr(_threads.AdaptiveThreads, "_threads_for",
                            lambda self, index: 1)
        serial = fit()
    finally:
        _core.thread_cap(previous)
    np.testing.assert_array_equal(switching.theta_, serial.theta_)
    for key in switching.history_:
        np.testing.assert_array_equal(switching.history_[key],
                                      serial.history_[key])
