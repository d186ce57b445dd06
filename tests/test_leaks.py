"""Repeated calls leak neither memory nor references.

Each entry point runs 10^4 times (10^3 under the sanitizer build, which
is several times slower; a fifth of that for the functions written in
pure Python and NumPy, a tenth for whole fits of the policy optimisers --
each a loop of a few dozen kernel calls -- and for TinyLM's methods, and a
twentieth for the overoptimization curves and TinyLM's sampler) on small
inputs, on its success path and on its error paths, after a warm-up.
Checked afterwards:

- the reference count of every input array is what it was (a missing
  Py_INCREF or an extra Py_DECREF in the wrapper shows up here at once);
- memory traced by tracemalloc (Python objects and NumPy array data) has
  not grown by more than a few allocations' worth;
- the resident set size has not grown by more than 4 MiB: a C buffer of
  more than about 400 bytes leaked per call would add up to more (not
  checked under AddressSanitizer, whose quarantine holds freed memory on
  purpose).

Leaks too small for these thresholds are valgrind's job: see the
"Guarantees" section of the README for the memcheck command.
"""
import gc
import json
import os
import sys
import tempfile
import tracemalloc
import warnings

import numpy as np
import pytest

import rlhf
import rlhf.text
from rlhf import _core

pytestmark = pytest.mark.slow  # minutes in all

SANITIZED = os.environ.get("RLHF_SANITIZED") == "1"
N_CALLS = 1_000 if SANITIZED else 10_000
# pure Python and NumPy, no compiled code of ours, and ~1 ms a call under
# tracemalloc: fewer calls keep the file within its time budget
PYTHON_ONLY = {"simulate_preferences", "simulate_rankings", "make_world",
               "annotator_agreement", "rankings_to_comparisons",
               "load_preference_jsonl", "kl_divergence", "best_of_n_policy",
               "shape_rewards", "mask_policy", "mask_policy no mass",
               "CostModel", "constrained_policy below the least cost"}
# the compiled solver at the limit lam = inf, behind ~0.3 ms of Python
# checks under tracemalloc
REDUCED = {"constrained_policy at the least cost"}
# whole fits (each a loop of a few dozen kernel calls and ~0.1 ms without
# tracemalloc): a tenth of the calls, still thousands of kernel calls
FITS = {"PPO", "PPO with costs", "PPO diverging", "REINFORCE", "DPO",
        "DPO linear", "SFT"}
# token-level fits: a SequencePolicy built per iteration and exact
# statistics in NumPy, ~3 ms a fit under tracemalloc: a fiftieth, still
# thousands of kernel calls
SEQUENCE_FITS = {"PPO sequences", "PPO sequences exact",
                 "REINFORCE sequences", "DPO sequences"}
# one policy per point and its divergence, in Python: a twentieth
CURVES = {"overoptimization_curves best-of-n", "overoptimization_curves kl"}
# TinyLM's methods: the gpt kernels (each run 10^4 times below) behind
# 0.1-1.5 ms of Python checks and text under tracemalloc: a tenth, and a
# twentieth for generate
LM_METHODS = {"TinyLM.logits", "TinyLM.logits bad token",
              "TinyLM.loss_and_gradients",
              "TinyLM.loss_and_gradients bad mask", "TinyLM.log_prob",
              "TinyLM.log_prob bad lengths"}
LM_SAMPLING = {"TinyLM.generate", "TinyLM.generate bad prompt"}

rng = np.random.default_rng(0)
X = rng.normal(size=(6, 2))
y = np.array([0.0, 1.0, 0.0, 1.0, 1.0, 0.0])
sw = np.ones(6)
w3 = np.array([0.1, -0.2, 0.3])
CSR = (np.array([1.0, 2.0, 3.0]), np.array([0, 1, 1], dtype=np.int64),
       np.array([0, 1, 2, 3, 3, 3, 3], dtype=np.int64), 2)
BAD_CSR = (np.array([1.0, 2.0, 3.0]), np.array([0, 5, 1], dtype=np.int64),
           np.array([0, 1, 2, 3, 3, 3, 3], dtype=np.int64), 2)
