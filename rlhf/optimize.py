"""Policy optimisation near a reference on a contextual bandit.

Prompts x, each with K candidate responses y, a reference policy
``pi_ref(y|x)`` over them and rewards ``r(x, y)``: the setting of RLHF's
policy-optimisation stage, small enough that every algorithm can be run in
seconds and compared with the exact answer of the KL-regularised problem,
``pi*(y|x) ∝ pi_ref(y|x) exp(r(x, y) / beta)``
(:func:`rlhf.kl_regularized_policy`).

Policies start at the reference and are parametrised relative to it:

- ``'tabular'``: ``logits = log pi_ref + theta`` with one free value per
  prompt and response (``theta`` of shape (n_prompts, K));
- ``'linear'``: ``logits = log pi_ref + phi(x, y) . theta`` with response
  features ``phi`` of shape (n_prompts, K, n_features), so what is learnt
  about one response carries over to others with similar features.  The
  exact optimum is reachable when ``r / beta`` lies in the span of the
  features (plus a constant per prompt).

Training loops are plain Python over the C kernels of ``rlhf._core`` (the
same loops run on their NumPy twins in ``rlhf._reference``, which the tests
and the benchmark use).
"""
import math
import numbers
from typing import (Any, Callable, Dict, List, Optional, Sequence, TypeVar,
                    Union)

import numpy as np

from . import _core
from ._base import ParamsMixin
from ._typing import ArrayLike, RandomState
from ._summary import Summary, format_columns, format_number
from ._validation import (MAX_TABLE_ENTRIES, _as_float_array, _check_finite,
                          check_is_fitted, check_option, check_sample_weight,
                          check_scalar, format_value, kernel_max_iter)
from . import _lm_rl, _token_rl
from ._progress import Progress, check_progress
from ._threads import AdaptiveThreads
from .tinylm import TinyLM
from .policy import _check_policy_table, _check_rewards
from .sequences import SequencePolicy

__all__ = ["DPO", "PPO", "REINFORCE", "SFT"]

_KL_KINDS = {"k1": 1, "k3": 3}
_BASELINES = {"mean": 0, "rloo": 1, "grpo": 2}
_DPO_LOSSES = {"sigmoid": 0, "robust": 1, "hinge": 2, "ipo": 3}
_ADAM = (0.9, 0.999, 1e-8)


def _random_generator(random_state, owner):
    if random_state is None or isinstance(random_state, np.random.Generator):
        return np.random.default_rng(random_state)
    if isinstance(random_state, numbers.Integral) and not isinstance(
            random_state, bool) and random_state >= 0:
        return np.random.default_rng(int(random_state))
    raise ValueError(
        f"The 'random_state' parameter of {owner} must be None, a "
        f"non-negative int or a numpy.random.Generator. Got "
        f"{format_value(random_state)} instead.")


def _log_reference(reference):
    with np.errstate(divide="ignore"):
        return np.log(reference)


PolicyLike = Union[ArrayLike, SequencePolicy, TinyLM]
"""A reference policy: a table (n_prompts, n_responses), a token-level
SequencePolicy or a TinyLM."""
RewardsLike = Union[ArrayLike, Callable[..., Any]]
"""Rewards as a table, or a function of what the policy samples."""
_Estimator = TypeVar("_Estimator", bound="_PolicyGradient")

class _Parametrisation:
    """logits = log pi_ref + theta (tabular) or + features @ theta
    (linear); chain() maps a gradient in logits to one in theta."""

    def __init__(self, kind, ref_logp, features, owner):
        self.kind = kind
        self.ref_logp = ref_logp
        n, k = ref_logp.shape
        if kind == "linear":
            if features is None:
                raise ValueError(
                    f"{owner} with policy='linear' needs features of shape "
                    f"({n}, {k}, n_features); got None.")
            features = _as_float_array(features, "features")
            if features.ndim != 3 or features.shape[:2] != (n, k) or \
                    features.shape[2] < 1:
                raise ValueError(
                    f"features of {owner} must have shape ({n}, {k}, "
                    f"n_features); got {features.shape}.")
            _check_finite(features, "features")
            self.features = np.ascontiguousarray(features)
            self.flat = self.features.reshape(n * k, -1)
            self.shape = (features.shape[2],)
        else:
            if features is not None:
                raise ValueError(
                    f"features of {owner} are only used with "
                    "policy='linear'; got features with policy='tabular'.")
            self.features = None
            self.shape = (n, k)

    def initial(self):
        return np.zeros(self.shape)

    def logits(self, theta, out=None):
        if self.kind == "linear":
            # an overflow to inf is reported by _check_diverged
            with np.errstate(over="ignore", invalid="ignore"):
                # einsum, not BLAS: the sums keep one order whatever the
                # number of BLAS threads, so fits are the same bits
                scores = np.einsum("ij,j->i", self.flat, theta)
                return np.add(self.ref_logp,
                              scores.reshape(self.ref_logp.shape), out=out)
        return np.add(self.ref_logp, theta, out=out)

    def chain(self, grad_logits):
        if self.kind == "linear":
            with np.errstate(over="ignore", invalid="ignore"):
                return np.einsum("i,ij->j", grad_logits.reshape(-1),
                                 self.flat)
        return grad_logits


def _check_diverged(logits, est, iteration):
    """A clear error when a step left the policy's logits NaN or +inf
    (a learning rate far too large for the problem); -inf is a response
    the reference never gives."""
    if not (logits < np.inf).all():
        owner = type(est).__name__
        raise ValueError(
            f"{owner} diverged in iteration {iteration + 1}: the policy's "
            "logits are no longer finite. Lower the 'learning_rate' "
            f"parameter (got {format_value(est.learning_rate)}) or rescale "
            "the rewards "
            "and the features.")
    return logits


def _check_second_moment(v, est, iteration):
    """Adam's running mean of squared gradients overflows for gradients
    beyond ~1e154 (rewards or features near the float range); the
    coordinate would then never move again (a step of m / inf = 0)."""
    if not np.isfinite(v).all():
        owner = type(est).__name__
        raise ValueError(
            f"{owner}: in iteration {iteration + 1} a squared gradient "
            "overflowed (gradients beyond 1e154); rescale the rewards or "
            "the features.")


def _check_common(est, owner):
    check_option(est.policy, "policy", owner, ["tabular", "linear"])
    _check_positive_finite(est.learning_rate, "learning_rate", owner)
    check_scalar(est.n_iterations, "n_iterations", owner, kind="int", low=1)
    check_option(est.lr_schedule, "lr_schedule", owner,
                 ["linear", "constant"])
    check_scalar(est.verbose, "verbose", owner, kind="int", low=0)
    check_progress(est.progress, owner)


def _check_positive_finite(value, name, owner):
    """value as a float in (0, inf)."""
    return check_scalar(value, name, owner, low=0.0, low_open=True,
                        high=np.inf, high_open=True)


def _check_batch_size(est, owner):
    if est.batch_size is not None:
        check_scalar(est.batch_size, "batch_size", owner, kind="int", low=1)


def _batch(est, n):
    """Rows per minibatch: batch_size (any int >= 1), at most n."""
    return n if est.batch_size is None else min(int(est.batch_size), n)


def _table_words(n_prompts, n_responses):
    return (f"a table of {n_prompts} prompt{'s' * (n_prompts != 1)} x "
            f"{n_responses} response{'s' * (n_responses != 1)}")


def _facts(policy, n_iterations, exact, start):
    """What summary() needs besides history_: the policy's description,
    the iterations asked for, whether history_'s statistics are exact (of
    the policy after each iteration) or estimated from the iteration's
    samples, and the statistics at the reference when known exactly."""
    return {"policy": policy, "n_iterations": int(n_iterations),
            "exact": bool(exact), "start": start}


def _dpo_start(loss_kind, beta, smoothing):
    """DPO's statistics at the reference: every log-ratio is 0 there, so
    the loss is the kernel's at d = 0 and no comparison is ranked right
    (the accuracy counts d > 0)."""
    loss = _core.dpo_loss_grad(np.zeros((1, 2)), np.zeros((1, 2)),
                               np.array([[0, 0, 1]], dtype=np.int64),
                               np.ones(1), beta, loss_kind, smoothing)[0]
    return {"loss": float(loss), "chosen_log_ratio": 0.0,
            "rejected_log_ratio": 0.0, "margin": 0.0, "accuracy": 0.0}


