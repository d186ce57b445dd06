"""Progress bars of long fits (rlhf._progress and the estimators' progress
parameter).

The reporter's clock is replaced by a fake one where timing matters, so
the tests say what is shown after how long without waiting for it.  A fit
with a bar must be the same fit, to the bit, as one without.
"""
import io
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import rlhf
from rlhf import _core, _progress
from rlhf import reward as reward_module

ROOT = pathlib.Path(__file__).resolve().parent.parent


class FakeClock:
    def __init__(self):
        self.now = 1000.0
        self.reads = 0

    def __call__(self):
        self.reads += 1
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(_progress.time, "perf_counter", fake)
    return fake


@pytest.fixture
def no_tqdm(monkeypatch):
    """The plain line: tqdm made unimportable."""
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)


@pytest.fixture
def outside_pytest(monkeypatch):
    """progress=None as outside pytest (pytest sets PYTEST_CURRENT_TEST
    again for each phase of a test, so the check is replaced)."""
    monkeypatch.setattr(_progress, "under_pytest", lambda: False)


def _run(bar, clock, steps, seconds_per_step, stats=True):
    with bar:
        for i in range(steps):
            clock.now += seconds_per_step
            bar.update()
            if stats:
                bar.set_postfix(loss=1.0 / (i + 1), step=i)


# -- the reporter ------------------------------------------------------------

def test_auto_never_shows_under_pytest(clock, no_tqdm, capsys):
    assert "PYTEST_CURRENT_TEST" in os.environ
    _run(_progress.Progress(None, 100, "fit"), clock, 100, 1.0)
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize("total", [100, None])
def test_false_never_shows(clock, no_tqdm, outside_pytest, capsys, total):
    bar = _progress.Progress(False, total, "fit")
    _run(bar, clock, 100, 1.0)
    assert capsys.readouterr() == ("", "")
    assert not bar.shown
    # and never looks at the clock in the loop
    assert clock.reads <= 1


def test_auto_shows_long_work_from_the_early_rate(clock, no_tqdm,
                                                  outside_pytest, capsys):
    # 100 steps of 0.1 s: after 0.5 s the rate says 10 s in all
    bar = _progress.Progress(None, 100, "PPO.fit")
    with bar:
        for i in range(100):
            clock.now += 0.1
            bar.update()
            if i == 3:
                assert not bar.shown  # 0.4 s: still measuring
            if i == 5:
                assert bar.shown
    err = capsys.readouterr().err
    assert err.startswith("\rPPO.fit:") and err.endswith("\n")
    assert "100% 100/100" in err


@pytest.mark.parametrize("value", ["0", "off", "False"])
def test_rlhf_progress_0_turns_the_automatic_bar_off(
        clock, no_tqdm, outside_pytest, capsys, monkeypatch, value):
    monkeypatch.setenv("RLHF_PROGRESS", value)
    # ten seconds of work, which shows a bar without the variable
    # (test_auto_shows_long_work_from_the_early_rate)
    bar = _progress.Progress(None, 100, "PPO.fit")
    _run(bar, clock, 100, 0.1)
    assert not bar.shown
    assert capsys.readouterr() == ("", "")
    # progress=True still shows it
    bar = _progress.Progress(True, 100, "PPO.fit")
    _run(bar, clock, 100, 0.1)
    assert bar.shown
    assert "100/100" in capsys.readouterr().err


def test_auto_shows_one_slow_step_at_once(clock, no_tqdm, outside_pytest):
    bar = _progress.Progress(None, 10, "fit")
    clock.now += 2.0  # the first of ten steps took 2 s
    bar.update()
    assert bar.shown
    bar.close()


def test_auto_skips_short_work(clock, no_tqdm, outside_pytest, capsys):
    # 1000 steps of 2 ms: 2 s in all
    bar = _progress.Progress(None, 1000, "fit")
    _run(bar, clock, 1000, 0.002)
    assert not bar.shown
    assert capsys.readouterr() == ("", "")


def test_auto_open_ended_work_shows_after_three_seconds(clock, no_tqdm,
                                                        outside_pytest,
                                                        capsys):
    bar = _progress.Progress(None, None, "RewardModel.fit", unit="eval")
    with bar:
        for _ in range(29):
            clock.now += 0.1
            bar.update()
        assert not bar.shown
        for _ in range(3):
            clock.now += 0.1
            bar.update()
        assert bar.shown
        bar.set_postfix(objective=12.5, grad=lambda: 3e-7)
        for _ in range(10):
            clock.now += 0.1
            bar.update()
    err = capsys.readouterr().err
    assert "42 eval" in err
    assert "objective=12.5" in err and "grad=3.000e-07" in err