POLICY = np.full((2, 4), 0.25)
REWARDS = np.array([[1.0, 0.0, 1.0, 0.0], [0.5, 0.2, 0.1, 0.0]])
NAN_REWARDS = np.where(REWARDS > 0.9, np.nan, REWARDS)
PAIRS = np.array([[0, 1], [0, 3], [2, 3], [1, 3], [2, 1]], dtype=np.int64)
FEATURES = np.array([[0.9, 0.8], [0.4, 0.9], [0.8, 0.5], [0.2, 0.1]])
BT = (FEATURES, 4, 0, PAIRS, None, None, None, 0, 1.0)
BT_TIES = (None, 4, 0, PAIRS, np.ones(5), np.zeros(5),
           np.array([0, 1, 0, 0, 0], np.uint8), 1, 0.5)
BT_BAD = (FEATURES, 4, 0, PAIRS + 2, None, None, None, 0, 1.0)
RANKINGS = np.array([[0, 2, 1, 3], [2, 0, 3, -1]], dtype=np.int64)
BT_PL = (None, 4, 1, RANKINGS, None, None, None, 0, 1.0)
COSTS = np.array([[0.0, 1.0, 0.5, 0.2], [1.0, 0.0, 0.3, 0.1]])
DPO_COMPARISONS = np.array([[0, 0, 1], [1, 2, 3], [0, 2, 1]])
DPO_FEATURES = np.arange(16.0).reshape(2, 4, 2) / 16
DEMONSTRATIONS = np.array([[0, 0], [0, 1], [1, 3]])
COST_PAIRS = np.array([[0, 1], [2, 3]])
SAFE = np.array([True, False, True, False])
ALLOWED = REWARDS > 0.15


def _quadratic(x):
    return float(x @ x), 2 * x


def _failing(x):
    raise ZeroDivisionError("objective failed")


_JSONL = tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False)
_JSONL.write("\n".join(json.dumps({"chosen": f"a{i}", "rejected": f"b{i}"})
                       for i in range(3)))
_JSONL.close()


def _fit_logistic():
    model = rlhf.LogisticRegression().fit(X, y, sample_weight=sw)
    return model.predict_proba(X)


def _fit_policy(estimator, **params):
    def fit(*args):
        model = estimator(n_iterations=2, **params)
        return model.fit(*args).policy_
    return fit


def _fit_sft(demonstrations):
    return rlhf.SFT().fit(demonstrations).policy_


def _fit_cost_model(features, pairs, safe):
    model = rlhf.CostModel().fit(features, pairs, safe=safe)
    return model.coef_, model.predict(features)


def _curves(method, **kwargs):
    def run(reference, gold, proxy):
        curves = rlhf.overoptimization_curves(reference, gold, proxy,
                                              method=method, **kwargs)
        return curves.kl, curves.policies
    return run


def _fit_reward_model():
    model = rlhf.RewardModel(C=2.0).fit(FEATURES, PAIRS)
    return model.predict(FEATURES), model.reward_std(FEATURES)


# a sequence world: V = 3 tokens (the end and two words), T = 4, a bigram
# table of 3 states, and the whole-prefix table of the 7 prefixes of 0 .. 2
# words for the backup (15 complete sequences)
SEQ_PROBS = np.array([[0.2, 0.5, 0.3], [0.5, 0.25, 0.25], [0.4, 0.3, 0.3]])
SEQ_LOGP = np.log(SEQ_PROBS)
SEQ_TOKENS = np.array([[1, 2, 0, 0], [0, 0, 0, 0], [2, 2, 1, 0]])
SEQ_LENGTHS = np.array([3, 1, 4])
SEQ_BAD_TOKENS = SEQ_TOKENS + 3
SEQ_STATES = np.array([0, 1, 2, -1, 0, 2])
SEQ_ACTIONS = np.array([1, 2, 0, 0, 2, 1])
SEQ_W = np.array([1.0, 0.5, 1.0, 1.0, 0.0, 2.0])
SEQ_POLICY = rlhf.SequencePolicy(SEQ_LOGP, 3, 4, context_length=1)


def _token_ppo_step(values=False):
    theta, m, v = np.zeros((3, 3)), np.zeros((3, 3)), np.zeros((3, 3))
    out = _core.token_ppo_adam_step(
        theta, m, v, SEQ_LOGP, SEQ_STATES, SEQ_ACTIONS, SEQ_W, SEQ_W - 2.0,
        SEQ_W, 0.2, 0.1, 3, 0.5, 0.1, 0.9, 0.999, 1e-8, 1)
    table, vm, vv = np.zeros(3), np.zeros(3), np.zeros(3)
    loss = _core.value_adam_step(table, vm, vv, SEQ_STATES, SEQ_W, SEQ_W,
                                 SEQ_W * 0, 0.2, 0.5, 0.1, 0.9, 0.999, 1e-8,
                                 1)
    return out, loss, theta, table


