"""rlhf.TinyLM: the float32 C kernels against the float64 twin
(rlhf._reference_gpt), finite differences and transformers' GPT-2; the
key-value-cache sampler against the full forward pass; supervised
fine-tuning; parameters and files; input checks; determinism for any
thread count, Ctrl-C and fork().

The models are tiny (one or two layers, a few dozen channels) so that the
whole file runs in seconds; shapes are chosen off the kernels' tiles (rows
in fours, columns in sixteens) so that their edges are exercised.
"""
import math
import os
import pathlib
import pickle
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from rlhf import _reference_gpt as ref
from rlhf.text import ByteTokenizer, CharTokenizer
from rlhf.tinylm import TinyLM

ROOT = pathlib.Path(__file__).resolve().parent.parent

ALPHABET = "abcdefghij"  # a CharTokenizer of 11 tokens, eot = 10


def perturbed(n_layer=1, n_head=2, n_embd=16, vocab_size=None,
              block_size=8, seed=0, scale=0.3, tokenizer=None):
    """A TinyLM moved away from GPT-2's initialisation (LayerNorm gains
    away from one, biases away from zero), so every parameter matters."""
    if tokenizer is None:
        tokenizer = CharTokenizer(ALPHABET)
    lm = TinyLM(n_layer=n_layer, n_head=n_head, n_embd=n_embd,
                block_size=block_size, vocab_size=vocab_size,
                tokenizer=tokenizer, random_state=seed)
    rng = np.random.default_rng(seed + 1000)
    state = {name: value + rng.normal(0.0, scale, size=value.shape)
             for name, value in lm.state_dict().items()}
    return lm.load_state_dict(state)


def float64_params(lm):
    """The model's float32 parameters, exactly, in float64."""
    return {name: value.astype(np.float64)
            for name, value in lm.state_dict().items()}


def log_softmax64(logits):
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def assert_gradients_close(got, expected, rtol, what=""):
    """Each parameter's gradient within rtol of its largest entry."""
    assert got.keys() == expected.keys()
    for name in expected:
        assert got[name].shape == expected[name].shape, name
        assert got[name].dtype == np.float32, name
        scale = max(np.abs(expected[name]).max(), 1e-8)
        error = np.abs(got[name] - expected[name]).max()
        assert error <= rtol * scale, (
            f"{what}{name}: max error {error:.3g}, scale {scale:.3g}")


# -- 1. forward against the float64 twin --------------------------------

# (n_layer, n_head, n_embd, vocab_size, block_size): head widths of 8, 4,
# 9, 16 and 5; vocabularies off multiples of 16
SHAPES = [(1, 3, 24, 13, 8), (2, 5, 20, 37, 11), (2, 2, 18, 11, 16),
          (1, 1, 16, 29, 5), (2, 4, 20, 17, 9)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "L%dH%dC%dV%dT%d" % s)
def test_logits_match_the_float64_twin(shape):
    n_layer, n_head, n_embd, vocab_size, block_size = shape
    lm = perturbed(n_layer, n_head, n_embd, vocab_size, block_size,
                   seed=sum(shape))
    params = float64_params(lm)
    rng = np.random.default_rng(1)
    for B in range(1, 6):
        for T in sorted({1, 2, (block_size + 1) // 2, block_size - 1,
                         block_size}):
            tokens = rng.integers(0, vocab_size, size=(B, T))
            got = lm.logits(tokens)
            assert got.dtype == np.float32
            assert got.shape == (B, T, vocab_size)
            expected, _ = ref.forward(params, tokens, n_layer, n_head)
            scale = max(1.0, np.abs(expected).max())
            error = np.abs(got - expected).max()
            assert error <= 1e-5 * scale, (B, T, error, scale)


def test_one_dimensional_tokens_are_one_sequence():
    lm = perturbed()
    tokens = np.array([1, 4, 0, 9, 10])
    np.testing.assert_array_equal(lm.logits(tokens), lm.logits([tokens]))


def test_rows_and_prefixes_do_not_interact():
    """A row's logits are the same bits alone or in a batch of any size,
    and a prefix's are those of the longer sequence (causality, and the
    fixed summation order the key-value cache relies on)."""
    lm = perturbed(2, 5, 20, 37, 11, seed=3)
    rng = np.random.default_rng(2)
    tokens = rng.integers(0, 37, size=(5, 11))
    full = lm.logits(tokens)
    for b in range(5):
        np.testing.assert_array_equal(lm.logits(tokens[b:b + 1]),
                                      full[b:b + 1])
    np.testing.assert_array_equal(lm.logits(tokens[1:4]), full[1:4])
    for T in range(1, 11):
        np.testing.assert_array_equal(lm.logits(tokens[:, :T]),
                                      full[:, :T])
    changed = tokens.copy()
    changed[:, 6] = (changed[:, 6] + 1) % 37
    after = lm.logits(changed)
    np.testing.assert_array_equal(after[:, :6], full[:, :6])
    assert not np.allclose(after[:, 6:], full[:, 6:])


# -- 2. backward against the float64 twin --------------------------------

@pytest.mark.parametrize("shape", SHAPES[:3],
                         ids=lambda s: "L%dH%dC%dV%dT%d" % s)
@pytest.mark.parametrize("masked", [False, True], ids=["all", "mask"])
def test_gradients_match_the_float64_twin(shape, masked):
    n_layer, n_head, n_embd, vocab_size, block_size = shape
    lm = perturbed(n_layer, n_head, n_embd, vocab_size, block_size,
                   seed=sum(shape) + 1)
    params = float64_params(lm)
    rng = np.random.default_rng(5)
    for B, T in [(1, 1), (3, block_size), (5, block_size - 2)]:
        tokens = rng.integers(0, vocab_size, size=(B, T))
        targets = rng.integers(0, vocab_size, size=(B, T))
        mask = None
        if masked:
            mask = rng.random((B, T)) < 0.6
            mask.flat[0] = True
        loss, grads = lm.loss_and_gradients(tokens, targets, mask)
        expected_loss, expected = ref.loss_and_gradients(
            params, tokens, targets, n_layer, n_head, mask)
        assert isinstance(loss, float)
        assert loss == pytest.approx(expected_loss, rel=1e-5)
        assert_gradients_close(grads, expected, 1e-4, f"B={B} T={T} ")


def test_weighted_mask_matches_the_twin():
    """Real-valued weights, not only a boolean mask: a weighted mean."""
    lm = perturbed(2, 2, 16, 13, 8, seed=9)
    rng = np.random.default_rng(9)
    tokens = rng.integers(0, 13, size=(3, 8))
    targets = rng.integers(0, 13, size=(3, 8))
    weight = rng.random((3, 8)) * (rng.random((3, 8)) < 0.8)
    loss, grads = lm.loss_and_gradients(tokens, targets, weight)
    expected_loss, expected = ref.loss_and_gradients(
        float64_params(lm), tokens, targets, 2, 2, weight)
    assert loss == pytest.approx(expected_loss, rel=1e-5)
    assert_gradients_close(grads, expected, 1e-4)
    # scaling the weights changes nothing: they are normalised
    loss2, grads2 = lm.loss_and_gradients(tokens, targets, 7.0 * weight)
    assert loss2 == pytest.approx(loss, rel=1e-6)
    assert_gradients_close(grads2, grads, 1e-5)


