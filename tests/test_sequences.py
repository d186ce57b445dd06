"""Token-level policies on an exact world (rlhf.sequences), each result
against an independent oracle: a brute-force walk of the tree of prefixes
written from the documented state numbering, the bandit closed form over
whole sequences, the enumeration, and sampling frequencies."""
import doctest

import numpy as np
import pytest

import rlhf
from rlhf.sequences import SequencePolicy, Sequences, kl_divergence

BETAS = [1e-3, 0.1, 1.0, 1e3]


# -- oracles ------------------------------------------------------------------

def random_policy(seed, vocab_size=4, max_length=4, end_token=0,
                  context_length=None, zeros=0.0, scale=1.5):
    """Normal logits, a fraction `zeros` of them -inf (never a whole row)."""
    rng = np.random.default_rng(seed)
    n_words = vocab_size - 1
    depth = max_length - 2 if context_length is None else min(
        context_length, max_length - 2)
    n_states = sum(n_words ** j for j in range(depth + 1))
    logits = scale * rng.standard_normal((n_states, vocab_size))
    if zeros:
        off = rng.random(logits.shape) < zeros
        off[np.arange(n_states), rng.integers(0, vocab_size, n_states)] = False
        logits[off] = -np.inf
    return SequencePolicy(logits, vocab_size, max_length, end_token,
                          context_length)


def brute_force(policy):
    """{tokens: probability} of every complete sequence, by a recursive walk
    that numbers states with the formula of the module's notes."""
    V, T, end = policy.vocab_size, policy.max_length, policy.end_token
    W = V - 1
    words = [a for a in range(V) if a != end]
    k = T - 2 if policy.context_length is None else min(
        policy.context_length, T - 2)

    def state(prefix):
        context = prefix[len(prefix) - min(len(prefix), k):]
        code = 0
        for c in context:
            code = code * W + c
        return sum(W ** i for i in range(len(context))) + code

    def distribution(prefix):
        row = policy.logits[state(prefix)]
        p = np.exp(row - row.max())
        return p / p.sum()

    out = {}

    def walk(prefix, probability):
        tokens = tuple(words[c] for c in prefix)
        if len(prefix) == T - 1:  # the end is forced
            out[tokens + (end,)] = probability
            return
        p = distribution(prefix)
        out[tokens + (end,)] = probability * p[end]
        for c in range(W):
            walk(prefix + [c], probability * p[words[c]])

    walk([], 1.0)
    return out


def enumeration_index(sequences, enumerated):
    """Row of each sequence in the enumeration."""
    where = {tuple(row): i for i, row in enumerate(enumerated.to_list())}
    return np.array([where[tuple(row)] for row in sequences.to_list()])


def closed_form(reference, rewards, beta):
    """pi_ref(y) exp(r(y) / beta) / Z over the enumeration, max subtracted,
    and log Z."""
    _, p = reference.enumerate()
    with np.errstate(divide="ignore"):
        logits = np.log(p) + rewards / beta
    top = logits.max()
    weights = np.exp(logits - top)
    return weights / weights.sum(), top + np.log(weights.sum())


def chi_square_z(counts, expected, min_expected=10.0):
    """Wilson-Hilferty normal score of Pearson's statistic, cells with
    fewer than min_expected expected counts lumped together."""
    small = expected < min_expected
    observed = np.r_[counts[~small], counts[small].sum()]
    expected = np.r_[expected[~small], expected[small].sum()]
    keep = expected > 0
    statistic = ((observed[keep] - expected[keep]) ** 2
                 / expected[keep]).sum()
    dof = keep.sum() - 1
    return (((statistic / dof) ** (1 / 3) - (1 - 2 / (9 * dof)))
            / np.sqrt(2 / (9 * dof)))


WORLD = rlhf.make_sequence_world()

SMALL_POLICIES = {
    "prefix": lambda: random_policy(0),
    "prefix-zeros": lambda: random_policy(1, zeros=0.3),
    "end-last": lambda: random_policy(2, vocab_size=5, end_token=4),
    "end-middle": lambda: random_policy(3, vocab_size=4, end_token=2,
                                        max_length=5),
    "bigram": lambda: random_policy(4, max_length=5, context_length=1),
    "unigram": lambda: random_policy(5, max_length=5, context_length=0),
    "one-word": lambda: random_policy(6, vocab_size=2, max_length=5),
    "T=1": lambda: random_policy(7, max_length=1),
    "T=2": lambda: random_policy(8, max_length=2),
}


