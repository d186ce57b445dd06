"""One token-level PPO iteration: the C kernels against their NumPy twins
(rlhf/_reference.py), and against the same update written with PyTorch CPU
tensors when PyTorch is installed.

    python benchmarks/bench_token_ppo.py

The problem: 4,096 responses of at most 16 tokens per iteration, V = 32
tokens (31 words and the end), a bigram reference (the state is the last
word: 32 states), rewards from the world's features (the same NumPy
function for all three).  An iteration: sample the responses token by
token, per-token log-probabilities under the policy and the reference, the
k1 penalty on every token and the reward on the last, GAE(1, 0.95) from a
tabular value function, whitened advantages, then 4 epochs over 4
minibatches of 1,024 responses of the clipped surrogate, the clipped value
loss and Adam steps, and the iteration's statistics.

Timed per iteration (fit with 6 iterations minus fit with 1, over 5), so
the set-up shared by both sides is left out; the fits run in turn, round
after round, so that a burst of load on the machine hits every side alike.
Same seeds, so the C and NumPy runs draw the same samples and end at the
same policy (the difference is printed).
"""
import time

import numpy as np

import rlhf
from rlhf import _reference
from _timing import best_time, machine

N_SAMPLES, BATCH, EPOCHS = 4096, 1024, 4
BETA, CLIP, VALUE_CLIP, LR, LAM = 0.1, 0.2, 0.2, 0.1, 0.95


class TwinPPO(rlhf.PPO):
    _kernels = _reference


def estimator(cls, n_iterations):
    return cls(beta=BETA, clip=CLIP, value_clip=VALUE_CLIP, learning_rate=LR,
               lr_schedule="constant", gae_lambda=LAM,
               n_iterations=n_iterations, n_epochs=EPOCHS,
               n_samples=N_SAMPLES, batch_size=BATCH, random_state=0)


def torch_iteration(torch, world, state):
    """The same iteration with PyTorch tensors and autograd (its own
    sampler, so not the same draws).  ``state`` holds the parameters, the
    value table and the optimisers between iterations."""
    reference = world.reference
    T, V = reference.max_length, reference.vocab_size
    ref = state["ref"]
    theta, values, optimiser = state["theta"], state["values"], state["opt"]
    n = N_SAMPLES
    with torch.no_grad():
        logp = torch.log_softmax(ref + theta, dim=1)
        probs = logp.exp()
        tokens = torch.zeros((n, T), dtype=torch.int64)
        states = torch.full((n, T), -1, dtype=torch.int64)
        alive = torch.ones(n, dtype=torch.bool)
        current = torch.zeros(n, dtype=torch.int64)  # the start state
        lengths = torch.full((n,), T, dtype=torch.int64)
        for t in range(T - 1):
            states[:, t] = torch.where(alive, current, -1)
            drawn = torch.multinomial(probs[current], 1).squeeze(1)
            drawn = torch.where(alive, drawn, 0)
            tokens[:, t] = drawn
            ended = alive & (drawn == 0)
            lengths[ended] = t + 1
            alive = alive & (drawn != 0)
            current = torch.where(alive, drawn, current)  # word w: state w
        live = states >= 0
        safe = states.clamp(min=0)
        old = torch.where(live, logp[safe, tokens], 0.0)
        ref_lp = torch.where(live, ref[safe, tokens], 0.0)
        sequences = rlhf.Sequences._trusted(tokens.numpy(), lengths.numpy(),
                                            V, 0)
        scores = torch.as_tensor(world.gold_reward(sequences))
        n_steps = torch.clamp(lengths, max=T - 1)
        rewards = -BETA * (old - ref_lp)
        rewards[torch.arange(n), n_steps - 1] += scores
        old_values = torch.where(live, values[safe], 0.0)
        advantages = torch.zeros((n, T), dtype=torch.float64)
        following = torch.zeros(n, dtype=torch.float64)
        next_value = torch.zeros(n, dtype=torch.float64)
        for t in range(T - 1, -1, -1):
            delta = rewards[:, t] + next_value - old_values[:, t]
            following = torch.where(live[:, t], delta + LAM * following, 0.0)
            advantages[:, t] = following
            next_value = torch.where(live[:, t], old_values[:, t], 0.0)
        returns = advantages + old_values
        a = advantages[live]
        advantages = torch.where(live, (advantages - a.mean())
                                 / (a.std(unbiased=False) + 1e-8), 0.0)
    for _ in range(EPOCHS):
        order = torch.randperm(n)
        for start in range(0, n, BATCH):
            rows = order[start:start + BATCH]
            mask = live[rows]
            count = mask.sum()
            optimiser.zero_grad()
            lp = torch.log_softmax(ref + theta, dim=1)[safe[rows],
                                                        tokens[rows]]
            rho = torch.exp(lp - old[rows])
            adv = advantages[rows]
            surrogate = -torch.minimum(rho * adv, rho.clamp(1 - CLIP,
                                                            1 + CLIP) * adv)
            v = values[safe[rows]]
            moved = old_values[rows] + (v - old_values[rows]).clamp(
                -VALUE_CLIP, VALUE_CLIP)
            value_loss = 0.5 * torch.maximum((v - returns[rows]) ** 2,
                                             (moved - returns[rows]) ** 2)
            loss = (torch.where(mask, surrogate, 0.0).sum()
                    + torch.where(mask, value_loss, 0.0).sum()) / count
            loss.backward()
            optimiser.step()
    return float(scores.mean())


