"""Parameters at their edges: integers beyond a C int, thread counts, one
rule for real scalars, fitted attributes asked for before fit, and NumPy
scalars in messages.

Regression tests for the hardening issue.  Each integer parameter that
reaches a kernel either works for every value up to 2**64 (a C int
max_iter is clamped, a seed of any size is a seed) or is a ValueError that
names it -- never the OverflowError of the C argument parser, which names
nothing.
"""
import contextlib
import copy
import io
import pickle
import warnings
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest

import rlhf
from rlhf import _core
from rlhf import _validation

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

X = np.array([[0.8, 0.4], [-0.8, -0.4], [0.1, 0.7], [-0.1, -0.7],
              [0.3, -0.2], [-0.5, 0.1]])
Y = np.array([1, 0, 1, 0, 1, 0])
REFERENCE = np.array([[0.5, 0.3, 0.2], [0.2, 0.2, 0.6]])
REWARDS = np.array([[0.1, 0.0, -0.1], [0.0, 0.2, 0.1]])
COMPARISONS = np.array([[0, 0, 1], [0, 1, 2], [1, 2, 0], [1, 1, 0]])
DEMONSTRATIONS = np.array([[0, 0], [0, 1], [1, 1], [1, 0], [1, 1]])

# the most entries of a table a size parameter may ask for
MAX_TABLE_ENTRIES = 2**31

INT_TYPES = (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16,
             np.uint32, np.uint64)


def _as_numpy(value):
    """value as the widest NumPy integer type that holds it."""
    for kind in (np.int64, np.uint64):
        if np.iinfo(kind).min <= value <= np.iinfo(kind).max:
            return kind(value)
    return value


# -- integers beyond a C int -------------------------------------------------

BEYOND_C_INT = [2**31, 2**32 + 5, 2**63 - 1, 2**63, 2**64 - 1, 2**64,
                np.int64(2**62), np.uint64(2**64 - 1)]


@pytest.mark.parametrize("max_iter", BEYOND_C_INT)
def test_logistic_regression_max_iter_beyond_c_int(max_iter):
    """Regression: max_iter=2**31 was an OverflowError of the argument
    parser; scikit-learn accepts it.  Clamped at the kernel only: the
    parameter keeps the value, n_iter_ says what ran."""
    reference = rlhf.LogisticRegression().fit(X, Y)
    model = rlhf.LogisticRegression(max_iter=max_iter).fit(X, Y)
    assert model.get_params()["max_iter"] is max_iter
    assert model.coef_.tobytes() == reference.coef_.tobytes()
    assert model.n_iter_.tolist() == reference.n_iter_.tolist()
    assert model.n_iter_.dtype == np.int32


def test_logistic_regression_max_iter_as_scikit_learn():
    sklearn = pytest.importorskip("sklearn")
    from sklearn.linear_model import LogisticRegression
    version = tuple(int(part) for part in sklearn.__version__.split(".")[:2])
    compat = "1.7" if version >= (1, 7) else "1.4" if version >= (1, 4) \
        else "1.2"
    ours = rlhf.LogisticRegression(max_iter=2**31, compat=compat).fit(X, Y)
    theirs = LogisticRegression(max_iter=2**31).fit(X, Y)
    np.testing.assert_allclose(ours.coef_, theirs.coef_, rtol=1e-9)
    assert ours.n_iter_.tolist() == theirs.n_iter_.tolist()


@pytest.mark.parametrize("max_iter", BEYOND_C_INT)
def test_sft_max_iter_beyond_c_int(max_iter):
    """Regression: SFT(max_iter=2**31) was an OverflowError."""
    reference = rlhf.SFT().fit(DEMONSTRATIONS)
    model = rlhf.SFT(max_iter=max_iter).fit(DEMONSTRATIONS)
    assert model.policy_.tobytes() == reference.policy_.tobytes()
    assert model.n_iter_ == reference.n_iter_


@pytest.mark.parametrize("n_jobs", [2**31, 2**64, 1000, np.int64(1000),
                                    _validation.max_threads() + 1])
