"""rlhf.RewardModel on preferences over hashed text features, against the
lecture's way (mirrored difference rows + scikit-learn), on two data sets.

FineGrainedRLHF: the QA feedback shipped with rlhf (500 questions x 4
answers, 2,616 strict human preferences; ties are left out so that both
sides fit the same pairs).  Each answer, prefixed by its question, is
hashed into 2^18 word 1- and 2-gram features by scikit-learn's
HashingVectorizer.  Five folds over questions (GroupKFold).

HH-RLHF-like: synthetic data generated here with a fixed seed, shaped like
Anthropic's HH-RLHF but not that data (it is not on this machine).  Each
comparison is one multi-turn dialogue ("Human: ... Assistant: ...") made
of words from small hand-written lists (neutral words, one topic's words,
"helpful" and "harmful or evasive" marker words) and two candidate final
Assistant replies; `chosen` and `rejected` are the two full transcripts,
which share the whole dialogue prefix and differ only in the final reply.
The preferred reply is drawn from a Bradley-Terry model on a hidden score
of that reply: fixed positive weights for helpful markers, negative ones
for harmful or evasive markers, a small bonus for length and Gaussian
noise that no feature sees.  20,000 dialogues (3,000 with --quick) of 1
to 4 turns, about 240 words per transcript; each transcript is an item,
hashed as above, and the folds are over dialogues.  Word statistics,
topics and the scoring rule are made up: the accuracies say nothing about
real HH-RLHF, only the shape of the problem (items, features,
comparisons) is alike.

Both models are fitted on the training pairs and scored by pairwise
accuracy on the held-out pairs.  RewardModel(C=2C) and
LogisticRegression(C) on mirrored rows have the same optimum; the times
include building the rows for the lecture's way, not the generation or
the hashing (shared by both).

    python benchmarks/bench_reward_text.py                  # both data sets
    python benchmarks/bench_reward_text.py --data hh-like   # one of them
    python benchmarks/bench_reward_text.py --quick          # a fast check
    python benchmarks/bench_reward_text.py --tol 1e-4       # rlhf's tol
"""
import argparse
import os
import sys
import time
import warnings

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold

import rlhf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import machine  # noqa: E402


def hash_texts(texts):
    hasher = HashingVectorizer(n_features=2 ** 18, ngram_range=(1, 2),
                               alternate_sign=False, norm="l2")
    return hasher.transform(texts).tocsr()


def data():
    ds = rlhf.datasets.load_finegrained_qa()
    strict = ~np.asarray(ds.ties, dtype=bool)
    comparisons = np.asarray(ds.comparisons)[strict]
    texts = [f"{ds.prompts[ds.text_prompt[i]]} {t}"
             for i, t in enumerate(ds.texts)]
    features = hash_texts(texts)
    groups = np.asarray(ds.text_prompt)[comparisons[:, 0]]
    return features, comparisons, groups


# Vocabulary of the HH-RLHF-like generator.  The lists are disjoint, so
# that a word's role (and its weight in the hidden score) is unambiguous.
NEUTRAL = """
the and to of that it is for you with on this be are as can have was at or
not but what all would there their will when who make like time just know
take people into year your some could them see other than then now look only
come its over think also back after use two how our work well way even new
want because any these give day most us thing things really very much many
more about get got going need lot kind sort bit something someone anything
everything pretty probably usually often sometimes always never still already
again around little big long great small large old right left next last same
different own place home house family friend friends morning night week
weekend today tomorrow yesterday start try keep find tell ask feel seem leave
call put mean turn move live believe hold bring happen write sit stand lose
pay meet continue set learn change lead watch follow stop create speak read
spend grow open walk win offer remember love appear buy wait serve send
expect build stay fall reach remain should why where which does did done
been being had has were may might must shall let says said told asked
thanks okay yes hello question idea problem answer part fact case point
group number world area life hand eye head face side end word words reason
""".split()