# -- enumeration --------------------------------------------------------------

@pytest.mark.parametrize("name", SMALL_POLICIES)
def test_enumerate_matches_brute_force(name):
    policy = SMALL_POLICIES[name]()
    sequences, probabilities = policy.enumerate()
    expected = brute_force(policy)
    assert len(sequences) == len(expected) == policy.n_sequences
    got = dict(zip(map(tuple, sequences.to_list()), probabilities))
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert abs(got[key] - value) <= 1e-15
    assert abs(probabilities.sum() - 1.0) <= 1e-15
    # trie order: by length, and every sequence ends with the end token
    assert (np.diff(sequences.lengths) >= 0).all()
    assert (sequences.tokens[np.arange(len(sequences)),
                             sequences.lengths - 1] == policy.end_token).all()


def test_default_world_enumerates_to_one():
    sequences, probabilities = WORLD.reference.enumerate()
    assert len(sequences) == 19608 == WORLD.n_sequences
    assert abs(probabilities.sum() - 1.0) <= 1e-15
    assert len(set(map(tuple, sequences.to_list()))) == len(sequences)


@pytest.mark.parametrize("name", ["prefix-zeros", "bigram", "T=1"])
def test_entropy_is_the_enumerated_sum(name):
    policy = SMALL_POLICIES[name]()
    _, p = policy.enumerate()
    live = p > 0
    expected = -(p[live] * np.log(p[live])).sum()
    assert abs(policy.entropy() - expected) <= 1e-13


def test_ngram_policy_equals_its_prefix_form():
    policy = random_policy(11, vocab_size=5, max_length=5, context_length=1)
    prefix = policy.to_prefix_policy()
    assert prefix.context_length is None
    assert prefix.n_states == 1 + 4 + 16 + 64
    sequences, p = policy.enumerate()
    _, q = prefix.enumerate()
    np.testing.assert_allclose(p, q, rtol=0, atol=1e-16)
    np.testing.assert_allclose(policy.log_prob(sequences),
                               prefix.log_prob(sequences), rtol=1e-14)


# -- sampling and scoring -----------------------------------------------------

@pytest.mark.parametrize("policy", [random_policy(20, zeros=0.2),
                                    pytest.param(random_policy(
                                        21, max_length=5, context_length=1),
                                        marks=pytest.mark.slow),
                                    pytest.param(WORLD.reference,
                                                 marks=pytest.mark.slow)],
                         ids=["prefix", "bigram", "world"])
def test_sample_frequencies_match_enumerate(policy):
    enumerated, p = policy.enumerate()
    n = 100_000
    samples = policy.sample(n, random_state=0)
    counts = np.bincount(enumeration_index(samples, enumerated),
                         minlength=len(p))
    assert counts[p == 0].sum() == 0
    assert chi_square_z(counts, n * p) < 5.0


@pytest.mark.parametrize("policy", [random_policy(30, zeros=0.2),
                                    random_policy(31, vocab_size=5,
                                                  end_token=3,
                                                  max_length=5,
                                                  context_length=2),
                                    WORLD.reference],
                         ids=["prefix", "trigram", "world"])
def test_log_prob_of_samples_is_the_enumerated_probability(policy):
    enumerated, p = policy.enumerate()
    samples = policy.sample(2000, random_state=1)
    index = enumeration_index(samples, enumerated)
    np.testing.assert_allclose(policy.log_prob(samples), np.log(p[index]),
                               rtol=0, atol=1e-12)
    per_token = policy.log_prob(samples, per_token=True)
    assert per_token.shape == (2000, policy.max_length)
    assert (per_token[~samples.mask] == 0).all()
    # the end forced at T-1 is not a choice: log-probability 0
    full = samples.lengths == policy.max_length
    assert (per_token[full, -1] == 0).all()
    np.testing.assert_allclose(per_token.sum(axis=1),
                               policy.log_prob(samples), rtol=1e-15)
    # states, and the distributions there, by the documented numbering
    states = policy.states(samples)
    assert ((states >= 0) == (samples.mask & (np.arange(policy.max_length)
                                              < policy.max_length - 1))).all()
    chosen = states >= 0
    dist = policy.token_distribution(states[chosen])
    np.testing.assert_allclose(
        np.log(dist[np.arange(dist.shape[0]), samples.tokens[chosen]]),
        per_token[chosen], rtol=1e-14)