class _Summarised:
    """summary() of a fitted estimator (its result shows itself as text or,
    in Jupyter, as HTML)."""

    _fitted_attribute = "history_"

    def _summary(self) -> Summary:
        raise NotImplementedError

    def summary(self) -> "Summary":
        """What the fit did, in a table: start and end of what
        ``history_`` records, the iterations and how the fit ended.

        Returns
        -------
        Summary
            ``print`` it, or leave it at the end of a notebook cell; its
            ``table`` attribute maps each row's name to its (start, end)
            numbers.
        """
        check_is_fitted(self, self._fitted_attribute)
        return self._summary()

    def _history_table(self, rows):
        """(columns, formatted rows, numbers) of the rows (key, label) of
        history_ present in this fit: start, end, change and the standard
        deviation over the last tenth of the iterations."""
        facts, history = self._facts, self.history_
        start = facts["start"] or {}
        n = len(next(iter(history.values())))
        tail = max(1, n // 10)
        table, cells = {}, []
        for key, label in rows:
            if key not in history or n == 0:
                continue
            values = history[key]
            first = start.get(key, float(values[0]))
            last = float(values[-1])
            sd = float(np.std(values[-tail:])) if tail > 1 else math.nan
            table[key] = (first, last)
            cells.append((label, [first, last, last - first, sd]))
        formatted = []
        for label, values in cells:
            # one number of decimals along a row, set by its largest value
            same = [c[0] for c in format_columns(*([v] for v in values[:3]))]
            sd = "-" if math.isnan(values[3]) else format_number(values[3], 2)
            formatted.append((label, same + [sd]))
        columns = ["start", "end", "change", "sd, last 10%"]
        return columns, formatted, table

    def _ending(self):
        """(iterations text, how it ended) of this fit."""
        done = int(self.n_iter_)
        asked = self._facts["n_iterations"]
        if done >= asked:
            return f"{done} of {asked}", "completed"
        why = self.__dict__.get("_stopped_by")
        how = ("interrupted (Ctrl-C)" if why == "KeyboardInterrupt" else
               f"stopped by {why}" if why else "stopped early")
        return f"{done} of {asked}", how


class _PolicyGradient(_Summarised, ParamsMixin):
    """The sampling loop shared by PPO and REINFORCE.

    One iteration: sample n_samples responses per prompt from the current
    policy (or, with exact=True, take every response weighted by its
    probability), score them, turn scores into advantages, then take
    n_epochs passes of Adam steps on the surrogate loss over minibatches of
    prompts.  With costs (PPO's ``cost_budget``) the iteration scores
    ``r - lambda c`` and lambda follows dual ascent.
    """

    _kernels = _core  # the NumPy twins in rlhf._reference run the same loop

    def _clip_value(self):
        return np.inf

    def _epochs(self):
        return 1

    def _baseline(self):
        return "rloo" if self.n_samples > 1 else "mean"

    def _validate(self):
        owner = type(self).__name__
        _check_common(self, owner)
        _check_positive_finite(self.beta, "beta", owner)
        check_option(self.kl_estimator, "kl_estimator", owner, ["k1", "k3"])
        check_option(self.kl_in_reward, "kl_in_reward", owner, [True, False])
        check_option(self.exact, "exact", owner, [True, False])
        check_scalar(self.n_samples, "n_samples", owner, kind="int", low=1)
        _check_batch_size(self, owner)

    def fit(self: _Estimator, reference_policy: PolicyLike,
            rewards: RewardsLike, features: Optional[ArrayLike] = None,
            costs: Optional[RewardsLike] = None, *,
            prompts: Optional[Sequence[str]] = None,
            prompts_per_iteration: int = 16,
            max_new_tokens: Optional[int] = None) -> _Estimator:
        """Optimise the policy from the reference.

        Parameters
        ----------
        reference_policy : array-like of shape (n_prompts, n_responses) \
or SequencePolicy
            Reference probabilities; non-negative, rows summing to 1.  A
            :class:`rlhf.SequencePolicy` runs the token-level algorithm
            (:mod:`rlhf._token_rl`): responses written token by token, the
            KL penalty on every token, and for PPO a value table and GAE;
            ``n_samples`` is then the number of responses per iteration.
        rewards : array-like of shape (n_prompts, n_responses), callable \
or reward model
            Rewards of every response, finite.  With a SequencePolicy: a
            function from :class:`rlhf.Sequences` to rewards, an array of
            the rewards of ``reference_policy.enumerate()``'s sequences, or
            a fitted model with ``predict`` (such as
            :class:`rlhf.RewardModel`) together with ``features``.
        features : array-like of shape (n_prompts, n_responses, \
n_features) or callable, optional
            Response features, required with ``policy='linear'``.  With a
            SequencePolicy and a reward model: a function from Sequences to
            the model's features (such as ``world.features``).
        costs : array-like of shape (n_prompts, n_responses), optional
            Costs of every response for the constraint ``E_pi[c] <=
            cost_budget`` (mean over prompts); requires ``cost_budget``.
            With a TinyLM: a function like ``rewards``'.
        prompts : sequence of str, optional
            With a :class:`rlhf.TinyLM` reference (required then): the
            prompts to answer (see :mod:`rlhf._lm_rl`).  ``rewards`` is
            then a function ``rewards(prompts, responses)`` of two lists of
            str returning one number per response; the policy is a copy of
            the reference trained with AdamW (``learning_rate`` about 1e-4
            to 1e-3), and ``policy_`` is that TinyLM.
        prompts_per_iteration : int, default=16
            With a TinyLM: prompts drawn at random each iteration, each
            answered ``n_samples`` times.
        max_new_tokens : int, optional
            With a TinyLM: the longest response, by default what the
            block size leaves after the longest prompt.

        Returns
        -------
        self
        """
        owner = type(self).__name__
        self._validate()
        for name in ("values_", "lambda_", "samples_",
                     "value_head_", "_facts",
                     "_stopped_by"):  # of an earlier fit
            self.__dict__.pop(name, None)
        if isinstance(reference_policy, TinyLM):
            if features is not None:
                raise ValueError(
                    f"{owner} with a TinyLM reference takes no features: "
                    "rewards is a function of (prompts, responses).")
            return _lm_rl.fit_lm_policy_gradient(
                self, reference_policy, rewards, costs, prompts,
                prompts_per_iteration, max_new_tokens, _scheduled)
        if prompts is not None:
            raise ValueError(
                f"prompts of {owner} go with a TinyLM reference only; a "
                "table's prompts are its rows.")
        if isinstance(reference_policy, SequencePolicy):
            if costs is not None or getattr(self, "cost_budget",
                                            None) is not None:
                raise ValueError(
                    f"{owner} with a SequencePolicy reference takes no costs "
                    "or cost_budget; rlhf.soft_optimal_policy gives the "
                    "exact constrained optimum of a sequence world.")
            return _token_rl.fit_policy_gradient(
                self, reference_policy, rewards, features, _scheduled)
        reference = _check_policy_table(reference_policy, "reference_policy",
                                        owner)
        rewards = _check_rewards(rewards, reference.shape, owner)
        n_prompts = reference.shape[0]
        if not self.exact and n_prompts * int(self.n_samples) > \
                MAX_TABLE_ENTRIES:
            raise ValueError(
                f"The 'n_samples' parameter of {owner} draws n_prompts x "
                f"n_samples = {n_prompts} x {int(self.n_samples)} responses "
                f"per iteration, more than {MAX_TABLE_ENTRIES}; draw fewer "
                "samples (or use exact=True for the full expectation).")
        budget = getattr(self, "cost_budget", None)
        if costs is not None:
            if budget is None:
                raise ValueError(
                    f"costs of {owner} need a cost budget: set the "
                    "'cost_budget' parameter (PPO only).")
            costs = _check_rewards(costs, reference.shape, owner,
                                   name="costs")
        elif budget is not None:
            raise ValueError(
                f"The 'cost_budget' parameter of {owner} is set but fit got "
                "no costs.")
        ref_logp = _log_reference(reference)
        model = _Parametrisation(self.policy, ref_logp, features, owner)
        rng = _random_generator(self.random_state, owner)
        self._costs = costs
        try:
            self._fit_loop(model, reference, rewards, rng)
        finally:
            del self._costs
        return self

    def _fit_loop(self, model, reference, rewards, rng):
        k = self._kernels
        owner = type(self).__name__
        n, n_resp = reference.shape
        ref_logp = model.ref_logp
        kl_kind = _KL_KINDS[self.kl_estimator]
        baseline = _BASELINES[self._baseline()]
        clip = self._clip_value()
        seed = int(rng.integers(0, 2 ** 63))
        counter = 0
        batch = _batch(self, n)
        samples = n_resp if self.exact else int(self.n_samples)
        if self.exact:
            actions = np.ascontiguousarray(
                np.broadcast_to(np.arange(n_resp, dtype=np.int64),
                                (n, n_resp)))
        else:
            weights = np.full((n, samples), 1.0 / samples)
        beta = float(self.beta)
        horizon = self._horizon(n * samples)
        theta = model.initial()
        m, v = np.zeros_like(theta), np.zeros_like(theta)
        step = 0
        history = {"reward": [], "kl": [], "entropy": [], "clip_fraction": [],
                   "beta": [], "loss": []}
        costs = self._costs
        if costs is not None:
            # Safe RLHF (Dai et al. 2024): reward r - lambda c, and dual
            # ascent on log lambda (Adam, gradient E[c] - budget), i.e. a
            # multiplicative update of lambda that stays positive
            log_lambda = np.array([np.log(float(self.lambda_init))])
            dual_m, dual_v = np.zeros(1), np.zeros(1)
            previous_error = None
            history["cost"], history["lambda"] = [], []
        all_rows = np.arange(n, dtype=np.int64)
        # buffers written again each iteration (fresh arrays of this size
        # cost page faults comparable to the softmax itself)
        logits = model.logits(theta)
        logp, p = k.log_softmax(logits)
        n_iterations = int(self.n_iterations)
        n_epochs = int(self._epochs())
        start = k.policy_stats(logp, ref_logp, rewards)
        self._facts = _facts(
            _table_words(n, n_resp), n_iterations,
            exact=True, start={"reward": start[0], "kl": start[1],
                               "entropy": start[2]})
        if costs is not None:
            self._facts["start"]["cost"] = float((p * costs).sum(
                axis=1).mean())
        bar = Progress(self.progress, n_iterations, f"{owner}.fit")
        # read only when the bar is drawn
        bar.set_postfix(reward=lambda: history["reward"][-1],
                        kl=lambda: history["kl"][-1])
        # every thread or one, whichever runs the iterations faster now
        # (the same bits either way)
        threads = AdaptiveThreads()
        with bar, threads:
            for iteration in range(n_iterations):
                threads.begin()
                if costs is not None:
                    lam = float(np.exp(log_lambda[0]))
                    step_rewards = rewards - lam * costs
                else:
                    step_rewards = rewards
                if self.exact:
                    weights = p
                else:
                    actions = k.sample_categorical(p, samples, seed, counter)
                    counter += n * samples
                if costs is not None:
                    # the constraint's value at the policy that acted
                    cost_now = float((p * costs).sum(axis=1).mean()) if \
                        self.exact else float(np.take_along_axis(
                            costs, actions, axis=1).mean())
                shaped, old_logp = k.shape_rewards(
                    step_rewards, logp, ref_logp, actions,
                    beta if self.kl_in_reward else 0.0, kl_kind)
                if self.exact:
                    # the exact baseline: the expected shaped reward under
                    # pi_old
                    advantages = shaped - (p * shaped).sum(axis=1,
                                                           keepdims=True)
                    kl_now = k.policy_stats(logp, ref_logp, rewards)[1]
                else:
                    advantages = k.advantages(shaped, baseline, 1e-4)
                    if self._controls_beta():
                        kl_now = float(np.mean(_kl_estimate(old_logp, ref_logp,
                                                            actions, kl_kind)))
                learning_rate = _scheduled(self, iteration)
                losses, clipped = [], []
                for _ in range(n_epochs):
                    order = all_rows if batch == n else rng.permutation(
                        n).astype(np.int64)
                    for start in range(0, n, batch):
                        rows = order[start:start + batch]
                        kl_coef = 0.0 if self.kl_in_reward else beta
                        step += 1
                        if model.kind == "tabular":
                            # gradient and Adam fused; theta, m, v in place
                            loss, clip_fraction = k.ppo_adam_step(
                                theta, m, v, ref_logp, rows, actions, weights,
                                old_logp, advantages, clip, kl_coef, kl_kind,
                                learning_rate, *_ADAM, step)
                            _check_diverged(theta, self, iteration)
                        else:
                            loss, grad, clip_fraction = k.ppo_loss_grad(
                                _check_diverged(model.logits(theta), self,
                                                iteration), ref_logp, rows,
                                actions,
                                weights, old_logp, advantages, clip, kl_coef,
                                kl_kind)
                            theta, m, v = k.adam_step(
                                theta, model.chain(grad), m, v, learning_rate,
                                *_ADAM, step)
                        losses.append(loss)
                        clipped.append(clip_fraction)
                _check_second_moment(v, self, iteration)
                # the next iteration starts from this policy
                logp, p = k.log_softmax(_check_diverged(
                    model.logits(theta, out=logits), self, iteration),
                    (logp, p))
                reward, kl, entropy = k.policy_stats(logp, ref_logp, rewards)
                history["reward"].append(reward)
                history["kl"].append(kl)
                history["entropy"].append(entropy)
                history["clip_fraction"].append(float(np.mean(clipped)))
                history["beta"].append(beta)
                history["loss"].append(float(np.mean(losses)))
                if costs is not None:
                    history["cost"].append(
                        float((p * costs).sum(axis=1).mean()))
                    history["lambda"].append(lam)
                    # an optimistic step, along 2 e_t - e_(t-1) (Popov 1980;
                    # Daskalakis et al. 2018): the error plus its change, the
                    # derivative term of a PID Lagrangian (Stooke et al. 2020),
                    # which damps the lag between policy and multiplier; Adam
                    # without momentum (beta1 = 0) for the same reason
                    error = cost_now - float(self.cost_budget)
                    if previous_error is None:
                        previous_error = error
                    dual_grad = np.array([-(2.0 * error - previous_error)])
                    previous_error = error
                    log_lambda, dual_m, dual_v = k.adam_step(
                        log_lambda, dual_grad, dual_m, dual_v,
                        _scheduled(self, iteration, self.lambda_learning_rate),
                        0.0, _ADAM[1], _ADAM[2], iteration + 1)
                threads.end()
                bar.update()
                if self.verbose and (iteration % max(1, n_iterations // 10)
                                     == 0 or iteration == n_iterations - 1):
                    bar.write(f"{owner} iteration {iteration + 1}: reward "
                              f"{reward:.4f}, KL {kl:.4f}, entropy "
                              f"{entropy:.4f}, beta {beta:.4g}")
                if self._controls_beta():
                    # Ziegler et al. 2019, "Fine-tuning language models
                    # from human preferences", section 2.2: a proportional
                    # controller on log beta with the error clipped to +-0.2
                    error = np.clip(kl_now / float(self.target_kl) - 1.0, -0.2,
                                    0.2)
                    beta *= 1.0 + error * (n * samples) / horizon
        self.theta_ = theta
        self.policy_ = p
        self.beta_ = beta
        self.values_ = None
        if costs is not None:
            self.lambda_ = float(np.exp(log_lambda[0]))
        self.history_ = {key: np.asarray(value)
                         for key, value in history.items()}
        self.n_iter_ = n_iterations
        return self

    def _controls_beta(self):
        return getattr(self, "target_kl", None) is not None

    def _horizon(self, n_steps):
        return np.inf

    def _summary(self):
        owner = type(self).__name__
        facts = self._facts
        columns, rows, table = self._history_table([
            ("reward", "Reward E[r]"), ("kl", "KL to reference"),
            ("entropy", "Entropy"), ("cost", "Cost E[c]"),
            ("length", "Length (tokens)")])
        iterations, ending = self._ending()
        beta = format_number(float(self.beta))
        if self._controls_beta():
            beta += f" -> {format_number(float(self.beta_))}"
        tinylm = facts["policy"].startswith("a TinyLM")
        sequences = facts["policy"].startswith("a SequencePolicy")
        samples = ("exact (no sampling)" if self.exact else
                   f"{int(self.n_samples)} per prompt" if not sequences else
                   f"{int(self.n_samples)} per iteration")
        left = [("Iterations", iterations), ("Ended", ending),
                ("Samples", samples)]
        right = [("beta", beta),
                 ("KL estimate", f"{self.kl_estimator}, " + (
                     "in the reward" if self.kl_in_reward else "in the loss"))]
        if "lambda_" in self.__dict__:
            right.append(("lambda (end)", format_number(self.lambda_)))
        if facts["start"] is not None:
            notes = ["start: the reference policy (exact)."]
        else:
            notes = ["start: estimated from the first iteration's samples "
                     "(drawn from the reference)."]
        if facts["exact"]:
            notes.append("end: the policy after the last iteration (exact).")
        else:
            notes.append("end: estimated from the last iteration's samples "
                         "(drawn from the policy before its last update).")
        if not tinylm and not sequences:
            notes.append("Reward, KL and entropy are means over the prompts.")
        notes.append("sd, last 10%: the standard deviation over the last "
                     "tenth of the iterations, near 0 once the fit has "
                     "settled; there is no convergence test, the fit runs "
                     "n_iterations.")
        return Summary(f"{owner} on {facts['policy']}", left, right,
                       columns, rows, notes, numbers={"table": table})


def _scheduled(est, iteration, learning_rate=None):
    """The learning rate of an iteration: constant, or decreasing linearly
    to 0 at the last iteration (as CleanRL's PPO and most RLHF recipes do;
    with a constant rate Adam ends in a cycle of the size of its step)."""
    rate = float(est.learning_rate if learning_rate is None else
                 learning_rate)
    if est.lr_schedule == "constant":
        return rate
    return rate * (1.0 - iteration / int(est.n_iterations))


def _kl_estimate(sample_logp, ref_logp, actions, kl_kind):
    ref = np.take_along_axis(ref_logp, actions, axis=1)
    d = sample_logp - ref
    return np.expm1(-d) + d if kl_kind == 3 else d


class PPO(_PolicyGradient):
    """Proximal policy optimisation of a policy near a reference.

    Maximises ``E_pi[r] - beta KL(pi || pi_ref)`` with PPO's clipped
    surrogate (Schulman et al. 2017, "Proximal policy optimization
    algorithms") as RLHF uses it (Ziegler et al. 2019; Stiennon et al.
    2020; Ouyang et al. 2022): each iteration samples responses from the
    current policy, scores them with the reward minus ``beta`` times a KL
    estimate, subtracts a baseline (the mean reward of the other samples of
    the same prompt) and takes ``n_epochs`` passes of Adam over
    minibatches of prompts.  Its fixed point is the exact optimum
    ``pi* ∝ pi_ref exp(r / beta)``.

    With a :class:`rlhf.SequencePolicy` reference it runs token by token
    (:mod:`rlhf._token_rl`): responses are sampled one token at a time,
    every token pays ``beta`` times its KL estimate and the last one gets
    the response's reward, a value table (one value per state) gives
    GAE(gamma, gae_lambda) advantages (Schulman et al. 2016), whitened,
    and each minibatch step fuses the clipped surrogate, the clipped value
    loss and Adam in C.  Its fixed point is the soft optimum
    ``pi_ref(y) exp(r(y) / beta) / Z`` over whole sequences
    (:func:`rlhf.soft_optimal_policy`) when the state is the whole prefix.

    Parameters
    ----------
    beta : float > 0, default=0.1
        KL coefficient (the initial one when ``target_kl`` is set).
    clip : float > 0, default=0.2
        Clipping range of the probability ratio.
    learning_rate : float > 0, default=0.1
        Adam's step size.
    lr_schedule : {'linear', 'constant'}, default='linear'
        'linear' decreases the step size linearly to 0 over the iterations,
        so the policy settles instead of circling the optimum at the scale
        of Adam's step.
    n_iterations : int, default=500
        Sampling rounds.
    n_epochs : int, default=4
        Passes over each round's samples.
    batch_size : int or None, default=None
        Prompts per minibatch (responses, with a SequencePolicy); None: all
        of them, one step per epoch.
    n_samples : int, default=4
        Responses sampled per prompt and iteration (at most ``2**31`` in
        all, n_prompts times n_samples).
    kl_estimator : {'k1', 'k3'}, default='k1'
        Per-sample estimate of ``KL(pi || pi_ref)``: ``k1 = log(pi /
        pi_ref)`` or ``k3 = pi_ref / pi - 1 - log(pi_ref / pi)``
        (Schulman 2020, "Approximating KL divergence").
    kl_in_reward : bool, default=True
        True: subtract ``beta * k`` from the reward (Ziegler et al.).  At
        the optimum the shaped reward ``r - beta log(pi / pi_ref)`` is the
        same for every response, so with ``k1`` the advantages, and with
        them the sampling noise of the gradient, vanish there.  ``k3`` in
        the reward is biased and unstable: its gradient pushes rarely
        sampled responses further down (``pi_ref / pi`` grows without
        bound), away from ``pi*``.
        False: add ``beta * rho * k`` to the loss instead, with ``rho`` the
        probability ratio, which keeps both estimators unbiased for the
        gradient of the divergence (GRPO puts ``k3`` in the loss without
        ``rho``; its gradient is then that of ``KL(pi_ref || pi)``).  On
        sequences the per-token term in the loss is the gradient of each
        state's own KL only: it leaves out how a token changes the KL of
        the tokens after it, so the fixed point is ``pi(a|s) ∝
        pi_ref(a|s) exp(Q_r(s, a) / beta)`` with ``Q_r`` the reward-only
        action value, not the soft optimum (0.11 apart in total variation
        on ``make_sequence_world()`` at beta 0.5).
    target_kl : float > 0 or None, default=None
        Turns on the adaptive controller of Ziegler et al. (2019): after
        each iteration ``beta *= 1 + clip(KL / target_kl - 1, -0.2, 0.2) *
        n_steps / horizon``, with KL the iteration's estimate (exact with
        ``exact=True``) and n_steps the samples drawn per iteration
        (with a SequencePolicy: the n_samples responses, also with
        exact=True).
    horizon : float > 0 or None, default=None
        The controller's horizon in samples (Ziegler et al. use 10,000);
        None: ten iterations' worth of samples.
    cost_budget : float or None, default=None
        With ``fit(..., costs=c)``: the constraint ``E_pi[c] <=
        cost_budget`` (mean over prompts), handled as in Safe RLHF (Dai
        et al. 2024, "Safe RLHF: safe reinforcement learning from human
        feedback"): the policy maximises ``r - lambda c`` (with the KL
        term) and ``log lambda`` takes an ascent step after each iteration
        along the error ``e = E[c] - cost_budget``, optimistically ``2 e_t
        - e_(t-1)`` (the error and its change, as the derivative term of a
        PID Lagrangian, Stooke et al. 2020), scaled as by Adam without
        momentum.  (Safe RLHF's code takes the gradient of ``e lambda``,
        which slows lambda's way down to 0 when the constraint is slack.)
        Known limitation: when rewards are many times ``beta`` the optimum
        can sit on a knife edge between two near-deterministic policies and
        the multiplier then keeps swinging instead of settling.  The fixed point is the
        constrained optimum ``pi ∝ pi_ref exp((r - lambda* c) / beta)``,
        lambda* the dual optimum.
    lambda_init : float > 0, default=1.0
        Initial Lagrange multiplier.
    lambda_learning_rate : float > 0, default=0.05
        Adam's step size on ``log lambda`` (scheduled as learning_rate).
    gamma : float in [0, 1], default=1.0
        Sequences only: the discount of GAE (1, as in RLHF, for a reward
        that comes at the end of the response).
    gae_lambda : float in [0, 1], default=0.95
        Sequences only: GAE's lambda (Schulman et al. 2016); 1 gives the
        return minus the value, 0 the one-step TD error.
    value_clip : float > 0 or None, default=0.2
        Sequences only: the clipped value loss ``max((V - R)^2, (V_old +
        clip(V - V_old, +-value_clip) - R)^2) / 2``; None: no clipping.
    value_learning_rate : float > 0 or None, default=None
        Sequences only: Adam's step size for the value table (scheduled as
        learning_rate); None: learning_rate.
    whiten_advantages : bool, default=True
        Sequences only: standardise the advantages of each iteration's
        tokens (mean 0, standard deviation 1), as trl and OpenRLHF do.
    exact : bool, default=False
        Replace sampling by the full expectation over the K responses,
        each weighted by its probability under the current policy: the
        algorithm without sampling noise, for teaching and checking.  On
        sequences: every (prefix, token) pair weighted by its probability,
        with the exact advantages ``Q(s, a) - V(s)`` of the shaped reward
        in place of GAE and the value table.
    policy : {'tabular', 'linear'}, default='tabular'
        Parametrisation (see :mod:`rlhf.optimize`).
    random_state : None, int or numpy.random.Generator, default=None
        Seeds the counter-based sampler and the minibatch order; the same
        value gives the same result for any number of threads.
    verbose : int, default=0
        Print progress ten times per fit when positive.
    progress : bool or None, default=None
        A progress bar with the reward and the KL (tqdm's when installed):
        True always, False never, None when the iterations are expected to
        take more than 3 seconds in all (never under pytest; see
        :mod:`rlhf._progress`).

    Attributes
    ----------
    policy_ : ndarray of shape (n_prompts, n_responses), SequencePolicy \
or TinyLM
        The final policy (a SequencePolicy on the reference's states when
        the reference is one; a trained copy of the reference TinyLM,
        kept even when the fit is interrupted).
    theta_ : ndarray
        Its parameters (logits relative to the reference, or weights; a
        TinyLM's flat float32 parameter vector).
    samples_ : list of (prompts, responses, rewards)
        TinyLM only: each iteration's sampled responses, the prompts they
        answer and their rewards (before any cost), for example to score
        them with another reward afterwards.
    value_head_ : ndarray of shape (n_embd + 1,)
        PPO with a TinyLM: the linear value head (weights on the
        reference's last hidden state, then the bias).
    beta_ : float
        The KL coefficient at the end (differs from beta with target_kl).
    values_ : ndarray of shape (n_states,) or None
        Sequences, sampled: the value table, one value per state of the
        reference (the expected shaped return from there); None otherwise.
    history_ : dict of ndarray of shape (n_iterations,)
        After each iteration: 'reward' (``E_pi[r]``, a mean over prompts),
        'kl' (``KL(pi || pi_ref)``, exact), 'entropy', 'clip_fraction'
        (share of samples with ``|rho - 1| > clip``), 'beta' (used in the
        iteration) and 'loss'; with costs also 'cost' (``E_pi[c]``, exact)
        and 'lambda' (used in the iteration).  With a SequencePolicy
        also 'length' (expected tokens per response), 'value_loss' and
        'explained_variance' (``1 - Var(R - V) / Var(R)`` over the
        iteration's tokens; NaN with exact=True, which needs no value
        table); reward, KL, entropy and length are exact, of the policy
        after the iteration, when the reference's sequences can be
        enumerated (at most ``rlhf.MAX_SEQUENCES``; a reward function is
        then also evaluated once on every sequence), and otherwise
        estimated from the iteration's samples, drawn from the policy
        before it.
    lambda_ : float
        The Lagrange multiplier at the end (with costs only).

    Examples
    --------
    >>> import numpy as np, rlhf
    >>> reference = np.full((2, 3), 1 / 3)
    >>> rewards = np.array([[0.1, 0.0, -0.1], [0.0, 0.2, 0.1]])
    >>> ppo = rlhf.PPO(exact=True, n_iterations=400).fit(reference, rewards)
    >>> optimum = rlhf.kl_regularized_policy(reference, rewards, 0.1)
    >>> bool(np.abs(ppo.policy_ - optimum).sum(axis=1).max() < 2e-3)
    True

    Token by token, on a small world of sequences:

    >>> world = rlhf.make_sequence_world(n_words=3, max_length=4,
    ...                                  random_state=0)
    >>> reference = world.reference.to_prefix_policy()
    >>> ppo = rlhf.PPO(beta=0.5, exact=True).fit(reference,
    ...                                          world.gold_reward)
    >>> optimum = rlhf.soft_optimal_policy(reference, world.gold_reward, 0.5)
    >>> tv = 0.5 * abs(ppo.policy_.enumerate()[1]
    ...                - optimum.enumerate()[1]).sum()
    >>> bool(tv < 1e-3)
    True
    """

    def __init__(self, beta: float = 0.1, clip: float = 0.2,
                 learning_rate: float = 0.1, lr_schedule: str = "linear",
                 n_iterations: int = 500, n_epochs: int = 4,
                 batch_size: Optional[int] = None, n_samples: int = 4,
                 kl_estimator: str = "k1", kl_in_reward: bool = True,
                 target_kl: Optional[float] = None,
                 horizon: Optional[float] = None,
                 cost_budget: Optional[float] = None, lambda_init: float = 1.0,
                 lambda_learning_rate: float = 0.05, gamma: float = 1.0,
                 gae_lambda: float = 0.95, value_clip: Optional[float] = 0.2,
                 value_learning_rate: Optional[float] = None,
                 whiten_advantages: bool = True, exact: bool = False,
                 policy: str = "tabular", random_state: RandomState = None,
                 verbose: int = 0, progress: Optional[bool] = None) -> None:
        self.beta = beta
        self.clip = clip
        self.learning_rate = learning_rate
        self.lr_schedule = lr_schedule
        self.n_iterations = n_iterations
        self.n_epochs = n_epochs
        self.batch_size = batch_size
        self.n_samples = n_samples
        self.kl_estimator = kl_estimator
        self.kl_in_reward = kl_in_reward
        self.target_kl = target_kl
        self.horizon = horizon
        self.cost_budget = cost_budget
        self.lambda_init = lambda_init
        self.lambda_learning_rate = lambda_learning_rate
        self.gamma = gamma
        self.gae_lambda = gae_lambda
        self.value_clip = value_clip
        self.value_learning_rate = value_learning_rate
        self.whiten_advantages = whiten_advantages
        self.exact = exact
        self.policy = policy
        self.random_state = random_state
        self.verbose = verbose
        self.progress = progress

    def _validate(self):
        super()._validate()
        owner = type(self).__name__
        _check_positive_finite(self.clip, "clip", owner)
        check_scalar(self.n_epochs, "n_epochs", owner, kind="int", low=1)
        if self.target_kl is not None:
            _check_positive_finite(self.target_kl, "target_kl", owner)
        if self.horizon is not None:
            _check_positive_finite(self.horizon, "horizon", owner)
        if self.cost_budget is not None:
            # finite: an infinite budget makes the multiplier's gradient
            # infinite and lambda NaN (leave cost_budget=None instead)
            check_scalar(self.cost_budget, "cost_budget", owner,
                         high=np.inf, high_open=True)
        _check_positive_finite(self.lambda_init, "lambda_init", owner)
        _check_positive_finite(self.lambda_learning_rate,
                               "lambda_learning_rate", owner)
        check_scalar(self.gamma, "gamma", owner, low=0.0, high=1.0)
        check_scalar(self.gae_lambda, "gae_lambda", owner, low=0.0, high=1.0)
        if self.value_clip is not None:
            _check_positive_finite(self.value_clip, "value_clip", owner)
        if self.value_learning_rate is not None:
            _check_positive_finite(self.value_learning_rate,
                                   "value_learning_rate", owner)
        check_option(self.whiten_advantages, "whiten_advantages", owner,
                     [True, False])

    def _clip_value(self):
        return float(self.clip)

    def _epochs(self):
        return self.n_epochs

    def _horizon(self, n_steps):
        return 10.0 * n_steps if self.horizon is None else float(self.horizon)


class REINFORCE(_PolicyGradient):
    """Policy gradient with a group baseline, near a reference.

    Williams (1992) REINFORCE on the KL-regularised bandit: each iteration
    samples ``n_samples`` responses per prompt, scores them (reward minus
    ``beta`` times a KL estimate) and takes one Adam step on
    ``-mean(A log pi(y|x))``.  The advantage ``A`` uses the group of
    responses to the same prompt:

    - ``'mean'``: ``r - mean(r)``;
    - ``'rloo'``: ``r_i - mean_{j != i} r_j``, unbiased (Kool et al. 2019;
      Ahmadian et al. 2024, "Back to basics");
    - ``'grpo'``: ``(r - mean(r)) / (std(r) + 1e-4)`` (Shao et al. 2024,
      "DeepSeekMath"); a group of equal rewards gets advantage 0.

    With a :class:`rlhf.SequencePolicy` reference the advantage is
    sequence-level, as RLOO and GRPO run on language models: each
    response's reward minus ``beta`` times its summed per-token KL
    estimate, against the other responses of the iteration (one group of
    ``n_samples``), on every one of its tokens; the loss is the mean over
    responses of each one's sum over tokens.

    Parameters are those of :class:`PPO` without clipping, epochs and the
    value function, plus ``baseline``.

    Attributes
    ----------
    policy_, theta_, beta_, history_
        As for :class:`PPO`.

    Examples
    --------
    With the expected gradient (``exact=True``) REINFORCE climbs to the
    KL-regularised optimum ``pi_ref exp(r / beta) / Z``:

    >>> import numpy as np, rlhf
    >>> reference = np.full((2, 3), 1 / 3)
    >>> rewards = np.array([[1.0, 0.0, -1.0], [0.0, 2.0, 1.0]])
    >>> reinforce = rlhf.REINFORCE(beta=1.0, exact=True,
    ...                            n_iterations=300).fit(reference, rewards)
    >>> optimum = rlhf.kl_regularized_policy(reference, rewards, beta=1.0)
    >>> bool(np.abs(reinforce.policy_ - optimum).max() < 1e-4)
    True
    >>> reinforce.policy_.argmax(axis=1).tolist()  # the best response of each
    [0, 1]
    """

    def __init__(self, baseline: str = "rloo", beta: float = 0.1,
                 learning_rate: float = 0.1, lr_schedule: str = "linear",
                 n_iterations: int = 500, batch_size: Optional[int] = None,
                 n_samples: int = 4, kl_estimator: str = "k1",
                 kl_in_reward: bool = True, exact: bool = False,
                 policy: str = "tabular", random_state: RandomState = None,
                 verbose: int = 0, progress: Optional[bool] = None) -> None:
        self.baseline = baseline
        self.beta = beta
        self.learning_rate = learning_rate
        self.lr_schedule = lr_schedule
        self.n_iterations = n_iterations
        self.batch_size = batch_size
        self.n_samples = n_samples
        self.kl_estimator = kl_estimator
        self.kl_in_reward = kl_in_reward
        self.exact = exact
        self.policy = policy
        self.random_state = random_state
        self.verbose = verbose
        self.progress = progress

    def _validate(self):
        super()._validate()
        owner = type(self).__name__
        check_option(self.baseline, "baseline", owner, list(_BASELINES))
        if self.baseline != "mean" and not self.exact and self.n_samples < 2:
            raise ValueError(
                f"The baseline {self.baseline!r} of {owner} compares each "
                "response with the others of its prompt: 'n_samples' must be "
                f">= 2. Got {format_value(self.n_samples)} instead.")

    def _baseline(self):
        return self.baseline


def _check_index_table(values, name, owner, n_columns, limits):
    """An int64 array of shape (m, n_columns) with column c in
    [0, limits[c])."""
    arr = np.asarray(values)
    if arr.dtype.kind not in "iu" or arr.dtype == bool:
        raise TypeError(
            f"{name} of {owner} must hold integer indices; got an array of "
            f"dtype {arr.dtype}.")
    if arr.ndim != 2 or arr.shape[1] != n_columns or arr.shape[0] < 1:
        raise ValueError(
            f"{name} of {owner} must have shape (n_rows, {n_columns}) with "
            f"at least one row; got shape {arr.shape}.")
    for column, (what, limit) in enumerate(limits):
        values = arr[:, column]
        bad = (values < 0) | (values >= limit)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"{name} of {owner}: the {what} index {int(values[row])} in "
                f"row {row} is outside [0, {limit}).")
    return np.ascontiguousarray(arr, dtype=np.int64)


class DPO(_Summarised, ParamsMixin):
    """Direct preference optimisation of a policy near a reference.

    DPO (Rafailov et al. 2023, "Direct preference optimization: your
    language model is secretly a reward model") fits the policy to
    comparisons directly: under Bradley-Terry, the reward implied by a
    policy is ``beta log(pi / pi_ref)`` (plus a function of the prompt),
    and maximising the likelihood of the comparisons under that reward
    gives the KL-regularised optimum for the maximum-likelihood reward.
    With ``d = log(pi(chosen) / pi_ref(chosen)) - log(pi(rejected) /
    pi_ref(rejected))`` the losses are

    - ``'sigmoid'``: ``-(1 - e) log sigmoid(beta d) - e log sigmoid(-beta
      d)``, with ``e = label_smoothing`` (conservative DPO);
    - ``'robust'``: ``(-(1 - e) log sigmoid(beta d) + e log sigmoid(-beta
      d)) / (1 - 2 e)``, unbiased when labels flip with rate e (Chowdhury
      et al. 2024, "Provably robust DPO");
    - ``'hinge'``: ``max(0, 1 - beta d)`` (Zhao et al. 2023, SLiC-HF);
    - ``'ipo'``: ``(d - 1 / (2 beta))^2`` (Azar et al. 2023, "A general
      theoretical paradigm to understand learning from human
      preferences").

    Training is Adam over the policy's parameters on the weighted mean
    loss.

    Parameters
    ----------
    beta : float > 0, default=0.1
    loss : {'sigmoid', 'robust', 'hinge', 'ipo'}, default='sigmoid'
    label_smoothing : float in [0, 0.5), default=0.0
        Used by 'sigmoid' and 'robust'.
    learning_rate : float > 0, default=0.1
    lr_schedule : {'linear', 'constant'}, default='linear'
    n_iterations : int, default=1000
        Passes over the comparisons.
    batch_size : int or None, default=None
        Comparisons per Adam step (in an order shuffled every pass); None:
        all of them.
    policy : {'tabular', 'linear'}, default='tabular'
    random_state : None, int or numpy.random.Generator, default=None
        Shuffles the minibatches.
    verbose : int, default=0
    progress : bool or None, default=None
        A progress bar with the loss and the accuracy: True always, False
        never, None when the passes are expected to take more than 3
        seconds in all (never under pytest; see :mod:`rlhf._progress`).

    Attributes
    ----------
    policy_ : ndarray of shape (n_prompts, n_responses), SequencePolicy \
or TinyLM
        With a TinyLM reference, its trained copy (kept even when the fit
        is interrupted).
    theta_ : ndarray
    history_ : dict of ndarray of shape (n_iterations,)
        After each pass, over all comparisons (weighted means): 'loss',
        'chosen_log_ratio' and 'rejected_log_ratio' (``log pi / pi_ref`` of
        the chosen and the rejected responses), 'margin' (``beta`` times
        their difference, the implicit reward margin) and 'accuracy' (share
        of comparisons the policy ranks right).

    Examples
    --------
    >>> import numpy as np, rlhf
    >>> reference = np.full((1, 3), 1 / 3)
    >>> comparisons = [[0, 0, 1], [0, 1, 2], [0, 0, 2]]
    >>> dpo = rlhf.DPO(beta=1.0).fit(reference, comparisons)
    >>> bool(dpo.policy_[0, 0] > dpo.policy_[0, 1] > dpo.policy_[0, 2])
    True
    """

    _kernels = _core

    def __init__(self, beta: float = 0.1, loss: str = "sigmoid",
                 label_smoothing: float = 0.0, learning_rate: float = 0.1,
                 lr_schedule: str = "linear", n_iterations: int = 1000,
                 batch_size: Optional[int] = None, policy: str = "tabular",
                 random_state: RandomState = None, verbose: int = 0,
                 progress: Optional[bool] = None) -> None:
        self.beta = beta
        self.loss = loss
        self.label_smoothing = label_smoothing
        self.learning_rate = learning_rate
        self.lr_schedule = lr_schedule
        self.n_iterations = n_iterations
        self.batch_size = batch_size
        self.policy = policy
        self.random_state = random_state
        self.verbose = verbose
        self.progress = progress

    def _summary(self):
        return _dpo_summary(self)

    def _validate(self):
        owner = "DPO"
        _check_common(self, owner)
        _check_positive_finite(self.beta, "beta", owner)
        check_option(self.loss, "loss", owner, list(_DPO_LOSSES))
        check_scalar(self.label_smoothing, "label_smoothing", owner, low=0.0,
                     high=0.5, high_open=True)
        if self.label_smoothing and self.loss in ("hinge", "ipo"):
            raise ValueError(
                f"The 'label_smoothing' parameter of DPO is used by the "
                f"'sigmoid' and 'robust' losses only; got "
                f"{format_value(self.label_smoothing)} with "
                f"loss={self.loss!r}.")
        _check_batch_size(self, owner)

    def fit(self, reference_policy: PolicyLike, comparisons: Any,
            sample_weight: Optional[ArrayLike] = None,
            features: Optional[ArrayLike] = None) -> "DPO":
        """Fit the policy to comparisons.

        Parameters
        ----------
        reference_policy : array-like of shape (n_prompts, n_responses) \
or SequencePolicy
        comparisons : array-like of int, shape (n_comparisons, 3), or pair
            Rows (prompt, preferred response, other response).  With a
            SequencePolicy: a pair ``(chosen, rejected)`` of
            :class:`rlhf.Sequences` (or token arrays) of equal length, the
            loss then taken on the sequences' log-probabilities ``log pi(y)
            = sum_t log pi(a_t | s_t)``, and ``policy_`` a SequencePolicy on
            the reference's states.  With a :class:`rlhf.TinyLM`: a triple
            ``(prompts, chosen, rejected)`` of lists of str, each response's
            log-probability given its prompt (end of text included), and
            ``policy_`` the trained copy of the reference
            (``learning_rate`` about 1e-4 to 1e-3).
        sample_weight : array-like of shape (n_comparisons,), optional
            Non-negative weights, e.g. how often each comparison was made.
        features : array-like of shape (n_prompts, n_responses, \
n_features), optional
            Required with ``policy='linear'``.

        Returns
        -------
        self
        """
        owner = "DPO"
        self._validate()
        for name in ("_facts", "_stopped_by"):  # of an earlier fit
            self.__dict__.pop(name, None)
        if isinstance(reference_policy, TinyLM):
            if features is not None:
                raise ValueError("DPO with a TinyLM reference takes no "
                                 "features.")
            return _lm_rl.fit_lm_dpo(self, reference_policy, comparisons,
                                     sample_weight, _scheduled)
        if isinstance(reference_policy, SequencePolicy):
            if features is not None:
                raise ValueError(
                    "DPO with a SequencePolicy reference takes no features "
                    "(the policy is a table over the reference's states).")
            return _token_rl.fit_dpo(self, reference_policy, comparisons,
                                     sample_weight, _scheduled)
        k = self._kernels
        reference = _check_policy_table(reference_policy, "reference_policy",
                                        owner)
        n, n_resp = reference.shape
        comparisons = _check_index_table(
            comparisons, "comparisons", owner, 3,
            [("prompt", n), ("preferred response", n_resp),
             ("other response", n_resp)])
        if (comparisons[:, 1] == comparisons[:, 2]).any():
            row = int(np.flatnonzero(comparisons[:, 1] ==
                                     comparisons[:, 2])[0])
            raise ValueError(
                f"comparisons of DPO: row {row} compares a response with "
                "itself.")
        x, yw, yl = comparisons.T
        if ((reference[x, yw] == 0) | (reference[x, yl] == 0)).any():
            raise ValueError(
                "comparisons of DPO refer to a response the reference_policy "
                "gives probability 0; its log-ratio is undefined.")
        m = comparisons.shape[0]
        sample_weight = check_sample_weight(sample_weight, m)
        if not sample_weight.sum() > 0:
            raise ValueError("sample_weight of DPO must have a positive sum.")
        ref_logp = _log_reference(reference)
        model = _Parametrisation(self.policy, ref_logp, features, owner)
        rng = _random_generator(self.random_state, owner)
        loss_kind = _DPO_LOSSES[self.loss]
        beta, smoothing = float(self.beta), float(self.label_smoothing)
        batch = _batch(self, m)
        theta = model.initial()
        mom, var = np.zeros_like(theta), np.zeros_like(theta)
        step = 0
        history: Dict[str, List[float]] = {
            "loss": [], "chosen_log_ratio": [], "rejected_log_ratio": [],
            "margin": [], "accuracy": []}
        n_iterations = int(self.n_iterations)
        self._facts = _facts(
            _table_words(n, n_resp), n_iterations,
            exact=True, start=_dpo_start(loss_kind, beta, smoothing))
        bar = Progress(self.progress, n_iterations, "DPO.fit")
        bar.set_postfix(loss=lambda: history["loss"][-1],
                        accuracy=lambda: history["accuracy"][-1])
        with bar:
            for iteration in range(n_iterations):
                learning_rate = _scheduled(self, iteration)
                order = np.arange(m) if batch == m else rng.permutation(m)
                for start in range(0, m, batch):
                    rows = order[start:start + batch]
                    _, grad, _ = k.dpo_loss_grad(
                        _check_diverged(model.logits(theta), self, iteration),
                        ref_logp, comparisons[rows],
                        sample_weight[rows], beta, loss_kind, smoothing)
                    step += 1
                    theta, mom, var = k.adam_step(
                        theta, model.chain(grad), mom, var, learning_rate,
                        *_ADAM, step)
                _check_second_moment(var, self, iteration)
                loss, _, (chosen, rejected, accuracy) = k.dpo_loss_grad(
                    _check_diverged(model.logits(theta), self, iteration),
                    ref_logp, comparisons, sample_weight,
                    beta, loss_kind, smoothing)
                history["loss"].append(loss)
                history["chosen_log_ratio"].append(chosen)
                history["rejected_log_ratio"].append(rejected)
                history["margin"].append(beta * (chosen - rejected))
                history["accuracy"].append(accuracy)
                bar.update()
                if self.verbose and (iteration % max(1, n_iterations // 10)
                                     == 0 or iteration == n_iterations - 1):
                    bar.write(f"DPO iteration {iteration + 1}: loss "
                              f"{loss:.5f}, chosen {chosen:.4f}, rejected "
                              f"{rejected:.4f}, accuracy {accuracy:.3f}")
        self.theta_ = theta
        final_logp, self.policy_ = k.log_softmax(model.logits(theta))
        _, kl, entropy = k.policy_stats(final_logp, ref_logp,
                                        np.zeros_like(ref_logp))
        self._facts["end"] = {"kl": kl, "entropy": entropy}
        self.history_ = {key: np.asarray(value)
                         for key, value in history.items()}
        self.n_iter_ = n_iterations
        return self


def _dpo_summary(est):
    facts = est._facts
    columns, rows, table = est._history_table([
        ("loss", "Loss"), ("accuracy", "Accuracy"), ("margin", "Margin"),
        ("chosen_log_ratio", "Chosen log-ratio"),
        ("rejected_log_ratio", "Rejected log-ratio")])
    iterations, ending = est._ending()
    end = facts.get("end")
    left = [("Passes", iterations), ("Ended", ending),
            ("Loss", est.loss)]
    right = [("beta", format_number(float(est.beta))),
             ("KL to reference", format_number(end["kl"]) if end else
              "not computed"),
             ("Entropy", format_number(end["entropy"]) if end else
              "not computed")]
    notes = ["start: the reference, where every log-ratio is 0 (exact). "
             "end: after the last pass, over all comparisons (weighted "
             "means); accuracy: the share with a larger log-ratio for the "
             "chosen response; margin: beta times the difference of the "
             "two log-ratios."]
    if end:
        notes.append("KL to reference and entropy: of the final policy, "
                     "exact" + (", means over the prompts." if
                                facts["policy"].startswith("a table")
                                else "."))
    else:
        notes.append("KL to reference and entropy are not computed for a "
                     "TinyLM (they would need sampling).")
    notes.append("sd, last 10%: the standard deviation over the last tenth "
                 "of the passes; there is no convergence test, the fit "
                 "runs n_iterations.")
    return Summary(f"DPO on {facts['policy']}", left, right, columns, rows,
                   notes, numbers={"table": table, "end": end})


class SFT(_Summarised, ParamsMixin):
    """Supervised fine-tuning: maximum likelihood on demonstrations.

    The pipeline's first stage: from demonstrations (prompt, response),
    fit ``pi(y|x) = softmax(logits)`` by maximising the weighted
    log-likelihood plus ``smoothing`` pseudo-demonstrations of every
    response of every prompt, with L-BFGS (``rlhf._core``).  For the
    tabular policy the answer is the smoothed frequency ``(c(x, y) + s) /
    (c(x) + K s)``; the linear policy (``logits = phi(x, y) . theta``)
    matches the features' expectations instead.  The result is the
    reference policy of the later stages.

    Parameters
    ----------
    smoothing : float >= 0, default=0.5
        Pseudo-count added to every (prompt, response); 0 gives the plain
        maximum-likelihood estimate, whose unseen responses have
        probability 0 (reached only in the limit).
    policy : {'tabular', 'linear'}, default='tabular'
    tol : float > 0, default=1e-10
        L-BFGS stops when no gradient component exceeds tol.
    max_iter : int >= 1, default=1000
        Any such int; L-BFGS counts at most ``2**31 - 1`` iterations
        (``n_iter_`` says how many ran).
    progress : bool or None, default=None
        A progress bar counting L-BFGS's evaluations, with the objective:
        True always, False never, None once the fit has run 3 seconds
        (never under pytest; see :mod:`rlhf._progress`).

    Attributes
    ----------
    policy_ : ndarray of shape (n_prompts, n_responses)
    theta_ : ndarray
        Logits (tabular) or feature weights (linear).
    n_iter_ : int

    Examples
    --------
    >>> import rlhf
    >>> sft = rlhf.SFT(smoothing=1.0).fit([[0, 0], [0, 0], [0, 1]],
    ...                                   n_responses=3)
    >>> sft.policy_.round(3)
    array([[0.5  , 0.333, 0.167]])
    """

    def __init__(self, smoothing: float = 0.5, policy: str = "tabular",
                 tol: float = 1e-10, max_iter: int = 1000,
                 progress: Optional[bool] = None) -> None:
        self.smoothing = smoothing
        self.policy = policy
        self.tol = tol
        self.max_iter = max_iter
        self.progress = progress

    def fit(self, demonstrations: Any,
            sample_weight: Optional[ArrayLike] = None,
            n_prompts: Optional[int] = None, n_responses: Optional[int] = None,
            features: Optional[ArrayLike] = None) -> "SFT":
        """Fit the policy to demonstrations.

        Parameters
        ----------
        demonstrations : array-like of int, shape (n_demonstrations, 2)
            Rows (prompt, response).
        sample_weight : array-like of shape (n_demonstrations,), optional
        n_prompts, n_responses : int, optional
            Table size; by default one more than the largest index (or the
            shape of features).
        features : array-like of shape (n_prompts, n_responses, \
n_features), optional
            Required with ``policy='linear'``.

        Returns
        -------
        self
        """
        owner = "SFT"
        smoothing = check_scalar(self.smoothing, "smoothing", owner, low=0.0,
                                 high=np.inf, high_open=True)
        check_option(self.policy, "policy", owner, ["tabular", "linear"])
        tol = _check_positive_finite(self.tol, "tol", owner)
        check_scalar(self.max_iter, "max_iter", owner, kind="int", low=1)
        check_progress(self.progress, owner)
        arr = np.asarray(demonstrations)
        if features is not None:
            shape = np.shape(features)
            if len(shape) == 3:
                n_prompts = shape[0] if n_prompts is None else n_prompts
                n_responses = shape[1] if n_responses is None else n_responses
        if arr.ndim == 2 and arr.shape[1] == 2 and arr.dtype.kind in "iu" \
                and arr.size:
            n_prompts = int(arr[:, 0].max()) + 1 if n_prompts is None \
                else n_prompts
            n_responses = int(arr[:, 1].max()) + 1 if n_responses is None \
                else n_responses
        for name, value in (("n_prompts", n_prompts),
                            ("n_responses", n_responses)):
            if value is not None:
                check_scalar(value, name, owner, kind="int", low=1)
        # Python ints from here: NumPy integers would wrap in the product
        n_prompts = None if n_prompts is None else int(n_prompts)
        n_responses = None if n_responses is None else int(n_responses)
        if n_prompts is not None and n_responses is not None and \
                n_prompts * n_responses > MAX_TABLE_ENTRIES:
            raise ValueError(
                f"SFT's table of 'n_prompts' x 'n_responses' = {n_prompts} x "
                f"{n_responses} has more than 2**31 entries; check the "
                "indices in demonstrations (the sizes default to one more "
                "than the largest) or pass n_prompts and n_responses.")
        demonstrations = _check_index_table(
            demonstrations, "demonstrations", owner, 2,
            [("prompt", n_prompts), ("response", n_responses)])
        sample_weight = check_sample_weight(sample_weight,
                                            demonstrations.shape[0])
        assert n_prompts is not None and n_responses is not None  # checked
        shape = (int(n_prompts), int(n_responses))
        counts = np.zeros(shape)
        np.add.at(counts, (demonstrations[:, 0], demonstrations[:, 1]),
                  sample_weight)
        counts += smoothing
        total = counts.sum()
        if not total > 0:
            raise ValueError("SFT has no demonstration of positive weight.")
        zero = np.zeros(shape)
        model = _Parametrisation(self.policy, zero, features, owner)
        row_totals = counts.sum(axis=1, keepdims=True)

        def objective(theta):
            logp, p = _core.log_softmax(model.logits(theta.reshape(
                model.shape)))
            loss = -(counts * logp).sum() / total
            grad = (row_totals * p - counts) / total
            bar.update()
            last[0] = loss
            return loss, np.ascontiguousarray(model.chain(grad)).ravel()

        last = [np.nan]
        with Progress(self.progress, None, "SFT.fit", unit="eval") as bar:
            bar.set_postfix(objective=lambda: last[0])
            theta, loss, _, n_iter, _, status = _core.lbfgs_minimize(
                objective, model.initial().ravel(), gtol=tol,
                ftol=0.0, max_iter=kernel_max_iter(self.max_iter))
        if status == 2:
            import warnings
            from .exceptions import ConvergenceWarning
            warnings.warn(
                f"SFT: L-BFGS reached max_iter={self.max_iter} before the "
                f"gradient fell below tol={self.tol}.", ConvergenceWarning,
                stacklevel=2)
        self.theta_ = theta.reshape(model.shape)
        logp, self.policy_ = _core.log_softmax(model.logits(self.theta_))
        self.n_iter_ = n_iter
        weight = float(sample_weight.sum())
        seen = sample_weight > 0
        with np.errstate(invalid="ignore"):
            log_likelihood = float(np.sum(
                sample_weight[seen] * logp[demonstrations[seen, 0],
                                           demonstrations[seen, 1]]))
        self._facts = {
            "policy": _table_words(*counts.shape),
            "n": int(demonstrations.shape[0]), "weight": weight,
            "status": int(status), "objective": float(loss),
            "log_likelihood": log_likelihood,
            "entropy": _core.policy_stats(logp, logp,
                                          np.zeros_like(logp))[2]}
        return self

    _fitted_attribute = "policy_"

    def _summary(self):
        from .reward import _STOPS
        facts = self._facts
        left = [("Demonstrations", facts["n"]),
                ("Total weight", facts["weight"]),
                ("Smoothing", float(self.smoothing)),
                ("Policy", self.policy)]
        right = [("Log-likelihood", facts["log_likelihood"]),
                 ("per demonstration", facts["log_likelihood"]
                  / facts["weight"] if facts["weight"] else math.nan),
                 ("Entropy", facts["entropy"]),
                 ("Iterations", int(self.n_iter_)),
                 ("Converged", "yes" if facts["status"] <= 1 else "NO")]
        notes = [f"Stopped: {_STOPS[facts['status']]}.",
                 "Log-likelihood: sum of weight x log pi(response | prompt) "
                 "over the demonstrations, without the smoothing "
                 f"pseudo-counts (the minimised objective, with them and "
                 f"per count, is {format_number(facts['objective'])}). "
                 "Entropy: of the fitted policy, a mean over the prompts."]
        return Summary(f"SFT on {facts['policy']}", left, right, notes=notes,
                       numbers={"log_likelihood": facts["log_likelihood"],
                                "entropy": facts["entropy"],
                                "converged": facts["status"] <= 1})
