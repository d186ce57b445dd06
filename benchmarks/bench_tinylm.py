"""rlhf.TinyLM (GPT-2 in float32 C) against PyTorch eager on the CPU.

    python benchmarks/bench_tinylm.py              # the figures in README.md
    python benchmarks/bench_tinylm.py --quick      # a fast sanity run
    python benchmarks/bench_tinylm.py --threads 1  # another thread count
    python benchmarks/bench_tinylm.py --only sample --prompts 32

The models: GPT-2 with n_layer=2, n_head=4, block_size=64, the byte
vocabulary (V = 257, 256 bytes and the end of text) and n_embd 64 and 128.
The peers start from the same weights: ``lm.to_transformers()`` for
transformers' ``GPT2LMHeadModel`` (gelu_new, no dropout, LayerNorm eps
1e-5, tied head), and the same tensors loaded into a nanoGPT-style module
written here (fused qkv ``Linear``, ``F.scaled_dot_product_attention``
with ``is_causal=True``, GELU tanh, tied head).  Both libraries use the
same number of threads: ``OMP_NUM_THREADS`` is set before either is
imported (rlhf's kernels take the OpenMP default) and
``torch.set_num_threads`` to the same value.

1. SFT step, batch 32 x 64 tokens: forward, next-token cross-entropy,
   backward, gradient clipped to norm 1, AdamW.  rlhf twice: the step's
   kernels called directly (``_forward``, ``gpt_token_stats`` for the
   loss, ``gpt_backward``, ``gpt_adamw``), and ``lm.fit(...)`` per step
   (what a user calls, batches drawn and padded in Python).  PyTorch with
   ``torch.optim.AdamW`` (decay on the matrices only, as nanoGPT).
2. One PPO iteration: 8 prompts x 4 responses of up to 48 tokens, a
   reward in Python, per-token k1 penalty against the frozen reference,
   GAE(1, 0.95) with a linear value head on the reference's last hidden
   state, whitened advantages, 4 epochs over minibatches of 16 responses
   of the clipped surrogate with backward and AdamW, and an Adam step of
   the clipped value loss.  rlhf: ``rlhf.PPO(...).fit(lm, ...)``; PyTorch:
   the same algorithm on the nanoGPT module, sampling with a key-value
   cache.  Timed as the interval between two calls of the reward
   function (one whole iteration, sampling included).
3. Sampling with the key-value cache, 256 prompts x 63 new tokens
   (temperature 1, the full softmax): ``lm.sample`` against the nanoGPT
   module's cached sampler and ``GPT2LMHeadModel.generate(do_sample=True,
   top_k=0, use_cache=True)``.  The end-of-text logit is pushed down to
   -n_embd / 2 in the shared weights (final LayerNorm bias 1, the token's
   embedding -1/2), so that no side stops early: every row gets 63 tokens
   (checked).
4. Peak memory of the SFT step (3 steps): each side in a fresh process
   (the script calls itself), the peak resident size (VmHWM, which is
   ``ru_maxrss`` without the parent's peak that Linux carries across
   exec) and its excess over the resident size once the libraries are
   imported and the data exist.

Each timing is the median of several rounds; the contenders run in turn,
round after round, after warm-up calls, so that a burst of load on the
shared machine hits every side alike.  Nothing here asserts a time.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time


def _arguments():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="few repeats and small sizes: a sanity run")
    parser.add_argument("--threads", type=int, default=2,
                        help="threads for both rlhf and PyTorch (default 2)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128],
                        help="n_embd values (default 64 128)")
    parser.add_argument("--only", nargs="+",
                        choices=["sft", "ppo", "sample", "memory"],
                        help="these tables only (default: all four)")
    parser.add_argument("--prompts", type=int, default=None,
                        help="prompts for the sampling table (default 256, "
                        "32 with --quick)")
    parser.add_argument("--memory-child", nargs=2,
                        metavar=("SIDE", "N_EMBD"), help=argparse.SUPPRESS)
    return parser.parse_args()


ARGS = _arguments() if __name__ == "__main__" else None
if ARGS is not None:
    # before NumPy, rlhf or torch start an OpenMP runtime
    os.environ["OMP_NUM_THREADS"] = str(ARGS.threads)

import numpy as np  # noqa: E402

import rlhf  # noqa: E402
from rlhf import _core  # noqa: E402

N_LAYER, N_HEAD, BLOCK = 2, 4, 64
BATCH, SEQ = 32, 64                    # SFT: 32 sequences of 64 tokens
LR, BETAS, WEIGHT_DECAY, MAX_NORM = 3e-3, (0.9, 0.95), 0.1, 1.0
PPO_PROMPTS, PPO_SAMPLES, PPO_NEW, PPO_EPOCHS, PPO_MINIBATCH = 8, 4, 48, 4, 16
PPO_BETA, PPO_CLIP, PPO_VALUE_CLIP, PPO_LR, PPO_LAM = 0.1, 0.2, 0.2, 1e-3, 0.95
PPO_VALUE_LR = 1e-2
PROMPTS = [f"Question {i:02d}: " for i in range(16)]  # 13 bytes each
SAMPLE_NEW = 63                         # [eot] + 63 tokens = block_size


def _status_kib(field):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"no {field} in /proc/self/status")


def rss_kib():
    """The resident size now."""
    return _status_kib("VmRSS")


def peak_kib():
    """The resident size's high-water mark of this process image.
    getrusage's ru_maxrss would do, but Linux carries it across exec: a
    child started from a large parent reports the parent's peak when its
    own is smaller.  VmHWM belongs to the new image only."""
    try:
        return _status_kib("VmHWM")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def lscpu_model():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True,
                             check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return "unknown"


def load():
    return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def cpu_snapshot():
    """(wall clock, CPU seconds used by the whole machine, CPU seconds
    used by this process and its children)."""
    with open("/proc/stat") as fh:
        ticks = [int(x) for x in fh.readline().split()[1:]]
    # user, nice, system, then irq, softirq, steal (idle and iowait left
    # out); steal is time the hypervisor gave to other machines
    busy = (sum(ticks[:3]) + sum(ticks[5:8])) / os.sysconf("SC_CLK_TCK")
    own = os.times()
    return (time.perf_counter(), busy, own.user + own.system
            + own.children_user + own.children_system)


def others(start):
    """The share of the machine's cores that other processes used since
    cpu_snapshot() returned start, as a percentage."""
    wall, busy, ours = (b - a for a, b in zip(start, cpu_snapshot()))
    return f"{max(0.0, (busy - ours) / (wall * os.cpu_count())):.0%}"


def rlhf_build():
    """The commit of the source tree and when the compiled module was
    built: the kernels change under a moving tree."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(rlhf.__file__)))
    try:
        commit = subprocess.run(
            ["git", "-C", root, "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", root, "status", "--porcelain", "--", "csrc",
             "rlhf"], capture_output=True, text=True, check=True).stdout
        commit += " (csrc/ or rlhf/ modified)" if dirty.strip() else ""
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    built = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(
        os.path.getmtime(_core.__file__)))
    return f"commit {commit}, _core built {built}"