def test_plain_line_is_throttled(clock, no_tqdm, outside_pytest,
                                 monkeypatch):
    stream = io.StringIO()
    stream.isatty = lambda: True
    monkeypatch.setattr(sys, "stderr", stream)
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    assert _progress._interactive()
    # 100,000 steps over 10 s
    bar = _progress.Progress(True, 100_000, "fit")
    reads = clock.reads
    _run(bar, clock, 100_000, 1e-4, stats=False)
    redraws = stream.getvalue().count("\r")
    # at most every REFRESH_SECONDS, and not much less often
    assert 10 / (2 * _progress.REFRESH_SECONDS) <= redraws <= \
        10 / _progress.REFRESH_SECONDS + 2
    # the clock is read about as often as the line is redrawn
    assert clock.reads - reads < 3 * redraws + 20
    assert stream.getvalue().endswith("\n")


def test_plain_line_off_a_terminal_redraws_once_a_second(clock, no_tqdm,
                                                         capsys,
                                                         monkeypatch):
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    assert not _progress._interactive()  # capsys's stderr
    _run(_progress.Progress(True, 1000, "fit"), clock, 1000, 0.01,
         stats=False)
    redraws = capsys.readouterr().err.count("\r")
    assert 8 <= redraws <= 14


def test_write_keeps_the_line(clock, no_tqdm, capsys):
    with _progress.Progress(True, 10, "fit") as bar:
        clock.now += 1.0
        bar.update()
        bar.write("iteration 1: reward 0.5")
    out, err = capsys.readouterr()
    assert out == "iteration 1: reward 0.5\n"
    assert err.endswith("1/10 [00:01<00:09, 1 it/s]\n")


def test_closed_on_an_exception(clock, no_tqdm, capsys):
    with pytest.raises(KeyboardInterrupt):
        with _progress.Progress(True, 10, "fit") as bar:
            clock.now += 1.0
            bar.update(3)
            raise KeyboardInterrupt
    err = capsys.readouterr().err
    assert err.endswith("\n") and "3/10" in err


def test_a_number_not_there_yet_is_left_out(clock, no_tqdm, capsys):
    """A bar closed before the first step (Ctrl-C at once) with numbers
    read from an empty history."""
    history = []
    with _progress.Progress(True, 10, "fit") as bar:
        bar.set_postfix(loss=lambda: history[-1], step=3)
    err = capsys.readouterr().err
    assert "step=3" in err and "loss" not in err and err.endswith("\n")


def test_tqdm_bar(clock, capsys):
    pytest.importorskip("tqdm")
    with _progress.Progress(True, 50, "PPO.fit") as bar:
        bar.set_postfix(reward=0.25, kl=0.125)
        for _ in range(50):
            clock.now += 0.1
            bar.update()
    err = capsys.readouterr().err
    assert "PPO.fit" in err and "50/50" in err and "|" in err
    assert "reward=0.25" in err and "kl=0.125" in err


def test_check_progress():
    for value in (None, True, False, np.True_):
        assert _progress.check_progress(value, "PPO") == value
    for value in (1, 0, "yes", 0.5):
        with pytest.raises(ValueError, match="'progress' parameter of PPO"):
            _progress.check_progress(value, "PPO")


# -- the estimators ----------------------------------------------------------

def _pairs(seed, n_items, n_features, n_pairs):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n_items, n_features))
    pairs = rng.integers(0, n_items, size=(n_pairs, 2))
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    r = features @ np.linspace(1, -1, n_features)
    wins = rng.random(len(pairs)) < 1 / (1 + np.exp(-(r[pairs[:, 0]]
                                                      - r[pairs[:, 1]])))
    pairs[~wins] = pairs[~wins][:, ::-1]
    return features, pairs


REWARD_CASES = {
    "lbfgs": (dict(solver="lbfgs", C=0.5), 0, True),
    "newton": (dict(solver="newton"), 1, True),
    "newton strengths": (dict(solver="newton", C=100.0), 2, False),
    "lbfgs strengths": (dict(solver="lbfgs", C=10.0), 3, False),
    "davidson": (dict(solver="newton", ties="davidson"), 4, False),
}


def _same_fit(a, b):
    assert a.coef_.tobytes() == b.coef_.tobytes()
    assert (a.n_iter_, a.objective_, a.tie_param_) == \
        (b.n_iter_, b.objective_, b.tie_param_)
    assert a._fit_info == b._fit_info  # the evaluations too