def test_n_jobs_beyond_the_thread_limit(n_jobs):
    """Regression: n_jobs=2**31 was an OverflowError and n_jobs=1000 asked
    OpenMP for a thousand threads; both are a ValueError naming the
    limit."""
    limit = _validation.max_threads()
    with pytest.raises(ValueError, match=rf"'n_jobs'.*\[1, {limit}\]"):
        rlhf.LogisticRegression(n_jobs=n_jobs).fit(X, Y)


@pytest.mark.parametrize("n_jobs", [0, -2, -2**63, -2**64, 2.0, -1.0, True,
                                    "2"])
def test_n_jobs_refused(n_jobs):
    with pytest.raises(ValueError, match="'n_jobs'.*None, -1"):
        rlhf.LogisticRegression(n_jobs=n_jobs).fit(X, Y)


@pytest.mark.parametrize("n_jobs", [None, -1, np.int64(-1), 1, np.uint8(2),
                                    _validation.max_threads()])
def test_n_jobs_accepted(n_jobs):
    reference = rlhf.LogisticRegression().fit(X, Y)
    model = rlhf.LogisticRegression(n_jobs=n_jobs).fit(X, Y)
    assert model.coef_.tobytes() == reference.coef_.tobytes()


@pytest.mark.parametrize("estimator", ["PPO", "REINFORCE"])
@pytest.mark.parametrize("n_samples", [MAX_TABLE_ENTRIES // 2 + 1, 2**31,
                                       2**63, 2**64, np.uint64(2**64 - 1)])
def test_n_samples_beyond_the_table_limit(estimator, n_samples):
    """Regression: n_samples=2**63 reached NumPy's allocation ('Maximum
    allowed dimension exceeded', naming nothing) and 2**40 a MemoryError."""
    model = getattr(rlhf, estimator)(n_samples=n_samples, n_iterations=2)
    with pytest.raises(ValueError, match="'n_samples'.*2147483648"):
        model.fit(REFERENCE, REWARDS)
    # exact=True takes every response and draws nothing
    exact = getattr(rlhf, estimator)(n_samples=n_samples, n_iterations=2,
                                     exact=True).fit(REFERENCE, REWARDS)
    same = getattr(rlhf, estimator)(n_iterations=2, exact=True).fit(
        REFERENCE, REWARDS)
    assert exact.policy_.tobytes() == same.policy_.tobytes()


@pytest.mark.parametrize("value", [2**31, 2**63, 2**64, np.uint64(2**64 - 1)])
def test_huge_batch_size_and_seed_work(value):
    for estimator, args in (("PPO", (REFERENCE, REWARDS)),
                            ("REINFORCE", (REFERENCE, REWARDS)),
                            ("DPO", (REFERENCE, COMPARISONS))):
        whole = getattr(rlhf, estimator)(n_iterations=3, random_state=3)
        huge = getattr(rlhf, estimator)(n_iterations=3, random_state=3,
                                        batch_size=value)
        assert huge.fit(*args).policy_.tobytes() == \
            whole.fit(*args).policy_.tobytes()
        seeded = getattr(rlhf, estimator)(n_iterations=3, random_state=value)
        again = getattr(rlhf, estimator)(n_iterations=3,
                                         random_state=int(value))
        assert seeded.fit(*args).policy_.tobytes() == \
            again.fit(*args).policy_.tobytes()


@pytest.mark.parametrize("n", [2**64, np.uint64(2**64 - 1), 10**400])
def test_best_of_n_for_any_int(n):
    """Regression: n=10**400 was 'OverflowError: int too large to convert
    to float'; the best of that many samples is the greedy policy."""
    np.testing.assert_array_equal(
        rlhf.best_of_n_policy([0.5, 0.5], [1.0, 0.0], n=n), [1.0, 0.0])
    np.testing.assert_array_equal(
        rlhf.best_of_n_policy([0.5, 0.3, 0.2], [1.0, 0.0, 1.0], n=n),
        [0.5 / 0.7, 0.0, 0.2 / 0.7])