def make_lm(n_embd, seed=0):
    return rlhf.TinyLM(n_layer=N_LAYER, n_head=N_HEAD, n_embd=n_embd,
                       block_size=BLOCK, random_state=seed)


def sft_data(seed=0):
    """A fixed batch of 32 x 65 printable bytes: (tokens, targets) of 64
    positions each, and the same rows as texts for ``lm.fit`` (each
    document is [eot] + 63 bytes + [eot], 65 tokens: 64 positions)."""
    rng = np.random.default_rng(seed)
    rows = rng.integers(32, 127, size=(BATCH, SEQ + 1)).astype(np.int64)
    texts = [bytes(r[:SEQ - 1].tolist()).decode("ascii") for r in rows]
    return rows[:, :-1].copy(), rows[:, 1:].copy(), texts


# -- rlhf --------------------------------------------------------------------

class RlhfStep:
    """The SFT step's kernels as ``TinyLM.fit`` calls them, without the
    batch drawing: one forward pass, the loss from the log-probabilities,
    the backward pass, AdamW (clipping included)."""

    def __init__(self, lm, tokens, targets):
        self.lm, self.tokens, self.targets = lm, tokens, targets
        self.coef = np.full(tokens.shape, 1.0 / tokens.size,
                            dtype=np.float32)
        self.m = np.zeros_like(lm._params)
        self.v = np.zeros_like(lm._params)
        self.step = 0

    def __call__(self):
        lm = self.lm
        acts = lm._forward(self.tokens)[0]
        logp, _ = _core.gpt_token_stats(lm._config, acts, self.targets,
                                        False)
        loss = -float(logp.astype(np.float64).mean())
        grads = np.empty_like(lm._params)
        _core.gpt_backward(lm._config, lm._params, self.tokens, acts,
                           self.targets, self.coef, grads)
        self.step += 1
        _core.gpt_adamw(lm._params, grads, self.m, self.v, lm._decay, LR,
                        BETAS[0], BETAS[1], 1e-8, WEIGHT_DECAY, self.step,
                        MAX_NORM)
        return loss


def rlhf_fit(lm, texts, steps):
    return lm.fit(texts, max_steps=steps, batch_size=BATCH, lr=LR,
                  weight_decay=WEIGHT_DECAY, warmup_steps=0,
                  max_grad_norm=MAX_NORM, betas=BETAS, random_state=0)


