"""The token-level loops of PPO, REINFORCE and DPO.

:class:`rlhf.PPO`, :class:`rlhf.REINFORCE` and :class:`rlhf.DPO` run these
when their reference is a :class:`rlhf.SequencePolicy`: the policy writes a
response token by token, ``pi(a | s) = softmax(log pi_ref(. | s) +
theta[s])_a`` on the reference's states (the whole prefix, or the last k
words), and the KL penalty falls on every token, as RLHF runs it
(Ziegler et al. 2019; Stiennon et al. 2020; Ouyang et al. 2022).

One iteration of PPO: sample responses from the current policy, score each
complete response, give each token the reward ``-beta k(a_t | s_t)`` (k1 or
k3 of its log-ratio to the reference) plus the response's score on its last
token, estimate advantages by GAE(gamma, lambda) (Schulman et al. 2016,
"High-dimensional continuous control using generalized advantage
estimation") from a tabular value function, whiten them, and take
``n_epochs`` passes of the clipped surrogate and the clipped value loss
over minibatches of responses, each one fused step of the gradient and Adam
in C.  With ``exact=True`` the samples are replaced by every (prefix,
token) pair weighted by its probability under the current policy, and the
advantages by the exact ``Q(s, a) - V(s)`` of the shaped reward: the
algorithm without noise, whose fixed point is the soft optimum
``pi_ref(y) exp(r(y) / beta) / Z`` (:func:`rlhf.soft_optimal_policy`).
"""
import numpy as np

from . import _core
from ._progress import Progress
from ._threads import AdaptiveThreads
from ._validation import MAX_TABLE_ENTRIES, _as_float_array, _check_finite
from .sequences import (MAX_SEQUENCES, Sequences, SequencePolicy,
                        _all_prefixes, _as_sequences, _enumerate_sequences,
                        _offsets, _word_tables)

_ADAM = (0.9, 0.999, 1e-8)
_KL_KINDS = {"k1": 1, "k3": 3}


def _kl_terms(d, kl_kind):
    """k1 = d or k3 = exp(-d) - 1 + d of log-ratios d = log pi - log
    pi_ref (exact zeros stay zero)."""
    return np.expm1(-d) + d if kl_kind == 3 else d


class _Space:
    """What the loops need to know of the reference's sequences."""

    def __init__(self, reference, owner):
        if reference.max_length < 2:
            raise ValueError(
                f"The 'reference_policy' parameter of {owner} has max_length"
                f"={reference.max_length}: every response is the end token "
                "alone, so there is no choice to optimise (max_length >= 2 "
                "is needed).")
        self.reference = reference
        self.owner = owner
        self.V = reference.vocab_size
        self.W = reference.n_words
        self.T = reference.max_length
        self.end = reference.end_token
        self.depth = reference._depth
        self.context_length = reference.context_length
        self.n_states = reference.n_states
        self.ref_table = np.ascontiguousarray(reference.log_probs)
        self.enumerable = reference.n_sequences <= MAX_SEQUENCES
        _, self.word_of_token = _word_tables(self.V, self.end)
        if self.enumerable:
            level, code = _all_prefixes(self.W, self.T - 1)
            context = np.minimum(level, self.depth)
            offsets = _offsets(self.W, self.depth + 1)
            self.prefix_state = offsets[context] + code % self.W ** context
            self.offsets = _offsets(self.W, self.T)
            self.ref_prefix = self.ref_table[self.prefix_state]
            self.ref_prefix_probs = np.exp(self.ref_prefix)

    def policy(self, theta):
        return SequencePolicy(self.ref_table + theta, self.V, self.T,
                              self.end, self.context_length)

    def sequences(self, tokens, lengths):
        return Sequences._trusted(tokens, lengths, self.V, self.end)

    def index(self, sequences):
        """Each sequence's row in reference.enumerate()."""
        tokens, lengths = sequences.tokens, sequences.lengths
        code = np.zeros(len(lengths), dtype=np.int64)
        for t in range(self.T - 1):
            word = np.maximum(self.word_of_token[tokens[:, t]], 0)
            code = np.where(t < lengths - 1, code * self.W + word, code)
        return self.offsets[lengths - 1] + code

    # -- exact quantities over the tree of prefixes ------------------------

    def reach(self, prefix_log_probs):
        """P(prefix) of every prefix of 0 .. T-1 words."""
        words = np.exp(np.delete(prefix_log_probs, self.end, axis=1))
        reach = np.empty(self.offsets[-1])
        reach[0] = 1.0
        o = self.offsets
        for t in range(self.T - 1):
            reach[o[t + 1]:o[t + 2]] = (reach[o[t]:o[t + 1], None]
                                        * words[o[t]:o[t + 1]]).ravel()
        return reach

    def evaluate(self, prefix_log_probs, all_rewards, token_rewards):
        """(Q (P, V), V over all prefixes): the action values of a policy
        for the reward ``token_rewards[s, a]`` on each token plus the
        response's reward on its end token (forced at T-1 words)."""
        o, end = self.offsets, self.end
        probs = np.exp(prefix_log_probs)
        values = all_rewards.copy()  # at T-1 words the end is forced
        q = np.empty_like(prefix_log_probs)
        for t in range(self.T - 2, -1, -1):
            nodes = slice(o[t], o[t + 1])
            q[nodes] = np.insert(
                values[o[t + 1]:o[t + 2]].reshape(-1, self.W), end,
                all_rewards[nodes], axis=1)
            q[nodes] += token_rewards[nodes]
            values[nodes] = np.where(probs[nodes] > 0, probs[nodes] * q[nodes],
                                     0.0).sum(axis=1)
        return q, values

    def stats(self, prefix_log_probs, all_rewards):
        """Exact (E[r], KL(pi || pi_ref), H(pi), E[length])."""
        reach = self.reach(prefix_log_probs)
        P = prefix_log_probs.shape[0]
        probs = np.exp(prefix_log_probs)
        live = probs > 0
        sequence_probs = reach.copy()
        sequence_probs[:P] *= probs[:, self.end]
        with np.errstate(invalid="ignore"):
            kl = np.where(live, probs * (prefix_log_probs - self.ref_prefix),
                          0.0).sum(axis=1)
            entropy = -np.where(live, probs * prefix_log_probs,
                                0.0).sum(axis=1)
        level = np.repeat(np.arange(self.T), np.diff(self.offsets))
        return (float(sequence_probs @ all_rewards), float(reach[:P] @ kl),
                float(reach[:P] @ entropy),
                float(sequence_probs @ (level + 1)))


