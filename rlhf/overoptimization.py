"""Reward over-optimisation: optimise a learned reward too hard and the true
reward falls.

Gao, Schulman & Hilton (2023, "Scaling laws for reward model
overoptimization") train a proxy reward model on preferences labelled by a
"gold" reward model and then optimise a policy against the proxy, by
best-of-n sampling or by RL with a KL penalty.  As the policy moves away
from the reference (measured by ``KL(pi || pi_ref)``) the proxy reward keeps
rising while the gold reward rises, peaks and falls: Goodhart's law.  The
proxy was fitted where the reference puts its mass; strong optimisation
goes where the reference rarely goes, which is where the proxy's errors are
largest.

- :func:`overoptimization_curves`: gold and proxy reward against KL for
  best-of-n (``n = 1, 2, ...``), the KL-regularised optimum (``beta``
  decreasing) or PPO;
- :func:`make_overoptimization_world`: a world in which it happens, with a
  gold reward whose length bonus saturates and then penalises rambling,
  a reference that writes short answers, and a proxy fitted on simulated
  preferences.
"""
import dataclasses
from typing import Any, Optional, Tuple, Union

import numpy as np

from ._typing import ArrayLike, FloatArray, RandomState
from ._validation import (MAX_TABLE_ENTRIES, _as_float_array, _check_finite,
                          check_option, check_scalar, format_value)
from .optimize import PPO
from .policy import (_check_policy_table, best_of_n_policy, kl_divergence,
                     kl_regularized_policy)
from .preferences import (Comparisons, World, _check_random_state,
                          make_world, simulate_preferences)
from .reward import RewardModel

__all__ = ["OveroptimizationCurves", "OveroptimizationWorld",
           "make_overoptimization_world", "overoptimization_curves"]

_OWNER = "overoptimization_curves"
_DEFAULT_N_VALUES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


# --------------------------------------------------------------------------
# curves