def suppress_eot(lm):
    """Weights under which the end of text is never drawn: with the final
    LayerNorm's gain 1 and bias 1, and the token's embedding -1/2 in every
    channel, its logit is -n_embd / 2 (a normalised row sums to 0)."""
    state = lm.state_dict()
    state["transformer.ln_f.weight"][:] = 1.0
    state["transformer.ln_f.bias"][:] = 1.0
    state["transformer.wte.weight"][lm.eot_token] = -0.5
    lm.load_state_dict(state)
    return lm


def reward(prompts, responses):
    """A cheap reward in Python: the share of lowercase letters."""
    return [sum(c.islower() for c in r) / max(len(r), 1) for r in responses]


class Clock:
    """A reward function that notes when it is called: the time between
    two calls is one iteration of the loop around it."""

    def __init__(self):
        self.calls = []
        self.lengths = []

    def __call__(self, prompts, responses):
        self.calls.append((time.perf_counter(), time.process_time()))
        self.lengths.append(sum(len(r) for r in responses) / len(responses))
        return reward(prompts, responses)

    def intervals(self, skip):
        """[(wall, cpu)] between successive calls, the first skip left
        out."""
        return [tuple(d) for d in np.diff(self.calls, axis=0)[skip:]]


def rlhf_ppo(lm, n_iterations, clock):
    return rlhf.PPO(beta=PPO_BETA, clip=PPO_CLIP, learning_rate=PPO_LR,
                    lr_schedule="constant", n_iterations=n_iterations,
                    n_epochs=PPO_EPOCHS, batch_size=PPO_MINIBATCH,
                    n_samples=PPO_SAMPLES, gae_lambda=PPO_LAM,
                    value_clip=PPO_VALUE_CLIP,
                    value_learning_rate=PPO_VALUE_LR,
                    random_state=0).fit(
        lm, clock, prompts=PROMPTS, prompts_per_iteration=PPO_PROMPTS,
        max_new_tokens=PPO_NEW)


# -- PyTorch -----------------------------------------------------------------

def nanogpt(lm):
    """A nanoGPT-style module (Karpathy's model.py, with a key-value cache
    for sampling) holding a copy of lm's weights."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    C, H, V, T = lm.n_embd, lm.n_head, lm.vocab_size, lm.block_size
    D = C // H

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.c_attn = nn.Linear(C, 3 * C)
            self.c_proj = nn.Linear(C, C)

        def forward(self, x, cache=None, pos=0):
            B, S, _ = x.shape
            q, k, v = self.c_attn(x).split(C, dim=2)
            q = q.view(B, S, H, D).transpose(1, 2)
            k = k.view(B, S, H, D).transpose(1, 2)
            v = v.view(B, S, H, D).transpose(1, 2)
            if cache is not None:
                keys, values = cache
                keys[:, :, pos:pos + S] = k
                values[:, :, pos:pos + S] = v
                k, v = keys[:, :, :pos + S], values[:, :, :pos + S]
            # one new position attends to every cached one: no mask
            y = F.scaled_dot_product_attention(q, k, v, is_causal=S > 1)
            return self.c_proj(y.transpose(1, 2).reshape(B, S, C))

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.c_fc = nn.Linear(C, 4 * C)
            self.gelu = nn.GELU(approximate="tanh")
            self.c_proj = nn.Linear(4 * C, C)

        def forward(self, x):
            return self.c_proj(self.gelu(self.c_fc(x)))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1 = nn.LayerNorm(C, eps=1e-5)
            self.attn = Attention()
            self.ln_2 = nn.LayerNorm(C, eps=1e-5)
            self.mlp = MLP()

        def forward(self, x, cache=None, pos=0):
            x = x + self.attn(self.ln_1(x), cache, pos)
            return x + self.mlp(self.ln_2(x))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.transformer = nn.ModuleDict(dict(
                wte=nn.Embedding(V, C), wpe=nn.Embedding(T, C),
                h=nn.ModuleList(Block() for _ in range(lm.n_layer)),
                ln_f=nn.LayerNorm(C, eps=1e-5)))
            self.lm_head = nn.Linear(C, V, bias=False)
            self.lm_head.weight = self.transformer.wte.weight  # tied

        def forward(self, idx, caches=None, pos=0, hidden=False):
            S = idx.shape[1]
            positions = torch.arange(pos, pos + S, device=idx.device)
            x = self.transformer.wte(idx) + self.transformer.wpe(positions)
            for i, block in enumerate(self.transformer.h):
                x = block(x, None if caches is None else caches[i], pos)
            x = self.transformer.ln_f(x)
            logits = self.lm_head(x)
            return (logits, x) if hidden else logits

        @torch.no_grad()
        def sample(self, prompts, max_new):
            """Continue prompts (B, P) by max_new tokens drawn from the
            softmax, with a key-value cache; stops early once every row
            has written eot.  Returns the tokens (B, P + new) and the
            log-probability of each new token (B, new)."""
            B, P = prompts.shape
            caches = [(torch.empty(B, H, P + max_new, D),
                       torch.empty(B, H, P + max_new, D))
                      for _ in self.transformer.h]
            tokens = torch.empty(B, P + max_new, dtype=torch.int64)
            tokens[:, :P] = prompts
            logp = torch.zeros(B, max_new)
            done = torch.zeros(B, dtype=torch.bool)
            logits = self(prompts, caches, 0)[:, -1]
            for s in range(max_new):
                lp = torch.log_softmax(logits, dim=-1)
                pick = torch.multinomial(lp.exp(), 1)
                tokens[:, P + s] = pick[:, 0]
                logp[:, s] = lp.gather(1, pick)[:, 0]
                done |= pick[:, 0] == lm.eot_token
                if s + 1 == max_new or bool(done.all()):
                    return tokens[:, :P + s + 1], logp[:, :s + 1]
                logits = self(pick, caches, P + s)[:, -1]
            return tokens[:, :P], logp[:, :0]  # max_new == 0

    model = GPT()
    state = {}
    for name, value in lm.state_dict().items():
        tensor = torch.from_numpy(value.copy())
        if name.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")):
            tensor = tensor.T.contiguous()  # Conv1D (in, out) -> Linear
        state[name] = tensor
    state["lm_head.weight"] = state["transformer.wte.weight"]
    model.load_state_dict(state)
    return model


def adamw(torch, model, lr=LR, betas=BETAS, weight_decay=WEIGHT_DECAY):
    """torch.optim.AdamW as nanoGPT's configure_optimizers sets it up:
    the matrices decay, the biases and LayerNorms do not."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    rest = [p for p in params if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay,
                               "weight_decay": weight_decay},
                              {"params": rest, "weight_decay": 0.0}],
                             lr=lr, betas=betas, eps=1e-8)