def _sequence_rewards(sequences):
    return sequences.lengths.astype(float)


# a TinyLM of 992 parameters: one layer of 8 channels and 2 heads, a block
# of 8 tokens, the characters " abc" and the end of text (token 4); a
# batch of 2 sequences of 4 tokens, and the activations of its forward pass
LM = rlhf.TinyLM(n_layer=1, n_head=2, n_embd=8, block_size=8,
                 tokenizer=rlhf.text.CharTokenizer("abc "), random_state=0)
GPT_CONFIG = LM._config
GPT_BAD_CONFIG = (1, 3, 8, 5, 8)  # n_embd not a multiple of n_head
GPT_PARAMS = LM._params.copy()
GPT_TOKENS = np.array([[4, 1, 2, 3], [4, 0, 0, 1]])
GPT_TARGETS = np.array([[1, 2, 3, 4], [0, 0, 1, 4]])
GPT_BAD_TOKENS = GPT_TOKENS + 2
GPT_ACTS = np.empty(_core.gpt_sizes(GPT_CONFIG, 2, 4)[1], dtype=np.float32)
_core.gpt_forward(GPT_CONFIG, GPT_PARAMS, GPT_TOKENS, GPT_ACTS)
GPT_COEF = np.full((2, 4), 0.125, dtype=np.float32)
GPT_GRADS = np.empty_like(GPT_PARAMS)
_core.gpt_backward(GPT_CONFIG, GPT_PARAMS, GPT_TOKENS, GPT_ACTS, GPT_TARGETS,
                   GPT_COEF, GPT_GRADS)
GPT_NAN_GRADS = np.where(np.arange(GPT_GRADS.size) == 7, np.float32(np.nan),
                         GPT_GRADS)
# AdamW's state, updated in place by every call
ADAMW_PARAMS = GPT_PARAMS.copy()
ADAMW_M = np.zeros_like(GPT_PARAMS)
ADAMW_V = np.zeros_like(GPT_PARAMS)
GPT_PROMPTS = np.array([[4, 0, 1], [4, 2, 2]])
GPT_LENGTHS = np.array([1, 3])


def _lm_generate(prompts):
    return LM.generate(prompts, max_new_tokens=4, random_state=0)