@pytest.mark.parametrize("masked", [False, True], ids=["all", "mask"])
def test_shifted_targets_equal_explicit_targets(masked):
    lm = perturbed(2, 3, 24, 13, 8, seed=4)
    rng = np.random.default_rng(4)
    tokens = rng.integers(0, 13, size=(4, 8))
    mask = None
    if masked:
        mask = rng.random((4, 8)) < 0.7
        mask[:, 1] = True
    loss, grads = lm.loss_and_gradients(tokens, mask=mask)
    explicit_loss, explicit = lm.loss_and_gradients(
        tokens[:, :-1], tokens[:, 1:], None if mask is None else mask[:, 1:])
    assert loss == explicit_loss
    for name in grads:
        np.testing.assert_array_equal(grads[name], explicit[name], name)
    # and the twin agrees with the shifted reading
    expected_loss, expected = ref.loss_and_gradients(
        float64_params(lm), tokens[:, :-1], tokens[:, 1:], 2, 3,
        None if mask is None else mask[:, 1:])
    assert loss == pytest.approx(expected_loss, rel=1e-5)
    assert_gradients_close(grads, expected, 1e-4)


def test_loss_is_the_mean_token_log_prob():
    """loss_and_gradients' loss is -mean log softmax(logits)[target]."""
    lm = perturbed(1, 2, 16, 11, 8, seed=6)
    rng = np.random.default_rng(6)
    tokens = rng.integers(0, 11, size=(3, 7))
    targets = rng.integers(0, 11, size=(3, 7))
    loss, _ = lm.loss_and_gradients(tokens, targets)
    logp = np.take_along_axis(log_softmax64(lm.logits(tokens)),
                              targets[..., None], -1)[..., 0]
    assert loss == pytest.approx(-logp.mean(), rel=1e-6)


# -- 3. gradient against finite differences of the C loss ---------------

def test_gradient_matches_finite_differences_of_the_c_loss():
    """Independent of the twin: a few coordinates of every parameter (its
    largest gradient entry and two at random) against a fourth-order
    central difference of the float32 loss, with a step large enough for
    float32's rounding (h = 1e-2: truncation ~ h^4, noise ~ 1e-7 / h)."""
    lm = perturbed(2, 3, 24, 13, 8, seed=11, scale=0.2)
    rng = np.random.default_rng(11)
    tokens = rng.integers(0, 13, size=(2, 6))
    targets = rng.integers(0, 13, size=(2, 6))
    mask = rng.random((2, 6)) < 0.7
    mask[0, 0] = True
    _, grads = lm.loss_and_gradients(tokens, targets, mask)
    state = lm.state_dict()
    probe = lm.copy()
    h = 1e-2

    def loss_at(name, index, delta):
        moved = dict(state)
        value = state[name].copy()
        value.flat[index] += delta
        moved[name] = value
        return probe.load_state_dict(moved).loss_and_gradients(
            tokens, targets, mask)[0]

    for name, grad in grads.items():
        flat = np.abs(grad).ravel()
        picks = {int(np.argmax(flat))}
        picks.update(int(i) for i in rng.choice(flat.size, size=2,
                                                replace=False))
        for index in picks:
            numeric = (-loss_at(name, index, 2 * h)
                       + 8 * loss_at(name, index, h)
                       - 8 * loss_at(name, index, -h)
                       + loss_at(name, index, -2 * h)) / (12 * h)
            analytic = float(grad.flat[index])
            assert analytic == pytest.approx(numeric, rel=2e-2, abs=2e-4), (
                name, index)


# -- 4. the key-value-cache sampler -------------------------------------

def sample_log_probs_from_forward(lm, tokens):
    """The full forward pass's log p of every token given its prefix:
    (rows, block_size), entry t the log-probability of tokens[:, t]."""
    logp, _ = lm._token_log_probs(np.ascontiguousarray(tokens[:, :-1]),
                                  np.ascontiguousarray(tokens[:, 1:]))
    return np.concatenate([np.zeros((len(tokens), 1), np.float32), logp], 1)


@pytest.mark.parametrize("temperature, top_k", [
    (1.0, None), (0.7, None), (1.0, 3), (1.3, 1), (0.0, None)],
    ids=["t1", "t0.7", "top3", "top1", "greedy"])
def test_sampler_log_probs_equal_the_full_forward(temperature, top_k):
    lm = perturbed(2, 5, 20, 23, 16, seed=12, scale=0.5)
    prompts = [np.array([10]), np.array([10, 3, 4]),
               np.array([10, 1, 2, 3, 4, 5, 6]), np.array([2, 2])]
    tokens, starts, ends, log_probs = lm.sample(
        prompts, max_new_tokens=12, temperature=temperature, top_k=top_k,
        n=2, random_state=3)
    rows = len(prompts) * 2
    assert tokens.shape == (rows, 16) and tokens.dtype == np.int64
    assert log_probs.shape == (rows, 16) and log_probs.dtype == np.float32
    np.testing.assert_array_equal(
        starts, np.repeat([len(p) for p in prompts], 2))
    for i, prompt in enumerate(np.repeat(np.arange(len(prompts)), 2)):
        np.testing.assert_array_equal(tokens[i, :starts[i]],
                                      prompts[prompt])
        assert starts[i] < ends[i] <= min(starts[i] + 12, 16)
        sampled = tokens[i, starts[i]:ends[i]]
        # an end of text stops the sample: only the last may be one
        assert not (sampled[:-1] == lm.eot_token).any()
        if ends[i] < min(starts[i] + 12, 16):
            assert sampled[-1] == lm.eot_token
        assert (tokens[i, ends[i]:] == lm.eot_token).all()
    taken = np.zeros(tokens.shape, dtype=bool)
    for i in range(rows):
        taken[i, starts[i]:ends[i]] = True
    assert taken.sum() > rows  # the test samples something
    np.testing.assert_array_equal(log_probs[~taken], 0.0)
    expected = sample_log_probs_from_forward(lm, tokens)
    assert np.array_equal(log_probs[taken], expected[taken])

    logits = lm.logits(tokens[:, :-1])
    for i in range(rows):
        for t in range(starts[i], ends[i]):
            # only the tokens the tokenizer knows are ever drawn
            row = logits[i, t - 1, :lm.tokenizer.vocab_size]
            if temperature == 0.0 or top_k == 1:
                assert tokens[i, t] == np.argmax(row), (i, t)
            elif top_k is not None:
                assert row[tokens[i, t]] >= np.sort(row)[-top_k], (i, t)
    if temperature == 0.0:
        # greedy continuations depend on the prompt only
        np.testing.assert_array_equal(tokens[0::2], tokens[1::2])