class TorchStep:
    """One SFT step in PyTorch eager, as a training loop writes it."""

    def __init__(self, torch, model, tokens, targets, logits_of):
        self.torch, self.model, self.logits_of = torch, model, logits_of
        self.tokens = torch.from_numpy(tokens)
        self.targets = torch.from_numpy(targets).reshape(-1)
        self.opt = adamw(torch, model)
        model.train()

    def __call__(self):
        torch = self.torch
        logits = self.logits_of(self.model, self.tokens)
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), self.targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), MAX_NORM)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return loss.item()


def hf_logits(model, tokens):
    return model(input_ids=tokens).logits


def nano_logits(model, tokens):
    return model(tokens)


class TorchPPO:
    """The PPO iteration of rlhf/_lm_rl.py written with PyTorch tensors
    and autograd on the nanoGPT module: sampling with the key-value cache,
    the reference's log-probabilities and last hidden state, the shaped
    token rewards, GAE, whitening, then epochs of minibatch steps of the
    clipped surrogate (AdamW on the policy) and of the clipped value loss
    (Adam on a linear value head)."""

    def __init__(self, torch, lm, reward_fn, seed=0):
        self.torch = torch
        self.policy = nanogpt(lm)
        self.reference = nanogpt(lm).eval()
        for p in self.reference.parameters():
            p.requires_grad_(False)
        self.opt = adamw(torch, self.policy, lr=PPO_LR, betas=(0.9, 0.999),
                         weight_decay=0.0)
        self.head = torch.zeros(lm.n_embd + 1, dtype=torch.float64,
                                requires_grad=True)
        self.head_opt = torch.optim.Adam([self.head], lr=PPO_VALUE_LR)
        self.tokenizer, self.eot = lm.tokenizer, lm.eot_token
        self.prompts = torch.as_tensor(np.array(lm.encode_prompts(PROMPTS)))
        self.reward_fn = reward_fn
        self.rng = np.random.default_rng(seed)
        torch.manual_seed(seed)

    def iteration(self):
        torch = self.torch
        F = torch.nn.functional
        picks = np.repeat(self.rng.integers(len(PROMPTS), size=PPO_PROMPTS),
                          PPO_SAMPLES)
        prompts = self.prompts[torch.as_tensor(picks)]
        n, P = prompts.shape
        tokens, new_logp = self.policy.sample(prompts, PPO_NEW)
        width = tokens.shape[1]
        # a response runs to its first eot, included
        is_eot = tokens[:, P:] == self.eot
        first = torch.where(is_eot.any(1), is_eot.int().argmax(1),
                            width - P - 1)
        ends = P + first + 1
        inputs, targets = tokens[:, :-1], tokens[:, 1:]
        j = torch.arange(width - 1)
        live = (j[None, :] + 1 >= P) & (j[None, :] + 1 < ends[:, None])
        old_logp = torch.zeros(n, width - 1, dtype=torch.float64)
        old_logp[:, P - 1:] = new_logp.double()
        old_logp = torch.where(live, old_logp, 0.0)
        with torch.no_grad():
            ref_logits, hidden = self.reference(inputs, hidden=True)
            ref_logp = torch.log_softmax(ref_logits, -1).gather(
                2, targets[..., None])[..., 0].double()
        ref_logp = torch.where(live, ref_logp, 0.0)
        responses = [self.tokenizer.decode(tokens[i, P:ends[i]].numpy())
                     for i in range(n)]
        shown = [PROMPTS[i] for i in picks]
        scores = torch.as_tensor(self.reward_fn(shown, responses),
                                 dtype=torch.float64)
        with torch.no_grad():
            kl = torch.where(live, old_logp - ref_logp, 0.0)
            token_rewards = -PPO_BETA * kl
            token_rewards[torch.arange(n), ends - 2] += scores
            features = torch.cat([hidden.double(),
                                  torch.ones(n, width - 1, 1,
                                             dtype=torch.float64)], 2)
            old_values = torch.where(live, features @ self.head, 0.0)
            advantages = torch.zeros(n, width - 1, dtype=torch.float64)
            running = torch.zeros(n, dtype=torch.float64)
            next_value = torch.zeros(n, dtype=torch.float64)
            for t in range(width - 2, -1, -1):
                delta = token_rewards[:, t] + next_value - old_values[:, t]
                running = torch.where(live[:, t], delta + PPO_LAM * running,
                                      0.0)
                advantages[:, t] = running
                next_value = torch.where(live[:, t], old_values[:, t], 0.0)
            returns = advantages + old_values
            a = advantages[live]
            advantages = torch.where(live, (advantages - a.mean())
                                     / (a.std(unbiased=False) + 1e-8), 0.0)
        clipped = []
        for _ in range(PPO_EPOCHS):
            for start in self.rng.permutation(np.arange(0, n, PPO_MINIBATCH)):
                rows = slice(int(start), int(start) + PPO_MINIBATCH)
                mask = live[rows]
                count = mask.sum().clamp(min=1)
                logits = self.policy(inputs[rows])
                logp = -F.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]),
                    targets[rows].reshape(-1),
                    reduction="none").view(logits.shape[:2])
                ratio = torch.exp(logp.double() - old_logp[rows])
                adv = advantages[rows]
                surrogate = torch.minimum(
                    ratio * adv, ratio.clamp(1 - PPO_CLIP, 1 + PPO_CLIP) * adv)
                loss = -torch.where(mask, surrogate, 0.0).sum() / count
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.policy.parameters(),
                                               MAX_NORM)
                self.opt.step()
                clipped.append(float(((ratio - 1).abs() > PPO_CLIP)[mask]
                                     .double().mean()))
                values = features[rows] @ self.head
                moved = old_values[rows] + (values - old_values[rows]).clamp(
                    -PPO_VALUE_CLIP, PPO_VALUE_CLIP)
                value_loss = 0.5 * torch.where(mask, torch.maximum(
                    (values - returns[rows]) ** 2,
                    (moved - returns[rows]) ** 2), 0.0).sum() / count
                self.head_opt.zero_grad(set_to_none=True)
                value_loss.backward()
                self.head_opt.step()
        return float(scores.mean()), float(kl.sum(1).mean()), clipped


