"""rlhf: reinforcement learning from human feedback at notebook scale.

The pipeline of the lecture -- preference data, a reward model, a policy
update that stays near the reference -- with C kernels on NumPy buffers.
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
from .sequences import (KLEstimates, SequencePolicy, Sequences, SequenceWorld,
                        kl_estimators, make_sequence_world,
                        soft_optimal_policy)

__version__ = "0.1.0"

__all__ = [
    "Agreement",
    "Comparisons",
    "ConvergenceWarning",
    "CostModel",
    "DPO",
    "DataConversionWarning",
    "KLEstimates",
    "LogisticRegression",
    "NotFittedError",
    "OveroptimizationCurves",
    "OveroptimizationWorld",
    "PPO",
    "REINFORCE",
    "RewardModel",
    "SFT",
    "SequencePolicy",
    "SequenceWorld",
    "Sequences",
    "TinyLM",
    "World",
    "annotator_agreement",
    "best_of_n_policy",
    "constrained_policy",
    "datasets",
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
    "sequences",
    "shape_rewards",
    "simulate_preferences",
    "simulate_rankings",
    "soft_optimal_policy",
]
