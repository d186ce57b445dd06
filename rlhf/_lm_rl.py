"""PPO, REINFORCE and DPO on a :class:`rlhf.TinyLM`: the estimators of
:mod:`rlhf.optimize`, with a language model as the policy.

The policy starts as a copy of the reference model and is trained with
AdamW on the C kernels' gradient of ``-sum_t c_t log pi(a_t | s_t)``: every
loss here is a weighted sum of the sampled tokens' log-probabilities, and
only its coefficients ``c_t`` are computed in NumPy.  The reference stays
frozen.

PPO (Schulman et al. 2017) as InstructGPT runs it (Ouyang et al. 2022;
Ziegler et al. 2019): each iteration draws prompts, samples ``n_samples``
responses to each with the key-value cache, scores them, and penalises
each token by ``beta`` times its KL estimate against the reference (k1 or
k3, in the reward or in the loss).  The reward comes on the response's
last token; advantages are GAE over the tokens with a value head, then
whitened; then ``n_epochs`` passes over minibatches of responses of the
clipped surrogate.  The value head is a linear function of the frozen
reference's last hidden state at each position (the SFT model's features,
as a critic initialised from the SFT model starts), fitted by the clipped
value loss with Adam: it shares no weight with the policy, so the value
loss never moves the policy.  An adaptive controller (Ziegler et al. 2019)
can hold the KL near ``target_kl``, and a cost with a budget is handled by
a Lagrange multiplier updated by dual ascent (Ray et al. 2019; Dai et al.
2024, "Safe RLHF").

REINFORCE: the same samples, the KL-shaped sequence reward, and a baseline
within each prompt's group of ``n_samples`` responses (RLOO, Ahmadian et
al. 2024; GRPO, Shao et al. 2024; or the group mean).

DPO (Rafailov et al. 2023) and its variants on (prompt, chosen, rejected)
texts, with the sequences' log-probabilities ``log pi(y | x) = sum_t log
pi(y_t | x, y_<t)``, the end of text included.
"""
import time

import numpy as np

from . import _core
from ._progress import Progress
from ._threads import AdaptiveThreads
from ._validation import check_scalar, format_value

_WEIGHT_DECAY = 0.0
_ADAMW = (0.9, 0.999, 1e-8)
_MAX_GRAD_NORM = 1.0
_MAX_LM_LEARNING_RATE = 0.05


def _check_lm_learning_rate(est, owner):
    rate = float(est.learning_rate)
    if rate > _MAX_LM_LEARNING_RATE:
        raise ValueError(
            f"The 'learning_rate' parameter of {owner} is {rate:g}; with a "
            "TinyLM it is AdamW's step on the network's weights, for which "
            f"more than {_MAX_LM_LEARNING_RATE} diverges. Use about 1e-4 to "
            "1e-3 (the default 0.1 is for tables of logits).")


def _texts(values, name, owner):
    if isinstance(values, str) or not hasattr(values, "__len__"):
        raise TypeError(f"The '{name}' parameter of {owner} must be a "
                        f"sequence of str; got {format_value(values)}")
    values = list(values)
    if not values:
        raise ValueError(f"The '{name}' parameter of {owner} is empty.")
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise TypeError(f"The '{name}' parameter of {owner}: entry {i} "
                            f"is a {type(value).__name__}, not a str.")
    return values


def _scores(fn, prompts, responses, name, owner):
    """fn(prompts, responses) as a finite float array of one entry each."""
    if not callable(fn):
        raise TypeError(
            f"The '{name}' parameter of {owner} with a TinyLM must be a "
            "function of (prompts, responses), lists of str, returning one "
            f"number per response; got {format_value(fn)}.")
    values = np.asarray(fn(list(prompts), list(responses)), dtype=np.float64)
    if values.shape != (len(responses),):
        raise ValueError(
            f"{name} of {owner} returned shape {values.shape}; it must "
            f"return one number per response, shape ({len(responses)},).")
    if not np.isfinite(values).all():
        raise ValueError(f"{name} of {owner} returned NaN or infinite "
                         "values.")
    return values