# -- measurements ------------------------------------------------------------

def medians(pairs):
    """(median wall time, median CPU time) of [(wall, cpu)]."""
    return tuple(statistics.median(x) for x in zip(*pairs))


def interleaved(contenders, rounds):
    """{name: (wall, cpu)}: the medians over rounds of one call's wall
    time and CPU time (of the process, all its threads), the contenders
    timed in turn within each round, each called once before, untimed."""
    for fn in contenders.values():
        fn()
    times = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            times[name].append((time.perf_counter() - wall,
                                time.process_time() - cpu))
    return {name: medians(t) for name, t in times.items()}


def bench_sft(torch, n_embd, quick):
    tokens, targets, texts = sft_data()
    base = make_lm(n_embd)
    steps = 2 if quick else 5  # per timed call

    def repeated(step):
        def call():
            for _ in range(steps):
                step()
        return call

    fit_lm = base.copy()
    contenders = {
        "rlhf step": repeated(RlhfStep(base.copy(), tokens, targets)),
        "rlhf fit": lambda: rlhf_fit(fit_lm, texts, steps)}
    # the first step's loss from each side: the same model and batch
    losses = {"rlhf": RlhfStep(base.copy(), tokens, targets)()}
    if torch is not None:
        for name, model, logits_of in (
                ("nanoGPT", nanogpt, nano_logits),
                ("HF", lambda lm: lm.to_transformers(), hf_logits)):
            contenders[name] = repeated(TorchStep(
                torch, model(base), tokens, targets, logits_of))
            losses[name] = TorchStep(torch, model(base), tokens, targets,
                                     logits_of)()
    times = interleaved(contenders, rounds=3 if quick else 9)
    return ({name: (wall / steps, cpu / steps)
             for name, (wall, cpu) in times.items()}, losses)