@pytest.mark.parametrize("n", [1, 2, 3, 7, 50])
def test_best_of_n_small_n_unchanged(n):
    reference, rewards = [0.5, 0.3, 0.2], [1.0, 0.0, 2.0]
    expected = np.array([(0.8 ** n - 0.3 ** n), 0.3 ** n, 1 - 0.8 ** n])
    np.testing.assert_allclose(
        rlhf.best_of_n_policy(reference, rewards, n=n), expected, rtol=1e-13)


def test_overoptimization_n_values_beyond_int64():
    """Regression: n_values=[2**63] was an OverflowError of np.array."""
    with pytest.raises(ValueError, match="'n_values'.*9223372036854775807"):
        rlhf.overoptimization_curves([0.5, 0.5], [1.0, 0.0], [0.0, 1.0],
                                     n_values=[2, 2**63])
    curves = rlhf.overoptimization_curves(
        [0.5, 0.5], [1.0, 0.0], [0.0, 1.0],
        n_values=[np.uint64(2), 2**63 - 1])
    assert curves.values.dtype == np.int64
    assert curves.values.tolist() == [2, 2**63 - 1]
    np.testing.assert_array_equal(curves.policies[-1], [0.0, 1.0])


@pytest.mark.parametrize("params, names", [
    (dict(n_styles=2**64), "n_styles"),
    (dict(n_styles=2**40), "n_styles"),
    (dict(n_prompts=2**31), "n_prompts"),
    (dict(n_candidates=2**63), "n_candidates"),
])
def test_make_overoptimization_world_sizes(params, names):
    """Regression: n_styles=2**64 built a tuple of 2**64 feature names
    (the process was killed); sizes beyond the table limit are refused."""
    with pytest.raises(ValueError, match=names):
        rlhf.make_overoptimization_world(**params)


def test_make_overoptimization_world_numpy_sizes():
    world = rlhf.make_overoptimization_world(
        n_prompts=np.int64(3), n_candidates=np.uint8(4),
        n_styles=np.int16(1), random_state=np.uint64(2**64 - 1))
    same = rlhf.make_overoptimization_world(
        n_prompts=3, n_candidates=4, n_styles=1, random_state=2**64 - 1)
    assert world.reference_policy.shape == (3, 4)
    assert world.gold_rewards.tobytes() == same.gold_rewards.tobytes()
    assert world.proxy_feature_names == same.proxy_feature_names


def test_overoptimization_world_comparison_count():
    world = rlhf.make_overoptimization_world(n_prompts=2, n_candidates=3,
                                             random_state=0)
    with pytest.raises(ValueError, match="'n_comparisons'.*1073741824"):
        world.comparisons(2**64, random_state=0)
    few = world.comparisons(np.int64(3), random_state=np.uint64(5))
    assert few.comparisons.shape == (3, 2)


def test_infinite_cost_budget_is_refused():
    """Regression: cost_budget=inf passed the check and made the
    multiplier NaN (an infinite gradient in Adam)."""
    for budget in (np.inf, -np.inf, np.nan):
        with pytest.raises(ValueError, match="'cost_budget'"):
            rlhf.PPO(cost_budget=budget, n_iterations=2).fit(
                REFERENCE, REWARDS, costs=REWARDS)


# -- the fuzz: integer parameters up to 2**64 ---------------------------------
#
# Values from -2**64 to 64 and from 2**31 - 2 to 2**64, as Python ints or as
# the NumPy integer types that hold them.  Between 64 and 2**31 - 2 nothing
# overflows a C int, and a size there (2**25 samples, a world of 2**20
# styles) is an honest request for much memory, which a test cannot make.
# A count of iterations beyond 2**31 is an honest request for much work:
# the estimators that loop in Python get a budget of kernel calls
# (_Budget), so the fit runs with the real kernels on the real arguments
# until the budget is spent.