@dataclasses.dataclass(frozen=True, repr=False, eq=False)
class OveroptimizationCurves:
    """Gold and proxy reward of a family of policies optimised on the proxy.

    Attributes
    ----------
    method : {'best-of-n', 'kl', 'ppo'}
    parameter : {'n', 'beta'}
        Name of the optimisation strength that indexes the points.
    values : ndarray of shape (n_points,)
        Its values (``n`` for best-of-n, ``beta`` otherwise), in the order
        given.
    kl : ndarray of shape (n_points,)
        ``KL(pi || pi_ref)``, the mean over prompts.
    gold, proxy : ndarray of shape (n_points,)
        ``E_pi[gold]`` and ``E_pi[proxy]``, means over prompts.
    policies : ndarray of shape (n_points, n_prompts, n_responses)
        The policy of each point ((n_points, n_responses) when the
        reference was one distribution).
    reference_gold, reference_proxy : float
        The expectations under the reference policy (KL 0).

    Examples
    --------
    Best-of-n on a proxy reward learned from comparisons: the proxy keeps
    rising with n, the gold reward peaks and falls (Gao et al. 2022):

    >>> import numpy as np, rlhf
    >>> world = rlhf.make_overoptimization_world(n_prompts=16,
    ...                                          n_candidates=32,
    ...                                          random_state=0)
    >>> model, proxy = world.fit_proxy(world.comparisons(2000,
    ...                                                  random_state=0))
    >>> curves = rlhf.overoptimization_curves(
    ...     world.reference_policy, world.gold_rewards, proxy,
    ...     n_values=[1, 2, 4, 16, 64, 256, 1024])
    >>> curves.peak_value
    64
    >>> bool(np.all(np.diff(curves.proxy) > 0))
    True
    >>> bool(curves.gold[-1] < curves.peak_gold)
    True
    """

    method: str
    parameter: str
    values: np.ndarray
    kl: np.ndarray
    gold: np.ndarray
    proxy: np.ndarray
    policies: np.ndarray
    reference_gold: float
    reference_proxy: float

    @property
    def best(self) -> int:
        """Index of the point with the largest gold reward."""
        return int(np.argmax(self.gold))

    @property
    def peak_kl(self) -> float:
        """KL of the point with the largest gold reward."""
        return float(self.kl[self.best])

    @property
    def peak_gold(self) -> float:
        """The largest gold reward on the curve."""
        return float(self.gold[self.best])

    @property
    def peak_value(self) -> Union[int, float]:
        """``n`` or ``beta`` of the point with the largest gold reward."""
        value = self.values[self.best]
        return int(value) if self.parameter == "n" else float(value)

    @property
    def sqrt_kl(self) -> FloatArray:
        """``sqrt(KL)``, the axis of Gao et al.'s plots."""
        return np.sqrt(self.kl)

    def plot(self, *, sqrt_kl: bool = True, ax: Any = None) -> Any:
        """Proxy and gold reward against (the square root of) KL, with the
        gold peak marked; see :func:`rlhf.plot.overoptimization`.

        Returns
        -------
        matplotlib Axes
        """
        from .plot import overoptimization
        ax = overoptimization(self.kl, self.gold, self.proxy,
                              sqrt_kl=sqrt_kl, ax=ax)
        ax.set_title(f"{self.method}: gold peak at KL {self.peak_kl:.3g} "
                     f"({self.parameter} = {self.peak_value:.3g})")
        return ax

    def fit_scaling_law(self) -> Tuple[float, float]:
        """Fit Gao et al.'s functional form of the gold reward.

        With ``d = sqrt(KL)`` and ``R(d) = gold - gold(reference)``, Gao et
        al. (2023, eqs. 1-2) find ``R_bon(d) = d (alpha - beta d)`` for
        best-of-n and ``R_RL(d) = d (alpha - beta log d)`` for RL.  Both
        are linear in ``(alpha, beta)`` after dividing by d, so the fit is
        ordinary least squares of ``R / d`` on ``(1, -d)`` or
        ``(1, -log d)`` over the points with ``d > 0``.

        Returns
        -------
        alpha, beta : float
            The best-of-n form for ``method='best-of-n'``, the RL form
            otherwise.  Under the best-of-n form the gold reward peaks at
            ``d = alpha / (2 beta)``; under the RL form at ``d = exp(alpha
            / beta - 1)``.
        """
        d = np.sqrt(self.kl)
        keep = d > 1e-12
        if np.count_nonzero(keep) < 2:
            raise ValueError("fit_scaling_law needs at least two points with "
                             "KL > 0.")
        d = d[keep]
        target = (self.gold[keep] - self.reference_gold) / d
        slope = d if self.method == "best-of-n" else np.log(d)
        design = np.column_stack([np.ones_like(d), -slope])
        (alpha, beta), *_ = np.linalg.lstsq(design, target, rcond=None)
        return float(alpha), float(beta)

    def __repr__(self):
        return (f"OveroptimizationCurves(method={self.method!r}, "
                f"n_points={self.kl.size}, peak at {self.parameter}="
                f"{self.peak_value:.4g}: KL {self.peak_kl:.3f}, gold "
                f"{self.peak_gold:.3f}; at the last point: KL "
                f"{self.kl[-1]:.3f}, gold {self.gold[-1]:.3f}, proxy "
                f"{self.proxy[-1]:.3f})")


def _table(values, name, shape):
    arr = _as_float_array(values, name)
    if arr.shape != shape:
        raise ValueError(
            f"The '{name}' parameter of {_OWNER} must have the shape of "
            f"reference_policy {shape}; got {arr.shape}.")
    _check_finite(arr, name)
    return np.ascontiguousarray(arr)


def _strengths(values, name, default, kind):
    """A 1-d array of n values (int64 >= 1) or betas (floats > 0)."""
    if values is None:
        values = default
    if isinstance(values, (str, bytes)) or np.ndim(values) != 1:
        raise TypeError(
            f"The '{name}' parameter of {_OWNER} must be a 1-dimensional "
            f"sequence of numbers. Got {format_value(values)} instead.")
    if len(values) == 0:
        raise ValueError(f"The '{name}' parameter of {_OWNER} is empty.")
    if kind == "int":
        # the values are kept as int64 (best-of-n is greedy long before)
        checked = [check_scalar(value, name, _OWNER, kind="int", low=1,
                                high=np.iinfo(np.int64).max)
                   for value in values]
        return np.array(checked, dtype=np.int64)
    return np.array([check_scalar(value, name, _OWNER, low=0.0,
                                  low_open=True, high=np.inf, high_open=True)
                     for value in values], dtype=np.float64)