class _Rollout:
    """Responses sampled from the policy, with what PPO needs of them.

    Positions are those of the model's inputs: the token predicted at
    input position j is tokens[:, j + 1], a response token when ``start
    <= j + 1 < end``.
    """

    def __init__(self, policy, reference, prompts, prompt_tokens, n,
                 max_new_tokens, rng):
        tokens, starts, ends, logp = policy.sample(
            [prompt_tokens[i] for i in prompts], max_new_tokens, 1.0, None,
            n, rng)
        width = int(ends.max())
        self.rows = len(tokens)
        self.inputs = np.ascontiguousarray(tokens[:, :width - 1])
        self.targets = np.ascontiguousarray(tokens[:, 1:width])
        j = np.arange(width - 1)
        self.live = (j[None, :] + 1 >= starts[:, None]) & \
            (j[None, :] + 1 < ends[:, None])
        self.old_logp = np.where(self.live, logp[:, 1:width], 0.0)
        self.starts, self.ends = starts, ends
        self.last = ends - 2  # the input position of the final token
        ref_acts, hidden, _, _ = reference._forward(self.inputs)
        ref_lp, _ = _core.gpt_token_stats(reference._config, ref_acts,
                                          self.targets, False)
        self.ref_logp = np.where(self.live, ref_lp, 0.0)
        self.hidden = np.array(hidden, dtype=np.float64)
        self.responses = [policy.tokenizer.decode(tokens[i, starts[i]:ends[i]])
                          for i in range(self.rows)]
        self.lengths = (ends - starts).astype(np.float64)


def _kl_terms(d, kind):
    """Per-token KL estimates of d = log pi - log pi_ref on samples of pi:
    k1 = d, k3 = exp(-d) - 1 + d (Schulman 2020)."""
    if kind == "k1":
        return d
    return np.expm1(-d) + d


def _kl_loss_coef(d, kind):
    """d(kl term)/d log pi for the KL in the loss."""
    if kind == "k1":
        return np.ones_like(d)
    return 1.0 - np.exp(-d)


def _gae(rewards, values, live, last, gamma, lam):
    """Advantages and returns by GAE over each row's live positions."""
    n, T = rewards.shape
    advantages = np.zeros((n, T))
    returns = np.zeros((n, T))
    for i in range(n):
        positions = np.flatnonzero(live[i])
        running = 0.0
        next_value = 0.0
        for j in positions[::-1]:
            delta = rewards[i, j] + gamma * next_value - values[i, j]
            running = delta + gamma * lam * running
            advantages[i, j] = running
            returns[i, j] = running + values[i, j]
            next_value = values[i, j]
    return advantages, returns


def surrogate(new_lp, old_lp, ref_lp, advantages, live, clip, kl_coef,
              kl_kind):
    """PPO's clipped surrogate on tokens, summed over the live ones:
    ``-sum min(rho A, clip(rho, 1 - e, 1 + e) A) + kl_coef sum kl``, with
    ``rho = exp(new_lp - old_lp)`` and kl the k1 or k3 term of ``new_lp -
    ref_lp``.  Returns (loss, coef, clip fraction), coef the derivative of
    -loss in each token's new_lp (what the backward pass takes)."""
    ratio = np.where(live, np.exp(new_lp - old_lp), 0.0)
    low, high = 1.0 - clip, 1.0 + clip
    terms = np.minimum(ratio * advantages,
                       np.clip(ratio, low, high) * advantages)
    # the unclipped term is the minimum (and so carries the gradient)
    # unless the ratio left the band on the side the advantage favours
    active = live & ~(((ratio > high) & (advantages > 0))
                      | ((ratio < low) & (advantages < 0)))
    coef = np.where(active, advantages * ratio, 0.0)
    loss = -terms[live].sum()
    if kl_coef:
        d = new_lp - ref_lp
        loss += kl_coef * np.where(live, _kl_terms(d, kl_kind), 0.0).sum()
        coef = coef - kl_coef * np.where(live, _kl_loss_coef(d, kl_kind),
                                         0.0)
    count = max(int(live.sum()), 1)
    clip_fraction = float(((np.abs(ratio - 1.0) > clip) & live).sum()
                          / count)
    return float(loss), coef, clip_fraction