TOPICS = {
    "cooking": """recipe oven bake flour sugar butter garlic onion chicken
        pasta sauce boil simmer skillet spices dough salad soup roast
        vegetables""",
    "travel": """flight airport hotel passport luggage train ticket beach
        island itinerary visa suitcase tour abroad city map booking cruise
        hostel sightseeing""",
    "health": """sleep headache fever diet vitamins symptoms blood pressure
        medicine allergy cough stomach muscles stress anxiety clinic injury
        tired nausea rash""",
    "money": """budget savings loan credit debt interest bank taxes invest
        stocks mortgage salary rent income expenses retirement insurance
        account fees payment""",
    "pets": """puppy kitten vet leash litter collar breed treats grooming
        bark scratch adopt aquarium hamster parrot kennel fleas cage fur
        paws""",
    "gardening": """tomatoes soil compost seeds weeds garden sunlight
        fertilizer pots roses prune shovel mulch lawn sprout harvest pests
        shade bulbs watering""",
    "computers": """laptop keyboard password software install update browser
        wifi router virus backup screen files printer email download app
        settings reboot monitor""",
    "cars": """engine brakes tires mechanic gasoline mileage transmission
        headlights dashboard steering windshield parking highway driving
        sedan truck garage clutch radiator oil""",
    "music": """guitar piano chords melody song lyrics drums band concert
        rhythm singer album scales tempo violin playlist chorus tune
        microphone notes""",
    "parenting": """toddler baby school homework bedtime tantrum diaper
        teacher teenager chores daycare allowance playground nap crib
        stroller babysitter siblings snacks grades""",
    "fitness": """gym workout running pushups squats cardio stretching
        treadmill marathon yoga protein calories dumbbell jogging trainer
        reps sprint bicycle swim endurance""",
    "history": """war empire king queen revolution century ancient rome
        treaty battle colony president election medieval castle pharaoh
        dynasty archive monarchy parliament""",
}
TOPICS = {k: v.split() for k, v in TOPICS.items()}

HELPFUL = """sure happy recommend suggest steps first second example
specifically consider option options resources explain helpful safely
carefully detail details clarify tips guide professional reliable useful
understand glad instance typically check""".split()

HARMFUL = """dunno whatever unsure cannot refuse sorry unclear nevermind idk
meh irrelevant stupid idiot steal weapon hurt illegal cheat lie hate dumb
shut ignore revenge poison scam pointless boring annoying useless""".split()


# Neutral words are drawn with Zipf-like frequencies (the earlier in the
# list, the more common), as in real text.
_NEUTRAL_P = 1.0 / np.arange(1, len(NEUTRAL) + 1) ** 0.8
_NEUTRAL_P /= _NEUTRAL_P.sum()
_MARKERS = HELPFUL + HARMFUL


def _words(rng, n, topic, marker_rate, p_helpful, weights):
    """n words of one turn; returns them and the sum of their markers'
    weights.  Each word is a marker with probability marker_rate (helpful
    with probability p_helpful, else harmful or evasive), a topic word
    with probability 0.25, else a neutral word."""
    u = rng.random(n)
    is_marker = u < marker_rate
    is_topic = ~is_marker & (u < marker_rate + 0.25)
    out = np.empty(n, dtype=object)
    neutral = rng.choice(len(NEUTRAL), size=n, p=_NEUTRAL_P)
    out[:] = [NEUTRAL[i] for i in neutral]
    words = TOPICS[topic]
    out[is_topic] = [words[i] for i in
                     rng.integers(len(words), size=int(is_topic.sum()))]
    score = 0.0
    k = int(is_marker.sum())
    if k:
        helpful = rng.random(k) < p_helpful
        pick = np.where(helpful,
                        rng.integers(len(HELPFUL), size=k),
                        len(HELPFUL) + rng.integers(len(HARMFUL), size=k))
        out[is_marker] = [_MARKERS[i] for i in pick]
        score = float(weights[pick].sum())
    return out, score


def _sentences(rng, words, question=False):
    """Cut words into capitalised sentences of 5 to 14 words."""
    parts, i = [], 0
    while i < len(words):
        j = i + int(rng.integers(5, 15))
        s = " ".join(words[i:j])
        parts.append(s[:1].upper() + s[1:] + ".")
        i = j
    if question:
        parts[-1] = parts[-1][:-1] + "?"
    return " ".join(parts)


