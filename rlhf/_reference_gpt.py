"""A float64 NumPy twin of a GPT-2 language model: forward and backward by
hand, the specification the C kernels of ``rlhf.TinyLM`` are to match.

The architecture is GPT-2's (Radford et al. 2019, "Language models are
unsupervised multitask learners"): token and position embeddings,
pre-LayerNorm blocks (LayerNorm with weight and bias, eps 1e-5) of causal
multi-head self-attention (a fused qkv projection and an output
projection, both with biases, scores scaled by 1/sqrt(head size)) and an
MLP of four times the width with GELU (tanh approximation), residual
connections, a final LayerNorm and an LM head tied to the token embedding
(no bias); no dropout.  Parameters carry Hugging Face's GPT-2 names and
shapes (``transformer.h.0.attn.c_attn.weight`` is (C, 3C): Conv1D layout,
``x @ W + b``).
"""
import math

import numpy as np

EPS = 1e-5


def parameter_shapes(n_layer, n_embd, vocab_size, block_size):
    """{name: shape} in Hugging Face GPT-2's names."""
    C = n_embd
    shapes = {"transformer.wte.weight": (vocab_size, C),
              "transformer.wpe.weight": (block_size, C)}
    for i in range(n_layer):
        h = f"transformer.h.{i}."
        shapes.update({
            h + "ln_1.weight": (C,), h + "ln_1.bias": (C,),
            h + "attn.c_attn.weight": (C, 3 * C),
            h + "attn.c_attn.bias": (3 * C,),
            h + "attn.c_proj.weight": (C, C), h + "attn.c_proj.bias": (C,),
            h + "ln_2.weight": (C,), h + "ln_2.bias": (C,),
            h + "mlp.c_fc.weight": (C, 4 * C), h + "mlp.c_fc.bias": (4 * C,),
            h + "mlp.c_proj.weight": (4 * C, C),
            h + "mlp.c_proj.bias": (C,),
        })
    shapes.update({"transformer.ln_f.weight": (C,),
                   "transformer.ln_f.bias": (C,)})
    return shapes


def init_parameters(n_layer, n_embd, vocab_size, block_size, rng):
    """GPT-2's initialisation: normal(0, 0.02) weights, the residual
    projections scaled by 1/sqrt(2 n_layer), zero biases, unit LayerNorm
    weights."""
    params = {}
    for name, shape in parameter_shapes(n_layer, n_embd, vocab_size,
                                        block_size).items():
        if name.endswith("bias"):
            params[name] = np.zeros(shape)
        elif "ln_" in name:
            params[name] = np.ones(shape)
        else:
            std = 0.02
            if name.endswith("c_proj.weight"):
                std /= math.sqrt(2 * n_layer)
            params[name] = rng.normal(0.0, std, size=shape)
    return params


def _layer_norm(x, w, b):
    mean = x.mean(axis=-1, keepdims=True)
    centred = x - mean
    rstd = 1.0 / np.sqrt((centred ** 2).mean(axis=-1, keepdims=True) + EPS)
    normed = centred * rstd
    return normed * w + b, (normed, rstd)


def _layer_norm_backward(dout, w, cache):
    normed, rstd = cache
    dw = (dout * normed).sum(axis=tuple(range(dout.ndim - 1)))
    db = dout.sum(axis=tuple(range(dout.ndim - 1)))
    dnormed = dout * w
    dx = rstd * (dnormed - dnormed.mean(axis=-1, keepdims=True)
                 - normed * (dnormed * normed).mean(axis=-1, keepdims=True))
    return dx, dw, db


_GELU_C = math.sqrt(2.0 / math.pi)


def _gelu(x):
    inner = _GELU_C * (x + 0.044715 * x ** 3)
    return 0.5 * x * (1.0 + np.tanh(inner))


def _gelu_backward(dout, x):
    inner = _GELU_C * (x + 0.044715 * x ** 3)
    t = np.tanh(inner)
    dinner = _GELU_C * (1.0 + 3 * 0.044715 * x ** 2)
    return dout * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t ** 2) * dinner)


def forward(params, tokens, n_layer, n_head):
    """(logits (B, T, V), cache) for int tokens (B, T)."""
    tokens = np.asarray(tokens, dtype=np.int64)
    B, T = tokens.shape
    wte = params["transformer.wte.weight"]
    C = wte.shape[1]
    hs = C // n_head
    x = wte[tokens] + params["transformer.wpe.weight"][:T]
    causal = np.tril(np.ones((T, T), dtype=bool))
    caches = []
    for i in range(n_layer):
        h = f"transformer.h.{i}."
        a, ln1 = _layer_norm(x, params[h + "ln_1.weight"],
                             params[h + "ln_1.bias"])
        qkv = a @ params[h + "attn.c_attn.weight"] + \
            params[h + "attn.c_attn.bias"]
        q, k, v = (qkv[..., j * C:(j + 1) * C].reshape(B, T, n_head, hs)
                   .transpose(0, 2, 1, 3) for j in range(3))
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hs)
        scores = np.where(causal, scores, -np.inf)
        scores = scores - scores.max(axis=-1, keepdims=True)
        att = np.exp(scores)
        att /= att.sum(axis=-1, keepdims=True)
        y = (att @ v).transpose(0, 2, 1, 3).reshape(B, T, C)
        x1 = x + y @ params[h + "attn.c_proj.weight"] + \
            params[h + "attn.c_proj.bias"]
        m, ln2 = _layer_norm(x1, params[h + "ln_2.weight"],
                             params[h + "ln_2.bias"])
        pre = m @ params[h + "mlp.c_fc.weight"] + params[h + "mlp.c_fc.bias"]
        act = _gelu(pre)
        x2 = x1 + act @ params[h + "mlp.c_proj.weight"] + \
            params[h + "mlp.c_proj.bias"]
        caches.append((x, a, ln1, q, k, v, att, y, x1, m, ln2, pre, act))
        x = x2
    f, lnf = _layer_norm(x, params["transformer.ln_f.weight"],
                         params["transformer.ln_f.bias"])
    logits = f @ wte.T
    return logits, (tokens, caches, x, f, lnf)