def test_sampler_with_prompts_up_to_the_block():
    lm = perturbed(1, 3, 24, 13, 8, seed=13)
    full = np.array([10, 1, 2, 3, 4, 5, 6, 7])
    tokens, starts, ends, log_probs = lm.sample(
        [full, full[:7], full[:1]], max_new_tokens=5, random_state=0)
    assert ends[0] == starts[0] == 8  # no room left
    assert ends[1] == 8
    assert 1 < ends[2] <= 6
    np.testing.assert_array_equal(log_probs[0], 0.0)
    taken = np.zeros(tokens.shape, dtype=bool)
    for i in range(3):
        taken[i, starts[i]:ends[i]] = True
    expected = sample_log_probs_from_forward(lm, tokens)
    assert np.array_equal(log_probs[taken], expected[taken])
    # no new tokens at all
    tokens, starts, ends, log_probs = lm.sample([full[:3]], max_new_tokens=0,
                                                random_state=0)
    assert ends[0] == starts[0] == 3
    np.testing.assert_array_equal(log_probs, 0.0)


def test_sampler_draws_from_the_model():
    """Many samples of the first token follow softmax(logits / T): each
    token's count within five binomial standard deviations (a fixed
    seed, so the test does not flicker)."""
    lm = perturbed(1, 2, 12, 11, 4, seed=14, scale=0.3)
    logits = lm.logits([[10, 2]])[0, -1].astype(np.float64)
    n = 4000
    for temperature in (1.0, 0.5):
        tokens, _, _, _ = lm.sample([np.array([10, 2])], max_new_tokens=1,
                                    temperature=temperature, n=n,
                                    random_state=7)
        counts = np.bincount(tokens[:, 2], minlength=11)
        p = np.exp(log_softmax64(logits / temperature))
        assert p.max() < 0.9  # the draws are not all one token
        sd = np.sqrt(n * p * (1 - p))
        assert (np.abs(counts - n * p) <= 5 * sd + 1).all(), (counts, n * p)


def test_generate_decodes_the_samples():
    lm = perturbed(1, 2, 16, None, 12, seed=15, scale=0.5)
    one = lm.generate("abc", max_new_tokens=6, random_state=4)
    assert isinstance(one, str) and len(one) <= 6
    assert set(one) <= set(ALPHABET)
    assert lm.generate(["abc"], max_new_tokens=6, random_state=4) == [one]
    texts = lm.generate(["abc", ""], max_new_tokens=6, n=3, random_state=4)
    assert isinstance(texts, list) and len(texts) == 6
    tokens, starts, ends, _ = lm.sample(
        lm.encode_prompts(["abc", ""]), max_new_tokens=6, n=3,
        random_state=4)
    np.testing.assert_array_equal(starts, [4, 4, 4, 1, 1, 1])
    assert texts == [lm.tokenizer.decode(tokens[i, starts[i]:ends[i]])
                     for i in range(6)]
    assert texts[0] == one
    assert lm.generate("abc", max_new_tokens=0, random_state=4) == ""


# -- 5. determinism -----------------------------------------------------

def test_same_random_state_same_model_and_samples():
    a = TinyLM(n_layer=1, n_head=2, n_embd=16, block_size=16,
               tokenizer=CharTokenizer(ALPHABET), random_state=5)
    b = TinyLM(n_layer=1, n_head=2, n_embd=16, block_size=16,
               tokenizer=CharTokenizer(ALPHABET), random_state=5)
    c = TinyLM(n_layer=1, n_head=2, n_embd=16, block_size=16,
               tokenizer=CharTokenizer(ALPHABET), random_state=6)
    for name, value in a.state_dict().items():
        np.testing.assert_array_equal(value, b.state_dict()[name])
    assert not np.array_equal(a.state_dict()["transformer.wte.weight"],
                              c.state_dict()["transformer.wte.weight"])
    first = a.generate(["ab", "", "jj"], max_new_tokens=10, n=3,
                       random_state=1)
    assert first == a.generate(["ab", "", "jj"], max_new_tokens=10, n=3,
                               random_state=1)
    assert first == b.generate(["ab", "", "jj"], max_new_tokens=10, n=3,
                               random_state=np.random.default_rng(1))
    assert first != a.generate(["ab", "", "jj"], max_new_tokens=10, n=3,
                               random_state=2)


def test_same_random_state_same_fit():
    texts = ["abcabc", "jihgf", "aaabbbccc"]

    def run(seed):
        lm = TinyLM(n_layer=1, n_head=2, n_embd=16, block_size=8,
                    tokenizer=CharTokenizer(ALPHABET), random_state=0)
        return lm.fit(texts, max_steps=6, batch_size=3, random_state=seed)

    a, b, c = run(1), run(1), run(2)
    for key in ("loss", "lr", "grad_norm"):
        assert a.history_[key].tobytes() == b.history_[key].tobytes()
    for name, value in a.state_dict().items():
        assert value.tobytes() == b.state_dict()[name].tobytes(), name
    assert a.history_["loss"].tobytes() != c.history_["loss"].tobytes()


THREADS_SCRIPT = textwrap.dedent("""
    import hashlib
    import numpy as np
    from rlhf.tinylm import TinyLM

    def digest(*arrays):
        h = hashlib.sha256()
        for a in arrays:
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()

    # wide enough (B T = 256 rows, C = 32, V = 257) that the matrix
    # products, GELU and the log-normalisers split between threads
    texts = ["the quick brown fox jumps over the lazy dog",
             "pack my box with five dozen liquor jugs",
             "how vexingly quick daft zebras jump"]
    lm = TinyLM(n_layer=2, n_head=4, n_embd=32, block_size=32,
                random_state=0)
    lm.fit(texts, max_steps=3, batch_size=8, random_state=1)
    state = lm.state_dict()
    print("fit", digest(*[state[k] for k in sorted(state)],
                        *[lm.history_[k] for k in sorted(lm.history_)]))
    tokens = np.random.default_rng(2).integers(0, 257, size=(8, 32))
    print("logits", digest(lm.logits(tokens)))
    loss, grads = lm.loss_and_gradients(tokens)
    print("gradients", digest(np.array([loss]),
                              *[grads[k] for k in sorted(grads)]))
    sample = lm.sample([np.array([256]), np.array([256, 116, 104])],
                       max_new_tokens=29, n=16, random_state=3)
    print("sample", digest(*sample))
    print("generate", hashlib.sha256(repr(lm.generate(
        ["the", "pack"], max_new_tokens=20, n=4, random_state=4)).encode()
    ).hexdigest())
""")