def overoptimization_curves(
        reference_policy: ArrayLike,
        gold_rewards: ArrayLike,
        proxy_rewards: ArrayLike,
        *,
        method: str = "best-of-n",
        n_values: Optional[ArrayLike] = None,
        betas: Optional[ArrayLike] = None,
        ppo: Optional[PPO] = None,
        random_state: RandomState = None,
) -> "OveroptimizationCurves":
    """Gold and proxy reward against KL as a policy optimises the proxy.

    Each point is a policy optimised on the proxy reward only; the gold
    reward is never seen by the optimiser, it only scores the result (Gao,
    Schulman & Hilton 2023, "Scaling laws for reward model
    overoptimization"):

    - ``'best-of-n'``: draw n responses from the reference and keep the one
      the *proxy* likes best; the exact distribution of the kept response
      (:func:`rlhf.best_of_n_policy` on the proxy rewards), for each n in
      ``n_values``;
    - ``'kl'``: the optimum of ``E_pi[proxy] - beta KL(pi || pi_ref)``,
      ``pi ∝ pi_ref exp(proxy / beta)`` (:func:`rlhf.kl_regularized_policy`),
      for each beta in ``betas``;
    - ``'ppo'``: the policy :class:`rlhf.PPO` reaches on the proxy with each
      beta in ``betas`` (the KL penalty as RLHF trains it; with sampling
      and a finite budget it need not reach the optimum).

    Every point reports ``KL(pi || pi_ref)``, ``E_pi[gold]`` and
    ``E_pi[proxy]``, exact expectations under the policy, averaged over
    prompts.

    Parameters
    ----------
    reference_policy : array-like of shape (n_prompts, n_responses) or \
(n_responses,)
        The reference (e.g. SFT) policy: non-negative, rows summing to 1.
    gold_rewards : array-like of the same shape
        The true reward, used only to evaluate.
    proxy_rewards : array-like of the same shape
        The learned reward that the policies optimise.
    method : {'best-of-n', 'kl', 'ppo'}, default='best-of-n'
    n_values : sequence of int >= 1, default=None
        The n of best-of-n, in the order the points should have;
        default 1, 2, 4, ..., 1024, 4096.  Only with ``'best-of-n'``.
    betas : sequence of float > 0, default=None
        KL coefficients, in proxy-reward units; default 20 values from 100
        down to 0.01 (geometric).  Only with ``'kl'`` and ``'ppo'``.
    ppo : rlhf.PPO, default=None
        With ``'ppo'``: the estimator whose parameters every fit uses, with
        its ``beta`` replaced by each value of ``betas`` (it is not modified
        itself).  Default ``PPO(exact=True, n_iterations=200)``: PPO's
        updates on exact expectations, no sampling noise.  Pass a sampled
        PPO (``exact=False``) to see what sampling does; with a small beta
        and a short run it may stop short of the optimum.
    random_state : None, int or numpy.random.Generator, default=None
        With ``'ppo'``: seeds one fit per beta (when None, each fit uses
        the ``random_state`` of ``ppo``).  The other methods are exact.

    Returns
    -------
    OveroptimizationCurves
        ``kl``, ``gold``, ``proxy`` per point, the gold peak (``best``,
        ``peak_kl``, ``peak_gold``), the policies, ``plot()`` and
        ``fit_scaling_law()``.

    Examples
    --------
    >>> import rlhf
    >>> reference = [0.6, 0.3, 0.1]
    >>> gold = [0.0, 1.0, -1.0]     # the true reward
    >>> proxy = [0.0, 1.0, 2.0]     # the learned one, wrong on a rare answer
    >>> curves = rlhf.overoptimization_curves(reference, gold, proxy,
    ...                                       n_values=[1, 2, 8, 64])
    >>> curves.proxy.round(3)
    array([0.5  , 0.83 , 1.553, 1.999])
    >>> curves.gold.round(3)
    array([ 0.2  ,  0.26 , -0.156, -0.998])
    >>> curves.peak_value
    2
    """
    check_option(method, "method", _OWNER, ["best-of-n", "kl", "ppo"])
    _check_random_state(random_state, _OWNER)
    arr = np.asarray(reference_policy)
    single = arr.ndim == 1
    reference = _check_policy_table(arr[None, :] if single else arr,
                                    "reference_policy", _OWNER)
    shape = reference.shape
    gold = _table(np.asarray(gold_rewards)[None, :] if single and
                  np.ndim(gold_rewards) == 1 else gold_rewards,
                  "gold_rewards", shape)
    proxy = _table(np.asarray(proxy_rewards)[None, :] if single and
                   np.ndim(proxy_rewards) == 1 else proxy_rewards,
                   "proxy_rewards", shape)
    if method == "best-of-n":
        if betas is not None:
            raise ValueError(f"The 'betas' parameter of {_OWNER} is for "
                             "method='kl' or 'ppo'; best-of-n takes "
                             "n_values.")
        if ppo is not None:
            raise ValueError(f"The 'ppo' parameter of {_OWNER} is only used "
                             "with method='ppo'.")
        values = _strengths(n_values, "n_values", _DEFAULT_N_VALUES, "int")
        policies = np.stack([best_of_n_policy(reference, proxy, int(n))
                             for n in values])
        parameter = "n"
    else:
        if n_values is not None:
            raise ValueError(f"The 'n_values' parameter of {_OWNER} is for "
                             "method='best-of-n'; the KL-penalised methods "
                             "take betas.")
        values = _strengths(betas, "betas",
                            tuple(np.geomspace(100.0, 0.01, 20)), "float")
        parameter = "beta"
        if method == "kl":
            if ppo is not None:
                raise ValueError(f"The 'ppo' parameter of {_OWNER} is only "
                                 "used with method='ppo'.")
            policies = np.stack([kl_regularized_policy(reference, proxy,
                                                       float(beta))
                                 for beta in values])
        else:
            policies = _ppo_policies(reference, proxy, values, ppo,
                                     random_state)
    kl = np.atleast_1d(np.asarray(
        [np.mean(kl_divergence(pi, reference)) for pi in policies]))
    # best-of-n and the closed form keep pi = 0 where pi_ref = 0, so the
    # divergence is finite; a tiny negative from rounding is clipped
    kl = np.maximum(kl, 0.0)
    gold_values = np.einsum("pij,ij->pi", policies, gold).mean(axis=1)
    proxy_values = np.einsum("pij,ij->pi", policies, proxy).mean(axis=1)
    if single:
        policies = policies[:, 0, :]
    return OveroptimizationCurves(
        method, parameter, values, kl, gold_values, proxy_values, policies,
        float((reference * gold).sum(axis=1).mean()),
        float((reference * proxy).sum(axis=1).mean()))


