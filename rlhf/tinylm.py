"""A tiny GPT-2 language model with its forward and backward passes in C.

:class:`TinyLM` is GPT-2's architecture exactly (Radford et al. 2019,
"Language models are unsupervised multitask learners"): token and position
embeddings, pre-LayerNorm blocks of causal multi-head self-attention and a
GELU MLP, a final LayerNorm and an LM head tied to the token embedding.  It
is small enough to train and align on a laptop's CPU in a minute or two:
the three steps of InstructGPT (Ouyang et al. 2022) -- supervised
fine-tuning, a reward model from preferences over its own answers, PPO
with a per-token KL penalty -- run on it live in a notebook.

The kernels (csrc/gpt.c) store float32, as llm.c does, and sum in a fixed
order, so a result is the same bits for any number of threads.  The NumPy
twin ``rlhf._reference_gpt`` is their specification in float64.  The
parameters carry Hugging Face's GPT-2 names and shapes: a model trained
here loads into ``transformers.GPT2LMHeadModel`` (:meth:`TinyLM.to_transformers`).

Text is a sequence of tokens framed by the end-of-text token: a document
is ``[eot] + tokens(prompt + response) + [eot]``, the leading one playing
GPT-2's beginning of text, the trailing one the model's choice to stop.
"""
import json
import math
import numbers
import os
import time
from collections.abc import Mapping
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import _core
from . import _reference_gpt
from ._progress import Progress, check_progress
from ._threads import AdaptiveThreads
from ._typing import ArrayLike, FloatArray, IntArray, NDArray, RandomState
from ._validation import check_scalar, format_value
from .preferences import _check_random_state
from .text import ByteTokenizer, _Tokenizer, tokenizer_from_dict

__all__ = ["TinyLM"]

_OWNER = "TinyLM"
_FORMAT = 1  # the version of the .npz layout save() writes


def _decays(name):
    """Whether a parameter's weight decays: the matrices (GPT-2's recipe as
    in nanoGPT), not the biases or the LayerNorms' gains."""
    return name.endswith("weight") and "ln_" not in name