@pytest.mark.slow
@pytest.mark.no_sanitizer
def test_bitwise_the_same_for_any_thread_count():
    """Each thread count in its own process (OpenMP reads
    OMP_NUM_THREADS at start-up): fit, logits, gradients and samples
    hash the same."""
    outputs = []
    for threads in ("1", "2"):
        env = dict(os.environ, OMP_NUM_THREADS=threads,
                   OPENBLAS_NUM_THREADS=threads,
                   PYTHONPATH=os.pathsep.join(
                       [str(ROOT), os.environ.get("PYTHONPATH", "")]))
        out = subprocess.run([sys.executable, "-c", THREADS_SCRIPT],
                             env=env, capture_output=True, text=True,
                             timeout=300)
        assert out.returncode == 0, out.stderr
        outputs.append(dict(line.split() for line in
                            out.stdout.strip().splitlines()))
    assert outputs[0].keys() == {"fit", "logits", "gradients", "sample",
                                 "generate"}
    for name in outputs[0]:
        assert outputs[0][name] == outputs[1][name], name


# -- 6. transformers' GPT-2 --------------------------------------------

def _hf_logits_and_gradients(torch, model, tokens, targets):
    logits = model(torch.tensor(tokens)).logits
    loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]),
        torch.tensor(targets).reshape(-1))
    model.zero_grad()
    loss.backward()
    grads = {name: p.grad.detach().numpy().copy()
             for name, p in model.named_parameters()}
    return logits.detach().numpy(), loss.item(), grads


@pytest.mark.slow  # importing torch and transformers takes seconds
@pytest.mark.no_sanitizer
def test_matches_transformers_gpt2():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    lm = perturbed(2, 5, 20, 37, 11, seed=21)
    rng = np.random.default_rng(21)
    tokens = rng.integers(0, 37, size=(3, 11))
    targets = rng.integers(0, 37, size=(3, 11))
    ours = lm.logits(tokens)
    loss, grads = lm.loss_and_gradients(tokens, targets)

    exported = lm.to_transformers()
    assert isinstance(exported, transformers.GPT2LMHeadModel)
    assert not exported.training
    config = transformers.GPT2Config(
        vocab_size=37, n_positions=11, n_embd=20, n_layer=2, n_head=5,
        activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0,
        attn_pdrop=0.0, layer_norm_epsilon=1e-5, tie_word_embeddings=True)
    built = transformers.GPT2LMHeadModel(config).eval()
    state = {name: torch.from_numpy(value)
             for name, value in lm.state_dict().items()}
    state["lm_head.weight"] = state["transformer.wte.weight"]
    built.load_state_dict(state, strict=False)
    built.tie_weights()

    for model in (exported, built):
        assert model.lm_head.weight.data_ptr() == \
            model.transformer.wte.weight.data_ptr()
        logits, hf_loss, hf_grads = _hf_logits_and_gradients(
            torch, model, tokens, targets)
        assert np.abs(logits - ours).max() <= 1e-4
        assert loss == pytest.approx(hf_loss, rel=1e-5)
        # named_parameters lists the tied embedding once, with the LM
        # head's share of the gradient in it, as ours has
        assert hf_grads.keys() == grads.keys()
        assert_gradients_close(grads, hf_grads, 1e-4)


@pytest.mark.slow
@pytest.mark.no_sanitizer
def test_transformers_state_dict_loads_back():
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    lm = perturbed(1, 3, 24, 13, 8, seed=22)
    hf_state = lm.to_transformers().state_dict()
    assert "lm_head.weight" in hf_state
    back = TinyLM(n_layer=1, n_head=3, n_embd=24, block_size=8,
                  vocab_size=13, tokenizer=CharTokenizer(ALPHABET),
                  random_state=1).load_state_dict(hf_state)
    for name, value in lm.state_dict().items():
        assert value.tobytes() == back.state_dict()[name].tobytes(), name
    assert isinstance(hf_state["transformer.wte.weight"], torch.Tensor)


def test_untied_lm_head_is_refused():
    lm = perturbed(1, 2, 16, 11, 8, seed=23)
    state = lm.state_dict()
    state["lm_head.weight"] = np.zeros_like(state["transformer.wte.weight"])
    with pytest.raises(ValueError, match="lm_head.weight"):
        lm.load_state_dict(state)


# -- 7. supervised fine-tuning -------------------------------------------

def test_sft_memorises_a_text():
    text = "the cat sat on the mat"
    lm = TinyLM(n_layer=1, n_head=2, n_embd=32, block_size=32,
                tokenizer=CharTokenizer.from_corpus([text]), random_state=0)
    # one document: every row of a batch would be the same
    assert lm.fit([text], max_steps=150, batch_size=1, lr=1e-2,
                  random_state=0) is lm
    assert set(lm.history_) == {"loss", "lr", "grad_norm"}
    for values in lm.history_.values():
        assert values.shape == (150,) and values.dtype == np.float64
        assert np.isfinite(values).all()
    assert (lm.history_["grad_norm"] > 0).all()
    assert lm.history_["loss"][-1] < 0.05
    assert lm.history_["loss"][0] > 1.0
    assert lm.generate("the cat", max_new_tokens=20,
                       temperature=0) == " sat on the mat"
    total, _ = lm.log_prob(["the cat"], [" sat on the mat"])
    assert total[0] > math.log(0.9)


@pytest.mark.parametrize("max_steps, warmup_steps, min_lr_ratio", [
    (20, None, 0.1), (20, 0, 0.0), (7, 7, 0.5), (9, 3, 1.0), (5, 8, 0.1)])
def test_learning_rate_schedule(max_steps, warmup_steps, min_lr_ratio):
    """Linear warm-up over warmup_steps (a tenth of the steps by
    default) from lr / warmup_steps, then a cosine from lr down to
    min_lr_ratio * lr at the last step."""
    lm = TinyLM(n_layer=1, n_head=1, n_embd=8, block_size=4,
                tokenizer=CharTokenizer(ALPHABET), random_state=0)
    lr = 2e-3
    lm.fit(["abc"], max_steps=max_steps, batch_size=1, lr=lr,
           warmup_steps=warmup_steps, min_lr_ratio=min_lr_ratio,
           random_state=0)
    warm = max_steps // 10 if warmup_steps is None else warmup_steps
    expected = []
    for step in range(1, max_steps + 1):
        if step <= warm:
            expected.append(lr * step / warm)
        else:
            progress = (step - warm) / (max_steps - warm)
            cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
            expected.append(lr * (min_lr_ratio
                                  + (1.0 - min_lr_ratio) * cosine))
    np.testing.assert_allclose(lm.history_["lr"], expected, rtol=1e-12)
    if warm < max_steps:
        assert lm.history_["lr"][-1] == pytest.approx(lr * min_lr_ratio)
    assert lm.history_["lr"].max() <= lr * (1 + 1e-12)