# (name, function, positional arguments, the exception it must raise or None)
CALLS = [
    ("sample_sequences", _core.sample_sequences,
     (SEQ_PROBS, 6, 4, 7, 0, 1), None),
    ("sample_sequences bad depth", _core.sample_sequences,
     (SEQ_PROBS, 6, 4, 7, 0, 2), ValueError),
    ("sequence_log_probs", _core.sequence_log_probs,
     (SEQ_LOGP, SEQ_TOKENS, SEQ_LENGTHS, 0, 1), None),
    ("sequence_log_probs bad token", _core.sequence_log_probs,
     (SEQ_LOGP, SEQ_BAD_TOKENS, SEQ_LENGTHS, 0, 1), ValueError),
    ("soft_backup", _core.soft_backup,
     (np.log(np.full((7, 3), 1 / 3)), np.arange(15.0), 4, 0), None),
    ("soft_backup bad shape", _core.soft_backup,
     (np.zeros((6, 3)), np.arange(15.0), 4, 0), ValueError),
    ("gae", _core.gae, (SEQ_PROBS, SEQ_PROBS, SEQ_LENGTHS - 1, 1.0, 0.95),
     None),
    ("token_grad", _core.token_grad,
     (SEQ_LOGP, SEQ_STATES, SEQ_ACTIONS, SEQ_W), None),
    ("token_grad bad action", _core.token_grad,
     (SEQ_LOGP, SEQ_STATES, SEQ_ACTIONS + 3, SEQ_W), ValueError),
    ("token_ppo_adam_step and value_adam_step", _token_ppo_step, (), None),
    ("PPO sequences", _fit_policy(rlhf.PPO, n_samples=8, random_state=0),
     (SEQ_POLICY, _sequence_rewards), None),
    ("PPO sequences exact", _fit_policy(rlhf.PPO, exact=True),
     (SEQ_POLICY, _sequence_rewards), None),
    ("REINFORCE sequences", _fit_policy(rlhf.REINFORCE, n_samples=8,
                                        random_state=0),
     (SEQ_POLICY, _sequence_rewards), None),
    ("DPO sequences", _fit_policy(rlhf.DPO),
     (SEQ_POLICY, (SEQ_TOKENS[:2], SEQ_TOKENS[1:])), None),
    ("gpt_sizes", _core.gpt_sizes, (GPT_CONFIG, 2, 4), None),
    ("gpt_sizes bad config", _core.gpt_sizes, (GPT_BAD_CONFIG, 2, 4),
     ValueError),
    ("gpt_forward", _core.gpt_forward,
     (GPT_CONFIG, GPT_PARAMS, GPT_TOKENS, GPT_ACTS), None),
    ("gpt_forward bad token", _core.gpt_forward,
     (GPT_CONFIG, GPT_PARAMS, GPT_BAD_TOKENS, GPT_ACTS), ValueError),
    ("gpt_forward bad buffer", _core.gpt_forward,
     (GPT_CONFIG, GPT_PARAMS, GPT_TOKENS, GPT_ACTS.astype(np.float64)),
     ValueError),
    ("gpt_token_stats", _core.gpt_token_stats,
     (GPT_CONFIG, GPT_ACTS, GPT_TARGETS, True), None),
    ("gpt_token_stats bad target", _core.gpt_token_stats,
     (GPT_CONFIG, GPT_ACTS, GPT_BAD_TOKENS, True), ValueError),
    ("gpt_backward", _core.gpt_backward,
     (GPT_CONFIG, GPT_PARAMS, GPT_TOKENS, GPT_ACTS, GPT_TARGETS, GPT_COEF,
      GPT_GRADS), None),
    ("gpt_backward bad shape", _core.gpt_backward,
     (GPT_CONFIG, GPT_PARAMS, GPT_TOKENS, GPT_ACTS, GPT_TARGETS,
      GPT_COEF[:1], GPT_GRADS), ValueError),
    ("gpt_adamw", _core.gpt_adamw,
     (ADAMW_PARAMS, GPT_GRADS, ADAMW_M, ADAMW_V, LM._decay, 1e-3, 0.9, 0.999,
      1e-8, 0.1, 1, 1.0), None),
    ("gpt_adamw nan gradient", _core.gpt_adamw,
     (ADAMW_PARAMS, GPT_NAN_GRADS, ADAMW_M, ADAMW_V, LM._decay, 1e-3, 0.9,
      0.999, 1e-8, 0.1, 1, 1.0), FloatingPointError),
    ("gpt_generate", _core.gpt_generate,
     (GPT_CONFIG, GPT_PARAMS, GPT_PROMPTS, GPT_LENGTHS, 4, 1.0, 2, 5, 7, 4),
     None),
    ("gpt_generate bad length", _core.gpt_generate,
     (GPT_CONFIG, GPT_PARAMS, GPT_PROMPTS, GPT_LENGTHS - 1, 4, 1.0, 2, 5, 7,
      4), ValueError),
    ("TinyLM.logits", LM.logits, (GPT_TOKENS,), None),
    ("TinyLM.logits bad token", LM.logits, (GPT_BAD_TOKENS,), ValueError),
    ("TinyLM.loss_and_gradients", LM.loss_and_gradients, (GPT_TOKENS,), None),
    ("TinyLM.loss_and_gradients bad mask", LM.loss_and_gradients,
     (GPT_TOKENS, GPT_TARGETS, -GPT_COEF), ValueError),
    ("TinyLM.generate", _lm_generate, (["ab", "c"],), None),
    ("TinyLM.generate bad prompt", _lm_generate, (["ab", "xyz"],),
     ValueError),
    ("TinyLM.log_prob", LM.log_prob, (["ab", ""], ["c", "ba"]), None),
    ("TinyLM.log_prob bad lengths", LM.log_prob, (["ab"], ["c", "ba"]),
     ValueError),
    ("logistic_loss_grad dense", _core.logistic_loss_grad,
     (X, y, sw, w3, True, 1.0, 0.5), None),
    ("logistic_loss_grad csr", _core.logistic_loss_grad,
     (CSR, y, sw, w3[:2], False, 1.0, 0.5), None),
    ("logistic_loss_grad bad csr", _core.logistic_loss_grad,
     (BAD_CSR, y, sw, w3[:2], False, 1.0, 0.5), ValueError),
    ("logistic_loss_grad bad length", _core.logistic_loss_grad,
     (X, y[:3], sw, w3, True, 1.0, 0.5), ValueError),
    ("logistic_hessian", _core.logistic_hessian,
     (X, y, sw, w3, True, 1.0, 0.5), None),
    ("logistic_hessian bad csr", _core.logistic_hessian,
     (BAD_CSR, y, sw, w3[:2], False, 1.0, 0.5), ValueError),
    ("logistic_fit lbfgs", _core.logistic_fit,
     (X, y, sw, True, 1.0, 0.5, "lbfgs", 1e-6, 2.2e-9, 100, 20), None),
    ("logistic_fit newton csr", _core.logistic_fit,
     (CSR, y, sw, True, 1.0, 0.5, "newton", 1e-6, 2.2e-9, 100, 20), None),
    ("logistic_fit bad csr", _core.logistic_fit,
     (BAD_CSR, y, sw, True, 1.0, 0.5, "newton", 1e-6, 2.2e-9, 100, 20),
     ValueError),
    ("lbfgs_minimize", _core.lbfgs_minimize, (_quadratic, w3), None),
    ("lbfgs_minimize failing objective", _core.lbfgs_minimize,
     (_failing, w3), ZeroDivisionError),
    ("_core.reweight", _core.reweight, (POLICY, REWARDS, 0.5, 1e-6), None),
    ("_core.reweight nan", _core.reweight, (POLICY, NAN_REWARDS, 0.5, 1e-6),
     ValueError),
    ("bt_loss_grad", _core.bt_loss_grad, (BT, w3[:2]), None),
    ("bt_loss_grad ties", _core.bt_loss_grad, (BT_TIES, np.zeros(5)), None),
    ("bt_loss_grad rankings", _core.bt_loss_grad, (BT_PL, np.zeros(4)),
     None),
    ("bt_loss_grad bad index", _core.bt_loss_grad, (BT_BAD, w3[:2]),
     ValueError),
    ("bt_loss_grad bad csr", _core.bt_loss_grad,
     ((BAD_CSR,) + BT[1:], w3[:2]), ValueError),
    ("bt_hessian", _core.bt_hessian, (BT_TIES, np.zeros(5)), None),
    ("bt_fit newton", _core.bt_fit, (BT, np.zeros(2), "newton", 1e-8, 100),
     None),
    ("bt_fit lbfgs", _core.bt_fit, (BT_PL, np.zeros(4), "lbfgs", 1e-8, 100),
     None),
    ("rlhf.reweight", rlhf.reweight, (POLICY, REWARDS), None),
    ("rlhf.reweight nan", rlhf.reweight, (POLICY, NAN_REWARDS), ValueError),
    ("LogisticRegression", _fit_logistic, (), None),
    ("RewardModel", _fit_reward_model, (), None),
    ("simulate_preferences", rlhf.simulate_preferences,
     (REWARDS[1], 4, 1.0, 0.1), None),
    ("simulate_rankings", rlhf.simulate_rankings, (REWARDS[1], RANKINGS[:1]),
     None),
    ("rankings_to_comparisons", rlhf.rankings_to_comparisons,
     (RANKINGS[:1],), None),
    ("make_world", rlhf.make_world, (2, 3, 2), None),
    ("annotator_agreement", rlhf.annotator_agreement,
     (np.array([[1, 1, 2], [0, 1, 1], [2, 2, 2]]),), None),
    ("load_preference_jsonl", rlhf.datasets.load_preference_jsonl,
     (_JSONL.name,), None),
    ("kl_regularized_policy", rlhf.kl_regularized_policy,
     (POLICY, REWARDS, 0.5), None),
    ("kl_regularized_policy overflow", rlhf.kl_regularized_policy,
     (POLICY, REWARDS * 1e300, 1e-300), None),
    ("kl_regularized_policy nan", rlhf.kl_regularized_policy,
     (POLICY, NAN_REWARDS, 0.5), ValueError),
    ("kl_divergence", rlhf.kl_divergence, (POLICY, POLICY[::-1]), None),
    ("best_of_n_policy", rlhf.best_of_n_policy, (POLICY, REWARDS, 3), None),
    ("constrained_policy", rlhf.constrained_policy,
     (POLICY, REWARDS, COSTS, 0.5, 0.3), None),
    ("constrained_policy at the least cost", rlhf.constrained_policy,
     (POLICY, REWARDS, COSTS, 0.5, 0.0), None),
    ("constrained_policy below the least cost", rlhf.constrained_policy,
     (POLICY, REWARDS, COSTS, 0.5, -1.0), ValueError),
    ("shape_rewards", rlhf.shape_rewards, (REWARDS, COSTS, 0.5), None),
    ("mask_policy", rlhf.mask_policy, (POLICY, ALLOWED), None),
    ("mask_policy no mass", rlhf.mask_policy, (POLICY, COSTS > 2),
     ValueError),
    ("PPO", _fit_policy(rlhf.PPO, random_state=0), (POLICY, REWARDS), None),
    ("PPO with costs", _fit_policy(rlhf.PPO, cost_budget=0.3, random_state=0),
     (POLICY, REWARDS, None, COSTS), None),
    ("PPO diverging", _fit_policy(rlhf.PPO, policy="linear",
                                  learning_rate=1e300, random_state=0),
     (POLICY, REWARDS * 1e300, DPO_FEATURES * 1e300), ValueError),
    ("REINFORCE", _fit_policy(rlhf.REINFORCE, exact=True), (POLICY, REWARDS),
     None),
    ("DPO", _fit_policy(rlhf.DPO, batch_size=2, random_state=0),
     (POLICY, DPO_COMPARISONS), None),
    ("DPO linear", _fit_policy(rlhf.DPO, policy="linear"),
     (POLICY, DPO_COMPARISONS, None, DPO_FEATURES), None),
    ("SFT", _fit_sft, (DEMONSTRATIONS,), None),
    ("CostModel", _fit_cost_model, (FEATURES, COST_PAIRS, SAFE), None),
    ("overoptimization_curves best-of-n", _curves("best-of-n",
                                                  n_values=[1, 4]),
     (POLICY, REWARDS, COSTS), None),
    ("overoptimization_curves kl", _curves("kl", betas=[1.0, 0.1]),
     (POLICY, REWARDS, COSTS), None),
]