def test_sampling_is_reproducible():
    policy = WORLD.reference
    a = policy.sample(500, random_state=7)
    assert a == policy.sample(500, random_state=7)
    assert a != policy.sample(500, random_state=8)
    assert a == policy.sample(500, random_state=np.random.default_rng(7))
    rng = np.random.default_rng(3)
    first, second = policy.sample(50, rng), policy.sample(50, rng)
    rng = np.random.default_rng(3)
    assert first == policy.sample(50, rng)
    assert second == policy.sample(50, rng)
    # sequence i does not depend on how many are drawn
    assert policy.sample(1000, random_state=7)[:500] == a


def test_sampling_draws_the_documented_stream():
    """Token t of sequence i is the inverse CDF of pi(. | s_t) at SplitMix64
    number i T + t of the seed (rlhf._reference's generator): the contract
    a compiled sampler must meet."""
    from rlhf._reference import _splitmix_uniform

    policy = random_policy(25, vocab_size=5, max_length=5, end_token=2,
                           context_length=1, zeros=0.2)
    seed = 12345
    samples = policy._sample(200, seed)
    T = policy.max_length
    for i, row in enumerate(samples.to_list()):
        tokens = []
        for t in range(T - 1):
            state = policy.states([tokens + [policy.end_token]])[0, t]
            cumulative = np.cumsum(policy.token_distribution([state])[0])
            u = _splitmix_uniform(seed, np.array([i * T + t]))[0]
            tokens.append(int(np.searchsorted(cumulative,
                                              u * cumulative[-1], "right")))
            if tokens[-1] == policy.end_token:
                break
        else:
            tokens.append(policy.end_token)
        assert row == tokens


def test_sequences_container():
    s = Sequences([[3, 2, 0], [1, 0], [0]], vocab_size=4)
    assert len(s) == 3 and s.max_length == 3
    np.testing.assert_array_equal(np.asarray(s),
                                  [[3, 2, 0], [1, 0, 0], [0, 0, 0]])
    assert np.asarray(s).dtype == np.int64
    np.testing.assert_array_equal(s.lengths, [3, 2, 1])
    np.testing.assert_array_equal(s[1], [1, 0])
    np.testing.assert_array_equal(s[-1], [0])
    assert s[1:].to_list() == [[1, 0], [0]]
    assert s[[2, 0]].to_list() == [[0], [3, 2, 0]]
    assert s[s.lengths > 1] == Sequences([[3, 2, 0], [1, 0]], vocab_size=4)
    assert [row.tolist() for row in s] == s.to_list()
    # equality ignores the width of the padding, not the vocabulary
    wide = Sequences(np.c_[np.asarray(s), np.zeros((3, 2), int)],
                     vocab_size=4)
    assert wide == s and wide.max_length == 5
    assert s != Sequences(s.to_list(), vocab_size=5)
    assert s == Sequences(np.asarray(s), lengths=[3, 2, 1], vocab_size=4)
    assert "tokens=[[3, 2, 0], [1, 0], [0]]" in repr(s)
    with pytest.raises(AttributeError):
        s.lengths = None
    with pytest.raises(ValueError):
        s.tokens[0, 0] = 1
    with pytest.raises(IndexError):
        s[3]
    import copy
    import pickle
    assert pickle.loads(pickle.dumps(s)) == s
    assert copy.deepcopy(s) == s
    # the caller's array is copied, not kept
    tokens = np.array([[1, 0]])
    Sequences(tokens, vocab_size=2)
    assert tokens.flags.writeable


# -- the soft Bellman optimum -------------------------------------------------

def random_rewards(seed, n):
    return 2.0 * np.random.default_rng(seed).standard_normal(n)