def test_prompts_are_masked_from_the_loss():
    """With prompts, the loss counts the response and the final end of
    text only: the first step's loss is the masked mean of the document
    (every row of the batch is the one document here)."""
    lm = perturbed(1, 2, 16, 11, 16, seed=31)
    prompt, response = "abcdef", "gh"
    doc = np.concatenate([[10], lm.tokenizer.encode(prompt + response),
                          [10]])
    mask = np.zeros(len(doc))
    mask[1 + len(prompt):] = 1.0  # target j is doc[j]
    masked, _ = lm.loss_and_gradients(doc[None], mask=mask)
    whole, _ = lm.loss_and_gradients(doc[None])
    assert abs(masked - whole) > 1e-2  # the two readings differ
    fitted = lm.copy().fit([response], prompts=[prompt], max_steps=1,
                           batch_size=3, random_state=0)
    assert fitted.history_["loss"][0] == pytest.approx(masked, rel=1e-6)
    unprompted = lm.copy().fit([prompt + response], max_steps=1,
                               batch_size=3, random_state=0)
    assert unprompted.history_["loss"][0] == pytest.approx(whole, rel=1e-6)


def test_sft_learns_responses_given_prompts():
    prompts = ["red", "sky", "leaf"]
    responses = [" apple", " blue", " green"]
    lm = TinyLM(n_layer=1, n_head=2, n_embd=32, block_size=16,
                tokenizer=CharTokenizer.from_corpus(prompts + responses),
                random_state=0)
    lm.fit(responses, prompts=prompts, max_steps=200, batch_size=3,
           lr=1e-2, random_state=0)
    # the responses are determined by their prompts: the loss goes to 0
    assert lm.history_["loss"][-10:].max() < 0.05
    assert lm.generate(prompts, max_new_tokens=10, temperature=0) == \
        responses
    total, _ = lm.log_prob(prompts, responses)
    assert (total > math.log(0.9)).all()


def test_fit_windows_long_documents():
    """Documents longer than block_size + 1 are read through a window."""
    lm = TinyLM(n_layer=1, n_head=2, n_embd=16, block_size=8,
                tokenizer=CharTokenizer(ALPHABET), random_state=0)
    lm.fit(["abcdefghij" * 5, "ab"], max_steps=5, batch_size=4,
           random_state=0)
    assert np.isfinite(lm.history_["loss"]).all()


# -- 8. parameters and files --------------------------------------------

def test_state_dict_names_and_shapes():
    lm = TinyLM(n_layer=2, n_head=5, n_embd=20, block_size=11,
                vocab_size=37, tokenizer=CharTokenizer(ALPHABET),
                random_state=0)
    state = lm.state_dict()
    shapes = ref.parameter_shapes(2, 20, 37, 11)
    assert list(state) == list(shapes)
    for name, value in state.items():
        assert value.shape == shapes[name], name
        assert value.dtype == np.float32, name
    assert lm.n_params == sum(v.size for v in state.values())
    # GPT-2's initialisation
    assert (state["transformer.h.0.ln_1.weight"] == 1).all()
    assert (state["transformer.h.1.mlp.c_fc.bias"] == 0).all()
    assert state["transformer.wte.weight"].std() == pytest.approx(
        0.02, rel=0.1)


def test_state_dict_round_trip_and_copies():
    lm = perturbed(2, 2, 16, 13, 8, seed=41)
    state = lm.state_dict()
    fresh = TinyLM(n_layer=2, n_head=2, n_embd=16, block_size=8,
                   vocab_size=13, tokenizer=CharTokenizer(ALPHABET),
                   random_state=1)
    assert fresh.load_state_dict(state) is fresh
    for name, value in fresh.state_dict().items():
        assert value.tobytes() == state[name].tobytes(), name
    tokens = np.arange(8) % 13
    np.testing.assert_array_equal(fresh.logits(tokens), lm.logits(tokens))
    # float64 and list values are accepted, rounded to float32
    doubled = {k: v.astype(np.float64) for k, v in state.items()}
    doubled["transformer.ln_f.bias"] = state["transformer.ln_f.bias"].tolist()
    fresh.load_state_dict(doubled)
    np.testing.assert_array_equal(fresh.logits(tokens), lm.logits(tokens))
    # state_dict hands out copies
    state["transformer.wte.weight"][...] = 0.0
    assert (lm.state_dict()["transformer.wte.weight"] != 0).any()


def test_load_state_dict_errors_leave_the_model_unchanged():
    lm = perturbed(1, 2, 16, 11, 8, seed=42)
    before = lm.state_dict()
    good = {k: v + 1.0 for k, v in before.items()}
    name = "transformer.h.0.attn.c_attn.weight"

    missing = dict(good)
    del missing[name]
    with pytest.raises(ValueError, match=r"transformer\.h\.0\.attn\.c_attn"):
        lm.load_state_dict(missing)
    extra = dict(good, **{"transformer.h.1.ln_1.weight": np.ones(16)})
    with pytest.raises(ValueError, match=r"transformer\.h\.1\.ln_1\.weight"):
        lm.load_state_dict(extra)
    wrong = dict(good, **{name: good[name].T})
    with pytest.raises(ValueError, match=r"c_attn\.weight.*shape"):
        lm.load_state_dict(wrong)
    for bad in (np.nan, np.inf):
        broken = dict(good)
        broken["transformer.ln_f.weight"] = good[
            "transformer.ln_f.weight"].copy()
        broken["transformer.ln_f.weight"][3] = bad
        with pytest.raises(ValueError, match=r"ln_f\.weight.*NaN"):
            lm.load_state_dict(broken)
    with pytest.raises(TypeError, match="state"):
        lm.load_state_dict(list(good.items()))
    for key, value in lm.state_dict().items():
        assert value.tobytes() == before[key].tobytes(), key
    # mask buffers and the tied head are accepted
    tolerated = dict(good, **{
        "lm_head.weight": good["transformer.wte.weight"],
        "transformer.h.0.attn.bias": np.tril(np.ones((1, 1, 8, 8))),
        "transformer.h.0.attn.masked_bias": np.array(-1e4)})
    lm.load_state_dict(tolerated)
    assert (lm.state_dict()[name] == good[name]).all()


@pytest.mark.parametrize("tokenizer", [
    ByteTokenizer(), CharTokenizer.from_corpus(["héllo wörld", "ok"])],
    ids=["bytes", "chars"])
def test_save_and_load(tmp_path, tokenizer):
    lm = perturbed(2, 3, 24, None, 12, seed=43, tokenizer=tokenizer)
    path = tmp_path / "model.npz"
    lm.save(path)
    back = TinyLM.load(path)
    assert type(back.tokenizer) is type(tokenizer)
    assert back.tokenizer == tokenizer
    assert (back.n_layer, back.n_head, back.n_embd, back.block_size,
            back.vocab_size, back.eot_token) == (
        2, 3, 24, 12, tokenizer.vocab_size, tokenizer.eot_token)
    for name, value in lm.state_dict().items():
        assert value.tobytes() == back.state_dict()[name].tobytes(), name
    tokens = lm.encode_prompts(["ok wö" if tokenizer.kind == "char"
                                else "hello"])[0]
    np.testing.assert_array_equal(back.logits(tokens), lm.logits(tokens))
    assert back.generate(["ok"], max_new_tokens=6, random_state=0) == \
        lm.generate(["ok"], max_new_tokens=6, random_state=0)
    # str paths too
    lm.save(str(tmp_path / "again.npz"))
    again = TinyLM.load(str(tmp_path / "again.npz"))
    np.testing.assert_array_equal(again.logits(tokens), lm.logits(tokens))