LIMITS = [0, 1, -1, 2, 64, 2**31 - 1, 2**31, 2**32, 2**63 - 1, 2**63,
          2**64 - 1, 2**64, -2**31 - 1, -2**63, -2**63 - 1, -2**64]


@st.composite
def integers(draw):
    value = draw(st.one_of(st.integers(-2**64, 64),
                           st.integers(2**31 - 2, 2**64),
                           st.sampled_from(LIMITS)))
    if draw(st.booleans()):
        kinds = [kind for kind in INT_TYPES
                 if np.iinfo(kind).min <= value <= np.iinfo(kind).max]
        if kinds:
            return draw(st.sampled_from(kinds))(value)
    return value


class _Enough(Exception):
    """The budget of kernel calls is spent."""


class _Budget:
    """rlhf._core, refusing calls once a budget is spent."""

    def __init__(self, calls):
        self.left = calls

    def __getattr__(self, name):
        kernel = getattr(_core, name)

        def call(*args, **kwargs):
            if self.left == 0:
                raise _Enough
            self.left -= 1
            return kernel(*args, **kwargs)
        return call


def _fit_logistic(**params):
    rlhf.LogisticRegression(**params).fit(X, Y).predict(X)


def _fit_policy(estimator, **params):
    model = getattr(rlhf, estimator)(**params)
    model._kernels = _Budget(60)
    if estimator == "DPO":
        model.fit(REFERENCE, COMPARISONS)
    else:
        model.fit(REFERENCE, REWARDS)
    assert np.isfinite(model.policy_).all()


def _fit_sft(**params):
    fit_params = {k: params.pop(k) for k in ("n_prompts", "n_responses")
                  if k in params}
    model = rlhf.SFT(**params).fit(DEMONSTRATIONS, **fit_params)
    assert np.isfinite(model.policy_).all()


def _curves(**params):
    if "random_state" in params:
        params.update(method="ppo", ppo=rlhf.PPO(exact=True, n_iterations=2))
    rlhf.overoptimization_curves(REFERENCE, REWARDS, REWARDS[::-1], **params)


_WORLD = []


def _comparisons(**params):
    if not _WORLD:
        _WORLD.append(rlhf.make_overoptimization_world(
            n_prompts=2, n_candidates=3, n_styles=1, random_state=0))
    params.setdefault("n_comparisons", 3)
    _WORLD[0].comparisons(**params)


# (label, call with the parameter, the parameter, names the error may
# give, the errors allowed).  random_state of the overoptimization world
# is a TypeError when negative, as in rlhf.preferences (its tests pin that).
NAMED = (ValueError,)
INTEGER_PARAMETERS = [
    ("LogisticRegression", _fit_logistic, "max_iter", NAMED),
    ("LogisticRegression", _fit_logistic, "n_jobs", NAMED),
    ("LogisticRegression", _fit_logistic, "verbose", NAMED),
    ("SFT", _fit_sft, "max_iter", NAMED),
    ("SFT", _fit_sft, "n_prompts", NAMED),
    ("SFT", _fit_sft, "n_responses", NAMED),
    ("best_of_n_policy",
     lambda n: rlhf.best_of_n_policy(REFERENCE, REWARDS, n), "n", NAMED),
    ("overoptimization_curves",
     lambda n_values: _curves(n_values=[n_values]), "n_values", NAMED),
    ("overoptimization_curves", _curves, "random_state",
     (ValueError, TypeError)),
    ("make_overoptimization_world",
     lambda **p: rlhf.make_overoptimization_world(
         **{"n_prompts": 2, "n_candidates": 3, "n_styles": 1, **p}),
     "n_prompts", NAMED),
    ("make_overoptimization_world",
     lambda **p: rlhf.make_overoptimization_world(
         **{"n_prompts": 2, "n_candidates": 3, "n_styles": 1, **p}),
     "n_candidates", NAMED),
    ("make_overoptimization_world",
     lambda **p: rlhf.make_overoptimization_world(
         **{"n_prompts": 2, "n_candidates": 3, "n_styles": 1, **p}),
     "n_styles", NAMED),
    ("make_overoptimization_world",
     lambda **p: rlhf.make_overoptimization_world(
         **{"n_prompts": 2, "n_candidates": 3, "n_styles": 1, **p}),
     "random_state", (ValueError, TypeError)),
    ("OveroptimizationWorld.comparisons", _comparisons, "n_comparisons",
     NAMED),
    ("OveroptimizationWorld.comparisons", _comparisons, "random_state",
     (ValueError, TypeError)),
] + [
    (estimator, lambda _e=estimator, **p: _fit_policy(_e, **p), name, NAMED)
    for estimator, names in (
        ("PPO", ["n_iterations", "n_epochs", "n_samples", "batch_size",
                 "random_state", "verbose"]),
        ("REINFORCE", ["n_iterations", "n_samples", "batch_size",
                       "random_state", "verbose"]),
        ("DPO", ["n_iterations", "batch_size", "random_state", "verbose"]),
    )
    for name in names
]