def near_ties(seed, n):
    rng = np.random.default_rng(seed)
    return np.round(rng.standard_normal(n)) + 1e-3 * rng.integers(0, 4, n)


PROBLEMS = {
    # reference, rewards (callable or aligned array)
    "world": lambda: (WORLD.reference, WORLD.gold_reward),
    "prefix": lambda: (random_policy(40, vocab_size=4, max_length=5),
                       random_rewards(41, 121)),
    "zeros": lambda: (random_policy(42, zeros=0.3), random_rewards(43, 40)),
    # rewards within a few beta = 1e-3 of each other at the top
    "near-ties": lambda: (random_policy(46, vocab_size=4, max_length=5),
                          near_ties(47, 121)),
    "random-world": lambda: (
        rlhf.make_sequence_world(n_words=3, max_length=5,
                                 random_state=44).reference,
        random_rewards(45, 121)),
}


@pytest.mark.parametrize("beta", BETAS)
@pytest.mark.parametrize("name", PROBLEMS)
def test_soft_optimum_is_the_closed_form(name, beta):
    reference, rewards = PROBLEMS[name]()
    optimum = rlhf.soft_optimal_policy(reference, rewards, beta)
    sequences, p = optimum.enumerate()
    if callable(rewards):
        rewards = rewards(sequences)
    expected, _ = closed_form(reference, rewards, beta)
    assert np.abs(p - expected).max() <= 1e-12
    assert abs(p.sum() - 1.0) <= 1e-14
    assert np.isfinite(optimum.log_probs[optimum.log_probs > -np.inf]).all()


@pytest.mark.parametrize("beta", [pytest.param(0.3, marks=pytest.mark.slow),
                                  1.0])
def test_soft_optimum_maximises_the_objective(beta):
    reference, rewards = WORLD.reference, WORLD.gold_reward
    sequences, _ = reference.enumerate()
    r = rewards(sequences)

    def objective(policy):
        _, p = policy.enumerate()
        return p @ r - beta * kl_divergence(policy, reference)

    optimum = rlhf.soft_optimal_policy(reference, r, beta)
    best = objective(optimum)
    _, log_z = closed_form(reference, r, beta)
    assert abs(best - beta * log_z) <= 1e-12 * max(1.0, abs(best))
    rng = np.random.default_rng(0)
    for scale in [1e-3, 0.1, 1.0]:
        for _ in range(5):
            other = SequencePolicy(
                optimum.log_probs + scale * rng.standard_normal(
                    optimum.log_probs.shape),
                reference.vocab_size, reference.max_length)
            assert objective(other) < best
    assert objective(reference.to_prefix_policy()) < best


# -- KL: exact and estimated --------------------------------------------------

KL_PAIRS = {
    "prefix": lambda: (random_policy(50), random_policy(51)),
    "ngrams": lambda: (random_policy(52, max_length=5, context_length=1),
                       random_policy(53, max_length=5, context_length=0)),
    "optimum": lambda: (rlhf.soft_optimal_policy(
        WORLD.reference, WORLD.gold_reward, 0.3), WORLD.reference),
    "zeros-in-policy": lambda: (random_policy(54, zeros=0.3),
                                random_policy(55)),
}


@pytest.mark.parametrize("name", KL_PAIRS)
def test_kl_divergence_is_the_enumerated_sum(name):
    policy, reference = KL_PAIRS[name]()
    _, p = policy.enumerate()
    _, q = reference.enumerate()
    live = p > 0
    expected = (p[live] * np.log(p[live] / q[live])).sum()
    assert abs(kl_divergence(policy, reference) - expected) <= \
        1e-13 * max(1.0, expected)
    assert kl_divergence(policy, policy) == 0.0


def test_kl_divergence_is_infinite_off_the_reference_support():
    reference = random_policy(56, zeros=0.3)
    policy = random_policy(57)
    assert kl_divergence(policy, reference) == np.inf
    # and finite the other way round (pi's zeros cost nothing)
    assert np.isfinite(kl_divergence(reference, policy))