def bench_ppo(torch, n_embd, quick):
    """Per-iteration medians over rounds of a fit of iterations + 1 on
    each side, the first skip intervals of each fit left out."""
    base = make_lm(n_embd)
    iterations, skip = (4, 1) if quick else (12, 2)
    rounds = 1 if quick else 3
    times = {"rlhf": [], "PyTorch": []}
    lengths = {"rlhf": [], "PyTorch": []}
    for _ in range(rounds):
        clock = Clock()
        rlhf_ppo(base, iterations + 1, clock)
        times["rlhf"] += clock.intervals(skip)
        lengths["rlhf"] += clock.lengths
        if torch is not None:
            clock = Clock()
            ppo = TorchPPO(torch, base, clock)
            for _ in range(iterations + 1):
                ppo.iteration()
            times["PyTorch"] += clock.intervals(skip)
            lengths["PyTorch"] += clock.lengths
    return ({k: medians(v) for k, v in times.items() if v},
            {k: float(np.mean(v)) for k, v in lengths.items() if v})


def bench_sampling(torch, n_embd, n_prompts, quick):
    lm = suppress_eot(make_lm(n_embd))
    prompt = [np.array([lm.eot_token])] * n_prompts
    seeds = iter(range(10 ** 6))
    counts = {}

    def ours():
        tokens, starts, ends, _ = lm.sample(prompt, SAMPLE_NEW,
                                            random_state=next(seeds))
        counts["rlhf"] = int((ends - starts).sum())

    contenders = {"rlhf": ours}
    if torch is not None:
        nano = nanogpt(lm).eval()
        hf = lm.to_transformers()
        start = torch.full((n_prompts, 1), lm.eot_token, dtype=torch.int64)

        def nano_sample():
            tokens, _ = nano.sample(start, SAMPLE_NEW)
            counts["nanoGPT"] = (tokens.shape[1] - 1) * n_prompts

        def hf_sample():
            with torch.no_grad():
                out = hf.generate(
                    input_ids=start, attention_mask=torch.ones_like(start),
                    do_sample=True, top_k=0, top_p=1.0, temperature=1.0,
                    max_new_tokens=SAMPLE_NEW, use_cache=True,
                    eos_token_id=lm.eot_token, pad_token_id=lm.eot_token)
            counts["HF"] = int((out[:, 1:] != lm.eot_token).sum())

        contenders["nanoGPT"] = nano_sample
        contenders["HF"] = hf_sample
    times = interleaved(contenders, rounds=2 if quick else 7)
    return times, counts


def memory_child(side, n_embd):
    """Runs in a fresh process: the SFT step's peak resident size."""
    tokens, targets, texts = sft_data()
    steps = 3
    if side == "rlhf":
        lm = make_lm(n_embd)
        before = rss_kib()
        rlhf_fit(lm, texts, steps)
    else:
        import torch
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
        if side == "HF":
            import transformers  # noqa: F401
        lm = make_lm(n_embd)
        before = rss_kib()
        if side == "HF":
            step = TorchStep(torch, lm.to_transformers(), tokens, targets,
                             hf_logits)
        else:
            step = TorchStep(torch, nanogpt(lm), tokens, targets,
                             nano_logits)
        for _ in range(steps):
            step()
    print(json.dumps({"before": before, "peak": peak_kib()}))


def bench_memory(n_embd, sides):
    out = {}
    for side in sides:
        done = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--threads",
             str(ARGS.threads), "--memory-child", side, str(n_embd)],
            capture_output=True, text=True, check=True)
        out[side] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


def fmt_ms(seconds):
    return f"{seconds * 1e3:,.0f} ms" if seconds >= 0.1 else \
        f"{seconds * 1e3:.3g} ms"


def fmt_rate(tokens, seconds):
    rate = tokens / seconds
    return f"{rate / 1e3:,.1f}k tok/s"


def fmt_ratio(theirs, ours):
    """'wall x (CPU x)': how many times longer the peer took."""
    return f"{theirs[0] / ours[0]:.2f}x ({theirs[1] / ours[1]:.2f}x)"