@pytest.mark.parametrize("case", sorted(REWARD_CASES))
def test_reward_model_with_a_bar_is_the_same_fit(case, no_tqdm, capsys):
    params, seed, with_features = REWARD_CASES[case]
    features, pairs = _pairs(seed, 40, 3, 300)
    ties = np.arange(len(pairs)) % 7 == 0 if "ties" in params else None
    data = features if with_features else None
    plain = rlhf.RewardModel(progress=False, verbose=1, **params).fit(
        data, pairs, ties=ties)
    plain_out = capsys.readouterr()
    shown = rlhf.RewardModel(progress=True, verbose=1, **params).fit(
        data, pairs, ties=ties)
    out, err = capsys.readouterr()
    _same_fit(plain, shown)
    assert out == plain_out.out  # verbose says the same
    unit = "eval" if params["solver"] == "lbfgs" else "step"
    assert err.startswith(f"\rRewardModel.fit ({params['solver']}):")
    assert err.endswith("\n") and "objective=" in err
    assert f" {unit} " in err


def test_reward_model_auto_runs_the_c_loop_with_a_clock(
        monkeypatch, outside_pytest, no_tqdm, capsys):
    """progress=None outside pytest: the one C call, with a thread that
    watches the clock from a few million numbers on (here: from 0)."""
    threads = []
    start_thread = _progress.threading.Thread.start
    monkeypatch.setattr(_progress.threading.Thread, "start",
                        lambda self: threads.append(self) or
                        start_thread(self))
    entries = []
    for name in ("bt_loss_grad", "lbfgs_minimize"):
        entry = getattr(_core, name)
        monkeypatch.setattr(_core, name, lambda *a, _e=entry, **k:
                            entries.append(1) or _e(*a, **k))
    features, pairs = _pairs(5, 60, 4, 500)
    for solver in ("lbfgs", "newton"):
        plain = rlhf.RewardModel(solver=solver, progress=False).fit(
            features, pairs)
        auto = rlhf.RewardModel(solver=solver).fit(features, pairs)
        _same_fit(plain, auto)
    assert threads == [] and entries == []  # a small problem: no thread
    monkeypatch.setattr(reward_module, "_PROGRESS_MIN_SIZE", 0)
    for solver in ("lbfgs", "newton"):
        plain = rlhf.RewardModel(solver=solver, progress=False).fit(
            features, pairs)
        auto = rlhf.RewardModel(solver=solver).fit(features, pairs)
        _same_fit(plain, auto)
    assert len(threads) == 2 and not any(t.is_alive() for t in threads)
    assert entries == []
    assert capsys.readouterr() == ("", "")  # a short fit shows nothing


def test_a_clock_for_a_long_call_into_c(clock, no_tqdm, outside_pytest,
                                        capsys):
    bar = _progress.Progress(None, None, "RewardModel.fit (lbfgs)")
    with bar, bar.ticking():
        clock.now += 2.0
        time.sleep(0.4)  # the thread looks twice or more
        assert not bar.shown
        clock.now += 3.0
        deadline = time.monotonic() + 10
        while not bar.shown and time.monotonic() < deadline:
            time.sleep(0.05)
        assert bar.shown
    err = capsys.readouterr().err
    assert err.startswith("\rRewardModel.fit (lbfgs): running [00:05]")
    assert err.endswith("\n")
    quiet = _progress.Progress(False, None, "fit")
    with quiet, quiet.ticking():
        pass
    assert capsys.readouterr() == ("", "")


def test_newton_one_step_at_a_time_is_one_call():
    features, pairs = _pairs(5, 60, 4, 500)
    model = rlhf.RewardModel(solver="newton")
    model._validate_params()
    problem = model._problem(features, pairs, None, None, None, None, None)
    for max_iter in (1000, 3, 0):
        one_call = _core.bt_fit(problem, np.zeros(4), "newton", 1e-8,
                                max_iter)
        start = _core.bt_loss_grad(problem, np.zeros(4))
        with _progress.Progress(False) as bar:
            stepped = reward_module._newton_reporting(
                problem, np.zeros(4), start, 1e-8, max_iter, 0, bar)
        assert stepped[0].tobytes() == one_call[0].tobytes()
        assert stepped[1:2] + stepped[3:] == one_call[1:2] + one_call[3:]


def test_newton_restarts_keep_the_first_threshold():
    for threshold in (1e-8, 3.3e-7 * 7.1, 2.5e-300, 1.0):
        for gmax in (0.0, 0.3, 1.0, 7.77, 1e5, 1e300):
            tol = reward_module._step_tol(threshold, gmax)
            scale = max(1.0, gmax)
            assert tol > 0
            if threshold / scale > 1e-300:
                assert tol * scale <= threshold
                assert np.nextafter(tol, np.inf) * scale > threshold