def hh_like(n_comparisons, seed=0):
    """Synthetic comparisons shaped like HH-RLHF (see the module docstring).

    Returns the transcripts (item 2k is the chosen and 2k + 1 the rejected
    transcript of dialogue k), the comparisons (winner, loser), the groups
    (dialogue ids) and each transcript's hidden score without its noise
    (the part of the preference the words determine)."""
    every = NEUTRAL + _MARKERS + [w for t in TOPICS.values() for w in t]
    assert len(set(every)) == len(every), "the word lists overlap"
    rng = np.random.default_rng(seed)
    # Fixed marker weights: helpful up, harmful or evasive down.
    weights = np.r_[rng.uniform(0.3, 1.0, len(HELPFUL)),
                    -rng.uniform(0.3, 1.0, len(HARMFUL))]
    topics = sorted(TOPICS)
    marker_rate = 0.08
    length_weight = 0.3 / 50       # +0.3 for 50 more words: a small effect
    noise = 1.0                    # sd of each reply's latent quality,
                                   # which no word reveals

    def n_words(median, low, high):
        return int(np.clip(round(median * rng.lognormal(0, 0.6)),
                           low, high))

    texts, visible = [], []
    for _ in range(n_comparisons):
        topic = topics[rng.integers(len(topics))]
        n_turns = int(rng.choice(4, p=[0.25, 0.3, 0.25, 0.2])) + 1
        prefix = []
        for turn in range(n_turns):
            human, _ = _words(rng, n_words(22, 4, 80), topic, 0.0, 0.0,
                              weights)
            prefix.append("\n\nHuman: " + _sentences(rng, human, True))
            if turn < n_turns - 1:
                # earlier Assistant turns are shared by both transcripts
                said, _ = _words(rng, n_words(60, 8, 200), topic,
                                 marker_rate, rng.beta(2, 2), weights)
                prefix.append("\n\nAssistant: " + _sentences(rng, said))
        prefix = "".join(prefix) + "\n\nAssistant: "
        replies, scores = [], []
        for _ in range(2):
            n = n_words(60, 8, 200)
            # how helpful this reply tends to be: drawn for each reply
            said, score = _words(rng, n, topic, marker_rate,
                                 rng.beta(2, 2), weights)
            replies.append(prefix + _sentences(rng, said))
            scores.append(score + length_weight * n)
        d = scores[0] - scores[1] + noise * (rng.standard_normal()
                                             - rng.standard_normal())
        first_wins = rng.random() < 1.0 / (1.0 + np.exp(-d))
        order = (0, 1) if first_wins else (1, 0)
        texts += [replies[order[0]], replies[order[1]]]
        visible += [scores[order[0]], scores[order[1]]]
    comparisons = np.arange(2 * n_comparisons).reshape(-1, 2)
    groups = np.arange(n_comparisons)
    return texts, comparisons, groups, np.asarray(visible)


def fit_rlhf(F, pairs, C, tol=None):
    params = {} if tol is None else {"tol": tol}
    return rlhf.RewardModel(C=2 * C, **params).fit(F, pairs)


