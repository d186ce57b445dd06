"""Command line: ``python -m rlhf demo`` runs the lecture's demo."""
import argparse
import sys
import time

import numpy as np


def lecture_data():
    """The lecture's four responses, their features and preference pairs."""
    responses = ["Concise answer with sources.",
                 "Vague answer with speculation.",
                 "Helpful step-by-step reasoning.",
                 "Off-topic joke."]
    features = np.array([
        [1.0, 0.8],  # relevant, safe
        [0.2, 0.4],
        [0.9, 0.9],
        [0.1, 0.1],
    ])
    preferences = [(0, 1), (2, 1), (0, 3), (2, 3)]
    return responses, features, preferences


def mirrored_rows(features, preferences):
    """The lecture's training set: (d, 1) and (-d, 0) for each pair."""
    X, y = [], []
    for better, worse in preferences:
        diff = features[better] - features[worse]
        X.append(diff)
        y.append(1)
        X.append(-diff)
        y.append(0)
    return X, y


def demo(out=sys.stdout):
    import rlhf

    responses, features, preferences = lecture_data()
    X, y = mirrored_rows(features, preferences)

    clf = rlhf.LogisticRegression().fit(X, y)
    rewards = clf.decision_function(features)
    print("Reward estimates:", rewards, file=out)

    policy = np.array([0.25, 0.25, 0.25, 0.25])
    policy = rlhf.reweight(policy, rewards, eta=0.5)
    print("Updated policy distribution:", policy, file=out)

    print(file=out)
    print("The two lines above are the lecture's, digit for digit: "
          "rlhf.LogisticRegression", file=out)
    print(f"reproduces scikit-learn 1.2's lbfgs, which stopped after "
          f"{clf.n_iter_[0]} iterations.", file=out)

    exact = rlhf.LogisticRegression(solver="newton").fit(X, y)
    exact_rewards = exact.decision_function(features)
    print(file=out)
    print("Run to the exact optimum (solver='newton'), the rewards move in "
          "the 5th decimal:", file=out)
    for text, stopped, optimum in zip(responses, rewards, exact_rewards):
        print(f"  {text:34s} lbfgs {stopped: .8f}   exact {optimum: .8f}",
              file=out)
    print("lbfgs stops once every gradient component is below tol=1e-4; "
          "Newton goes on to", file=out)
    print("a gradient below 1e-10 of its starting size.", file=out)

    rng = np.random.default_rng(0)
    n_prompts, n_responses = 4000, 1000
    table = rng.dirichlet(np.ones(n_responses), size=n_prompts)
    table_rewards = rng.normal(size=(n_prompts, n_responses))
    start = time.perf_counter()
    updated = rlhf.reweight(table, table_rewards, eta=0.5)
    seconds = time.perf_counter() - start
    print(file=out)
    print(f"The same update on a {n_prompts} x {n_responses} table of "
          f"prompts x responses took {seconds * 1e3:.1f} ms;", file=out)
    print(f"every row sums to 1 (largest deviation "
          f"{np.abs(updated.sum(axis=1) - 1).max():.1e}).", file=out)

    # the reward model in item space: the lecture's optimum without rows
    pairwise = rlhf.RewardModel(C=2.0, tol=1e-12).fit(features, preferences)
    print(file=out)
    print("The pairwise Bradley-Terry model in item space, RewardModel(C=2),"
          " has the optimum", file=out)
    print("of the mirrored rows (largest difference "
          f"{np.abs(pairwise.coef_ - exact.coef_.ravel()).max():.1e}) without "
          "building them.", file=out)

    world = rlhf.make_world(n_prompts=20_000, n_candidates=4, random_state=0)
    votes = rlhf.simulate_preferences(world.rewards, world.pairs,
                                      random_state=0)
    start = time.perf_counter()
    model = rlhf.RewardModel().fit(world.features, votes)
    seconds = time.perf_counter() - start
    print(f"On {len(votes.comparisons):,} simulated comparisons of "
          f"{len(world.rewards):,} responses it fits in "
          f"{seconds * 1e3:.0f} ms:", file=out)
    print(f"  true weights {np.round(world.weights, 3)}, fitted "
          f"{np.round(model.coef_, 3)} +- "
          f"{np.round(model.reward_std(np.eye(len(model.coef_))), 3)}",
          file=out)

    # policy optimisation near the reference, and a safety budget
    beta = 1.0 / 0.5
    reference = np.full((1, 4), 0.25)
    exact_policy = rlhf.kl_regularized_policy(reference, rewards[None, :],
                                              beta)
    ppo = rlhf.PPO(beta=beta, exact=True, random_state=0).fit(
        reference, rewards[None, :])
    print(file=out)
    print("The lecture's update is the KL-regularised optimum "
          "pi_ref exp(r / beta), beta = 1 / eta:", file=out)
    print(f"  closed form {np.round(exact_policy[0], 8)}", file=out)
    print(f"  PPO         {np.round(ppo.policy_[0], 8)}", file=out)
    costs = np.array([[0.1, 0.3, 0.8, 0.0]])  # a made-up harm score
    safe, lam = rlhf.constrained_policy(reference, rewards[None, :], costs,
                                        beta, 0.2)
    print("With an expected-cost budget of 0.2 (costs "
          f"{costs[0].tolist()}), the exact constrained optimum is",
          file=out)
    print(f"  {np.round(safe[0], 8)} (Lagrange multiplier "
          f"{float(np.ravel(lam)[0]):.4f}).", file=out)

    # a language model: SFT, then PPO with a per-token KL to the SFT model
    answers = ["yes please", "no thanks", "maybe so", "yes indeed",
               "no way", "perhaps not"]
    sft = rlhf.TinyLM(n_layer=2, n_embd=32, block_size=24, random_state=0)
    sft.fit(answers, prompts=["q?"] * len(answers), max_steps=200,
            batch_size=16, lr=1e-2, random_state=0)

    def says_yes(prompts, responses):
        return np.array([r.startswith("yes") for r in responses], float)

    ppo = rlhf.PPO(learning_rate=3e-4, n_iterations=30, n_samples=8,
                   beta=0.05, random_state=0)
    ppo.fit(sft, says_yes, prompts=["q?"], prompts_per_iteration=4)
    before = sft.generate(["q?"], n=200, random_state=1)
    after = ppo.policy_.generate(["q?"], n=200, random_state=1)
    print(file=out)
    print(f"A GPT-2 in C ({sft.n_params:,} parameters) fine-tuned on six "
          "answers to 'q?', then PPO with a per-token KL penalty for "
          "answers that start with 'yes':", file=out)
    print(f"  share of 'yes' answers {says_yes(None, before).mean():.3f} "
          f"-> {says_yes(None, after).mean():.3f}; KL to the SFT model "
          f"{ppo.history_['kl'][-1]:.2f} nats", file=out)
    print(f"  samples after: {after[:4]}", file=out)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m rlhf",
        description="Reinforcement learning from human feedback at "
                    "notebook scale.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="run the lecture's demo and a short tour")
    args = parser.parse_args(argv)
    if args.command == "demo":
        demo()
    return 0


if __name__ == "__main__":
    sys.exit(main())