def test_max_iter_zero_and_one_with_a_bar(no_tqdm, capsys):
    features, pairs = _pairs(6, 30, 3, 200)
    for max_iter in (0, 1):
        for solver in ("newton", "lbfgs"):
            fits = []
            for progress in (False, True):
                with pytest.warns(rlhf.ConvergenceWarning):
                    fits.append(rlhf.RewardModel(
                        solver=solver, max_iter=max_iter,
                        progress=progress).fit(features, pairs))
            _same_fit(*fits)
    capsys.readouterr()


REFERENCE = np.array([[0.5, 0.3, 0.2], [0.2, 0.2, 0.6]])
REWARDS = np.array([[0.1, 0.0, -0.1], [0.0, 0.2, 0.1]])
COMPARISONS = np.array([[0, 0, 1], [0, 1, 2], [1, 2, 0], [1, 2, 1]])


def _world():
    world = rlhf.make_sequence_world(n_words=3, max_length=4,
                                     random_state=0)
    return world, world.reference.to_prefix_policy()


def _fit_cases():
    world, reference = _world()
    y = reference.sample(40, random_state=0)
    lm = rlhf.TinyLM(n_layer=1, n_head=1, n_embd=8, block_size=8,
                     tokenizer=rlhf.text.CharTokenizer("ab? "),
                     random_state=0)
    return {
        "PPO table": (lambda p: rlhf.PPO(n_iterations=20, random_state=0,
                                         progress=p),
                      (REFERENCE, REWARDS), {}, "PPO.fit"),
        "REINFORCE sequences": (
            lambda p: rlhf.REINFORCE(n_iterations=5, random_state=0,
                                     progress=p),
            (reference, world.gold_reward), {}, "REINFORCE.fit"),
        "DPO table": (lambda p: rlhf.DPO(n_iterations=20, progress=p),
                      (REFERENCE, COMPARISONS), {}, "DPO.fit"),
        "DPO sequences": (lambda p: rlhf.DPO(n_iterations=5, progress=p),
                          (reference, (y[:20], y[20:])), {}, "DPO.fit"),
        "SFT": (lambda p: rlhf.SFT(progress=p), ([[0, 0], [0, 1], [1, 2]],),
                {}, "SFT.fit"),
        "PPO TinyLM": (
            lambda p: rlhf.PPO(learning_rate=1e-3, n_iterations=2,
                               n_samples=2, random_state=0, progress=p),
            (lm, lambda ps, rs: np.array([len(r) for r in rs], float)),
            dict(prompts=["a?"], prompts_per_iteration=2, max_new_tokens=3),
            "PPO.fit"),
        "DPO TinyLM": (
            lambda p: rlhf.DPO(learning_rate=1e-3, n_iterations=2,
                               progress=p),
            (lm, (["a?"] * 2, ["ab"] * 2, ["b"] * 2)), {}, "DPO.fit"),
    }


@pytest.mark.parametrize("case", sorted(_fit_cases()))
def test_policy_fits_with_a_bar_are_the_same_fits(case, no_tqdm, capsys):
    make, args, kwargs, desc = _fit_cases()[case]
    plain = make(False).fit(*args, **kwargs)
    assert capsys.readouterr() == ("", "")
    shown = make(True).fit(*args, **kwargs)
    err = capsys.readouterr().err
    assert err.startswith(f"\r{desc}:") and err.endswith("\n")
    theta = [plain.theta_, shown.theta_]
    assert theta[0].tobytes() == theta[1].tobytes()
    for key, values in getattr(plain, "history_", {}).items():
        np.testing.assert_array_equal(values, shown.history_[key])
    if case != "SFT":
        stat = "reward=" if "PPO" in case or "REINFORCE" in case else "loss="
        assert stat in err
        n = plain.n_iterations
        assert f"{n}/{n}" in err


def test_verbose_output_is_unchanged_by_a_bar(no_tqdm, capsys):
    rlhf.PPO(n_iterations=20, verbose=1, random_state=0,
             progress=False).fit(REFERENCE, REWARDS)
    plain = capsys.readouterr().out
    rlhf.PPO(n_iterations=20, verbose=1, random_state=0,
             progress=True).fit(REFERENCE, REWARDS)
    out, err = capsys.readouterr()
    assert out == plain and plain.count("\n") == 11
    assert "PPO.fit" in err