@pytest.mark.parametrize("name", ["prefix", "ngrams", "optimum"])
def test_expected_per_token_estimators(name):
    """Over the enumeration, E_pi[sum_t k1] and E_pi[sum_t k3] are the
    sequence KL exactly; E_pi[sum_t k2] is not."""
    policy, reference = KL_PAIRS[name]()
    sequences, p = policy.enumerate()
    d = (policy.log_prob(sequences, per_token=True)
         - reference.log_prob(sequences, per_token=True))
    exact = kl_divergence(policy, reference)
    k1 = d.sum(axis=1)
    k2 = (d ** 2 / 2).sum(axis=1)
    k3 = (np.exp(-d) - 1 + d).sum(axis=1)
    assert abs(p @ k1 - exact) <= 1e-12 * max(1.0, exact)
    assert abs(p @ k3 - exact) <= 1e-12 * max(1.0, exact)
    assert abs(p @ k2 - exact) > 1e-3 * exact
    # the sum of the per-token log-ratios is the sequence log-ratio
    _, q = reference.enumerate()
    np.testing.assert_allclose(k1, np.log(p / q), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("beta", [0.3, 1.0])
def test_kl_estimators_bias(beta):
    reference = WORLD.reference
    policy = rlhf.soft_optimal_policy(reference, WORLD.gold_reward, beta)
    result = rlhf.kl_estimators(policy, reference, n_samples=100,
                                n_repeats=200, random_state=0)
    assert result.exact == kl_divergence(policy, reference)
    assert {k: v.shape for k, v in result.estimates.items()} == {
        "k1": (200,), "k2": (200,), "k3": (200,)}
    z = {k: result.bias[k] / result.bias_standard_error[k]
         for k in result.bias}
    assert abs(z["k1"]) < 4 and abs(z["k3"]) < 4
    assert z["k2"] > 8  # k2 overestimates here, by many standard errors
    np.testing.assert_allclose(
        result.mean["k1"], result.estimates["k1"].mean(), rtol=1e-15)
    np.testing.assert_allclose(
        result.bias_standard_error["k2"],
        np.sqrt(result.estimates["k2"].var(ddof=1) / 200), rtol=1e-12)
    assert "k2: bias +" in repr(result)


# -- supervised fine-tuning ---------------------------------------------------

@pytest.mark.parametrize("context_length", [None, 1])
def test_sft_recovers_the_token_distributions(context_length):
    teacher = random_policy(60, vocab_size=4, max_length=4,
                            context_length=context_length, scale=0.7)
    demonstrations = teacher.sample(40_000, random_state=0)
    student = SequencePolicy.from_demonstrations(
        demonstrations, context_length=context_length)
    states = teacher.states(demonstrations)
    visits = np.bincount(states[states >= 0], minlength=teacher.n_states)
    p = teacher.token_distribution()
    error = np.abs(student.token_distribution() - p)
    sigma = np.sqrt(p * (1 - p) / np.maximum(visits, 1)[:, None])
    seen = visits >= 100
    assert seen.sum() >= teacher.n_states // 2
    assert (error[seen] <= 5 * sigma[seen] + 1e-12).all()


def test_sft_closed_form_counts():
    """add-alpha smoothing, counted by hand; the unsmoothed whole-prefix
    fit is the empirical distribution of the demonstrations."""
    teacher = random_policy(61, vocab_size=3, max_length=4)
    demonstrations = teacher.sample(300, random_state=1)
    alpha = 0.5
    student = SequencePolicy.from_demonstrations(
        demonstrations, context_length=0, smoothing=alpha)
    counts = np.zeros(3)
    for row in demonstrations.to_list():
        # the end forced at T = 4 is not a choice
        chosen = row if len(row) < 4 else row[:-1]
        for token in chosen:
            counts[token] += 1
    np.testing.assert_allclose(student.token_distribution()[0],
                               (counts + alpha) / (counts.sum() + 3 * alpha),
                               rtol=1e-14)
    empirical = SequencePolicy.from_demonstrations(demonstrations)
    enumerated, p = empirical.enumerate()
    frequency = np.bincount(enumeration_index(demonstrations, enumerated),
                            minlength=len(p)) / len(demonstrations)
    np.testing.assert_allclose(p, frequency, rtol=0, atol=1e-15)


def test_sft_weights_and_prior():
    demonstrations = Sequences([[1, 0], [2, 0]], vocab_size=3)
    weighted = SequencePolicy.from_demonstrations(
        demonstrations, context_length=0, sample_weight=[3.0, 1.0])
    np.testing.assert_allclose(weighted.token_distribution([0])[0],
                               [0.0, 0.75, 0.25])
    # an unvisited state gets the prior; smoothing pulls towards it
    prior = random_policy(62, vocab_size=3, max_length=2)
    fitted = SequencePolicy.from_demonstrations(
        Sequences([[0, 0]], vocab_size=3), max_length=3, context_length=1,
        prior=SequencePolicy(prior.logits, 3, 3, context_length=0),
        smoothing=1.0)
    q = prior.token_distribution([0])[0]
    np.testing.assert_allclose(fitted.token_distribution([1, 2]),
                               [q, q], rtol=1e-14)
    np.testing.assert_allclose(fitted.token_distribution([0])[0],
                               (np.eye(3)[0] + 3 * q) / 4, rtol=1e-14)


# -- the world ----------------------------------------------------------------

def test_world_weights_are_the_lectures_fit():
    features = np.array([[1.0, 0.8], [0.2, 0.4], [0.9, 0.9], [0.1, 0.1]])
    X, y = [], []
    for better, worse in [(0, 1), (2, 1), (0, 3), (2, 3)]:
        diff = features[better] - features[worse]
        X += [diff, -diff]
        y += [1, 0]
    clf = rlhf.LogisticRegression().fit(np.array(X), np.array(y))
    np.testing.assert_allclose(WORLD.weights, clf.coef_[0], atol=1e-7)
    words = dict(zip(WORLD.vocabulary, WORLD.token_features))
    for word, row in [("sources", [1.0, 0.8]), ("vague", [0.2, 0.4]),
                      ("steps", [0.9, 0.9]), ("joke", [0.1, 0.1])]:
        np.testing.assert_array_equal(words[word], row)


def test_world_reward_cost_features_by_hand():
    sequences = WORLD.reference.sample(300, random_state=2)
    texts = WORLD.decode(sequences)
    assert WORLD.encode(texts) == sequences
    features = dict(zip(WORLD.vocabulary, WORLD.token_features))
    unsafe = {w for w, f in features.items() if w != "<end>" and f[1] < 0.25}
    assert unsafe == {"joke", "exploit"}
    gold, cost, bag = (WORLD.gold_reward(sequences), WORLD.cost(sequences),
                       WORLD.features(sequences))
    for i, text in enumerate(texts):
        words = text.split()
        total = sum(features[w] @ WORLD.weights for w in words)
        expected = total / np.sqrt(len(words)) if words else 0.0
        assert abs(gold[i] - expected) <= 1e-12
        assert cost[i] == sum(w in unsafe for w in words)
        assert bag[i, 0] == 1 and bag[i].sum() == len(words) + 1
        for w in set(words):
            assert bag[i, WORLD.vocabulary.index(w)] == words.count(w)
    # the reference writes short answers, mostly middling words
    enumerated, p = WORLD.reference.enumerate()
    assert 1.5 < p @ (enumerated.lengths - 1) < 2.5
    assert WORLD.decode(enumerated[[p.argmax()]]) == ["answer"]


def test_random_world_is_reproducible():
    a = rlhf.make_sequence_world(n_words=4, max_length=4, random_state=0)
    b = rlhf.make_sequence_world(n_words=4, max_length=4, random_state=0)
    assert a.vocabulary == ("<end>", "w1", "w2", "w3", "w4")
    np.testing.assert_array_equal(a.token_features, b.token_features)
    np.testing.assert_array_equal(a.reference.logits, b.reference.logits)
    for T in (1, 2, 3):
        world = rlhf.make_sequence_world(max_length=T)
        _, p = world.reference.enumerate()
        assert abs(p.sum() - 1) <= 1e-15


# -- bad input ----------------------------------------------------------------

BIG = rlhf.make_sequence_world(n_words=20, max_length=8, random_state=0)

BAD_INPUT = {
    "token above V": (lambda: Sequences([[9, 0]], vocab_size=8),
                      ValueError, r"token 9 in row 0, position 0 is outside"),
    "negative token": (lambda: Sequences([[1, 0], [-1, 0]], vocab_size=8),
                       ValueError, r"token -1 in row 1"),
    "token after the end": (lambda: Sequences([[1, 0, 2]], vocab_size=8),
                            ValueError, r"comes after the end token"),
    "no end token": (lambda: Sequences([[1, 2]], vocab_size=8),
                     ValueError, r"row 0 has no end token"),
    "length beyond T": (lambda: Sequences([[1, 0]], lengths=[3],
                                          vocab_size=8),
                        ValueError, r"length 3, outside \[1, 2\]"),
    "length before the end": (lambda: Sequences([[1, 2, 0]], lengths=[2],
                                                vocab_size=8),
                              ValueError, r"not the end token"),
    "end before length": (lambda: Sequences([[1, 0, 0]], lengths=[3],
                                            vocab_size=8),
                          ValueError, r"an end token at position 1"),
    "float tokens": (lambda: Sequences([[1.0, 0.0]], vocab_size=8),
                     TypeError, r"integer tokens"),
    "1-d tokens": (lambda: Sequences(np.array([1, 0]), vocab_size=8),
                   ValueError, r"2-dimensional"),
    "longer than the policy": (
        lambda: WORLD.reference.log_prob([[1, 1, 1, 1, 1, 1, 0]]),
        ValueError, r"7 tokens, more than max_length=6"),
    "another vocabulary": (
        lambda: WORLD.reference.log_prob(Sequences([[1, 0]], vocab_size=9)),
        ValueError, r"vocab_size=8"),
    "enumerate too large": (lambda: BIG.reference.enumerate(),
                            ValueError, r"more than 1000000 to enumerate"),
    "optimum too large": (
        lambda: rlhf.soft_optimal_policy(BIG.reference, BIG.gold_reward, 1.0),
        ValueError, r"soft_optimal_policy: .* to enumerate"),
    "kl too large": (lambda: kl_divergence(BIG.reference, BIG.reference),
                     ValueError, r"kl_divergence: .* to enumerate"),
    "entropy too large": (lambda: BIG.reference.entropy(),
                          ValueError, r"to enumerate"),
    "logits shape": (lambda: SequencePolicy(np.zeros((2, 3)), 3, 3),
                     ValueError, r"must have shape \(3, 3\)"),
    "logits NaN": (lambda: SequencePolicy(np.full((1, 3), np.nan), 3, 2),
                   ValueError, r"NaN"),
    "logits row all -inf": (
        lambda: SequencePolicy(np.full((1, 3), -np.inf), 3, 2),
        ValueError, r"row 0 is all -inf"),
    "end token outside": (lambda: SequencePolicy(np.zeros((1, 3)), 3, 2,
                                                 end_token=3),
                          ValueError, r"'end_token'"),
    "rewards shape": (
        lambda: rlhf.soft_optimal_policy(WORLD.reference, np.zeros(5), 1.0),
        ValueError, r"shape \(19608,\)"),
    "rewards NaN": (
        lambda: rlhf.soft_optimal_policy(
            WORLD.reference, np.full(19608, np.nan), 1.0),
        ValueError, r"NaN"),
    "beta zero": (
        lambda: rlhf.soft_optimal_policy(WORLD.reference,
                                         WORLD.gold_reward, 0.0),
        ValueError, r"'beta' parameter"),
    "n_repeats one": (
        lambda: rlhf.kl_estimators(WORLD.reference, WORLD.reference,
                                   n_repeats=1),
        ValueError, r"'n_repeats' parameter"),
    "mismatched policies": (
        lambda: kl_divergence(random_policy(0), WORLD.reference),
        ValueError, r"must share vocab_size"),
    "sample n zero": (lambda: WORLD.reference.sample(0),
                      ValueError, r"'n' parameter"),
    "unknown word": (lambda: WORLD.encode(["sources please"]),
                     ValueError, r"'please' is not in the vocabulary"),
}


@pytest.mark.parametrize("name", BAD_INPUT)
def test_bad_input(name):
    call, error, match = BAD_INPUT[name]
    with pytest.raises(error, match=match):
        call()


def test_docstring_examples():
    from rlhf import sequences

    result = doctest.testmod(sequences,
                             optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 10 and result.failed == 0


@pytest.mark.parametrize("beta", [
    pytest.param(0.05, marks=pytest.mark.slow), 0.5,
    pytest.param(5.0, marks=pytest.mark.slow)])
def test_soft_optimum_under_a_cost_budget(beta):
    """The constrained optimum is the closed form pi_ref exp((r - lam c) /
    beta) / Z with E[c] on the budget, and no policy of the same family
    with a smaller multiplier meets it."""
    world = rlhf.make_sequence_world()
    sequences, reference = world.reference.enumerate()
    r, c = world.gold_reward(sequences), world.cost(sequences)
    free = rlhf.soft_optimal_policy(world.reference, r, beta).enumerate()[1]
    budget = 0.5 * float(free @ c)
    policy, lam = rlhf.soft_optimal_policy(
        world.reference, world.gold_reward, beta, costs=world.cost,
        budget=budget, return_multiplier=True)
    probabilities = policy.enumerate()[1]
    assert lam > 0
    assert probabilities @ c == pytest.approx(budget, rel=1e-9)
    z = np.log(reference) + (r - lam * c) / beta
    expected = np.exp(z - z.max())
    expected /= expected.sum()
    np.testing.assert_allclose(probabilities, expected, rtol=0, atol=1e-12)
    # a slack budget leaves the unconstrained optimum (lambda = 0)
    slack, lam0 = rlhf.soft_optimal_policy(
        world.reference, r, beta, costs=c, budget=float(free @ c) + 1.0,
        return_multiplier=True)
    assert lam0 == 0.0
    np.testing.assert_allclose(slack.enumerate()[1], free, atol=1e-15)


def test_soft_optimum_budget_errors():
    world = rlhf.make_sequence_world()
    with pytest.raises(ValueError, match="budget"):
        rlhf.soft_optimal_policy(world.reference, world.gold_reward, 1.0,
                                 costs=world.cost, budget=0.0)
    with pytest.raises(ValueError, match="go together"):
        rlhf.soft_optimal_policy(world.reference, world.gold_reward, 1.0,
                                 costs=world.cost)
    with pytest.raises(ValueError, match="costs"):
        rlhf.soft_optimal_policy(world.reference, world.gold_reward, 1.0,
                                 costs=np.zeros(3), budget=1.0)


@pytest.mark.parametrize("beta", [0.1, 1.0])
def test_value_function_of_the_soft_optimum(beta):
    """At the soft optimum the k1-shaped action value is the same for every
    token of a state (the advantage vanishes) and equals the soft value
    beta log sum_a pi_ref exp(Q_soft / beta); V(root) is the objective."""
    world = rlhf.make_sequence_world(n_words=3, max_length=5,
                                     random_state=4)
    optimum = rlhf.soft_optimal_policy(world.reference, world.gold_reward,
                                       beta)
    values, q = rlhf.sequences.value_function(optimum, world.gold_reward,
                                              world.reference, beta=beta)
    P = q.shape[0]
    np.testing.assert_allclose(q, np.broadcast_to(values[:P, None], q.shape),
                               atol=1e-10)
    sequences, probabilities = optimum.enumerate()
    objective = probabilities @ world.gold_reward(sequences) - beta * \
        rlhf.sequences.kl_divergence(optimum, world.reference)
    assert values[0] == pytest.approx(objective, abs=1e-12)
    # V at T-1 words is the reward of the forced end
    assert np.array_equal(values[P:], world.gold_reward(sequences)[P:])
    # with beta = 0: Q(s, a) = E[r | s, a], V(root) = E[r] (brute force on
    # the first word)
    values0, q0 = rlhf.sequences.value_function(world.reference,
                                                world.gold_reward)
    _, reference_probs = world.reference.enumerate()
    r = world.gold_reward(sequences)
    assert values0[0] == pytest.approx(reference_probs @ r, abs=1e-12)
    first = sequences.tokens[:, 0]
    for token in range(1, world.vocab_size):
        mask = first == token
        expected = (reference_probs[mask] @ r[mask]
                    / reference_probs[mask].sum())
        assert q0[0, token] == pytest.approx(expected, abs=1e-12)
    with pytest.raises(ValueError, match="reference"):
        rlhf.sequences.value_function(optimum, world.gold_reward, beta=1.0)