@pytest.mark.slow
@pytest.mark.parametrize(
    "owner, call, name, errors", INTEGER_PARAMETERS,
    ids=[f"{owner}-{name}" for owner, _, name, _ in INTEGER_PARAMETERS])
def test_integer_parameters_up_to_2_64(owner, call, name, errors):
    """Every integer parameter of the estimators and functions of
    logistic, optimize, policy and overoptimization: works, or an error
    that names it (never OverflowError, MemoryError or NumPy's message)."""

    outcomes = set()

    @settings(max_examples=40, deadline=None, derandomize=True,
              database=None, suppress_health_check=list(HealthCheck))
    @given(integers())
    def run(value):
        try:
            with warnings.catch_warnings(), \
                    contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore", rlhf.ConvergenceWarning)
                call(**{name: value})
            outcomes.add("ran")
        except _Enough:
            outcomes.add("ran")
        except errors as error:
            assert f"'{name}'" in str(error) or (
                # an index table smaller than its indices names them
                name in ("n_prompts", "n_responses")
                and "demonstrations" in str(error)), str(error)
            outcomes.add("refused")

    run()
    # both sides of the checks were reached
    assert outcomes == {"ran", "refused"}


# -- one rule for real scalars ------------------------------------------------

def _policy(estimator, fit_args, **params):
    model = getattr(rlhf, estimator)(n_iterations=3, random_state=0,
                                     **params)
    return model.fit(*fit_args[0], **fit_args[1]).policy_


_PG = ((REFERENCE, REWARDS), {})
_COSTS = ((REFERENCE, REWARDS), {"costs": REWARDS})
_DPO = ((REFERENCE, COMPARISONS), {})


def _world(**params):
    return rlhf.make_overoptimization_world(
        n_prompts=2, n_candidates=3, n_styles=1, random_state=0,
        **params).gold_rewards