def fit_lecture(F, pairs, C, tol=1e-4):
    diff = F[pairs[:, 0]] - F[pairs[:, 1]]
    X = sp.vstack([diff, -diff]).tocsr()
    y = np.r_[np.ones(len(pairs)), np.zeros(len(pairs))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return LogisticRegression(C=C, tol=tol, max_iter=10000).fit(X, y)


def accuracy(F, pairs, coef):
    r = np.asarray(F @ coef).ravel()
    d = r[pairs[:, 0]] - r[pairs[:, 1]]
    return float(np.mean((d > 0) + 0.5 * (d == 0)))


def compare(F, comparisons, groups, unit, tol=None):
    """Both fits on five folds over groups (rlhf at tol, default its
    own); prints the table."""
    C = 1.0
    times = {"rlhf": [], "sklearn": []}
    acc = {"rlhf": [], "sklearn": []}
    iters = {"rlhf": [], "sklearn": []}
    diffs = []
    for train, test in GroupKFold(n_splits=5).split(comparisons,
                                                   groups=groups):
        tr, te = comparisons[train], comparisons[test]
        for which, fit in (("rlhf", lambda F, tr, C: fit_rlhf(F, tr, C,
                                                             tol)),
                           ("sklearn", fit_lecture)):
            best, model = np.inf, None
            for _ in range(3):
                start = time.perf_counter()
                model = fit(F, tr, C)
                best = min(best, time.perf_counter() - start)
            times[which].append(best)
            iters[which].append(int(np.max(model.n_iter_)))
            coef = model.coef_.ravel()
            acc[which].append(accuracy(F, te, coef))
            if which == "rlhf":
                ours = coef
            else:
                diffs.append(np.abs(ours - coef).max())
    # how far each stopping point is from the optimum (last fold):
    # scikit-learn run to a tight tolerance, untimed
    exact = fit_lecture(F, tr, C, tol=1e-10).coef_.ravel()
    t_ours, t_peer = sum(times["rlhf"]), sum(times["sklearn"])
    print(f"C={C} (RewardModel C={2 * C}"
          + ("" if tol is None else f", tol={tol:g}")
          + f"); five folds over {unit}, best of 3 fits per fold")
    print("| | mirrored rows + scikit-learn | rlhf.RewardModel | ratio |")
    print("| --- | --- | --- | --- |")
    print(f"| fit time, 5 folds | {t_peer:.2f} s | {t_ours:.2f} s | "
          f"{t_peer / t_ours:.1f}x |")
    print(f"| held-out pairwise accuracy | {np.mean(acc['sklearn']):.4f} | "
          f"{np.mean(acc['rlhf']):.4f} | |")
    print(f"| iterations per fold | {np.mean(iters['sklearn']):.1f} | "
          f"{np.mean(iters['rlhf']):.1f} (L-BFGS) | |")
    print(f"largest |coef difference| over folds {max(diffs):.1e}; on the "
          "last fold, distance to the optimum (scikit-learn at tol=1e-10): "
          f"rlhf {np.abs(ours - exact).max():.1e}, scikit-learn at its "
          f"default tol {np.abs(coef - exact).max():.1e}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", choices=["finegrained", "hh-like", "both"],
                        default="both")
    parser.add_argument("--tol", type=float, default=None,
                        help="RewardModel's tol (default: its own)")
    parser.add_argument("--quick", action="store_true",
                        help="3,000 HH-like comparisons instead of 20,000")
    args = parser.parse_args(argv)

    import sklearn
    print(f"machine: {machine()}; scikit-learn {sklearn.__version__}")
    if args.data in ("finegrained", "both"):
        F, comparisons, groups = data()
        print(f"{F.shape[0]:,} answers x {F.shape[1]:,} hashed features "
              f"({F.nnz / F.shape[0]:.0f} non-zeros per answer), "
              f"{len(comparisons):,} strict comparisons")
        compare(F, comparisons, groups, "questions", args.tol)

    if args.data in ("hh-like", "both"):
        if args.data == "both":
            print()
        n = 3000 if args.quick else 20000
        start = time.perf_counter()
        texts, comparisons, groups, visible = hh_like(n)
        F = hash_texts(texts)
        elapsed = time.perf_counter() - start
        words = np.mean([len(t.split()) for t in texts])
        print("HH-RLHF-like synthetic dialogues (generated here, not the "
              f"real data; generated and hashed in {elapsed:.1f} s, untimed)")
        print(f"{F.shape[0]:,} transcripts x {F.shape[1]:,} hashed features "
              f"({F.nnz / F.shape[0]:.0f} non-zeros, {words:.0f} words per "
              f"transcript), {len(comparisons):,} comparisons, one dialogue "
              "each")
        # The hidden score without its noise, as a reference accuracy: a
        # model of the words cannot see the noise, so it rarely beats this.
        d = visible[comparisons[:, 0]] - visible[comparisons[:, 1]]
        print("the hidden score of the final replies' words, without its "
              "noise, prefers the chosen transcript in "
              f"{np.mean((d > 0) + 0.5 * (d == 0)):.4f} of the comparisons")
        compare(F, comparisons, groups, "dialogues", args.tol)


if __name__ == "__main__":
    main()