def step_flops(n_embd, batch=None, seq=None):
    """Floating-point operations in the matrix products of one SFT step
    (forward, and backward at twice the forward), counting only the
    causal half of the attention scores: a lower bound on any
    implementation's arithmetic."""
    B, T, C, V = batch or BATCH, seq or SEQ, n_embd, 257
    N = B * T
    per_layer = N * C * 3 * C + N * C * C + 2 * N * C * 4 * C
    attention = 2 * B * C * (T * (T + 1) // 2)  # scores and the mix
    forward = 2 * (N_LAYER * (per_layer + attention) + N * C * V)
    return 3 * forward


def sgemm_rate(torch, n=2048, repeats=7):
    """FLOP/s of PyTorch's float32 matrix product (its tuned BLAS) on
    n x n matrices with the benchmark's threads, best of repeats: what
    this machine's cores reach on the best-shaped arithmetic."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(2):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        begin = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - begin)
    return 2 * n ** 3 / best


def step_products(torch, n_embd, repeats=7):
    """Seconds (best of repeats) for PyTorch's BLAS to do just the
    matrix products of one SFT step at their own shapes, forward and
    backward (for Y = X W: dX = dY W^T and dW = X^T dY), nothing else."""
    B, T, C, V, H = BATCH, SEQ, n_embd, 257, N_HEAD
    N, hs = B * T, n_embd // N_HEAD
    pairs = []
    for m, k, n in [(N, C, 3 * C), (N, C, C), (N, C, 4 * C),
                    (N, 4 * C, C)] * N_LAYER + [(N, C, V)]:
        x, w, dy = torch.randn(m, k), torch.randn(k, n), torch.randn(m, n)
        pairs += [(x, w), (dy, w.T), (x.T, dy)]
    for _ in range(N_LAYER):
        q, kt = torch.randn(B * H, T, hs), torch.randn(B * H, hs, T)
        p, v = torch.randn(B * H, T, T), torch.randn(B * H, T, hs)
        pairs += [(q, kt), (p, v)] * 3  # forward, and two per backward
    for _ in range(2):
        for a, b in pairs:
            a @ b
    best = float("inf")
    for _ in range(repeats):
        begin = time.perf_counter()
        for a, b in pairs:
            a @ b
        best = min(best, time.perf_counter() - begin)
    return best


def ceiling_table(torch, sizes, peer_times):
    """How fast an SFT step could possibly be here, against the 2x
    target: its matrix products' arithmetic at the machine's best GEMM
    rate, and the same products run alone by PyTorch's BLAS."""
    rate = sgemm_rate(torch)
    print(f"The ceiling: the SFT step's matrix products alone, (a) their "
          f"arithmetic (causal half of the attention) at this machine's "
          f"best float32 GEMM rate, PyTorch's 2048 x 2048 product on the "
          f"same threads ({rate / 1e9:.1f} GFLOP/s), (b) run by PyTorch's "
          f"BLAS at their own shapes, with no other work:\n")
    print("| n_embd | GFLOP per step | (a) floor at the GEMM rate | (b) the "
          "products in PyTorch | nanoGPT eager step | 2x target "
          "(nanoGPT / 2) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for n_embd in sizes:
        flops = step_flops(n_embd)
        peer = peer_times.get(n_embd)
        cells = [fmt_ms(peer), fmt_ms(peer / 2)] if peer else ["-", "-"]
        print(f"| {n_embd} | {flops / 1e9:.2f} | {fmt_ms(flops / rate)} | "
              f"{fmt_ms(step_products(torch, n_embd))} | "
              + " | ".join(cells) + " |", flush=True)


def sft_table(torch, sizes, quick):
    peers = torch is not None
    nanogpt_times = {}
    print(f"SFT step, {BATCH} x {SEQ} tokens (forward, backward, clip, "
          "AdamW), time per step and tokens/s:\n")
    print("| n_embd | params | rlhf kernels | rlhf fit, per step | nanoGPT "
          "eager | HF GPT2LMHeadModel | vs nanoGPT | vs HF | first-step "
          "loss rlhf / nanoGPT / HF | others |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    n_tok = BATCH * SEQ
    for n_embd in sizes:
        begin = cpu_snapshot()
        t, losses = bench_sft(torch, n_embd, quick)
        names = ["rlhf step", "rlhf fit"] + (["nanoGPT", "HF"] if peers
                                             else [])
        cells = [f"{fmt_ms(t[k][0])} ({fmt_rate(n_tok, t[k][0])})"
                 for k in names]
        if peers:
            cells += [fmt_ratio(t["nanoGPT"], t["rlhf step"]),
                      fmt_ratio(t["HF"], t["rlhf step"])]
        else:
            cells += ["-"] * 4
        loss = " / ".join(f"{v:.5f}" for v in losses.values())
        print(f"| {n_embd} | {make_lm(n_embd).n_params:,} | "
              + " | ".join(cells) + f" | {loss} | {others(begin)} |",
              flush=True)
        if peers:
            nanogpt_times[n_embd] = t["nanoGPT"][0]
    if peers:
        print()
        ceiling_table(torch, sizes, nanogpt_times)


def ppo_table(torch, sizes, quick):
    print(f"One PPO iteration, {PPO_PROMPTS} prompts x {PPO_SAMPLES} "
          f"responses of up to {PPO_NEW} tokens, {PPO_EPOCHS} epochs of "
          f"minibatches of {PPO_MINIBATCH}, time per iteration:\n")
    print("| n_embd | rlhf.PPO | PyTorch (nanoGPT, KV cache) | speed-up | "
          "mean response characters rlhf / PyTorch | others |")
    print("| --- | --- | --- | --- | --- | --- |")
    for n_embd in sizes:
        begin = cpu_snapshot()
        t, lengths = bench_ppo(torch, n_embd, quick)
        if torch is not None:
            theirs = (f"{fmt_ms(t['PyTorch'][0])} | "
                      f"{fmt_ratio(t['PyTorch'], t['rlhf'])}")
            length = f"{lengths['rlhf']:.1f} / {lengths['PyTorch']:.1f}"
        else:
            theirs, length = "- | -", f"{lengths['rlhf']:.1f}"
        print(f"| {n_embd} | {fmt_ms(t['rlhf'][0])} | {theirs} | {length} "
              f"| {others(begin)} |", flush=True)


def sampling_table(torch, sizes, quick, n_prompts):
    print(f"Sampling with the key-value cache, {n_prompts} prompts x "
          f"{SAMPLE_NEW} new tokens, temperature 1, time and new "
          "tokens/s:\n")
    print("| n_embd | rlhf lm.sample | nanoGPT KV cache | HF generate | "
          "vs nanoGPT | vs HF | tokens drawn rlhf / nanoGPT / HF | others |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for n_embd in sizes:
        begin = cpu_snapshot()
        t, counts = bench_sampling(torch, n_embd, n_prompts, quick)
        expected = n_prompts * SAMPLE_NEW
        cells = [f"{fmt_ms(t[k][0])} ({fmt_rate(expected, t[k][0])})"
                 for k in t]
        if torch is not None:
            cells += [fmt_ratio(t["nanoGPT"], t["rlhf"]),
                      fmt_ratio(t["HF"], t["rlhf"])]
        else:
            cells += ["-"] * 4
        drawn = " / ".join(f"{counts[k]:,}" for k in t)
        print(f"| {n_embd} | " + " | ".join(cells)
              + f" | {drawn} | {others(begin)} |", flush=True)


def memory_table(torch, sizes):
    sides = ["rlhf"] + (["nanoGPT", "HF"] if torch is not None else [])
    print("Peak resident memory of the SFT step (3 steps), each side in "
          "a fresh process; in brackets the excess over the resident size "
          "with the libraries imported and the data made:\n")
    print("| n_embd | " + " | ".join(sides) + " |")
    print("| --- |" + " --- |" * len(sides))
    for n_embd in sizes:
        mem = bench_memory(n_embd, sides)
        print(f"| {n_embd} | " + " | ".join(
            f"{mem[s]['peak'] / 1024:.0f} MiB "
            f"(+{(mem[s]['peak'] - mem[s]['before']) / 1024:.0f})"
            for s in sides) + " |", flush=True)


def main():
    quick, threads, sizes = ARGS.quick, ARGS.threads, ARGS.sizes
    command = " ".join(["python"] + sys.argv)
    load_before = load()
    try:
        import torch
        import transformers
        torch.set_num_threads(threads)
        torch.manual_seed(0)
        attention = make_lm(64).to_transformers().config._attn_implementation
        versions = (f"PyTorch {torch.__version__} ({torch.get_num_threads()}"
                    f" threads), transformers {transformers.__version__} "
                    f"(GPT-2 attention: {attention})")
    except ImportError:
        torch = None
        versions = "PyTorch not installed: rlhf alone"
    print(f"command: {command}")
    print(f"machine: {machine()}; lscpu: {lscpu_model()}")
    print(f"rlhf {rlhf.__version__}, {rlhf_build()}, OpenMP "
          f"{bool(_core.has_openmp())}, "
          f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}; {versions}")
    print(f"load average before: {load_before}")
    print(f"models: n_layer={N_LAYER}, n_head={N_HEAD}, "
          f"block_size={BLOCK}, V=257, n_embd in {sizes}")
    print("Times are medians of wall time; a speed-up is the peer's time "
          "over rlhf's, by wall time and (in brackets) by the CPU time of "
          "the process, all threads; others: the share of the machine's "
          "cores that other processes used while the row ran.\n",
          flush=True)
    only = ARGS.only or ["sft", "ppo", "sample", "memory"]
    n_prompts = ARGS.prompts or (32 if quick else 256)
    for section in only:
        if section == "sft":
            sft_table(torch, sizes, quick)
        elif section == "ppo":
            ppo_table(torch, sizes, quick)
        elif section == "sample":
            sampling_table(torch, sizes, quick, n_prompts)
        else:
            memory_table(torch, sizes)
        print()
    print(f"load average after: {load()}")


if __name__ == "__main__":
    from _timing import machine
    if ARGS.memory_child:
        memory_child(ARGS.memory_child[0], int(ARGS.memory_child[1]))
    else:
        begin = time.perf_counter()
        main()
        print(f"({time.perf_counter() - begin:.0f} s in all)")