def _ppo_policies(reference, proxy, betas, ppo, random_state):
    if ppo is None:
        ppo = PPO(exact=True, n_iterations=200)
    elif not isinstance(ppo, PPO):
        raise TypeError(
            f"The 'ppo' parameter of {_OWNER} must be an rlhf.PPO instance "
            f"or None. Got {type(ppo).__name__} instead.")
    if ppo.target_kl is not None:
        raise ValueError(
            f"The 'ppo' parameter of {_OWNER} must have target_kl=None: the "
            "adaptive controller would move beta away from the values of "
            "the curve.")
    params = ppo.get_params()
    if random_state is not None:
        rng = _check_random_state(random_state, _OWNER)
        seeds = rng.integers(0, 2 ** 63, size=len(betas))
    else:
        seeds = [params["random_state"]] * len(betas)
    out = []
    for beta, seed in zip(betas, seeds):
        params.update(beta=float(beta), random_state=seed)
        out.append(PPO(**params).fit(reference, proxy).policy_)
    return np.stack(out)


# --------------------------------------------------------------------------
# a world where it happens


@dataclasses.dataclass(frozen=True, repr=False, eq=False)
class OveroptimizationWorld:
    """A reference policy, a gold reward and what a proxy learns from.

    Attributes
    ----------
    world : rlhf.World
        Prompts with their candidate responses; ``world.features`` are
        (helpfulness, length, style_0, ...) in [0, 1], and
        ``world.rewards`` the linear part of the gold reward,
        ``helpfulness + length_bonus * length``.
    reference_policy : ndarray of shape (n_prompts, n_candidates)
        ``pi_ref ∝ exp(-length_decay * length)``: short answers.
    gold_rewards : ndarray of shape (n_prompts, n_candidates)
        ``helpfulness + length_bonus * length - length_penalty * length^2``.
    proxy_features : ndarray of shape (n_responses, n_proxy_features)
        What the proxy sees: (helpfulness, length, styles) for
        ``'linear'``; (helpfulness, length, length^2, styles) for
        ``'quadratic'``.
    proxy_feature_names : tuple of str
    temperature, noise : float
        The simulated annotators' Bradley-Terry temperature and lapse rate.

    Examples
    --------
    >>> import rlhf
    >>> world = rlhf.make_overoptimization_world(n_prompts=16,
    ...                                          n_candidates=32,
    ...                                          random_state=0)
    >>> world.reference_policy.shape, world.gold_rewards.shape
    ((16, 32), (16, 32))
    >>> world.proxy_feature_names[:2]
    ('helpfulness', 'length')
    >>> len(world.comparisons(100, random_state=0))
    100
    """

    world: World
    reference_policy: np.ndarray
    gold_rewards: np.ndarray
    proxy_features: np.ndarray
    proxy_feature_names: tuple
    temperature: float
    noise: float

    def comparisons(self, n_comparisons: int, *,
                    random_state: RandomState = None) -> Comparisons:
        """Preferences between two responses of the reference, labelled by
        annotators who know the gold reward.

        Each comparison picks a prompt uniformly, draws two different
        responses from ``pi_ref`` (without replacement) and asks
        :func:`rlhf.simulate_preferences` with this world's temperature and
        lapse rate, as Gao et al. label their proxy's data with the gold
        model.

        Parameters
        ----------
        n_comparisons : int >= 1
        random_state : None, int or numpy.random.Generator

        Returns
        -------
        rlhf.Comparisons
            Item indices into ``world.features`` (prompt p's response k is
            item ``p * n_candidates + k``).
        """
        owner = "OveroptimizationWorld.comparisons"
        # pairs of shape (n_comparisons, 2), at most MAX_TABLE_ENTRIES
        n_comparisons = check_scalar(n_comparisons, "n_comparisons", owner,
                                     kind="int", low=1,
                                     high=MAX_TABLE_ENTRIES // 2)
        rng = _check_random_state(random_state, owner)
        n_prompts, n_candidates = self.reference_policy.shape
        prompts = rng.integers(0, n_prompts, size=n_comparisons)
        pairs = np.empty((n_comparisons, 2), dtype=np.int64)
        for i, p in enumerate(prompts):
            pairs[i] = self.world.candidates[p, rng.choice(
                n_candidates, 2, replace=False, p=self.reference_policy[p])]
        return simulate_preferences(self.gold_rewards.ravel(), pairs,
                                    temperature=self.temperature,
                                    noise=self.noise, random_state=rng)

    def fit_proxy(self, comparisons: Comparisons, *,
                  C: float = 10.0) -> Tuple[RewardModel, FloatArray]:
        """The proxy reward: a :class:`rlhf.RewardModel` on
        ``proxy_features`` fitted to the comparisons.

        Parameters
        ----------
        comparisons : rlhf.Comparisons
            E.g. from :meth:`comparisons`.
        C : float, default=10.0
            Inverse L2 penalty of the reward model.

        Returns
        -------
        model : rlhf.RewardModel
        proxy_rewards : ndarray of shape (n_prompts, n_candidates)
        """
        if not isinstance(comparisons, Comparisons):
            raise TypeError(
                "The 'comparisons' parameter of OveroptimizationWorld."
                "fit_proxy must be an rlhf.Comparisons. Got "
                f"{type(comparisons).__name__} instead.")
        model = RewardModel(C=C).fit(self.proxy_features, comparisons)
        rewards = model.predict(self.proxy_features)
        return model, rewards.reshape(self.reference_policy.shape)

    def __repr__(self):
        n_prompts, n_candidates = self.reference_policy.shape
        return (f"OveroptimizationWorld(n_prompts={n_prompts}, "
                f"n_candidates={n_candidates}, proxy_feature_names="
                f"{self.proxy_feature_names})")


def make_overoptimization_world(
        n_prompts: int = 64,
        n_candidates: int = 64,
        n_styles: int = 6,
        *,
        proxy_features: str = "linear",
        length_bonus: float = 4.0,
        length_penalty: float = 4.0,
        length_decay: float = 8.0,
        temperature: float = 0.3,
        noise: float = 0.0,
        random_state: RandomState = None,
) -> "OveroptimizationWorld":
    """A world in which optimising a learned reward hard lowers the true
    one.

    Responses have a helpfulness, a length and ``n_styles`` style features,
    all uniform in [0, 1] (drawn by :func:`rlhf.make_world`).  The gold
    reward likes helpfulness and some length, up to a point:

        ``gold = helpfulness + length_bonus * length
        - length_penalty * length^2``

    (with the defaults the length bonus is largest at length 1/2 and gone
    at length 1: rambling).  Styles do not matter to it.  The reference
    writes short answers, ``pi_ref ∝ exp(-length_decay * length)``, so
    preference data drawn from it shows mostly short answers, where longer
    is better.  A proxy fitted on such data
    (:meth:`OveroptimizationWorld.fit_proxy`) learns "longer is better";
    with ``proxy_features='linear'`` it cannot represent the saturation at
    all (misspecified), with
    ``'quadratic'`` it can, but the data hardly constrain the curvature
    where the reference rarely goes.  With few comparisons it also gives
    weight to the styles by chance.  Both errors are largest on long
    answers, which the reference rarely writes and strong optimisation
    seeks out (Goodhart's law; Gao et al. 2023).

    Parameters
    ----------
    n_prompts : int >= 1, default=64
    n_candidates : int >= 2, default=64
        Responses per prompt.
    n_styles : int >= 0, default=6
        Features the gold reward ignores.  The features hold
        ``n_prompts * n_candidates * (2 + n_styles)`` values, at most
        ``2**31``.
    proxy_features : {'linear', 'quadratic'}, default='linear'
    length_bonus, length_penalty : float >= 0, default=4.0
    length_decay : float >= 0, default=8.0
    temperature : float >= 0, default=0.3
        The annotators' Bradley-Terry temperature (label noise).
    noise : float in [0, 1], default=0.0
        Their lapse rate.
    random_state : None, int or numpy.random.Generator, default=None

    Returns
    -------
    OveroptimizationWorld

    Examples
    --------
    >>> import rlhf
    >>> problem = rlhf.make_overoptimization_world(random_state=0)
    >>> problem.reference_policy.shape
    (64, 64)
    """
    owner = "make_overoptimization_world"
    n_styles = check_scalar(n_styles, "n_styles", owner, kind="int", low=0)
    check_option(proxy_features, "proxy_features", owner,
                 ["linear", "quadratic"])
    length_bonus, length_penalty, length_decay, temperature = (
        check_scalar(value, name, owner, low=0.0, high=np.inf,
                     high_open=True)
        for name, value in (("length_bonus", length_bonus),
                            ("length_penalty", length_penalty),
                            ("length_decay", length_decay),
                            ("temperature", temperature)))
    noise = check_scalar(noise, "noise", owner, low=0.0, high=1.0)
    n_prompts = check_scalar(n_prompts, "n_prompts", owner, kind="int",
                             low=1)
    n_candidates = check_scalar(n_candidates, "n_candidates", owner,
                                kind="int", low=2)
    if n_prompts * n_candidates * (2 + n_styles) > MAX_TABLE_ENTRIES:
        raise ValueError(
            f"The features of {owner} would hold n_prompts x n_candidates x "
            f"(2 + n_styles) = {n_prompts} x {n_candidates} x "
            f"{2 + n_styles} values, more than {MAX_TABLE_ENTRIES}; lower "
            "'n_prompts', 'n_candidates' or 'n_styles'.")
    rng = _check_random_state(random_state, owner)
    names = ("helpfulness", "length") + tuple(
        f"style_{j}" for j in range(n_styles))
    weights = np.r_[1.0, length_bonus, np.zeros(n_styles)]
    world = make_world(n_prompts, n_candidates, feature_names=names,
                       weights=weights, random_state=rng)
    length = world.features[:, 1]
    gold = (world.rewards - length_penalty * length ** 2).reshape(
        n_prompts, n_candidates)
    logits = (-length_decay * length).reshape(n_prompts, n_candidates)
    reference = np.exp(logits - logits.max(axis=1, keepdims=True))
    reference /= reference.sum(axis=1, keepdims=True)
    if proxy_features == "quadratic":
        features = np.column_stack([world.features[:, :2], length ** 2,
                                    world.features[:, 2:]])
        feature_names = names[:2] + ("length^2",) + names[2:]
    else:
        features = world.features.copy()
        feature_names = names
    return OveroptimizationWorld(world, reference, gold, features,
                                 feature_names, temperature, noise)