def _resolve_rewards(rewards, features, space, owner):
    """(score, all_rewards): a function scoring Sequences, and the rewards of
    every complete sequence in enumeration order when the world is small
    enough (None otherwise)."""
    n = space.reference.n_sequences
    is_model = hasattr(rewards, "predict") and not isinstance(rewards,
                                                              np.ndarray)
    if features is not None and not is_model:
        raise ValueError(
            f"fit of {owner} got 'features' with rewards that are not a "
            "reward model; features are for a model with a predict method "
            "(rewards=model, features=world.features).")
    if is_model:
        if features is None or not callable(features):
            raise ValueError(
                f"fit of {owner} got a reward model as 'rewards': pass "
                "'features', a function from Sequences to the model's "
                "feature matrix (such as world.features).")
        model = rewards

        def function(sequences):
            return model.predict(features(sequences))
    elif callable(rewards):
        function = rewards
    elif not isinstance(rewards, (np.ndarray, list, tuple)):
        raise TypeError(
            f"The 'rewards' parameter of {owner} must be a function of "
            "Sequences, an array of the rewards of reference.enumerate(), or "
            f"a fitted reward model with a predict method; got "
            f"{type(rewards).__name__}.")
    else:
        if not space.enumerable:
            raise ValueError(
                f"The 'rewards' parameter of {owner} is an array, one reward "
                f"per complete sequence, but the reference has {n} "
                f"sequences, more than {MAX_SEQUENCES}; pass a function of "
                "Sequences instead.")
        function = None

    def checked(values, expected):
        values = _as_float_array(values, "rewards")
        if values.shape != (expected,):
            raise ValueError(
                f"The 'rewards' parameter of {owner} must give one reward "
                f"per sequence, shape ({expected},); got {values.shape}.")
        _check_finite(values, "rewards")
        return values

    if not space.enumerable:
        return (lambda sequences: checked(function(sequences),
                                          len(sequences))), None
    if function is None:
        all_rewards = checked(rewards, n).copy()
        return (lambda sequences: all_rewards[space.index(sequences)]), \
            all_rewards
    # sampled fits score their samples (a noisy reward is drawn afresh);
    # the enumeration's rewards, scored once, give the exact statistics
    # of history_ (and the expectations of exact=True)
    all_rewards = checked(function(_enumerate_sequences(
        space.V, space.end, space.T)), n).copy()
    return (lambda sequences: checked(function(sequences),
                                      len(sequences))), all_rewards