# (label, f(value) -> array, a value that is exact in float32 and as a
# Fraction); f is called with the value as float and in other types
REAL_PARAMETERS = [
    ("reweight-eta", lambda v: rlhf.reweight(REFERENCE, REWARDS, eta=v), 0.5),
    ("reweight-eps",
     lambda v: rlhf.reweight(REFERENCE, REWARDS, eps=v), 0.25),
    ("kl_regularized_policy-beta",
     lambda v: rlhf.kl_regularized_policy(REFERENCE, REWARDS, v), 0.5),
    ("LogisticRegression-C",
     lambda v: rlhf.LogisticRegression(C=v).fit(X, Y).coef_, 0.5),
    ("LogisticRegression-tol",
     lambda v: rlhf.LogisticRegression(tol=v).fit(X, Y).coef_, 0.25),
    ("SFT-smoothing",
     lambda v: rlhf.SFT(smoothing=v).fit(DEMONSTRATIONS).policy_, 0.5),
    ("SFT-tol", lambda v: rlhf.SFT(tol=v).fit(DEMONSTRATIONS).policy_,
     0.25),
    ("overoptimization_curves-betas",
     lambda v: rlhf.overoptimization_curves(
         REFERENCE, REWARDS, REWARDS, method="kl", betas=[v]).policies, 0.5),
    ("make_overoptimization_world-length_bonus",
     lambda v: _world(length_bonus=v), 2.0),
    ("make_overoptimization_world-length_penalty",
     lambda v: _world(length_penalty=v), 2.0),
    ("make_overoptimization_world-length_decay",
     lambda v: _world(length_decay=v), 4.0),
    ("make_overoptimization_world-temperature",
     lambda v: rlhf.make_overoptimization_world(
         n_prompts=2, n_candidates=3, temperature=v,
         random_state=0).temperature, 0.5),
    ("make_overoptimization_world-noise",
     lambda v: rlhf.make_overoptimization_world(
         n_prompts=2, n_candidates=3, noise=v, random_state=0).noise, 0.25),
] + [
    (f"{estimator}-{name}",
     lambda v, _e=estimator, _n=name, _a=args, _p=extra: _policy(
         _e, _a, **{_n: v, **_p}), value)
    for estimator, args, name, value, extra in (
        ("PPO", _PG, "beta", 0.5, {}),
        ("PPO", _PG, "clip", 0.25, {}),
        ("PPO", _PG, "learning_rate", 0.5, {}),
        ("PPO", _PG, "target_kl", 0.5, {}),
        ("PPO", _PG, "horizon", 64.0, {"target_kl": 0.1}),
        ("PPO", _COSTS, "cost_budget", 0.5, {}),
        ("PPO", _COSTS, "lambda_init", 0.5, {"cost_budget": 0.0}),
        ("PPO", _COSTS, "lambda_learning_rate", 0.5, {"cost_budget": 0.0}),
        ("REINFORCE", _PG, "beta", 0.5, {}),
        ("REINFORCE", _PG, "learning_rate", 0.5, {}),
        ("DPO", _DPO, "beta", 0.5, {}),
        ("DPO", _DPO, "learning_rate", 0.5, {}),
        ("DPO", _DPO, "label_smoothing", 0.25, {}),
    )
]
REAL_IDS = [label for label, _, _ in REAL_PARAMETERS]


@pytest.mark.parametrize("label, call, value", REAL_PARAMETERS, ids=REAL_IDS)
def test_every_real_scalar_takes_fractions_and_numpy_scalars(label, call,
                                                             value):
    """Regression: Fraction(1, 2) was a beta for kl_regularized_policy but
    a TypeError (from np.isfinite) as PPO's beta or reweight's eta.  One
    rule now: any numbers.Real but bool, used as the float it converts
    to."""
    expected = np.asarray(call(float(value)))
    fraction = Fraction(value).limit_denominator()
    kinds = [fraction, np.float64(value), np.float32(value),
             np.longdouble(value)]
    if value == int(value):
        kinds += [int(value), np.int64(value), np.uint8(value)]
    for kind in kinds:
        assert np.asarray(call(kind)).tobytes() == expected.tobytes(), kind


@pytest.mark.parametrize("label, call, value", REAL_PARAMETERS, ids=REAL_IDS)
def test_every_real_scalar_refuses_decimal_and_bool(label, call, value):
    """decimal.Decimal is not a numbers.Real (it refuses to mix with
    float) and scikit-learn's Interval(Real) refuses it too; bool is
    never a number of a parameter."""
    name = label.split("-", 1)[1]
    for bad in (Decimal(str(value)), True, np.bool_(True), "0.5"):
        with pytest.raises(ValueError, match=f"'{name}'"):
            call(bad)
    # an array is not a scalar (a list of them has the wrong shape: betas)
    with pytest.raises((ValueError, TypeError), match=f"'{name}'"):
        call(np.array([value]))