class TinyLM:
    """A GPT-2 language model small enough for a laptop CPU.

    Parameters
    ----------
    n_layer : int, default=2
        Transformer blocks.
    n_head : int, default=4
        Attention heads; must divide ``n_embd``.
    n_embd : int, default=64
        Width of the residual stream.
    block_size : int, default=64
        The longest sequence of tokens the model reads (its positions).
    vocab_size : int or None, default=None
        Tokens; by default the tokenizer's.  A larger value leaves the
        extra tokens unused.
    tokenizer : ByteTokenizer, CharTokenizer or None, default=None
        How text becomes tokens: UTF-8 bytes by default (256 + end of
        text), or a character vocabulary built with
        ``rlhf.text.CharTokenizer.from_corpus(texts)``.
    random_state : None, int or numpy.random.Generator, default=None
        Seeds the initial weights (GPT-2's: normal(0, 0.02), the residual
        projections scaled by ``1 / sqrt(2 n_layer)``).

    Attributes
    ----------
    n_params : int
        The number of parameters (the LM head shares the embedding).
    history_ : dict of ndarray
        After :meth:`fit`: 'loss', 'lr' and 'grad_norm' at each step.

    Examples
    --------
    >>> import rlhf
    >>> lm = rlhf.TinyLM(n_layer=1, n_embd=32, block_size=32, random_state=0)
    >>> lm = lm.fit(["the cat sat on the mat"] * 4, max_steps=150,
    ...             batch_size=4, lr=1e-2, random_state=0)
    >>> lm.generate("the cat", max_new_tokens=20, temperature=0)
    ' sat on the mat'
    """

    def __init__(self, n_layer: int = 2, n_head: int = 4, n_embd: int = 64,
                 block_size: int = 64, vocab_size: Optional[int] = None,
                 tokenizer: Optional[_Tokenizer] = None,
                 random_state: RandomState = None) -> None:
        n_layer = check_scalar(n_layer, "n_layer", _OWNER, kind="int", low=1,
                               high=64)
        n_head = check_scalar(n_head, "n_head", _OWNER, kind="int", low=1)
        n_embd = check_scalar(n_embd, "n_embd", _OWNER, kind="int", low=1,
                              high=8192)
        block_size = check_scalar(block_size, "block_size", _OWNER,
                                  kind="int", low=2, high=65536)
        if n_embd % n_head:
            raise ValueError(
                f"The 'n_embd' parameter of {_OWNER} must be a multiple of "
                f"n_head = {n_head}. Got {n_embd} instead.")
        if tokenizer is None:
            tokenizer = ByteTokenizer()
        if not isinstance(tokenizer, _Tokenizer):
            raise TypeError(
                f"The 'tokenizer' parameter of {_OWNER} must be None, a "
                "rlhf.text.ByteTokenizer or a rlhf.text.CharTokenizer. Got "
                f"{format_value(tokenizer)} instead.")
        if vocab_size is None:
            vocab_size = tokenizer.vocab_size
        vocab_size = check_scalar(vocab_size, "vocab_size", _OWNER,
                                  kind="int", low=tokenizer.vocab_size,
                                  high=2 ** 20)
        self.n_layer, self.n_head, self.n_embd = n_layer, n_head, n_embd
        self.block_size, self.vocab_size = block_size, vocab_size
        self.tokenizer = tokenizer
        self.eot_token = tokenizer.eot_token
        self._config = (n_layer, n_head, n_embd, vocab_size, block_size)
        self._shapes = _reference_gpt.parameter_shapes(
            n_layer, n_embd, vocab_size, block_size)
        self.n_params = int(sum(math.prod(s) for s in self._shapes.values()))
        rng = _check_random_state(random_state, _OWNER)
        init = _reference_gpt.init_parameters(n_layer, n_embd, vocab_size,
                                              block_size, rng)
        self._params = np.concatenate(
            [init[name].ravel() for name in self._shapes]).astype(np.float32)
        self._decay = np.concatenate(
            [np.full(math.prod(shape), _decays(name), dtype=np.uint8)
             for name, shape in self._shapes.items()])

    # -- parameters ------------------------------------------------------

    def _views(self, flat):
        """{name: view of flat in the parameter's shape}."""
        views, start = {}, 0
        for name, shape in self._shapes.items():
            size = math.prod(shape)
            views[name] = flat[start:start + size].reshape(shape)
            start += size
        return views

    def state_dict(self) -> Dict[str, NDArray[np.float32]]:
        """The parameters, as copies, under Hugging Face GPT-2's names.

        Returns
        -------
        state : dict of str to ndarray of dtype float32
            ``transformer.wte.weight`` (V, C), ``transformer.wpe.weight``
            (block_size, C), ``transformer.h.{i}.attn.c_attn.weight``
            (C, 3C), ... ``transformer.ln_f.bias`` (C,); Conv1D layout
            (``x @ W + b``).  The LM head is the token embedding.
        """
        return {name: view.copy()
                for name, view in self._views(self._params).items()}

    def load_state_dict(self, state: Mapping[str, ArrayLike]) -> "TinyLM":
        """Set every parameter from ``state`` (names and shapes as
        :meth:`state_dict`'s; ``lm_head.weight``, which must equal the
        token embedding, and attention-mask buffers are ignored).

        Returns
        -------
        self : TinyLM
        """
        if not isinstance(state, dict):
            raise TypeError("state must be a dict of parameter arrays; got "
                            f"{format_value(state)}")
        new = self._params.copy()
        views = self._views(new)
        missing = [name for name in self._shapes if name not in state]
        if missing:
            raise ValueError(f"state has no {missing[0]!r} (and "
                             f"{len(missing) - 1} more missing)"
                             if len(missing) > 1 else
                             f"state has no {missing[0]!r}")
        odd = [name for name in state if not isinstance(name, str)]
        if odd:
            raise TypeError(f"state's keys must be parameter names (str); "
                            f"got {odd[0]!r}")
        extra = [name for name in state if name not in self._shapes
                 and name != "lm_head.weight"
                 and not name.endswith((".attn.bias", ".attn.masked_bias"))]
        if extra:
            raise ValueError(f"state has {extra[0]!r}, which is not a "
                             "parameter of this model")
        if "lm_head.weight" in state and not np.array_equal(
                _to_numpy(state["lm_head.weight"], "lm_head.weight"),
                _to_numpy(state["transformer.wte.weight"],
                          "transformer.wte.weight")):
            raise ValueError(
                "state['lm_head.weight'] differs from "
                "state['transformer.wte.weight']; TinyLM ties its LM head "
                "to the token embedding")
        for name, view in views.items():
            value = _to_numpy(state[name], name)
            if value.shape != view.shape:
                raise ValueError(
                    f"state[{name!r}] has shape {value.shape}; this model's "
                    f"is {view.shape}")
            if not np.all(np.isfinite(value)):
                raise ValueError(f"state[{name!r}] has NaN or infinite "
                                 "entries")
            view[...] = value
        self._params = new
        return self

    def to_transformers(self) -> Any:
        """This model as a ``transformers.GPT2LMHeadModel`` (float32, eval
        mode), to carry on with trl or anything else built on PyTorch.

        Returns
        -------
        model : transformers.GPT2LMHeadModel
        """
        try:
            import torch
            from transformers import GPT2Config, GPT2LMHeadModel
        except ImportError as error:  # pragma: no cover - optional
            raise ImportError("to_transformers needs torch and transformers "
                              "(pip install torch transformers)") from error
        config = GPT2Config(
            vocab_size=self.vocab_size, n_positions=self.block_size,
            n_embd=self.n_embd, n_layer=self.n_layer, n_head=self.n_head,
            activation_function="gelu_new", resid_pdrop=0.0,
            embd_pdrop=0.0, attn_pdrop=0.0, layer_norm_epsilon=1e-5,
            bos_token_id=self.eot_token, eos_token_id=self.eot_token,
            tie_word_embeddings=True)
        model = GPT2LMHeadModel(config)
        state = {name: torch.from_numpy(value)
                 for name, value in self.state_dict().items()}
        model.load_state_dict(state, strict=False)
        model.tie_weights()
        return model.eval()

    def copy(self) -> "TinyLM":
        """An independent copy (the same weights and tokenizer), for
        example the frozen reference of an RLHF fit."""
        other = object.__new__(type(self))
        other.__dict__.update(self.__dict__)
        other._params = self._params.copy()
        other.__dict__.pop("history_", None)
        if hasattr(self, "history_"):
            other.history_ = {k: v.copy() for k, v in self.history_.items()}
        return other

    # -- kernels -----------------------------------------------------------

    def _tokens(self, tokens, name="tokens"):
        """A private int64 (B, T) copy of tokens, checked."""
        try:
            array = np.array(tokens, copy=True)
        except ValueError as error:  # a ragged list
            raise ValueError(f"{name} must be a rectangular array of token "
                             f"ids ({error})") from None
        if array.dtype == object or not (
                np.issubdtype(array.dtype, np.integer) or array.size == 0):
            raise TypeError(f"{name} must be an array of integer token ids; "
                            f"got dtype {array.dtype}")
        if array.ndim == 1:
            array = array[None, :]
        if array.ndim != 2:
            raise ValueError(f"{name} must be 1- or 2-dimensional (batch, "
                             f"time); got shape {array.shape}")
        if array.shape[0] == 0 or array.shape[1] == 0:
            raise ValueError(f"{name} is empty (shape {array.shape})")
        if array.shape[1] > self.block_size:
            raise ValueError(
                f"{name} has sequences of {array.shape[1]} tokens; the "
                f"model reads at most block_size = {self.block_size}")
        low, high = array.min(), array.max()
        if low < 0 or high >= self.vocab_size:
            bad = low if low < 0 else high
            raise ValueError(
                f"{name} has token {int(bad)}, outside the vocabulary "
                f"[0, {self.vocab_size})")
        return array.astype(np.int64)

    def _forward(self, tokens, params=None):
        """(acts, hidden, lse, logits views) after the forward pass."""
        B, T = tokens.shape
        _, n_acts, hidden, lse, logits = _core.gpt_sizes(self._config, B, T)
        acts = np.empty(n_acts, dtype=np.float32)
        _core.gpt_forward(self._config, self._params if params is None
                          else params, tokens, acts)
        C, V = self.n_embd, self.vocab_size
        N = B * T
        return (acts, acts[hidden:hidden + N * C].reshape(B, T, C),
                acts[lse:lse + N].reshape(B, T),
                acts[logits:logits + N * V].reshape(B, T, V))

    def logits(self, tokens: ArrayLike) -> NDArray[np.float32]:
        """Next-token logits at every position.

        Parameters
        ----------
        tokens : array-like of int, shape (batch, time) or (time,)
            Token ids in ``[0, vocab_size)``, at most ``block_size`` per
            sequence.

        Returns
        -------
        logits : ndarray of shape (batch, time, vocab_size), float32
        """
        tokens = self._tokens(tokens)
        return self._forward(tokens)[3].copy()

    def _token_log_probs(self, tokens, targets, entropy=False):
        acts = self._forward(tokens)[0]
        return _core.gpt_token_stats(self._config, acts, targets, entropy)

    def _loss_and_flat_gradient(self, tokens, targets, weight):
        """-sum(weight * log p(targets)) and its flat float32 gradient,
        from one forward pass."""
        acts = self._forward(tokens)[0]
        logp, _ = _core.gpt_token_stats(self._config, acts, targets, False)
        loss = float(-(weight * logp.astype(np.float64)).sum())
        grads = np.empty_like(self._params)
        _core.gpt_backward(self._config, self._params, tokens, acts, targets,
                           weight.astype(np.float32), grads)
        return loss, grads

    def loss_and_gradients(
            self,
            tokens: ArrayLike,
            targets: Optional[ArrayLike] = None,
            mask: Optional[ArrayLike] = None,
    ) -> Tuple[float, Dict[str, NDArray[np.float32]]]:
        """Mean next-token cross-entropy and its gradient in every
        parameter.

        Parameters
        ----------
        tokens : array-like of int, shape (batch, time)
            Inputs.
        targets : array-like of int of the same shape, default=None
            The token to predict at each position; by default the next
            input token (the model then reads ``tokens[:, :-1]`` and
            predicts ``tokens[:, 1:]``).
        mask : array-like of bool or float, default=None
            Weights of the positions (of ``targets``); the loss is the
            weighted mean.  All ones by default.

        Returns
        -------
        loss : float
        gradients : dict of str to ndarray of dtype float32
            Under :meth:`state_dict`'s names and shapes.
        """
        tokens = self._tokens(tokens)
        if targets is None:
            if tokens.shape[1] < 2:
                raise ValueError("tokens needs at least 2 positions when "
                                 "targets is not given")
            tokens, targets = tokens[:, :-1].copy(), tokens[:, 1:].copy()
            if mask is not None:
                mask = np.asarray(mask, dtype=np.float64)
                if mask.ndim == 1:
                    mask = mask[None, :]
                if mask.shape != (tokens.shape[0], tokens.shape[1] + 1):
                    raise ValueError(
                        f"mask must have the shape of tokens; got "
                        f"{mask.shape}")
                mask = mask[:, 1:]
        else:
            targets = self._tokens(targets, "targets")
            if targets.shape != tokens.shape:
                raise ValueError(f"targets has shape {targets.shape}; tokens "
                                 f"has {tokens.shape}")
        weight = _weights(mask, tokens.shape)
        loss, grads = self._loss_and_flat_gradient(tokens, targets, weight)
        return loss, self._views(grads)

    # -- text ----------------------------------------------------------------

    def _document(self, prompt, text):
        """(tokens, index of the first token of text) of
        [eot] + prompt + text + [eot]."""
        eot = self.eot_token
        head = self.tokenizer.encode(prompt) if prompt else np.zeros(
            0, np.int32)
        body = self.tokenizer.encode(text)
        tokens = np.concatenate([[eot], head, body, [eot]]).astype(np.int64)
        return tokens, 1 + len(head)

    def encode_prompts(self, prompts: Sequence[str]) -> List[IntArray]:
        """The token arrays ``[eot] + tokens(prompt)`` of each prompt, the
        context a response is sampled from."""
        return [np.concatenate([[self.eot_token],
                                self.tokenizer.encode(p)]).astype(np.int64)
                for p in prompts]

    def fit(self, texts: Sequence[str],
            prompts: Optional[Sequence[str]] = None, *, max_steps: int = 500,
            batch_size: int = 32, lr: float = 3e-3, weight_decay: float = 0.1,
            warmup_steps: Optional[int] = None, min_lr_ratio: float = 0.1,
            max_grad_norm: Optional[float] = 1.0,
            betas: Tuple[float, float] = (0.9, 0.95),
            random_state: RandomState = None, verbose: int = 0,
            progress: Optional[bool] = None) -> "TinyLM":
        """Supervised fine-tuning (or pre-training): next-token
        cross-entropy with AdamW.

        Each document is ``[eot] + prompt + text + [eot]``; with prompts the
        loss counts only the text's tokens and the final end of text (the
        prompt's are masked), as in InstructGPT's SFT step.  A document
        longer than ``block_size + 1`` tokens is read through a window at
        a random place.  Each step draws ``batch_size`` documents at
        random.  The learning rate warms up linearly over
        ``warmup_steps`` (a tenth of the steps by default), then decays
        along a cosine to ``min_lr_ratio * lr``; the gradient is clipped
        to norm ``max_grad_norm``; AdamW decays the weight matrices only
        (Loshchilov & Hutter 2019).  Ctrl-C stops between two steps and
        leaves the model as after the last one.

        Parameters
        ----------
        texts : sequence of str
            The documents, or the responses when prompts are given.
        prompts : sequence of str or None, default=None
            One prompt per text.
        max_steps, batch_size : int
            Optimisation steps, and documents per step.
        lr, weight_decay : float
        warmup_steps : int or None
        min_lr_ratio, max_grad_norm : float
        betas : (float, float)
            AdamW's moment decays.
        random_state : None, int or numpy.random.Generator
            Seeds the batches.
        verbose : int, default=0
            Print the loss ten times per fit when positive.
        progress : bool or None, default=None
            A progress bar with the loss (tqdm's when installed): True
            always, False never, None when the steps are expected to take
            more than 3 seconds in all (never under pytest; see
            :mod:`rlhf._progress`).

        Returns
        -------
        self : TinyLM
        """
        owner = f"{_OWNER}.fit"
        texts = _check_texts(texts, "texts")
        if len(texts) == 0:
            raise ValueError("texts is empty: there is nothing to learn")
        if prompts is not None:
            prompts = _check_texts(prompts, "prompts")
            if len(prompts) != len(texts):
                raise ValueError(f"prompts has {len(prompts)} entries; texts "
                                 f"has {len(texts)}")
        max_steps = check_scalar(max_steps, "max_steps", owner, kind="int",
                                 low=1)
        batch_size = check_scalar(batch_size, "batch_size", owner, kind="int",
                                  low=1, high=65536)
        lr = check_scalar(lr, "lr", owner, low=0.0, high=np.inf,
                          low_open=True, high_open=True)
        weight_decay = check_scalar(weight_decay, "weight_decay", owner,
                                    low=0.0, high=1.0 / lr)
        if warmup_steps is None:
            warmup_steps = max_steps // 10
        warmup_steps = check_scalar(warmup_steps, "warmup_steps", owner,
                                    kind="int", low=0)
        min_lr_ratio = check_scalar(min_lr_ratio, "min_lr_ratio", owner,
                                    low=0.0, high=1.0)
        max_grad_norm = check_scalar(max_grad_norm, "max_grad_norm", owner,
                                     low=0.0, high=np.inf, high_open=True)
        beta1, beta2 = _check_betas(betas, owner)
        verbose = check_scalar(verbose, "verbose", owner, kind="int", low=0)
        progress = check_progress(progress, owner)
        rng = _check_random_state(random_state, owner)

        documents, starts = [], []
        for i, text in enumerate(texts):
            tokens, start = self._document(
                prompts[i] if prompts is not None else "", text)
            documents.append(tokens)
            starts.append(start if prompts is not None else 1)
        m = np.zeros_like(self._params)
        v = np.zeros_like(self._params)
        history: Dict[str, List[float]] = {"loss": [], "lr": [],
                                           "grad_norm": []}
        begin = time.perf_counter()
        bar = Progress(progress, max_steps, owner, unit="step")
        # read only when the bar is drawn
        bar.set_postfix(loss=lambda: history["loss"][-1])
        # every thread or one, whichever runs the steps faster now (the
        # same bits either way)
        threads = AdaptiveThreads()
        try:
            self._fit_steps(documents, starts, history, m, v, max_steps,
                            batch_size, lr, weight_decay, warmup_steps,
                            min_lr_ratio, max_grad_norm, beta1, beta2, rng,
                            verbose, begin, bar, threads)
        finally:  # an interrupted fit keeps the steps it made
            threads.close()
            bar.close()
            self.history_ = {k: np.array(h) for k, h in history.items()}
        return self

    def _fit_steps(self, documents, starts, history, m, v, max_steps,
                   batch_size, lr, weight_decay, warmup_steps, min_lr_ratio,
                   max_grad_norm, beta1, beta2, rng, verbose, begin, bar,
                   threads):
        for step in range(1, max_steps + 1):
            threads.begin()
            tokens, targets, weight = self._batch(documents, starts,
                                                  batch_size, rng)
            rate = _schedule(step, max_steps, warmup_steps, lr, min_lr_ratio)
            loss, grads = self._loss_and_flat_gradient(tokens, targets,
                                                       weight)
            try:
                norm = _core.gpt_adamw(self._params, grads, m, v,
                                       self._decay, rate, beta1, beta2, 1e-8,
                                       weight_decay, step, max_grad_norm)
            except FloatingPointError:
                raise ValueError(
                    f"{_OWNER}.fit diverged at step {step}: the gradient is "
                    "no longer finite (the weights were left as after the "
                    "step before). Lower lr.") from None
            history["loss"].append(loss)
            history["lr"].append(rate)
            history["grad_norm"].append(norm)
            threads.end()
            bar.update()
            if verbose and (step % max(1, max_steps // 10) == 0
                            or step == max_steps):
                bar.write(f"{_OWNER}.fit: step {step}/{max_steps}  loss "
                          f"{loss:.4f}  lr {rate:.2e}  "
                          f"({time.perf_counter() - begin:.1f} s)")

    def _batch(self, documents, starts, batch_size, rng):
        """(tokens, targets, weights) of batch_size documents drawn at
        random, padded with eot (weight 0); weights sum to 1."""
        picks = rng.integers(len(documents), size=batch_size)
        window = self.block_size + 1
        pieces = []
        for i in picks:
            doc, start = documents[i], starts[i]
            if len(doc) > window:
                offset = int(rng.integers(len(doc) - window + 1))
                doc = doc[offset:offset + window]
                start = max(start - offset, 1)
            pieces.append((doc, start))
        T = max(len(doc) for doc, _ in pieces) - 1
        tokens = np.full((batch_size, T), self.eot_token, dtype=np.int64)
        targets = np.full((batch_size, T), self.eot_token, dtype=np.int64)
        weight = np.zeros((batch_size, T))
        for row, (doc, start) in enumerate(pieces):
            n = len(doc) - 1
            tokens[row, :n] = doc[:-1]
            targets[row, :n] = doc[1:]
            # target j is token j + 1: the text's tokens are targets
            # start - 1 onwards
            weight[row, start - 1:n] = 1.0
        total = weight.sum()
        if total == 0:  # every text was cut away by its window
            weight[:, :] = 1.0
            total = weight.sum()
        return tokens, targets, weight / total

    def sample(
            self,
            prompt_tokens: Sequence[ArrayLike],
            max_new_tokens: int = 32,
            temperature: float = 1.0,
            top_k: Optional[int] = None,
            n: int = 1,
            random_state: RandomState = None,
    ) -> Tuple[IntArray, IntArray, IntArray, NDArray[np.float32]]:
        """Sample continuations of token prompts with the key-value cache.

        Parameters
        ----------
        prompt_tokens : sequence of 1-d int arrays
            Each at least one token (``[eot]`` for no prompt).
        max_new_tokens, temperature, top_k, n, random_state
            As :meth:`generate`.

        Returns
        -------
        tokens : ndarray of shape (len(prompt_tokens) * n, block_size)
            Prompt, sample, then end-of-text padding; row ``i * n + j`` is
            the j-th sample of prompt i.
        prompt_lengths, lengths : ndarray of shape (rows,), int64
            Where each sample starts and ends.
        log_probs : ndarray of shape (rows, block_size), float32
            log p of each sampled token under the model (temperature 1,
            no top-k), 0 elsewhere; equal to what the full forward pass
            gives.
        """
        owner = f"{_OWNER}.sample"
        # beyond block_size a larger value changes nothing; the caps keep
        # every count an int64 the kernel can take
        max_new_tokens = check_scalar(max_new_tokens, "max_new_tokens", owner,
                                      kind="int", low=0, high=2 ** 62)
        temperature = check_scalar(temperature, "temperature", owner, low=0.0,
                                   high=np.inf, high_open=True)
        if top_k is not None:
            top_k = check_scalar(top_k, "top_k", owner, kind="int", low=1,
                                 high=2 ** 62)
        n = check_scalar(n, "n", owner, kind="int", low=1, high=2 ** 20)
        rng = _check_random_state(random_state, owner)
        prompts = []
        for i, p in enumerate(prompt_tokens):
            name = f"prompt_tokens[{i}]"
            if np.ndim(p) != 1:
                raise ValueError(f"{name} must be a 1-dimensional array of "
                                 f"token ids; got {np.ndim(p)} dimensions")
            prompts.append(self._tokens(p, name)[0])
        if len(prompts) * n > 2 ** 24:
            raise ValueError(
                f"n: {len(prompts)} prompts x n = {n} samples is more than "
                f"{2 ** 24:,} rows; sample in smaller batches")
        lengths = np.repeat([len(p) for p in prompts], n).astype(np.int64)
        width = max([len(p) for p in prompts] + [1])
        padded = np.full((len(prompts) * n, width), self.eot_token,
                         dtype=np.int64)
        for i, p in enumerate(prompts):
            padded[i * n:(i + 1) * n, :len(p)] = p
        seed = int(rng.integers(2 ** 63))
        tokens, log_probs, ends = _core.gpt_generate(
            self._config, self._params, padded, lengths, max_new_tokens,
            temperature, 0 if top_k is None else top_k,
            self.tokenizer.vocab_size, seed, self.eot_token)
        return tokens, lengths, ends, log_probs

    def generate(self, prompts: Union[str, Sequence[str]],
                 max_new_tokens: int = 32, temperature: float = 1.0,
                 top_k: Optional[int] = None, n: int = 1,
                 random_state: RandomState = None) -> Union[str, List[str]]:
        """Continue text prompts.

        Parameters
        ----------
        prompts : str or sequence of str
            Each is read as ``[eot] + tokens(prompt)``; ``""`` starts from
            nothing.
        max_new_tokens : int, default=32
            At most this many new tokens (fewer when the model writes its
            end of text or reaches block_size).
        temperature : float, default=1.0
            Sampling from softmax(logits / temperature); 0 takes the most
            likely token every time.
        top_k : int or None, default=None
            Sample among the top_k most likely tokens only.
        n : int, default=1
            Samples per prompt.
        random_state : None, int or numpy.random.Generator
            The same value gives the same text, for any number of threads.

        Returns
        -------
        text : str, or list of str
            A str for one prompt and n=1; otherwise a list, the n samples
            of each prompt together.  The end-of-text token is not part of
            the text.
        """
        single = isinstance(prompts, str)
        texts_in: List[str] = ([prompts] if isinstance(prompts, str)
                               else _check_texts(prompts, "prompts"))
        tokens, starts, ends, _ = self.sample(
            self.encode_prompts(texts_in), max_new_tokens, temperature, top_k,
            n, random_state)
        texts = [self.tokenizer.decode(tokens[i, starts[i]:ends[i]])
                 for i in range(len(tokens))]
        return texts[0] if single and n == 1 else texts

    def log_prob(
            self,
            prompts: Sequence[str],
            responses: Sequence[str],
    ) -> Tuple[FloatArray, List[NDArray[np.float32]]]:
        """log p(response | prompt) under the model, token by token.

        Each response is scored as the tokens that follow
        ``[eot] + tokens(prompt)``: its own, then the end of text.

        Parameters
        ----------
        prompts, responses : sequence of str of the same length

        Returns
        -------
        total : ndarray of shape (n,)
            The sum over each response's tokens (float64).
        per_token : list of ndarray of dtype float32
            Each response's token log-probabilities, end of text last.
        """
        prompts = _check_texts(prompts, "prompts")
        responses = _check_texts(responses, "responses")
        if len(prompts) != len(responses):
            raise ValueError(f"prompts has {len(prompts)} entries; "
                             f"responses has {len(responses)}")
        docs = [self._document(p, r) for p, r in zip(prompts, responses)]
        for i, (doc, _) in enumerate(docs):
            if len(doc) - 1 > self.block_size:
                raise ValueError(
                    f"prompts[{i}] + responses[{i}] is {len(doc) - 1} tokens "
                    f"with its end of text; the model reads at most "
                    f"block_size = {self.block_size}")
        if not docs:
            return np.zeros(0), []
        T = max(len(doc) for doc, _ in docs) - 1
        tokens = np.full((len(docs), T), self.eot_token, dtype=np.int64)
        targets = tokens.copy()
        for row, (doc, _) in enumerate(docs):
            tokens[row, :len(doc) - 1] = doc[:-1]
            targets[row, :len(doc) - 1] = doc[1:]
        logp, _ = self._token_log_probs(tokens, targets)
        per_token = [logp[row, start - 1:len(doc) - 1].copy()
                     for row, (doc, start) in enumerate(docs)]
        total = np.array([p.astype(np.float64).sum() for p in per_token])
        return total, per_token

    # -- files -------------------------------------------------------------

    def save(self, path: Union[str, "os.PathLike[str]"]) -> None:
        """Write the model (shape, tokenizer and parameters) to an .npz."""
        meta = {"format": _FORMAT, "config": list(self._config),
                "tokenizer": self.tokenizer.to_dict()}
        arrays: Dict[str, Any] = {"__meta__": np.array(json.dumps(meta))}
        arrays.update(self.state_dict())
        np.savez(path, **arrays)

    @classmethod
    def load(cls, path: Union[str, "os.PathLike[str]"]) -> "TinyLM":
        """The model :meth:`save` wrote to path."""
        with np.load(path, allow_pickle=False) as data:
            if "__meta__" not in data:
                raise ValueError(f"{path} is not a TinyLM file (no "
                                 "__meta__ entry)")
            meta = json.loads(str(data["__meta__"]))
            if meta.get("format") != _FORMAT:
                raise ValueError(f"{path} has format {meta.get('format')}; "
                                 f"this version reads {_FORMAT}")
            n_layer, n_head, n_embd, vocab_size, block_size = meta["config"]
            model = cls(n_layer=n_layer, n_head=n_head, n_embd=n_embd,
                        block_size=block_size, vocab_size=vocab_size,
                        tokenizer=tokenizer_from_dict(meta["tokenizer"]),
                        random_state=0)
            state = {k: data[k] for k in data.files if k != "__meta__"}
        return model.load_state_dict(state)

    def __repr__(self):
        return (f"TinyLM(n_layer={self.n_layer}, n_head={self.n_head}, "
                f"n_embd={self.n_embd}, block_size={self.block_size}, "
                f"vocab_size={self.vocab_size}, tokenizer={self.tokenizer!r})"
                f"  # {self.n_params:,} parameters")


def _to_numpy(value, name):
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    try:
        return np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as error:
        raise type(error)(f"state[{name!r}] must be an array of numbers; "
                          f"got {format_value(value)} ({error})") from None


def _weights(mask, shape):
    if mask is None:
        weight = np.ones(shape)
    else:
        weight = np.asarray(mask, dtype=np.float64)
        if weight.ndim == 1:
            weight = weight[None, :]
        if weight.shape != shape:
            raise ValueError(f"mask has shape {weight.shape}; targets has "
                             f"{shape}")
        if not np.all(np.isfinite(weight)) or (weight < 0).any():
            raise ValueError("mask must be finite and non-negative")
    total = weight.sum()
    if total <= 0:
        raise ValueError("mask selects no position")
    return weight / total


def _check_texts(texts, name):
    if isinstance(texts, str) or not hasattr(texts, "__len__"):
        raise TypeError(f"{name} must be a sequence of str; got "
                        f"{format_value(texts)}")
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{name}[{i}] must be a str; got "
                            f"{type(text).__name__}")
    return texts


def _check_betas(betas, owner):
    if (not isinstance(betas, (tuple, list)) or len(betas) != 2
            or not all(isinstance(b, numbers.Real) for b in betas)
            or not all(0.0 <= float(b) < 1.0 for b in betas)):
        raise ValueError(f"The 'betas' parameter of {owner} must be a pair "
                         f"of floats in [0, 1). Got {format_value(betas)} "
                         "instead.")
    return float(betas[0]), float(betas[1])


def _schedule(step, max_steps, warmup_steps, lr, min_lr_ratio):
    """Linear warm-up, then cosine decay to min_lr_ratio * lr."""
    if step <= warmup_steps:
        return lr * step / warmup_steps
    span = max(1, max_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return lr * (min_lr_ratio + (1.0 - min_lr_ratio) * 0.5
                 * (1.0 + math.cos(math.pi * progress)))