def _rss_bytes():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _arrays(obj):
    if isinstance(obj, np.ndarray):
        yield obj
    elif isinstance(obj, (tuple, list)):
        for item in obj:
            yield from _arrays(item)


def _call(function, args, error):
    if error is None:
        return function(*args)
    try:
        function(*args)
    except error:
        return None
    raise AssertionError(f"{function} did not raise {error.__name__}")


@pytest.mark.parametrize("name, function, args, error", CALLS,
                         ids=[c[0] for c in CALLS])
def test_repeated_calls_leak_nothing(name, function, args, error):
    inputs = list(_arrays(args))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rlhf.ConvergenceWarning)
        for _ in range(100):  # caches, lazy imports, first-use allocations
            _call(function, args, error)
        gc.collect()
        refcounts = [sys.getrefcount(a) for a in inputs]
        tracemalloc.start()
        traced_before = tracemalloc.get_traced_memory()[0]
        rss_before = _rss_bytes()
        calls = (N_CALLS // 50 if name in SEQUENCE_FITS else
                 N_CALLS // 20 if name in CURVES | LM_SAMPLING else
                 N_CALLS // 10 if name in FITS | LM_METHODS else
                 N_CALLS // 5 if name in PYTHON_ONLY | REDUCED else N_CALLS)
        for _ in range(calls):
            _call(function, args, error)
        gc.collect()
        traced_growth = tracemalloc.get_traced_memory()[0] - traced_before
        rss_growth = _rss_bytes() - rss_before
        tracemalloc.stop()
    assert [sys.getrefcount(a) for a in inputs] == refcounts
    assert traced_growth < 64 * 1024, f"{traced_growth} bytes still traced"
    if not SANITIZED:
        assert rss_growth < 4 * 2**20, f"resident set grew {rss_growth} B"


def test_rejected_csr_keeps_the_callers_references():
    """Regression: a rejected CSR tuple released its arrays twice, so each
    call took a reference the caller owned (and later freed live
    arrays)."""
    data, indices, indptr, _ = BAD_CSR
    before = [sys.getrefcount(a) for a in (data, indices, indptr)]
    for _ in range(5):
        with pytest.raises(ValueError, match="outside"):
            _core.logistic_loss_grad(BAD_CSR, y, sw, w3[:2], False, 1.0, 0.5)
        with pytest.raises(ValueError, match="outside"):
            _core.bt_fit((BAD_CSR,) + BT[1:], np.zeros(2), "lbfgs", 1e-8, 10)
    assert [sys.getrefcount(a) for a in (data, indices, indptr)] == before