def test_a_fraction_too_small_for_a_float_is_not_positive():
    """The bounds apply to the float the computation uses."""
    with pytest.raises(ValueError, match="'beta'"):
        rlhf.kl_regularized_policy(REFERENCE, REWARDS, Fraction(1, 10**400))
    with pytest.raises(ValueError, match="'beta'"):
        rlhf.PPO(beta=Fraction(10**400, 1)).fit(REFERENCE, REWARDS)


# -- fitted attributes before fit ---------------------------------------------

FITTED = [
    (rlhf.PPO, ["policy_", "theta_", "beta_", "history_", "n_iter_",
                "lambda_"]),
    (rlhf.REINFORCE, ["policy_", "theta_", "beta_", "history_", "n_iter_"]),
    (rlhf.DPO, ["policy_", "theta_", "history_", "n_iter_"]),
    (rlhf.SFT, ["policy_", "theta_", "n_iter_"]),
    (rlhf.LogisticRegression, ["coef_", "intercept_", "classes_", "n_iter_",
                               "n_features_in_", "feature_names_in_"]),
    (rlhf.RewardModel, ["coef_"]),
    (rlhf.CostModel, ["coef_"]),
]


@pytest.mark.parametrize("cls, names", FITTED,
                         ids=[cls.__name__ for cls, _ in FITTED])
def test_fitted_attribute_before_fit_is_not_fitted_error(cls, names):
    """Regression: PPO().policy_ was a bare AttributeError."""
    model = cls()
    for name in names:
        with pytest.raises(rlhf.NotFittedError,
                           match=f"{cls.__name__} instance is not fitted "
                           f"yet: '{name}'"):
            getattr(model, name)
        with pytest.raises(AttributeError):
            getattr(model, name)
        with pytest.raises(ValueError):
            getattr(model, name)
        assert not hasattr(model, name)
        assert getattr(model, name, "default") == "default"


def test_not_fitted_error_is_sklearns_when_sklearn_is_loaded():
    exceptions = pytest.importorskip("sklearn.exceptions")
    with pytest.raises(exceptions.NotFittedError):
        rlhf.PPO().policy_
    with pytest.raises(exceptions.NotFittedError):
        rlhf.LogisticRegression().coef_


@pytest.mark.parametrize("name", ["__deepcopy__", "__setstate__",
                                  "_repr_html_", "_private_", "foo", "C",
                                  "__sklearn_is_fitted__"])
def test_other_missing_names_are_plain_attribute_errors(name):
    with pytest.raises(AttributeError) as info:
        getattr(rlhf.PPO(), name)
    assert type(info.value) is AttributeError


def test_missing_attribute_of_a_fit_is_not_a_not_fitted_error():
    """feature_names_in_ is only set for a DataFrame, lambda_ only with
    costs: once fitted, their absence is a plain AttributeError."""
    model = rlhf.LogisticRegression().fit(X, Y)
    with pytest.raises(AttributeError, match="did not set") as info:
        model.feature_names_in_
    assert not isinstance(info.value, rlhf.NotFittedError)
    ppo = rlhf.PPO(n_iterations=2).fit(REFERENCE, REWARDS)
    assert not hasattr(ppo, "lambda_")
    with pytest.raises(AttributeError, match="did not set") as info:
        ppo.lambda_
    assert not isinstance(info.value, rlhf.NotFittedError)


@pytest.mark.parametrize("cls", [rlhf.PPO, rlhf.DPO, rlhf.SFT,
                                 rlhf.LogisticRegression, rlhf.RewardModel])
def test_copy_pickle_and_clone_unaffected(cls):
    model = cls()
    for other in (copy.copy(model), copy.deepcopy(model),
                  pickle.loads(pickle.dumps(model))):
        assert type(other) is cls
        assert other.get_params() == model.get_params()
        assert not hasattr(other, "coef_") and not hasattr(other, "policy_")
    base = pytest.importorskip("sklearn.base")
    assert base.clone(model).get_params() == model.get_params()
    fitted = rlhf.LogisticRegression().fit(X, Y)
    again = pickle.loads(pickle.dumps(fitted))
    assert again.coef_.tobytes() == fitted.coef_.tobytes()


