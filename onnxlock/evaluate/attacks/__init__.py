"""The attack suite a blind thief would run on a locked model, run by the project to measure the lock.

The thief has the locked file, the method (public) and unlabelled in-distribution inputs; some
attacks also get a little labelled data. The attacks never read the key: the truth they are
scored against (``truth``) comes from the key or the pass's secret, only for scoring.

- ``detect``: per-channel statistics and their ROC AUC, alone and combined.
- ``peel``: delete suspects while an unlabelled health measure improves.
- ``prune``: weight-norm, activation and Taylor pruning at a few rates.
- ``weights``: per-weight suspicion scores for single changed weights (AdvParams) and their ROC AUC.
- ``revert``: repair the top-K suspected weights without labels (median, zero, health-loss descent).
- ``finetune``: train the locked file on 1% / 10% of labelled data against the same architecture
  trained from scratch (needs torch: the ``[train]`` extra).
- ``search``: the told-groups greedy search with labels.
- ``signs``: the flipped signs of each Conv that feeds a BatchNormalization, chosen to fit its
  running statistics on unlabelled inputs.
"""

from .channels import Channel, Peeling, accuracy, removal_patch, widenable_groups
from .detect import Detection, detect
from .peel import PeelResult, peel
from .search import search_attack
from .truth import Truth, truth_from_key, truth_from_secret

__all__ = ["Channel", "Peeling", "accuracy", "removal_patch", "widenable_groups", "Detection", "detect",
           "PeelResult", "peel", "search_attack", "Truth", "truth_from_key", "truth_from_secret"]
