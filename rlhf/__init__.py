"""rlhf: reinforcement learning from human feedback at notebook scale.

The pipeline of the lecture -- preference data, a reward model, a policy
update that stays near the reference -- with C kernels on NumPy buffers,
each step fast enough to run live and exact enough to check against
theory.  Estimators follow scikit-learn's conventions (``fit`` returns
self, learned attributes end in ``_``, ``random_state`` everywhere).

Preference data
    make_world, simulate_preferences, simulate_rankings,
    rankings_to_comparisons, annotator_agreement (comparisons are int64
    pairs, preferred first, in a Comparisons); real human preferences in
    rlhf.datasets.
Reward models (Bradley-Terry)
    LogisticRegression, scikit-learn's drop-in, which reproduces the
    lecture's digits; RewardModel, pairwise in item space, with ties,
    rankings and Laplace standard errors.
How good a reward model is, and which comparison to ask next
    evaluate_reward_model (accuracy per group with bootstrap intervals
    over prompts, calibration, the length, position and chance
    baselines), fit_temperature; select_comparisons and information_gain
    (active queries from the Laplace posterior), bootstrap_rewards,
    active_learning_curves; AnnotationSession and annotation_panel (you
    are the annotator, in a notebook; ipywidgets, optional).
Policies near a reference
    reweight (the lecture's update), kl_regularized_policy (the optimum
    ``pi_ref * exp(r / beta) / Z`` of ``E[r] - beta KL(pi || pi_ref)``),
    kl_divergence, best_of_n_policy; PPO, REINFORCE, DPO and SFT, which
    take a table, a SequencePolicy or a TinyLM as the policy.
Safety
    constrained_policy (a cost budget, through its Lagrange multiplier),
    shape_rewards, mask_policy, CostModel.
Over-optimisation
    overoptimization_curves, make_overoptimization_world.
Tokens and a language model
    rlhf.sequences (Sequences, SequencePolicy, make_sequence_world,
    soft_optimal_policy, kl_estimators), TinyLM (GPT-2 in C),
    rlhf.text (hashed n-grams, tokenizers), rlhf.text_world.
Pictures
    rlhf.plot (matplotlib, optional).

``python -m rlhf demo`` runs the lecture's demo and a short tour.  The
notebooks in the repository's notebooks/ folder go through the pipeline
step by step (``pip install -e '.[notebooks]' && jupyter lab
notebooks/``); the documentation in docs/ (``pip install -e '.[docs]' &&
sphinx-build -b html docs docs/_build/html``) has a getting-started page,
the theory the notebooks lean on and a reference for every public name.
"""
try:
    from . import _core  # noqa: F401
except ImportError as error:  # pragma: no cover - depends on the install
    # After `pip install .` (not -e), Python started in the source checkout
    # finds the checkout's rlhf/, which has no compiled module, before the
    # installed one: look for another rlhf with a compiled module on the
    # rest of sys.path, to say so instead of asking for `pip install .`.
    import importlib.machinery
    import os
    import sys

    _here = os.path.dirname(os.path.realpath(__file__))
    _checkout = os.path.dirname(_here)
    _rest = [entry for entry in sys.path
             if os.path.realpath(entry or os.curdir) != _checkout]
    _spec = importlib.machinery.PathFinder.find_spec(__name__, _rest)
    for _other in (_spec and _spec.submodule_search_locations) or ():
        _other = os.path.realpath(_other)
        if _other != _here and any(
                name.startswith("_core.") and name.endswith(suffix)
                for name in os.listdir(_other)
                for suffix in importlib.machinery.EXTENSION_SUFFIXES):
            raise ImportError(
                "rlhf's compiled module rlhf._core is missing here: you are "
                f"importing rlhf from the source checkout at {_checkout}, "
                f"which shadows the installed rlhf-lab at {_other}; run "
                "Python from another directory, or install in editable "
                "mode with `pip install -e .`"
            ) from error
    raise ImportError(
        "rlhf's compiled module rlhf._core is missing or was built for "
        "another Python/NumPy. Build it with `pip install .` (or "
        "`python setup.py build_ext --inplace` in a source checkout). "
        f"The import failed with: {error}"
    ) from error

from .exceptions import ConvergenceWarning, DataConversionWarning, NotFittedError
from . import plot  # matplotlib is imported only when drawing
from .logistic import LogisticRegression
from .reward import RewardModel
from .preferences import (Agreement, Comparisons, World, annotator_agreement,
                          make_world, rankings_to_comparisons,
                          simulate_preferences, simulate_rankings)
from . import datasets
from .safety import (CostModel, constrained_policy, mask_policy,
                     shape_rewards)
from .optimize import DPO, PPO, REINFORCE, SFT
from .policy import (best_of_n_policy, kl_divergence, kl_regularized_policy,
                     reweight)
from .overoptimization import (OveroptimizationCurves, OveroptimizationWorld,
                               make_overoptimization_world,
                               overoptimization_curves)
from . import sequences, text, text_world
from .tinylm import TinyLM
from .evaluation import RewardReport, evaluate_reward_model, fit_temperature
from .active import (BootstrapRewards, LearningCurves, active_learning_curves,
                     bootstrap_rewards, information_gain, select_comparisons)
from .annotate import AnnotationSession, annotation_panel
from . import active, annotate, evaluation
from .sequences import (KLEstimates, SequencePolicy, Sequences, SequenceWorld,
                        kl_estimators, make_sequence_world,
                        soft_optimal_policy)

__version__ = "0.1.0"

__all__ = [
    "Agreement",
    "AnnotationSession",
    "BootstrapRewards",
    "Comparisons",
    "ConvergenceWarning",
    "CostModel",
    "DPO",
    "DataConversionWarning",
    "KLEstimates",
    "LearningCurves",
    "LogisticRegression",
    "NotFittedError",
    "OveroptimizationCurves",
    "OveroptimizationWorld",
    "PPO",
    "REINFORCE",
    "RewardModel",
    "RewardReport",
    "SFT",
    "SequencePolicy",
    "SequenceWorld",
    "Sequences",
    "TinyLM",
    "World",
    "active",
    "active_learning_curves",
    "annotate",
    "annotation_panel",
    "annotator_agreement",
    "best_of_n_policy",
    "bootstrap_rewards",
    "constrained_policy",
    "datasets",
    "evaluate_reward_model",
    "evaluation",
    "fit_temperature",
    "information_gain",
    "kl_divergence",
    "kl_estimators",
    "kl_regularized_policy",
    "make_overoptimization_world",
    "make_sequence_world",
    "make_world",
    "mask_policy",
    "overoptimization_curves",
    "plot",
    "rankings_to_comparisons",
    "reweight",
    "select_comparisons",
    "sequences",
    "shape_rewards",
    "simulate_preferences",
    "simulate_rankings",
    "soft_optimal_policy",
]