# -- NumPy scalars in messages ---------------------------------------------

@pytest.mark.parametrize("value, shown", [
    (np.float64(-0.1), "-0.1"),
    (np.float32(0.5), "0.5"),
    (np.int64(-3), "-3"),
    (np.uint64(2**64 - 1), "18446744073709551615"),
    (np.bool_(True), "True"),
    (np.str_("x"), "'x'"),
    (-0.1, "-0.1"),
    (Fraction(1, 2), "Fraction(1, 2)"),
    ({0: np.float64(-1.0), 1: 2}, "{0: -1.0, 1: 2}"),
    ([np.int64(1)], "[1]"),
    ((np.int64(1),), "(1,)"),
])
def test_format_value(value, shown):
    assert _validation.format_value(value) == shown


def _message(call):
    with pytest.raises(ValueError) as info:
        call()
    return str(info.value)


@pytest.mark.parametrize("call, shown", [
    (lambda: rlhf.PPO(beta=np.float64(-0.1)).fit(REFERENCE, REWARDS),
     "Got -0.1 instead"),
    (lambda: rlhf.DPO(learning_rate=np.float64(-0.1)).fit(
        REFERENCE, COMPARISONS), "Got -0.1 instead"),
    (lambda: rlhf.DPO(label_smoothing=np.float64(0.25), loss="hinge").fit(
        REFERENCE, COMPARISONS), "got 0.25 with"),
    (lambda: rlhf.REINFORCE(n_samples=np.int64(1)).fit(REFERENCE, REWARDS),
     "Got 1 instead"),
    (lambda: rlhf.PPO(random_state=np.int64(-1)).fit(REFERENCE, REWARDS),
     "Got -1 instead"),
    (lambda: rlhf.SFT(smoothing=np.float32(-0.5)).fit(DEMONSTRATIONS),
     "Got -0.5 instead"),
    (lambda: rlhf.LogisticRegression(C=np.float64(-1.0)).fit(X, Y),
     "Got -1.0 instead"),
    (lambda: rlhf.LogisticRegression(max_iter=np.int64(-1)).fit(X, Y),
     "Got -1 instead"),
    (lambda: rlhf.LogisticRegression(n_jobs=np.int64(1000)).fit(X, Y),
     "Got 1000 instead"),
    (lambda: rlhf.LogisticRegression(solver=np.str_("sag")).fit(X, Y),
     "Got 'sag' instead"),
    (lambda: rlhf.LogisticRegression(
        class_weight={0: np.float64(-1.0), 1: 1.0}).fit(X, Y),
     "{0: -1.0, 1: 1.0}"),
    (lambda: rlhf.LogisticRegression().fit(
        X, Y, sample_weight=-np.ones(len(Y))), "minimum of -1.0"),
    (lambda: rlhf.reweight(REFERENCE, REWARDS, eps=np.float64(-1.0)),
     "got -1.0"),
    (lambda: rlhf.reweight([0.5, -0.5], [0.0, 0.0]), "minimum of -0.5"),
    (lambda: rlhf.kl_regularized_policy([1.5, -0.5], [0.0, 0.0], 1.0),
     "minimum of -0.5"),
    (lambda: rlhf.kl_regularized_policy(REFERENCE, REWARDS, np.float64(0.0)),
     "Got 0.0 instead"),
    (lambda: rlhf.best_of_n_policy(REFERENCE, REWARDS, np.int64(0)),
     "Got 0 instead"),
    (lambda: rlhf.overoptimization_curves(
        REFERENCE, REWARDS, REWARDS, n_values=[np.int64(0)]),
     "Got 0 instead"),
    (lambda: rlhf.make_overoptimization_world(noise=np.float64(2.0)),
     "Got 2.0 instead"),
])
def test_messages_show_numpy_scalars_as_numbers(call, shown):
    """Regression: NumPy 2 scalars printed as np.float64(-0.1) in
    messages written with {value!r}."""
    message = _message(call)
    assert shown in message, message
    assert "np." not in message, message