def main():
    print(f"machine: {machine()}, OpenMP: {bool(rlhf._core.has_openmp())}")
    world = rlhf.make_sequence_world(n_words=31, max_length=16,
                                     random_state=0)
    reference = world.reference
    print(f"V = {reference.vocab_size}, T = {reference.max_length}, "
          f"{reference.n_states} states (context_length="
          f"{reference.context_length}), {N_SAMPLES} responses per "
          f"iteration, minibatches of {BATCH}, {EPOCHS} epochs")
    try:
        import torch
        torch.manual_seed(0)
        torch.set_num_threads(2)
    except ImportError:
        torch = None

    def fit(cls, n_iterations):
        return lambda: estimator(cls, n_iterations).fit(reference,
                                                        world.gold_reward)

    calls = {(cls, i): fit(cls, i) for cls in (TwinPPO, rlhf.PPO)
             for i in (1, 6)}
    best = {key: np.inf for key in calls}
    for _ in range(5):
        for key, call in calls.items():
            best[key] = min(best[key], best_time(call, 1))
    t_twin = (best[TwinPPO, 6] - best[TwinPPO, 1]) / 5
    t_ours = (best[rlhf.PPO, 6] - best[rlhf.PPO, 1]) / 5
    ours, theirs = calls[rlhf.PPO, 6](), calls[TwinPPO, 6]()
    diff = np.abs(ours.policy_.log_probs - theirs.policy_.log_probs).max()
    print("| one iteration | NumPy twin | rlhf (C) | speed-up | PyTorch CPU "
          "| speed-up vs PyTorch | max log-prob diff C vs twin |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    if torch is not None:
        ref = torch.as_tensor(reference.log_probs.copy())
        theta = torch.zeros_like(ref, requires_grad=True)
        values = torch.zeros(reference.n_states, dtype=torch.float64,
                             requires_grad=True)
        state = {"ref": ref, "theta": theta, "values": values,
                 "opt": torch.optim.Adam([theta, values], lr=LR)}
        torch_iteration(torch, world, state)  # warm-up
        t_torch = best_time(lambda: torch_iteration(torch, world, state), 5)
        torch_cols = f"{t_torch * 1e3:.3g} ms | {t_torch / t_ours:.1f}x"
    else:
        torch_cols = "not installed | -"
    print(f"| {N_SAMPLES:,} x {reference.max_length} tokens, V = "
          f"{reference.vocab_size} | {t_twin * 1e3:.3g} ms | "
          f"{t_ours * 1e3:.3g} ms | {t_twin / t_ours:.1f}x | {torch_cols} | "
          f"{diff:.1e} |", flush=True)


if __name__ == "__main__":
    start = time.perf_counter()
    main()
    print(f"({time.perf_counter() - start:.0f} s in all)")