def _diverged(owner, iteration, what):
    return ValueError(
        f"{owner} diverged at iteration {iteration + 1}: {what}. Lower "
        "learning_rate, or rescale the rewards (or beta).")


def _backward_coefficients(coef, owner, iteration):
    """coef as float32 for the backward pass, refused when it overflows."""
    if not np.all(np.abs(coef) < 1e38):
        raise _diverged(owner, iteration, "the loss's coefficients overflow "
                        "float32")
    return coef.astype(np.float32)


def _adamw(policy, grads, m, v, step, rate, owner, iteration):
    try:
        return _core.gpt_adamw(policy._params, grads, m, v, policy._decay,
                               rate, _ADAMW[0], _ADAMW[1], _ADAMW[2],
                               _WEIGHT_DECAY, step, _MAX_GRAD_NORM)
    except FloatingPointError:
        raise _diverged(owner, iteration, "the gradient is no longer finite "
                        "(the weights were left as before the step)") \
            from None


def fit_lm_policy_gradient(est, reference, rewards, costs, prompts,
                           prompts_per_iteration, max_new_tokens, scheduled):
    """PPO or REINFORCE on a TinyLM; sets est's fitted attributes."""
    from .optimize import _facts, _random_generator
    owner = type(est).__name__
    is_ppo = hasattr(est, "gae_lambda")
    if est.exact:
        raise ValueError(f"{owner}(exact=True) takes expectations over every "
                         "response, which a language model cannot enumerate; "
                         "use exact=False with a TinyLM.")
    if est.policy != "tabular":
        raise ValueError(f"The 'policy' parameter of {owner} does not apply "
                         "to a TinyLM (the network is the policy); leave it "
                         "'tabular'.")
    _check_lm_learning_rate(est, owner)
    if prompts is None:
        raise ValueError(f"{owner}.fit with a TinyLM needs prompts=: the "
                         "texts to answer.")
    prompts = _texts(prompts, "prompts", owner)
    prompt_tokens = reference.encode_prompts(prompts)
    longest = max(len(p) for p in prompt_tokens)
    if longest >= reference.block_size:
        i = int(np.argmax([len(p) for p in prompt_tokens]))
        raise ValueError(
            f"prompts[{i}] is {longest} tokens with its leading end of text; "
            f"the model reads at most block_size = {reference.block_size}, "
            "leaving no room to answer.")
    if max_new_tokens is None:
        max_new_tokens = reference.block_size - longest
    max_new_tokens = check_scalar(max_new_tokens, "max_new_tokens", owner,
                                  kind="int", low=1, high=2 ** 62)
    n_prompts = check_scalar(prompts_per_iteration, "prompts_per_iteration",
                             owner, kind="int", low=1, high=2 ** 20)
    budget = getattr(est, "cost_budget", None)
    if (costs is None) != (budget is None):
        raise ValueError(f"{owner}: costs and cost_budget go together; got "
                         f"costs={'given' if costs is not None else None} and "
                         f"cost_budget={budget!r}.")
    n = int(est.n_samples)
    if not is_ppo and n < 2 and est.baseline in ("rloo", "grpo"):
        raise ValueError(f"{owner}(baseline={est.baseline!r}) needs "
                         "n_samples >= 2 responses per prompt to form its "
                         "baseline.")
    rng = _random_generator(est.random_state, owner)
    policy = reference.copy()
    est.policy_ = policy  # an interrupted fit keeps what it learned
    C = reference.n_embd
    m, v = np.zeros_like(policy._params), np.zeros_like(policy._params)
    head = np.zeros(C + 1)
    hm, hv = np.zeros(C + 1), np.zeros(C + 1)
    beta = float(est.beta)
    lam_cost = float(getattr(est, "lambda_init", 0.0)) if budget is not None \
        else 0.0
    kl_kind = est.kl_estimator
    kl_in_reward = bool(est.kl_in_reward)
    clip = float(est.clip) if is_ppo else np.inf
    n_epochs = int(est.n_epochs) if is_ppo else 1
    gamma = float(getattr(est, "gamma", 1.0))
    gae_lam = float(getattr(est, "gae_lambda", 1.0))
    value_clip = getattr(est, "value_clip", None)
    value_clip = np.inf if value_clip is None else float(value_clip)
    rows_per_iteration = n_prompts * n
    batch = rows_per_iteration if est.batch_size is None else min(
        int(est.batch_size), rows_per_iteration)
    horizon = est._horizon(rows_per_iteration)
    keys = ["reward", "kl", "entropy", "length", "clip_fraction", "beta",
            "loss", "value_loss", "explained_variance"]
    if budget is not None:
        keys += ["cost", "lambda"]
    history = {key: [] for key in keys}
    samples = []
    step = 0
    n_iterations = int(est.n_iterations)
    begin = time.perf_counter()
    est._facts = _facts(f"a TinyLM ({policy._params.size:,} parameters)",
                        n_iterations, exact=False, start=None)
    bar = Progress(est.progress, n_iterations, f"{owner}.fit")
    # read only when the bar is drawn
    bar.set_postfix(reward=lambda: history["reward"][-1],
                    kl=lambda: history["kl"][-1])
    stopped = None
    # every thread or one, whichever runs the iterations faster now (the
    # same bits either way)
    threads = AdaptiveThreads()
    try:
        for iteration in range(n_iterations):
            threads.begin()
            rate = scheduled(est, iteration)
            value_rate = scheduled(est, iteration, getattr(
                est, "value_learning_rate", None) or 1e-2)
            picks = rng.integers(len(prompts), size=n_prompts)
            roll = _Rollout(policy, reference, picks, prompt_tokens, n,
                            max_new_tokens, rng)
            shown = [prompts[i] for i in np.repeat(picks, n)]
            scores = _scores(rewards, shown, roll.responses, "rewards",
                             owner)
            reward_now = scores.copy()
            if budget is not None:
                cost = _scores(costs, shown, roll.responses, "costs", owner)
                scores = scores - lam_cost * cost
            samples.append((shown, roll.responses, reward_now))
            live = roll.live
            d = roll.old_logp - roll.ref_logp
            kl_tokens = np.where(live, _kl_terms(d, kl_kind), 0.0)
            kl_now = float(kl_tokens.sum(axis=1).mean())
            rows = np.arange(roll.rows)
            kl_coef = 0.0 if kl_in_reward else beta
            if is_ppo:
                token_rewards = -beta * kl_tokens if kl_in_reward else \
                    np.zeros_like(kl_tokens)
                token_rewards[rows, roll.last] += scores
                features = np.concatenate(
                    [roll.hidden, np.ones(roll.hidden.shape[:2] + (1,))],
                    axis=2)
                old_values = np.where(live, features @ head, 0.0)
                with np.errstate(over="ignore", invalid="ignore"):
                    advantages, returns = _gae(token_rewards, old_values,
                                               live, roll.last, gamma,
                                               gae_lam)
                if not (np.isfinite(advantages).all()
                        and np.isfinite(returns).all()
                        and np.abs(returns).max() < 1e100
                    and np.abs(old_values).max() < 1e100):
                    raise _diverged(owner, iteration, "the returns overflow")
                residual = (returns - old_values)[live]
                spread = returns[live].var()
                explained = float(1.0 - residual.var() / spread) \
                    if spread > 0 else np.nan
                if getattr(est, "whiten_advantages", True):
                    a = advantages[live]
                    deviation = a.std() + 1e-8
                    advantages = np.where(live, (advantages - a.mean())
                                          / deviation, 0.0)
                    kl_coef /= deviation
            else:
                shaped = scores - beta * kl_tokens.sum(axis=1) if \
                    kl_in_reward else scores
                groups = shaped.reshape(n_prompts, n)
                if est.baseline == "rloo":
                    base = (groups.sum(axis=1, keepdims=True) - groups) / \
                        max(n - 1, 1)
                    seq_adv = groups - base
                elif est.baseline == "grpo":
                    seq_adv = (groups - groups.mean(axis=1, keepdims=True)) \
                        / (groups.std(axis=1, keepdims=True) + 1e-4)
                else:
                    seq_adv = groups - groups.mean(axis=1, keepdims=True)
                advantages = np.where(live, seq_adv.reshape(-1)[:, None],
                                      0.0)
                explained = np.nan
            losses, clipped, value_losses = [], [], []
            starts = np.arange(0, roll.rows, batch)
            for _ in range(n_epochs):
                for start in (starts if batch == roll.rows else
                              rng.permutation(starts)):
                    chunk = slice(start, start + batch)
                    lv = live[chunk]
                    count = max(int(lv.sum()), 1)
                    scale = 1.0 / count if is_ppo else \
                        1.0 / lv.shape[0]
                    acts = policy._forward(roll.inputs[chunk])[0]
                    new_lp, _ = _core.gpt_token_stats(
                        policy._config, acts, roll.targets[chunk], False)
                    new_lp = np.where(lv, new_lp.astype(np.float64), 0.0)
                    loss, coef, clip_fraction = surrogate(
                        new_lp, roll.old_logp[chunk], roll.ref_logp[chunk],
                        advantages[chunk], lv, clip, kl_coef, kl_kind)
                    clipped.append(clip_fraction)
                    losses.append(float(loss * scale))
                    grads = np.empty_like(policy._params)
                    _core.gpt_backward(
                        policy._config, policy._params, roll.inputs[chunk],
                        acts, roll.targets[chunk],
                        _backward_coefficients(coef * scale, owner,
                                               iteration), grads)
                    step += 1
                    _adamw(policy, grads, m, v, step, rate, owner, iteration)
                    if is_ppo:
                        value_losses.append(_value_step(
                            head, hm, hv, features[chunk], lv,
                            returns[chunk], old_values[chunk], value_clip,
                            value_rate, step))
            if not np.all(np.isfinite(policy._params)):
                raise _diverged(owner, iteration, "the policy's weights are "
                                "no longer finite")
            history["reward"].append(float(reward_now.mean()))
            history["kl"].append(kl_now)
            history["entropy"].append(
                float(-roll.old_logp.sum(axis=1).mean()))
            history["length"].append(float(roll.lengths.mean()))
            history["clip_fraction"].append(float(np.mean(clipped)))
            history["beta"].append(beta)
            history["loss"].append(float(np.mean(losses)))
            history["value_loss"].append(float(np.mean(value_losses))
                                         if value_losses else np.nan)
            history["explained_variance"].append(explained)
            if budget is not None:
                history["cost"].append(float(cost.mean()))
                history["lambda"].append(lam_cost)
                lam_cost = max(0.0, lam_cost + float(
                    est.lambda_learning_rate) * (float(cost.mean()) - budget))
            threads.end()
            bar.update()
            if est.verbose and (iteration % max(1, n_iterations // 10) == 0
                                or iteration == n_iterations - 1):
                bar.write(f"{owner} iteration {iteration + 1}/{n_iterations}: "
                          f"reward {reward_now.mean():.4f}, KL {kl_now:.4f}, "
                          f"beta {beta:.4g} "
                          f"({time.perf_counter() - begin:.1f} s)")
            if est._controls_beta():
                error = np.clip(kl_now / float(est.target_kl) - 1.0, -0.2,
                                0.2)
                beta *= 1.0 + error * rows_per_iteration / horizon
    except BaseException as error:
        stopped = type(error).__name__
        raise
    finally:
        threads.close()
        bar.close()
        est._stopped_by = stopped  # what summary() says of an early end
        est.history_ = {key: np.asarray(value)
                        for key, value in history.items()}
        est.samples_ = samples
        est.beta_ = beta
        est.value_head_ = head.copy() if is_ppo else None
        est.values_ = None
        if budget is not None:
            est.lambda_ = lam_cost
        est.theta_ = policy._params
        est.n_iter_ = len(history["reward"])
    return est


def _value_step(head, m, v, features, live, returns, old_values, value_clip,
                rate, step):
    """One Adam step of the clipped value loss on the linear value head;
    returns the loss."""
    values = features @ head
    clipped = old_values + np.clip(values - old_values, -value_clip,
                                   value_clip)
    a = (values - returns) ** 2
    b = (clipped - returns) ** 2
    count = max(int(live.sum()), 1)
    loss = 0.5 * np.where(live, np.maximum(a, b), 0.0).sum() / count
    # the gradient flows through whichever term is larger, and through the
    # clipped one only inside its band
    use_a = a >= b
    inside = np.abs(values - old_values) <= value_clip
    dvalue = np.where(live & use_a, values - returns, 0.0) + np.where(
        live & ~use_a & inside, clipped - returns, 0.0)
    grad = np.einsum("btc,bt->c", features, dvalue) / count
    b1, b2, eps = _ADAMW
    m *= b1
    m += (1 - b1) * grad
    v *= b2
    v += (1 - b2) * grad * grad
    head -= rate * (m / (1 - b1 ** step)) / (np.sqrt(v / (1 - b2 ** step))
                                             + eps)
    return float(loss)


def fit_lm_dpo(est, reference, comparisons, sample_weight, scheduled):
    """DPO-family losses on a TinyLM's sequence log-probabilities."""
    from .optimize import _DPO_LOSSES, _dpo_start, _facts, _random_generator
    from ._validation import check_sample_weight
    owner = "DPO"
    if est.policy != "tabular":
        raise ValueError("The 'policy' parameter of DPO does not apply to a "
                         "TinyLM (the network is the policy); leave it "
                         "'tabular'.")
    _check_lm_learning_rate(est, owner)
    if not (isinstance(comparisons, (tuple, list)) and len(comparisons) == 3):
        raise ValueError(
            "The 'comparisons' parameter of DPO with a TinyLM reference must "
            "be a triple (prompts, chosen, rejected) of lists of str of the "
            "same length.")
    prompts, chosen, rejected = (
        _texts(c, name, owner) for c, name in
        zip(comparisons, ("prompts", "chosen", "rejected")))
    npairs = len(prompts)
    if not len(chosen) == len(rejected) == npairs:
        raise ValueError(
            f"The 'comparisons' parameter of DPO: prompts, chosen and "
            f"rejected have {npairs}, {len(chosen)} and {len(rejected)} "
            "entries; they must be equal.")
    sample_weight = check_sample_weight(sample_weight, npairs)
    if not sample_weight.sum() > 0:
        raise ValueError("sample_weight of DPO must have a positive sum.")
    docs = [reference._document(p, r) for p, r in
            zip(prompts + prompts, chosen + rejected)]
    for i, (doc, _) in enumerate(docs):
        if len(doc) - 1 > reference.block_size:
            which = "chosen" if i < npairs else "rejected"
            raise ValueError(
                f"comparisons of DPO: prompt {i % npairs} with its {which} "
                f"response is {len(doc) - 1} tokens with its end of text; "
                f"the model reads at most block_size = "
                f"{reference.block_size}.")
    T = max(len(doc) for doc, _ in docs) - 1
    eot = reference.eot_token
    inputs = np.full((2 * npairs, T), eot, dtype=np.int64)
    targets = inputs.copy()
    live = np.zeros((2 * npairs, T), dtype=bool)
    for row, (doc, start) in enumerate(docs):
        inputs[row, :len(doc) - 1] = doc[:-1]
        targets[row, :len(doc) - 1] = doc[1:]
        live[row, start - 1:len(doc) - 1] = True
    ref_seq = np.zeros(2 * npairs)
    for lo in range(0, 2 * npairs, 256):
        rows = slice(lo, lo + 256)
        lp, _ = reference._token_log_probs(inputs[rows], targets[rows])
        ref_seq[rows] = np.where(live[rows], lp, 0.0).sum(axis=1)
    rng = _random_generator(est.random_state, owner)
    loss_kind = _DPO_LOSSES[est.loss]
    beta, smoothing = float(est.beta), float(est.label_smoothing)
    batch = npairs if est.batch_size is None else min(int(est.batch_size),
                                                      npairs)
    policy = reference.copy()
    est.policy_ = policy
    m, v = np.zeros_like(policy._params), np.zeros_like(policy._params)
    step = 0
    history = {"loss": [], "chosen_log_ratio": [], "rejected_log_ratio": [],
               "margin": [], "accuracy": []}

    def evaluate(pair_rows):
        both = np.concatenate([pair_rows, pair_rows + npairs])
        acts = policy._forward(inputs[both])[0]
        lp, _ = _core.gpt_token_stats(policy._config, acts, targets[both],
                                      False)
        seq = np.where(live[both], lp.astype(np.float64), 0.0).sum(axis=1)
        ratio = seq - ref_seq[both]
        r = len(pair_rows)
        pairs = np.column_stack([np.zeros(r, dtype=np.int64),
                                 np.arange(r), np.arange(r) + r])
        loss, grad, _ = _core.dpo_loss_grad(
            seq[None, :], ref_seq[both][None, :], pairs,
            sample_weight[pair_rows], beta, loss_kind, smoothing)
        w = sample_weight[pair_rows] / sample_weight[pair_rows].sum()
        c, j = ratio[:r], ratio[r:]
        stats = (float(w @ c), float(w @ j), float(w @ (c > j)))
        return loss, grad[0], both, acts, stats

    n_iterations = int(est.n_iterations)
    est._facts = _facts(f"a TinyLM ({policy._params.size:,} parameters)",
                        n_iterations, exact=False,
                        start=_dpo_start(loss_kind, beta, smoothing))
    bar = Progress(est.progress, n_iterations, "DPO.fit")
    bar.set_postfix(loss=lambda: history["loss"][-1],
                    accuracy=lambda: history["accuracy"][-1])
    stopped = None
    try:
        for iteration in range(n_iterations):
            rate = scheduled(est, iteration)
            order = np.arange(npairs) if batch == npairs else \
                rng.permutation(npairs)
            for start in range(0, npairs, batch):
                pair_rows = order[start:start + batch]
                if not sample_weight[pair_rows].sum() > 0:
                    continue
                _, dl_dseq, both, acts, _ = evaluate(pair_rows)
                coef = np.where(live[both], -dl_dseq[:, None], 0.0)
                grads = np.empty_like(policy._params)
                _core.gpt_backward(policy._config, policy._params,
                                   inputs[both], acts, targets[both],
                                   _backward_coefficients(coef, owner,
                                                          iteration), grads)
                step += 1
                _adamw(policy, grads, m, v, step, rate, owner, iteration)
            if not np.all(np.isfinite(policy._params)):
                raise _diverged(owner, iteration, "the policy's weights are "
                                "no longer finite")
            totals = np.zeros(5)
            for lo in range(0, npairs, 128):
                rows = np.arange(lo, min(lo + 128, npairs))
                loss, _, _, _, (c, j, accuracy) = evaluate(rows)
                share = sample_weight[rows].sum() / sample_weight.sum()
                totals += share * np.array([loss, c, j, beta * (c - j),
                                            accuracy])
            for key, value in zip(history, totals):
                history[key].append(float(value))
            bar.update()
            if est.verbose and (iteration % max(1, n_iterations // 10) == 0
                                or iteration == n_iterations - 1):
                bar.write(f"DPO iteration {iteration + 1}/{n_iterations}: "
                          f"loss {totals[0]:.5f}, chosen {totals[1]:.4f}, "
                          f"rejected {totals[2]:.4f}, accuracy "
                          f"{totals[4]:.3f}")
    except BaseException as error:
        stopped = type(error).__name__
        raise
    finally:
        bar.close()
        est._stopped_by = stopped  # what summary() says of an early end
        est.history_ = {key: np.asarray(value)
                        for key, value in history.items()}
        est.theta_ = policy._params
        est.n_iter_ = len(history["loss"])
    return est
