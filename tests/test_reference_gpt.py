"""The float64 GPT-2 twin: gradients against central finite differences,
and the forward pass against Hugging Face's GPT2LMHeadModel (optional)."""
import numpy as np
import pytest

from rlhf import _reference_gpt as gpt

N_LAYER, N_HEAD, N_EMBD, VOCAB, BLOCK = 2, 2, 8, 11, 6


@pytest.fixture(scope="module")
def model():
    rng = np.random.default_rng(0)
    params = gpt.init_parameters(N_LAYER, N_EMBD, VOCAB, BLOCK, rng)
    # away from the initial symmetric point: every parameter matters
    for name in params:
        params[name] = params[name] + rng.normal(0.0, 0.3,
                                                 size=params[name].shape)
    tokens = rng.integers(0, VOCAB, size=(3, 5))
    targets = rng.integers(0, VOCAB, size=(3, 5))
    mask = rng.random((3, 5)) < 0.7
    return params, tokens, targets, mask


@pytest.mark.slow
def test_every_gradient_matches_finite_differences(model):
    params, tokens, targets, mask = model
    loss, grads = gpt.loss_and_gradients(params, tokens, targets, N_LAYER,
                                         N_HEAD, mask)
    rng = np.random.default_rng(1)
    h = 1e-6
    for name, value in params.items():
        # a few entries of each parameter
        flat = value.reshape(-1)
        for index in rng.choice(flat.size, size=min(5, flat.size),
                                replace=False):
            saved = flat[index]
            flat[index] = saved + h
            plus = gpt.loss_and_gradients(params, tokens, targets, N_LAYER,
                                          N_HEAD, mask)[0]
            flat[index] = saved - h
            minus = gpt.loss_and_gradients(params, tokens, targets, N_LAYER,
                                           N_HEAD, mask)[0]
            flat[index] = saved
            numeric = (plus - minus) / (2 * h)
            assert grads[name].reshape(-1)[index] == pytest.approx(
                numeric, abs=1e-8, rel=1e-6), name


def test_causal(model):
    params, tokens, _, _ = model
    logits, _ = gpt.forward(params, tokens, N_LAYER, N_HEAD)
    changed = tokens.copy()
    changed[:, -1] = (changed[:, -1] + 1) % VOCAB
    logits2, _ = gpt.forward(params, changed, N_LAYER, N_HEAD)
    np.testing.assert_array_equal(logits[:, :-1], logits2[:, :-1])
    assert not np.allclose(logits[:, -1], logits2[:, -1])


@pytest.mark.slow
@pytest.mark.no_sanitizer  # NumPy and PyTorch only
def test_matches_transformers_gpt2(model):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    params, tokens, _, _ = model
    config = transformers.GPT2Config(
        vocab_size=VOCAB, n_positions=BLOCK, n_embd=N_EMBD, n_layer=N_LAYER,
        n_head=N_HEAD, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        layer_norm_epsilon=gpt.EPS, activation_function="gelu_new")
    hf = transformers.GPT2LMHeadModel(config).double().eval()
    state = {name: torch.tensor(value) for name, value in params.items()}
    state["lm_head.weight"] = state["transformer.wte.weight"]
    hf.load_state_dict(state, strict=False)
    with torch.no_grad():
        expected = hf(torch.tensor(tokens)).logits.numpy()
    logits, _ = gpt.forward(params, tokens, N_LAYER, N_HEAD)
    np.testing.assert_allclose(logits, expected, atol=1e-10)


@pytest.mark.slow
@pytest.mark.no_sanitizer  # NumPy and PyTorch only
def test_gradients_match_transformers_autograd(model):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    params, tokens, targets, mask = model
    config = transformers.GPT2Config(
        vocab_size=VOCAB, n_positions=BLOCK, n_embd=N_EMBD, n_layer=N_LAYER,
        n_head=N_HEAD, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        layer_norm_epsilon=gpt.EPS, activation_function="gelu_new",
        tie_word_embeddings=True)
    hf = transformers.GPT2LMHeadModel(config).double().eval()
    state = {name: torch.tensor(value) for name, value in params.items()}
    state["lm_head.weight"] = state["transformer.wte.weight"]
    hf.load_state_dict(state, strict=False)
    hf.tie_weights()
    logits = hf(torch.tensor(tokens)).logits
    weight = torch.tensor(mask, dtype=torch.float64)
    weight = weight / weight.sum()
    logp = torch.log_softmax(logits, dim=-1)
    picked = logp.gather(-1, torch.tensor(targets)[..., None])[..., 0]
    loss = -(weight * picked).sum()
    loss.backward()
    ours_loss, grads = gpt.loss_and_gradients(params, tokens, targets,
                                              N_LAYER, N_HEAD, mask)
    assert ours_loss == pytest.approx(loss.item(), abs=1e-12)
    named = dict(hf.named_parameters())
    for name, grad in grads.items():
        np.testing.assert_allclose(grad, named[name].grad.numpy(),
                                   atol=1e-10, err_msg=name)