def _check_diverged(table, est, iteration):
    if not np.isfinite(table).all():
        raise ValueError(
            f"{type(est).__name__} diverged in iteration {iteration + 1}: "
            "the policy's logits are no longer finite. Lower the "
            f"'learning_rate' parameter (got {est.learning_rate!r}) or "
            "rescale the rewards.")


def fit_policy_gradient(est, reference, rewards, features, scheduled):
    """PPO (GAE, values) or REINFORCE (sequence-level baselines) on a
    SequencePolicy reference; sets est's fitted attributes."""
    from .optimize import _BASELINES, _facts, _random_generator
    k = est._kernels
    owner = type(est).__name__
    if est.policy != "tabular":
        raise ValueError(
            f"The 'policy' parameter of {owner} must be 'tabular' with a "
            f"SequencePolicy reference (a table over its states); got "
            f"{est.policy!r}.")
    space = _Space(reference, owner)
    if est.exact and not space.enumerable:
        raise ValueError(
            f"{owner}(exact=True) takes expectations over every complete "
            f"sequence, and the reference has {reference.n_sequences}, more "
            f"than {MAX_SEQUENCES}; use sampling (exact=False).")
    if est.exact and float(getattr(est, "gamma", 1.0)) != 1.0:
        raise ValueError(
            f"{owner}(exact=True) computes undiscounted values (the reward "
            "comes at the end of the response); 'gamma' must be 1.0, got "
            f"{est.gamma!r}.")
    score, all_rewards = _resolve_rewards(rewards, features, space, owner)
    n = int(est.n_samples)
    T = space.T
    if not est.exact and n * T > MAX_TABLE_ENTRIES:
        raise ValueError(
            f"The 'n_samples' parameter of {owner} draws n_samples x "
            f"max_length = {n} x {T} tokens per iteration, more than "
            f"{MAX_TABLE_ENTRIES}; draw fewer samples.")
    is_ppo = hasattr(est, "gae_lambda")  # PPO: GAE and a value table
    kl_kind = _KL_KINDS[est.kl_estimator]
    kl_in_reward = bool(est.kl_in_reward)
    clip = est._clip_value()
    n_epochs = int(est._epochs())
    gamma = float(getattr(est, "gamma", 1.0))
    lam = float(getattr(est, "gae_lambda", 1.0))
    value_clip = getattr(est, "value_clip", None)
    value_clip = np.inf if value_clip is None else float(value_clip)
    rng = _random_generator(est.random_state, owner)
    beta = float(est.beta)
    S, V = space.n_states, space.V
    theta = np.zeros((S, V))
    m, v = np.zeros_like(theta), np.zeros_like(theta)
    values = np.zeros(S)
    vm, vv = np.zeros(S), np.zeros(S)
    step = 0
    n_iterations = int(est.n_iterations)
    # the controller's gain: responses per iteration over the horizon
    horizon = est._horizon(n)
    history = {key: [] for key in (
        "reward", "kl", "entropy", "length", "clip_fraction", "beta",
        "loss", "value_loss", "explained_variance")}
    baseline = _BASELINES[est._baseline()]
    batch = n if est.batch_size is None else min(int(est.batch_size), n)
    ref = space.ref_table
    logits = ref + theta
    logp, p = k.log_softmax(logits)
    if est.exact:
        P = space.prefix_state.size
        exact_states = np.ascontiguousarray(
            np.repeat(space.prefix_state, V).reshape(P, V))
        exact_actions = np.ascontiguousarray(
            np.broadcast_to(np.arange(V, dtype=np.int64), (P, V)))
    start = None
    if space.enumerable:
        reward, kl, entropy, length = space.stats(logp[space.prefix_state],
                                                  all_rewards)
        start = {"reward": reward, "kl": kl, "entropy": entropy,
                 "length": length}
    est._facts = _facts(f"a SequencePolicy of {S} states", n_iterations,
                        exact=space.enumerable, start=start)
    bar = Progress(est.progress, n_iterations, f"{owner}.fit")
    # read only when the bar is drawn
    bar.set_postfix(reward=lambda: history["reward"][-1],
                    kl=lambda: history["kl"][-1])
    # every thread or one, whichever runs the iterations faster now (the
    # same bits either way)
    with bar, AdaptiveThreads() as threads:
        for iteration in range(n_iterations):
            threads.begin()
            learning_rate = scheduled(est, iteration)
            value_rate = scheduled(est, iteration, getattr(
                est, "value_learning_rate", None) or est.learning_rate)
            losses, clipped, value_losses = [], [], []
            if est.exact:
                lp = logp[space.prefix_state]
                live = lp > -np.inf
                with np.errstate(invalid="ignore"):
                    d = np.where(live, lp - space.ref_prefix, 0.0)
                token_rewards = -beta * _kl_terms(d, kl_kind) if kl_in_reward \
                    else np.zeros_like(d)
                q, value_all = space.evaluate(lp, all_rewards, token_rewards)
                reach = space.reach(lp)[:P]
                weights = np.where(live, reach[:, None] * np.exp(lp), 0.0)
                advantages = np.where(live, q - value_all[:P, None], 0.0)
                # the policy that acted: its exact statistics (reported for
                # the previous iteration's end already, or the reference's at
                # the start) give the controller its KL
                kl_now = kl if iteration > 0 else \
                    space.stats(lp, all_rewards)[1]
                # PPO: per token (the weights add up to the expected number of
                # choices per response), as the sampled loss; REINFORCE: per
                # response
                scale = 1.0 / weights.sum() if is_ppo else 1.0
                for _ in range(n_epochs):
                    step += 1
                    loss, clip_fraction = k.token_ppo_adam_step(
                        theta, m, v, ref, exact_states, exact_actions, weights,
                        lp, advantages, clip, 0.0 if kl_in_reward else beta,
                        kl_kind, scale, learning_rate, *_ADAM, step)
                    losses.append(loss)
                    clipped.append(clip_fraction)
                explained = np.nan
            else:
                seed = int(rng.integers(0, 2 ** 63))
                tokens, lengths = k.sample_sequences(p, n, T, seed, space.end,
                                                     space.depth)
                states, old_lp = k.sequence_log_probs(logp, tokens, lengths,
                                                      space.end, space.depth)
                _, ref_lp = k.sequence_log_probs(ref, tokens, lengths,
                                                 space.end, space.depth)
                scores = score(space.sequences(tokens, lengths))
                live = states >= 0
                n_steps = np.minimum(lengths, T - 1)
                kl_tokens = np.where(live, _kl_terms(old_lp - ref_lp, kl_kind),
                                     0.0)
                kl_now = float(kl_tokens.sum(axis=1).mean())
                if is_ppo:
                    token_rewards = -beta * kl_tokens if kl_in_reward else \
                        np.zeros_like(kl_tokens)
                    token_rewards[np.arange(n), n_steps - 1] += scores
                    old_values = np.where(live, values[states], 0.0)
                    advantages, returns = k.gae(token_rewards, old_values,
                                                n_steps, gamma, lam)
                    kl_coef = 0.0 if kl_in_reward else beta
                    if getattr(est, "whiten_advantages", True):
                        a = advantages[live]
                        deviation = a.std() + 1e-8
                        advantages = np.where(
                            live, (advantages - a.mean()) / deviation, 0.0)
                        # the KL term in the loss is scaled as the advantages,
                        # or whitening would change beta
                        kl_coef /= deviation
                    residual = (returns - old_values)[live]
                    spread = returns[live].var()
                    explained = float(1.0 - residual.var() / spread) \
                        if spread > 0 else np.nan
                else:
                    shaped = scores - beta * kl_tokens.sum(axis=1) if \
                        kl_in_reward else scores
                    sequence_advantages = k.advantages(
                        shaped[None, :], baseline, 1e-4)[0]
                    advantages = np.where(live, sequence_advantages[:, None],
                                          0.0)
                    explained = np.nan
                    kl_coef = 0.0 if kl_in_reward else beta
                ones = np.ones((batch, T))
                live_count = live.sum(axis=1)
                per_token = [states, tokens, old_lp, advantages]
                if is_ppo:
                    per_token += [returns, old_values]
                # the responses are independent draws, so contiguous blocks of
                # them are random minibatches already: each epoch visits the
                # blocks in a new random order, and no array is copied
                starts = np.arange(0, n, batch)
                b = per_token
                counts = live_count
                for _ in range(n_epochs):
                    for start in (starts if batch == n else
                                  rng.permutation(starts)):
                        chunk = slice(start, start + batch)
                        step += 1
                        # PPO: the mean over tokens (as trl does); REINFORCE:
                        # the mean over responses of each one's token sum
                        scale = 1.0 / max(int(counts[chunk].sum()), 1) if \
                            is_ppo else 1.0 / len(counts[chunk])
                        weights = ones[:len(counts[chunk])]
                        loss, clip_fraction = k.token_ppo_adam_step(
                            theta, m, v, ref, b[0][chunk], b[1][chunk],
                            weights, b[2][chunk], b[3][chunk], clip, kl_coef,
                            kl_kind, scale, learning_rate, *_ADAM, step)
                        losses.append(loss)
                        clipped.append(clip_fraction)
                        if is_ppo:
                            value_losses.append(k.value_adam_step(
                                values, vm, vv, b[0][chunk], weights,
                                b[4][chunk], b[5][chunk], value_clip, scale,
                                value_rate, *_ADAM, step))
            _check_diverged(theta, est, iteration)
            logits = ref + theta
            logp, p = k.log_softmax(logits)
            if space.enumerable:
                reward, kl, entropy, length = space.stats(
                    logp[space.prefix_state], all_rewards)
            else:  # estimates from this iteration's samples (of pi_old)
                reward = float(scores.mean())
                kl = kl_now
                entropy = float(-np.where(live, old_lp,
                                          0.0).sum(axis=1).mean())
                length = float(lengths.mean())
            history["reward"].append(reward)
            history["kl"].append(kl)
            history["entropy"].append(entropy)
            history["length"].append(length)
            history["clip_fraction"].append(float(np.mean(clipped)))
            history["beta"].append(beta)
            history["loss"].append(float(np.mean(losses)))
            history["value_loss"].append(float(np.mean(value_losses))
                                         if value_losses else np.nan)
            history["explained_variance"].append(explained)
            threads.end()
            bar.update()
            if est.verbose and (iteration % max(1, n_iterations // 10) == 0
                                or iteration == n_iterations - 1):
                bar.write(f"{owner} iteration {iteration + 1}: reward "
                          f"{reward:.4f}, KL {kl:.4f}, entropy {entropy:.4f}, "
                          f"beta {beta:.4g}")
            if est._controls_beta():
                error = np.clip(kl_now / float(est.target_kl) - 1.0, -0.2, 0.2)
                beta *= 1.0 + error * n / horizon
    est.theta_ = theta
    est.policy_ = space.policy(theta)
    est.beta_ = beta
    est.values_ = values if is_ppo and not est.exact else None
    est.history_ = {key: np.asarray(value) for key, value in history.items()}
    est.n_iter_ = n_iterations
    return est


def _pairs(comparisons, reference, owner):
    """(chosen, rejected) Sequences from a pair of Sequences or arrays."""
    if not (isinstance(comparisons, (tuple, list)) and len(comparisons) == 2):
        raise ValueError(
            f"The 'comparisons' parameter of {owner} with a SequencePolicy "
            "reference must be a pair (chosen, rejected) of Sequences (or "
            "token arrays) of the same length.")
    pair = []
    for s, name in zip(comparisons, ("chosen", "rejected")):
        if not isinstance(s, Sequences):
            try:
                s = Sequences(s, vocab_size=reference.vocab_size,
                              end_token=reference.end_token)
            except (TypeError, ValueError) as error:
                raise type(error)(
                    f"The 'comparisons' parameter of {owner}: the {name} "
                    f"sequences are not a token array or Sequences "
                    f"({error})") from None
        pair.append(_as_sequences(s, reference.vocab_size,
                                  reference.end_token, reference.max_length,
                                  owner, name))
    chosen, rejected = pair
    if len(chosen) != len(rejected) or len(chosen) == 0:
        raise ValueError(
            f"The 'comparisons' parameter of {owner}: chosen and rejected "
            f"must hold the same positive number of sequences; got "
            f"{len(chosen)} and {len(rejected)}.")
    return chosen, rejected


def fit_dpo(est, reference, comparisons, sample_weight, scheduled):
    """DPO-family losses on sequence log-probabilities."""
    from .optimize import _DPO_LOSSES, _dpo_start, _facts, _random_generator
    from ._validation import check_sample_weight
    k = est._kernels
    owner = "DPO"
    if est.policy != "tabular":
        raise ValueError(
            "The 'policy' parameter of DPO must be 'tabular' with a "
            f"SequencePolicy reference; got {est.policy!r}.")
    space = _Space(reference, owner)
    chosen, rejected = _pairs(comparisons, reference, owner)
    m = len(chosen)
    tokens = np.concatenate([chosen.tokens, rejected.tokens])
    lengths = np.concatenate([chosen.lengths, rejected.lengths])
    ref = space.ref_table
    states, ref_lp = k.sequence_log_probs(ref, tokens, lengths, space.end,
                                          space.depth)
    ref_seq = ref_lp.sum(axis=1)
    if not np.isfinite(ref_seq).all():
        row = int(np.flatnonzero(~np.isfinite(ref_seq))[0])
        which = "chosen" if row < m else "rejected"
        raise ValueError(
            f"comparisons of DPO: {which} sequence {row % m} has "
            "probability 0 under the reference_policy; its log-ratio is "
            "undefined.")
    sample_weight = check_sample_weight(sample_weight, m)
    if not sample_weight.sum() > 0:
        raise ValueError("sample_weight of DPO must have a positive sum.")
    rng = _random_generator(est.random_state, owner)
    loss_kind = _DPO_LOSSES[est.loss]
    beta, smoothing = float(est.beta), float(est.label_smoothing)
    batch = m if est.batch_size is None else min(int(est.batch_size), m)
    theta = np.zeros((space.n_states, space.V))
    mom, var = np.zeros_like(theta), np.zeros_like(theta)
    step = 0
    history = {"loss": [], "chosen_log_ratio": [], "rejected_log_ratio": [],
               "margin": [], "accuracy": []}

    def evaluate(rows, logp):
        """(loss, coefficient per token of both sequences, stats)."""
        both = np.concatenate([rows, rows + m])
        _, lp = k.sequence_log_probs(logp, tokens[both], lengths[both],
                                     space.end, space.depth)
        ratio = lp.sum(axis=1) - ref_seq[both]
        r = len(rows)
        # the bandit kernel on one "prompt" whose responses are the
        # sequences: its d = (l_c - ref_c) - (l_r - ref_r) for "logits" l
        # = log pi(y), and its gradient in l is dL/d log pi(y)
        pairs = np.column_stack([np.zeros(r, dtype=np.int64),
                                 np.arange(r), np.arange(r) + r])
        loss, grad, _ = k.dpo_loss_grad(
            (ratio + ref_seq[both])[None, :], ref_seq[both][None, :],
            pairs, sample_weight[rows], beta, loss_kind, smoothing)
        w = sample_weight[rows] / sample_weight[rows].sum()
        c, j = ratio[:r], ratio[r:]
        stats = (float(w @ c), float(w @ j), float(w @ (c > j)))
        return loss, grad[0], both, stats

    n_iterations = int(est.n_iterations)
    logp = k.log_softmax(ref + theta)[0]
    est._facts = _facts(f"a SequencePolicy of {space.n_states} states",
                        n_iterations, exact=True,
                        start=_dpo_start(loss_kind, beta, smoothing))
    bar = Progress(est.progress, n_iterations, "DPO.fit")
    bar.set_postfix(loss=lambda: history["loss"][-1],
                    accuracy=lambda: history["accuracy"][-1])
    with bar:
        for iteration in range(n_iterations):
            learning_rate = scheduled(est, iteration)
            order = np.arange(m) if batch == m else rng.permutation(m)
            for start in range(0, m, batch):
                rows = order[start:start + batch]
                if not sample_weight[rows].sum() > 0:
                    continue  # nothing to learn from these comparisons
                _, coef, both, _ = evaluate(rows, logp)
                grad = k.token_grad(logp, states[both],
                                    tokens[both], np.broadcast_to(
                                        coef[:, None], tokens[both].shape))
                step += 1
                theta, mom, var = k.adam_step(theta, grad, mom, var,
                                              learning_rate, *_ADAM, step)
                _check_diverged(theta, est, iteration)
                logp = k.log_softmax(ref + theta)[0]
            loss, _, _, (c, j, accuracy) = evaluate(np.arange(m), logp)
            history["loss"].append(loss)
            history["chosen_log_ratio"].append(c)
            history["rejected_log_ratio"].append(j)
            history["margin"].append(beta * (c - j))
            history["accuracy"].append(accuracy)
            bar.update()
            if est.verbose and (iteration % max(1, n_iterations // 10) == 0
                                or iteration == n_iterations - 1):
                bar.write(f"DPO iteration {iteration + 1}: loss {loss:.5f}, "
                          f"chosen {c:.4f}, rejected {j:.4f}, accuracy "
                          f"{accuracy:.3f}")
    est.theta_ = theta
    est.policy_ = space.policy(theta)
    if space.enumerable:
        _, kl, entropy, _ = space.stats(logp[space.prefix_state],
                                        np.zeros(space.offsets[-1]))
        est._facts["end"] = {"kl": kl, "entropy": entropy}
    est.history_ = {key: np.asarray(value) for key, value in history.items()}
    est.n_iter_ = n_iterations
    return est