def test_load_refuses_other_files(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, weights=np.zeros(3))
    with pytest.raises(ValueError, match="not a TinyLM file"):
        TinyLM.load(path)


def test_copy_is_independent():
    lm = TinyLM(n_layer=1, n_head=2, n_embd=16, block_size=8,
                tokenizer=CharTokenizer(ALPHABET), random_state=0)
    lm.fit(["abcabc"], max_steps=3, batch_size=2, random_state=0)
    before = lm.state_dict()
    history = {k: v.copy() for k, v in lm.history_.items()}
    other = lm.copy()
    assert type(other) is TinyLM and other.tokenizer == lm.tokenizer
    for name, value in other.state_dict().items():
        assert value.tobytes() == before[name].tobytes()
    other.fit(["jjjj"], max_steps=4, batch_size=2, random_state=1)
    other.history_["loss"][0] = -1.0
    for name, value in lm.state_dict().items():
        assert value.tobytes() == before[name].tobytes(), name
    for key in history:
        np.testing.assert_array_equal(lm.history_[key], history[key])
    assert not hasattr(TinyLM(n_layer=1, n_embd=8, n_head=1, block_size=4,
                              random_state=0).copy(), "history_")


# -- 9. input checks -------------------------------------------------------

@pytest.fixture(scope="module")
def small():
    return TinyLM(n_layer=1, n_head=2, n_embd=16, block_size=8,
                  tokenizer=CharTokenizer(ALPHABET), random_state=0)


def test_constructor_errors():
    tok = CharTokenizer(ALPHABET)
    with pytest.raises(ValueError, match="'n_embd'.*multiple of n_head"):
        TinyLM(n_head=3, n_embd=16)
    with pytest.raises(ValueError, match="'n_layer'"):
        TinyLM(n_layer=0)
    with pytest.raises(ValueError, match="'n_head'"):
        TinyLM(n_head=0)
    with pytest.raises(ValueError, match="'block_size'"):
        TinyLM(block_size=1)
    with pytest.raises(ValueError, match="'vocab_size'"):
        TinyLM(vocab_size=5, tokenizer=tok)
    with pytest.raises(ValueError, match="'n_embd'.*an int"):
        TinyLM(n_embd=16.5)
    with pytest.raises(TypeError, match="'tokenizer'"):
        TinyLM(tokenizer="bytes")


@pytest.mark.parametrize("tokens, error, match", [
    ([[0, -1, 2]], ValueError, r"tokens has token -1, outside the vocab"),
    ([[0, 11, 2]], ValueError, r"tokens has token 11, outside the vocab"),
    (np.array([[2 ** 40]], dtype=np.uint64), ValueError,
     r"tokens has token \d+, outside"),
    (np.zeros((1, 9), dtype=np.int64), ValueError,
     r"tokens has sequences of 9 tokens.*block_size = 8"),
    ([[0.0, 1.0]], TypeError, r"tokens must be an array of integer"),
    ([[True, False]], TypeError, r"tokens must be an array of integer"),
    ([["a", "b"]], TypeError, r"tokens must be an array of integer"),
    (np.zeros((1, 2, 3), dtype=np.int64), ValueError,
     r"tokens must be 1- or 2-dimensional"),
    (np.zeros((2, 0), dtype=np.int64), ValueError, r"tokens is empty"),
    ([], ValueError, r"tokens is empty"),
], ids=["negative", "too-large", "huge-uint", "too-long", "float", "bool",
        "str", "3d", "no-time", "nothing"])
def test_bad_tokens(small, tokens, error, match):
    with pytest.raises(error, match=match):
        small.logits(tokens)
    with pytest.raises(error, match=match):
        small.loss_and_gradients(tokens, tokens)


def test_bad_targets_and_masks(small):
    tokens = np.array([[0, 1, 2, 3]])
    with pytest.raises(ValueError, match=r"targets has token 11"):
        small.loss_and_gradients(tokens, [[0, 1, 2, 11]])
    with pytest.raises(ValueError, match=r"targets has token -2"):
        small.loss_and_gradients(tokens, [[0, -2, 2, 3]])
    with pytest.raises(TypeError, match=r"targets must be an array of int"):
        small.loss_and_gradients(tokens, [[0.0, 1.0, 2.0, 3.0]])
    with pytest.raises(ValueError, match=r"targets has shape \(1, 3\)"):
        small.loss_and_gradients(tokens, [[0, 1, 2]])
    with pytest.raises(ValueError, match=r"mask has shape"):
        small.loss_and_gradients(tokens, tokens, mask=[1, 1, 1])
    with pytest.raises(ValueError, match=r"mask must be finite"):
        small.loss_and_gradients(tokens, tokens, mask=[1, -1, 1, 1])
    with pytest.raises(ValueError, match=r"mask must be finite"):
        small.loss_and_gradients(tokens, tokens, mask=[1, np.nan, 1, 1])
    with pytest.raises(ValueError, match=r"mask selects no position"):
        small.loss_and_gradients(tokens, tokens, mask=[0, 0, 0, 0])
    with pytest.raises(ValueError, match=r"mask must have the shape"):
        small.loss_and_gradients(tokens, mask=[1, 1, 1])
    with pytest.raises(ValueError, match=r"mask selects no position"):
        small.loss_and_gradients(tokens, mask=[1, 0, 0, 0])
    with pytest.raises(ValueError, match=r"at least 2 positions"):
        small.loss_and_gradients([[3]])


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(texts=[]), ValueError, r"texts is empty"),
    (dict(texts="abc"), TypeError, r"texts must be a sequence of str"),
    (dict(texts=None), TypeError, r"texts must be a sequence of str"),
    (dict(texts=["ab", 3]), TypeError, r"texts\[1\] must be a str"),
    (dict(texts=["ab", b"cd"]), TypeError, r"texts\[1\] must be a str"),
    (dict(texts=["ab", "cd"], prompts=["a"]), ValueError,
     r"prompts has 1 entries; texts has 2"),
    (dict(texts=["ab"], prompts=[None]), TypeError,
     r"prompts\[0\] must be a str"),
    (dict(texts=["ab"], prompts="a"), TypeError,
     r"prompts must be a sequence of str"),
    (dict(texts=["ab"], max_steps=0), ValueError, r"'max_steps'"),
    (dict(texts=["ab"], batch_size=0), ValueError, r"'batch_size'"),
    (dict(texts=["ab"], lr=0.0), ValueError, r"'lr'"),
    (dict(texts=["ab"], lr=np.nan), ValueError, r"'lr'"),
    (dict(texts=["ab"], weight_decay=-0.1), ValueError, r"'weight_decay'"),
    (dict(texts=["ab"], warmup_steps=-1), ValueError, r"'warmup_steps'"),
    (dict(texts=["ab"], min_lr_ratio=1.5), ValueError, r"'min_lr_ratio'"),
    (dict(texts=["ab"], max_grad_norm=-1.0), ValueError,
     r"'max_grad_norm'"),
    (dict(texts=["ab"], betas=(0.9, 1.0)), ValueError, r"'betas'"),
    (dict(texts=["ab"], betas=0.9), ValueError, r"'betas'"),
    (dict(texts=["abz"]), ValueError, r"'z'"),
], ids=lambda v: None)
def test_bad_fit_arguments(small, kwargs, error, match):
    before = small.state_dict()
    with pytest.raises(error, match=match):
        small.copy().fit(**kwargs)
    with pytest.raises(error, match=match):
        small.fit(**kwargs)
    for name, value in small.state_dict().items():
        assert value.tobytes() == before[name].tobytes()
    assert not hasattr(small, "history_")


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(temperature=-1.0), ValueError, r"'temperature'"),
    (dict(temperature=np.inf), ValueError, r"'temperature'"),
    (dict(temperature=np.nan), ValueError, r"'temperature'"),
    (dict(temperature="hot"), ValueError, r"'temperature'"),
    (dict(top_k=0), ValueError, r"'top_k'"),
    (dict(top_k=2.5), ValueError, r"'top_k'"),
    (dict(max_new_tokens=-1), ValueError, r"'max_new_tokens'"),
    (dict(max_new_tokens=1.5), ValueError, r"'max_new_tokens'"),
    (dict(n=0), ValueError, r"'n'"),
], ids=lambda v: None)
def test_bad_sampling_arguments(small, kwargs, error, match):
    with pytest.raises(error, match=match):
        small.generate("ab", **kwargs)
    with pytest.raises(error, match=match):
        small.sample([np.array([10, 0])], **kwargs)