def loss_and_gradients(params, tokens, targets, n_layer, n_head, mask=None):
    """Mean next-token cross-entropy over the positions where mask is true
    (all by default) and its gradient in every parameter."""
    logits, (tokens, caches, x_last, f, lnf) = forward(params, tokens,
                                                       n_layer, n_head)
    targets = np.asarray(targets, dtype=np.int64)
    B, T, V = logits.shape
    weight = np.ones((B, T)) if mask is None else np.asarray(
        mask, dtype=np.float64)
    weight = weight / weight.sum()
    shifted = logits - logits.max(axis=-1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    picked = np.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    loss = float(-(weight * picked).sum())
    dlogits = np.exp(logp)
    np.put_along_axis(dlogits, targets[..., None],
                      np.take_along_axis(dlogits, targets[..., None], -1)
                      - 1.0, axis=-1)
    dlogits *= weight[..., None]
    grads = {name: np.zeros_like(value) for name, value in params.items()}
    wte = params["transformer.wte.weight"]
    C = wte.shape[1]
    hs = C // n_head
    grads["transformer.wte.weight"] += np.einsum("btv,btc->vc", dlogits, f)
    df = dlogits @ wte
    dx, dw, db = _layer_norm_backward(df, params["transformer.ln_f.weight"],
                                      lnf)
    grads["transformer.ln_f.weight"] += dw
    grads["transformer.ln_f.bias"] += db
    for i in reversed(range(n_layer)):
        h = f"transformer.h.{i}."
        x, a, ln1, q, k, v, att, y, x1, m, ln2, pre, act = caches[i]
        # x2 = x1 + act W_proj + b
        grads[h + "mlp.c_proj.weight"] += np.einsum("btf,btc->fc", act, dx)
        grads[h + "mlp.c_proj.bias"] += dx.sum(axis=(0, 1))
        dpre = _gelu_backward(dx @ params[h + "mlp.c_proj.weight"].T, pre)
        grads[h + "mlp.c_fc.weight"] += np.einsum("btc,btf->cf", m, dpre)
        grads[h + "mlp.c_fc.bias"] += dpre.sum(axis=(0, 1))
        dm = dpre @ params[h + "mlp.c_fc.weight"].T
        dx1, dw, db = _layer_norm_backward(dm, params[h + "ln_2.weight"],
                                           ln2)
        grads[h + "ln_2.weight"] += dw
        grads[h + "ln_2.bias"] += db
        dx1 = dx1 + dx
        # x1 = x + y W_o + b_o
        grads[h + "attn.c_proj.weight"] += np.einsum("btc,btd->cd", y, dx1)
        grads[h + "attn.c_proj.bias"] += dx1.sum(axis=(0, 1))
        dy = dx1 @ params[h + "attn.c_proj.weight"].T
        B, T, _ = dy.shape
        dy = dy.reshape(B, T, n_head, hs).transpose(0, 2, 1, 3)
        datt = dy @ v.transpose(0, 1, 3, 2)
        dv = att.transpose(0, 1, 3, 2) @ dy
        dscores = att * (datt - (datt * att).sum(axis=-1, keepdims=True))
        dscores /= math.sqrt(hs)
        dq = dscores @ k
        dk = dscores.transpose(0, 1, 3, 2) @ q
        dqkv = np.concatenate([d.transpose(0, 2, 1, 3).reshape(B, T, C)
                               for d in (dq, dk, dv)], axis=-1)
        grads[h + "attn.c_attn.weight"] += np.einsum("btc,btd->cd", a, dqkv)
        grads[h + "attn.c_attn.bias"] += dqkv.sum(axis=(0, 1))
        da = dqkv @ params[h + "attn.c_attn.weight"].T
        dxa, dw, db = _layer_norm_backward(da, params[h + "ln_1.weight"],
                                           ln1)
        grads[h + "ln_1.weight"] += dw
        grads[h + "ln_1.bias"] += db
        dx = dx1 + dxa
    np.add.at(grads["transformer.wte.weight"], tokens, dx)
    grads["transformer.wpe.weight"][:T] += dx.sum(axis=0)
    return loss, grads