def test_cost_model_and_tinylm_fit_with_a_bar(no_tqdm, capsys):
    rng = np.random.default_rng(0)
    features = rng.normal(size=(20, 2))
    pairs = np.array([[i, (i + 1) % 20] for i in range(20)])
    fits = [rlhf.CostModel(progress=p).fit(features, pairs)
            for p in (False, True)]
    assert fits[0].coef_.tobytes() == fits[1].coef_.tobytes()
    assert "\rCostModel.fit:" in capsys.readouterr().err
    lms = []
    for progress in (False, True):
        lm = rlhf.TinyLM(n_layer=1, n_head=1, n_embd=8, block_size=8,
                         tokenizer=rlhf.text.CharTokenizer("ab "),
                         random_state=0)
        lms.append(lm.fit(["ab ba", "a b"], max_steps=4, batch_size=2,
                          random_state=0, verbose=1, progress=progress))
    out, err = capsys.readouterr()
    assert lms[0]._params.tobytes() == lms[1]._params.tobytes()
    assert out.count("step 4/4") == 2
    assert err.startswith("\rTinyLM.fit:") and "4/4" in err
    assert "loss=" in err


def test_progress_parameter_is_checked():
    features, pairs = _pairs(7, 10, 2, 30)
    calls = [
        lambda p: rlhf.RewardModel(progress=p).fit(features, pairs),
        lambda p: rlhf.CostModel(progress=p).fit(features, pairs),
        lambda p: rlhf.PPO(progress=p).fit(REFERENCE, REWARDS),
        lambda p: rlhf.REINFORCE(progress=p).fit(REFERENCE, REWARDS),
        lambda p: rlhf.DPO(progress=p).fit(REFERENCE, COMPARISONS),
        lambda p: rlhf.SFT(progress=p).fit([[0, 0]]),
        lambda p: rlhf.TinyLM(n_layer=1, n_embd=8, block_size=8).fit(
            ["ab"], progress=p),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="'progress' parameter"):
            call("yes")
    assert rlhf.PPO().get_params()["progress"] is None


# -- Ctrl-C ------------------------------------------------------------------

PRELUDE = """
import signal, sys, time, warnings
signal.signal(signal.SIGINT, signal.default_int_handler)
import numpy as np
import rlhf
warnings.simplefilter("ignore")
rng = np.random.default_rng(0)
"""

# long fits of tests/test_interrupts.py: L-BFGS through its Python entry
# point (progress=True), and the C loop watched by a thread (None)
INTERRUPT_CASES = {
    "True": """
n = 200_000
pairs = np.stack([np.arange(n - 1), np.arange(1, n)], 1)
F = None
est = rlhf.RewardModel(C=1e6, tol=1e-300, max_iter=10**6, solver="lbfgs",
                       progress=True)
""",
    "None": """
F = rng.normal(size=(2000, 40)) * np.logspace(0, 3, 40)
pairs = rng.integers(0, 2000, size=(2_000_000, 2))
pairs = pairs[pairs[:, 0] != pairs[:, 1]]
n = None
est = rlhf.RewardModel(C=1e12, tol=1e-300, max_iter=10**6, solver="lbfgs")
""",
}


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.skipif(os.environ.get("RLHF_SANITIZED") == "1",
                    reason="Python paths over kernels test_interrupts "
                    "already stops under the sanitizers")
@pytest.mark.parametrize("progress", sorted(INTERRUPT_CASES))
def test_ctrl_c_stops_a_fit_with_a_bar(progress):
    script = PRELUDE + INTERRUPT_CASES[progress] + textwrap.dedent("""
        print("ready", flush=True)
        try:
            est.fit(F, pairs, n_items=n)
        except KeyboardInterrupt:
            print("interrupted", time.monotonic(), flush=True)
            assert not hasattr(est, "coef_")
            sys.exit(0)
        sys.exit(3)
    """)
    env = dict(os.environ)
    env.pop("PYTEST_CURRENT_TEST", None)  # progress=None decides itself
    child = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=env)
    try:
        assert child.stdout.readline().strip() == "ready"
        # None: long enough for the line to appear
        time.sleep(1.0 if progress == "True" else 3.5)
        assert child.poll() is None, "the child stopped before the signal"
        sent = time.monotonic()
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    assert child.returncode == 0, (out, err)
    word, caught = out.split()
    assert word == "interrupted"
    assert float(caught) - sent < 1.0
    assert "RewardModel.fit (lbfgs):" in err
    assert err.endswith("\n")  # the bar was closed
    if progress == "None":
        assert "running" in err