def test_bad_prompts(small):
    with pytest.raises(TypeError, match=r"prompts\[1\] must be a str"):
        small.generate(["a", 2])
    with pytest.raises(TypeError, match=r"prompts must be a sequence"):
        small.generate(7)
    with pytest.raises(ValueError, match=r"prompt_tokens\[1\] has token 11"):
        small.sample([np.array([10]), np.array([10, 11])])
    with pytest.raises(ValueError, match=r"prompt_tokens\[0\] has token -1"):
        small.sample([np.array([-1])])
    with pytest.raises(ValueError, match=r"prompt_tokens\[0\] is empty"):
        small.sample([np.zeros(0, dtype=np.int64)])
    with pytest.raises(ValueError, match=r"prompt_tokens\[0\].*block_size"):
        small.sample([np.zeros(9, dtype=np.int64)])
    with pytest.raises(TypeError, match=r"prompt_tokens\[0\] must be an "):
        small.sample([np.array([1.0, 2.0])])
    with pytest.raises(ValueError, match=r"prompts has 2 entries; "
                                         r"responses has 1"):
        small.log_prob(["a", "b"], ["c"])
    with pytest.raises(TypeError, match=r"responses\[0\] must be a str"):
        small.log_prob(["a"], [1])
    with pytest.raises(ValueError, match=r"prompts\[0\] \+ responses\[0\] "
                                         r"is 9 tokens"):
        small.log_prob(["abcd"], ["efgh"])


def test_generate_with_unused_vocabulary():
    lm = TinyLM(n_layer=1, n_head=2, n_embd=16, block_size=16,
                vocab_size=40, tokenizer=CharTokenizer("abc"),
                random_state=0)
    texts = lm.generate(["ab"] * 4, max_new_tokens=10, random_state=0)
    assert all(set(text) <= set("abc") for text in texts)


# -- 10. log_prob --------------------------------------------------------

def test_log_prob_against_logits():
    lm = perturbed(2, 2, 16, 11, 12, seed=51)
    prompts = ["abc", "", "j", "abcdefgh"]
    responses = ["defg", "hij", "", "i"]
    total, per_token = lm.log_prob(prompts, responses)
    assert total.shape == (4,) and total.dtype == np.float64
    for i, (prompt, response) in enumerate(zip(prompts, responses)):
        assert per_token[i].dtype == np.float32
        assert per_token[i].shape == (len(response) + 1,)
        assert total[i] == per_token[i].astype(np.float64).sum()
        doc = np.concatenate([[10], lm.tokenizer.encode(prompt + response),
                              [10]])
        logp = log_softmax64(lm.logits(doc[:-1]))[0]
        start = 1 + len(prompt)
        expected = logp[np.arange(start - 1, len(doc) - 1), doc[start:]]
        np.testing.assert_allclose(per_token[i], expected, atol=2e-5)
        # the end of text last
        assert per_token[i][-1] == pytest.approx(logp[-1, 10], abs=2e-5)
        assert total[i] == pytest.approx(expected.sum(), abs=1e-4)
    # batched and alone: the same bits
    alone = lm.log_prob(prompts[:1], responses[:1])[1][0]
    np.testing.assert_array_equal(alone, per_token[0])
    empty = lm.log_prob([], [])
    assert empty[0].shape == (0,) and empty[1] == []


# -- 11. the caller's arrays ---------------------------------------------

def test_inputs_are_not_modified_and_views_are_read():
    lm = perturbed(1, 3, 24, 13, 8, seed=61)
    rng = np.random.default_rng(61)
    base = rng.integers(0, 13, size=(8, 6)).astype(np.int32)
    targets = rng.integers(0, 13, size=(4, 6))
    mask = rng.random((4, 6)) < 0.7
    mask[0, 0] = True
    saved = [base.copy(), targets.copy(), mask.copy()]
    view = base[::2]  # a strided view, int32
    contiguous = np.ascontiguousarray(view, dtype=np.int64)
    readonly = contiguous.copy()
    readonly.flags.writeable = False
    for tokens in (view, readonly, np.asfortranarray(contiguous),
                   view.tolist()):
        np.testing.assert_array_equal(lm.logits(tokens),
                                      lm.logits(contiguous))
        loss, grads = lm.loss_and_gradients(tokens, targets, mask)
        expected_loss, expected = lm.loss_and_gradients(contiguous, targets,
                                                        mask)
        assert loss == expected_loss
        for name in grads:
            np.testing.assert_array_equal(grads[name], expected[name])
        lm.loss_and_gradients(tokens, mask=np.ones((4, 6)))
    prompts = [base[0, :3], readonly[1, :2]]
    lm.sample(prompts, max_new_tokens=3, random_state=0)
    for array, copy in zip((base, targets, mask), saved):
        np.testing.assert_array_equal(array, copy)
    np.testing.assert_array_equal(readonly, contiguous)


