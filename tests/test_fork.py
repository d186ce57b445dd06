"""Kernels work in a child process made by fork() after the parent used
threads.

The OpenMP runtime's thread pool does not survive fork(): a parallel
region in the child waits for threads that are not there.  The extension
registers a fork handler that puts the child's kernels on their serial
path, which gives the same bits (results never depend on the thread
count).  Every check runs under a timeout, since the failure is a hang.
"""
import multiprocessing
import os
import pickle
import sys

import numpy as np
import pytest

import rlhf

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "fork") or sys.platform == "darwin",
                       reason="fork() as Linux has it"),
    pytest.mark.slow,  # child processes
]

TIMEOUT = 60


def threaded_work():
    """Kernels that each run a parallel region on two threads: large
    enough to pass the kernels' thresholds for going parallel."""
    rng = np.random.default_rng(0)
    policy = rng.dirichlet(np.ones(50), size=4000)
    rewards = rng.normal(size=policy.shape)
    costs = rng.random(size=policy.shape)
    features = rng.normal(size=(3000, 8))
    pairs = rng.integers(0, 3000, size=(20_000, 2))
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    X = rng.normal(size=(20_000, 8))
    y = (X[:, 0] + rng.normal(size=20_000) > 0).astype(int)
    policy_star, multiplier = rlhf.constrained_policy(
        policy, rewards, costs, budget=0.5, beta=0.5)
    return {
        "reweight": rlhf.reweight(policy, rewards, eta=0.5),
        "reward": rlhf.RewardModel(n_threads=2).fit(features, pairs).coef_,
        "logistic": rlhf.LogisticRegression(n_jobs=2).fit(X, y).coef_,
        "constrained": policy_star,
    }


def assert_same_bits(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].tobytes() == b[key].tobytes(), key


def run_in_forked_child(fn):
    """fn() in a child made by os.fork(); its pickled result, or a failure
    when the child hangs or dies."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            os.close(read_end)
            data = pickle.dumps(fn())
            with os.fdopen(write_end, "wb") as fh:
                fh.write(data)
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    import select
    with os.fdopen(read_end, "rb") as fh:
        ready, _, _ = select.select([fh], [], [], TIMEOUT)
        if not ready:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail(f"the forked child hung for {TIMEOUT} s")
        data = fh.read()
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    return pickle.loads(data)


def test_os_fork_after_threaded_kernels():
    parent = threaded_work()
    child = run_in_forked_child(threaded_work)
    assert_same_bits(parent, child)
    # the parent keeps its threads
    assert_same_bits(parent, threaded_work())


def _pool_task(seed):
    rng = np.random.default_rng(seed)
    policy = rng.dirichlet(np.ones(50), size=4000)
    rewards = rng.normal(size=policy.shape)
    return rlhf.reweight(policy, rewards, eta=0.5)


def test_multiprocessing_fork_pool_after_threaded_kernels():
    threaded_work()
    context = multiprocessing.get_context("fork")
    with context.Pool(2) as pool:
        result = pool.map_async(_pool_task, [1, 2, 3])
        children = result.get(timeout=TIMEOUT)
    for seed, got in zip([1, 2, 3], children):
        assert got.tobytes() == _pool_task(seed).tobytes()


def test_grandchild_after_fork():
    """A child of a child is serial too."""
    parent = threaded_work()

    def child():
        return run_in_forked_child(threaded_work)

    assert_same_bits(parent, run_in_forked_child(child))