def test_the_model_keeps_no_reference_to_caller_arrays():
    lm = perturbed(1, 2, 16, 11, 8, seed=62)
    state = lm.state_dict()
    tokens = np.arange(8) % 11
    fresh = TinyLM(n_layer=1, n_head=2, n_embd=16, block_size=8,
                   tokenizer=CharTokenizer(ALPHABET), random_state=3)
    fresh.load_state_dict(state)
    expected = fresh.logits(tokens)
    for value in state.values():
        value[...] = 0.0
    np.testing.assert_array_equal(fresh.logits(tokens), expected)
    # gradients are fresh arrays each call
    _, grads = fresh.loss_and_gradients(tokens)
    first = {k: v.copy() for k, v in grads.items()}
    fresh.loss_and_gradients(tokens[::-1].copy())
    for name in grads:
        np.testing.assert_array_equal(grads[name], first[name])
    for value in grads.values():
        value[...] = np.nan
    np.testing.assert_array_equal(fresh.logits(tokens), expected)
    # neither the texts nor the logits handed out are kept
    texts = ["abc", "def"]
    fresh.fit(texts, max_steps=2, batch_size=2, random_state=0)
    assert texts == ["abc", "def"]
    after = fresh.logits(tokens)
    after[...] = 0.0
    assert (fresh.logits(tokens) != 0).any()


# -- 12. Ctrl-C ------------------------------------------------------------

# The child installs Python's own SIGINT handler (see test_interrupts.py:
# a background process may inherit SIGINT ignored).
INTERRUPT_PRELUDE = """
import signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)
import numpy as np
from rlhf.tinylm import TinyLM
"""

INTERRUPT_CASES = {
    # a million steps of a few hundredths of a second each
    "fit": (
        """
texts = ["the quick brown fox jumps over the lazy dog " * 4] * 4
settings = dict(batch_size=8, lr=1e-3, warmup_steps=0, min_lr_ratio=1.0,
                random_state=0)
lm = TinyLM(n_layer=2, n_head=4, n_embd=32, block_size=64, random_state=0)
""",
        "lm.fit(texts, max_steps=10**6, **settings)",
        # the model is as after the steps history_ holds: a constant rate
        # makes those steps the same as a fit of that many steps
        """
k = len(lm.history_["loss"])
assert k >= 1, k
assert {len(v) for v in lm.history_.values()} == {k}
assert np.isfinite(lm.history_["loss"]).all()
again = TinyLM(n_layer=2, n_head=4, n_embd=32, block_size=64,
               random_state=0).fit(texts, max_steps=k, **settings)
for name, value in lm.state_dict().items():
    assert value.tobytes() == again.state_dict()[name].tobytes(), name
""",
    ),
    # 32 rows of 2048 positions each, minutes of sampling: the end of
    # text is made unreachable (its logit below -45: the final LayerNorm's
    # output has a large first coordinate, against which the end of
    # text's embedding points) so that no row stops early
    "generate": (
        """
lm = TinyLM(n_layer=2, n_head=4, n_embd=64, block_size=2048,
            random_state=0)
state = lm.state_dict()
state["transformer.ln_f.weight"][:] = 0.1
state["transformer.ln_f.bias"][:] = 0.0
state["transformer.ln_f.bias"][0] = 10.0
state["transformer.wte.weight"][lm.eot_token] = 0.0
state["transformer.wte.weight"][lm.eot_token, 0] = -5.0
lm.load_state_dict(state)
""",
        "lm.generate([''] * 32, max_new_tokens=2047, random_state=0)",
        "pass",
    ),
}


def interrupt_script(setup, call, after):
    return INTERRUPT_PRELUDE + setup + textwrap.dedent(f"""
print("ready", flush=True)
try:
    {call}
except KeyboardInterrupt:
    caught = time.monotonic()
    {textwrap.indent(after, "    ").strip()}
    print("interrupted", caught, flush=True)
    sys.exit(0)
sys.exit(3)
""")


@pytest.mark.slow
@pytest.mark.no_sanitizer
@pytest.mark.skipif(sys.platform == "win32",
                    reason="SIGINT to a child process is POSIX")
@pytest.mark.parametrize("case", sorted(INTERRUPT_CASES))
def test_sigint_stops_fit_and_generate(case):
    script = interrupt_script(*INTERRUPT_CASES[case])
    child = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        line = child.stdout.readline()
        assert line.strip() == "ready", line + child.stderr.read()
        time.sleep(1.5)
        assert child.poll() is None, "the child stopped before the signal"
        sent = time.monotonic()
        child.send_signal(signal.SIGINT)
        try:
            out, err = child.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{case}: the child ignored SIGINT for 120 s")
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    assert child.returncode == 0, (case, child.returncode, out, err)
    word, caught = out.split()
    assert word == "interrupted", (out, err)
    assert float(caught) - sent < 0.5, (
        f"{case}: KeyboardInterrupt {float(caught) - sent:.2f} s after "
        "SIGINT")


# -- 13. fork ----------------------------------------------------------

FORK_TIMEOUT = 60


def fork_work():
    """Logits, a short fit and samples of a model wide enough that the
    kernels run parallel regions (B T = 256 rows, C = 32, V = 257)."""
    lm = TinyLM(n_layer=1, n_head=4, n_embd=32, block_size=32,
                random_state=0)
    tokens = np.random.default_rng(0).integers(0, 257, size=(8, 32))
    logits = lm.logits(tokens)
    lm.fit(["hello world, hello fork"] * 3, max_steps=2, batch_size=8,
           random_state=0)
    sample = lm.sample([np.array([256, 104])], max_new_tokens=20, n=8,
                       random_state=1)
    state = lm.state_dict()
    return {"logits": logits, "loss": lm.history_["loss"],
            "params": np.concatenate([state[k].ravel() for k in state]),
            "tokens": sample[0], "log_probs": sample[3],
            "text": np.array(lm.generate("hel", max_new_tokens=10,
                                         random_state=2))}


def run_in_forked_child(fn):
    """fn() in a child made by os.fork(); its pickled result, or a
    failure when the child hangs or dies."""
    import select
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
    with os.fdopen(read_end, "rb") as fh:
        ready, _, _ = select.select([fh], [], [], FORK_TIMEOUT)
        if not ready:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail(f"the forked child hung for {FORK_TIMEOUT} s")
        data = fh.read()
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    return pickle.loads(data)


def assert_same_bits(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].tobytes() == b[key].tobytes(), key


def _fork_pool_task(seed):
    lm = TinyLM(n_layer=1, n_head=4, n_embd=32, block_size=32,
                random_state=seed)
    return lm.logits(np.arange(256).reshape(8, 32))


fork_only = pytest.mark.skipif(
    not hasattr(os, "fork") or sys.platform == "darwin",
    reason="fork() as Linux has it")


@fork_only
def test_forked_child_gets_the_parents_numbers():
    parent = fork_work()
    assert_same_bits(parent, run_in_forked_child(fork_work))
    assert_same_bits(parent, fork_work())


@fork_only
def test_multiprocessing_fork_pool():
    import multiprocessing
    fork_work()
    context = multiprocessing.get_context("fork")
    with context.Pool(2) as pool:
        children = pool.map_async(_fork_pool_task, [1, 2]).get(
            timeout=FORK_TIMEOUT)
    for seed, got in zip([1, 2], children):
        assert got.tobytes() == _fork_pool_task(seed).tobytes()
