"""Attack a locked model as a thief would (detect, peel, prune, weights, revert, finetune, search, signs, base); report what it recovers."""

from __future__ import annotations

import argparse

import numpy as np

from ..errors import InputDataError, KeyFormatError, ModelFormatError, OnnxlockError
from ..evaluate.attacks import health as health_measures
from ..evaluate.attacks import suite
from ..evaluate.attacks.finetune import FRACTIONS, STEPS
from ..evaluate.attacks.prune import PRUNERS, RATES
from ..evaluate.attacks.revert import TOPS
from ..evaluate.attacks.truth import truth_from_key
from ..fileio import read_input
from ..graph.io import parse_model
from ..runtime.feeds import check_feeds, load_npz
from . import passphrase
from .common import print_json

ATTACKS = ("detect", "peel", "prune", "weights", "revert", "finetune", "search", "signs", "base")
BLIND = ("detect", "peel", "prune", "weights", "revert", "signs")  # on --samples unlabelled inputs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("attack", choices=ATTACKS,
                        help="the attack to run (weights: per-weight suspicion scores; revert: repair the "
                             "top suspects without labels; signs: recover flipped signs from BatchNorm statistics; base: with "
                             "--base, the checkpoint the model was fine-tuned from)")
    parser.add_argument("locked", metavar="LOCKED", help="the locked ONNX model")
    parser.add_argument("--data", required=True, metavar="X.npz",
                        help="the thief's inputs, one array per model input (plus labels, if any)")
    parser.add_argument("--labels", metavar="NAME",
                        help="array of --data (and --test) holding class labels (finetune and search need them)")
    parser.add_argument("--test", metavar="Y.npz", help="held-out data to judge the result by (default: --data)")
    parser.add_argument("--samples", type=int, default=64, metavar="N",
                        help="inputs of --data the blind attacks use (default: 64)")
    parser.add_argument("--base", metavar="BASE",
                        help="base: the model the locked one was fine-tuned from (same tensor names)")
    parser.add_argument("--key", metavar="KEY", help="score against the truth in this key (needs its passphrase)")
    parser.add_argument("--health", choices=("auto", *health_measures.MEASURES), default="auto",
                        help="unlabelled health measure for peel and ablation (default: auto, the mean of all)")
    parser.add_argument("--no-ablation", action="store_true", help="detect: skip the per-channel ablation scores")
    parser.add_argument("--steps", type=int, default=STEPS, help=f"finetune: training steps (default: {STEPS})")
    parser.add_argument("--fractions", default=",".join(map(str, FRACTIONS)),
                        help="finetune: shares of --data to train on (default: %(default)s)")
    parser.add_argument("--rates", default=",".join(map(str, RATES)), help="prune: rates (default: %(default)s)")
    parser.add_argument("--top", default=",".join(map(str, TOPS)),
                        help="revert: how many top suspects to repair, per try (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    passphrase.add_argument(parser)


def read_data(path: str, model, labels: str | None, limit: int | None = None) -> tuple[dict, np.ndarray | None]:
    arrays = load_npz(path)
    if labels is not None and labels not in arrays:
        raise InputDataError(f"{path} has no array {labels!r}")
    feeds, _ = check_feeds({k: v for k, v in arrays.items() if k != labels}, model, source=path)
    target = None if labels is None else arrays[labels]
    if limit is not None:
        feeds = {k: v[:limit] for k, v in feeds.items()}
        target = None if target is None else target[:limit]
    return feeds, target


def run(args: argparse.Namespace) -> int:
    locked_bytes = read_input(args.locked, "locked model", ModelFormatError)
    model = parse_model(locked_bytes, source="locked model")
    blind = args.attack in BLIND
    feeds, labels = read_data(args.data, model, args.labels, args.samples if blind else None)
    data = suite.Data(feeds, labels)
    if args.test is not None:
        data.test_feeds, data.test_labels = read_data(args.test, model, args.labels)
    truth = None
    if args.key is not None:
        key = read_input(args.key, "key", KeyFormatError)
        truth = truth_from_key(locked_bytes, key, passphrase.get_passphrase(args))
    if (args.attack == "base") != (args.base is not None):
        raise OnnxlockError("--base goes with the base attack, and the base attack needs --base")
    if args.attack == "search" and (truth is None or not truth.counterfeits):
        raise OnnxlockError("the told-groups search is told the widened groups: give --key of a lock with "
                            "confusion channels")
    if args.attack == "detect":
        result = suite.run_detect(model, data, truth, ablation=not args.no_ablation, health=args.health)
    elif args.attack == "peel":
        result = suite.run_peel(model, data, truth, health=args.health)
    elif args.attack == "prune":
        result = suite.run_prune(model, data, truth, pruners=PRUNERS, rates=_floats(args.rates))
    elif args.attack == "weights":
        result = suite.run_weights_detect(model, data, truth)
    elif args.attack == "revert":
        result = suite.run_revert(model, data, truth, tops=_ints(args.top))
    elif args.attack == "signs":
        result = suite.run_signs(model, data, truth)
    elif args.attack == "base":
        base = parse_model(read_input(args.base, "base model", ModelFormatError), source="base model")
        result = suite.run_base(model, base, data, truth)
    elif args.attack == "finetune":
        result = suite.run_finetune(model, data, truth, fractions=_floats(args.fractions), steps=args.steps)
    else:
        result = suite.run_search(model, data, truth)
    if args.json:
        print_json(result)
    else:
        print_text(result)
    return 0


def _floats(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part]
    except ValueError:
        raise OnnxlockError(f"expected comma-separated numbers, got {text!r}") from None


def _ints(text: str) -> list[int]:
    values = _floats(text)
    if not values or any(v != int(v) or v < 1 for v in values):
        raise OnnxlockError(f"expected comma-separated positive whole numbers, got {text!r}")
    return [int(v) for v in values]


def print_text(result: dict) -> None:
    """A short human summary; --json has everything."""
    attack = result["attack"]
    if attack == "detect":
        if "best_single" in result:
            print(f"{result['channels']} channels, {result['counterfeits']} counterfeit; best single score "
                  f"{result['best_single']} AUC {result['best_single_auc']}, rank average AUC "
                  f"{result['rank_average_auc']}, logistic (cross-validated) AUC {result['logistic_cv_auc']}")
        for suspect in result["top_suspects"]:
            print(f"  suspect: {suspect['group']} channel {suspect['position']}")
    elif attack == "weights":
        if "auc" in result:
            print(f"{result['weights']} weights, {result['changed']} changed; AUC "
                  + ", ".join(f"{k} {v}" for k, v in result["auc"].items()))
        for score, suspects in result["top_suspects"].items():
            print(f"  {score}: " + ", ".join(f"{name}[{index}]" for name, index in suspects[:5]))
    elif attack == "revert":
        print(f"before {result['before']}")
        for label in ("best", "blind_choice"):
            r = result[label]
            if r is not None:
                print(f"  {label.replace('_', ' ')} (by {result['judged_by'] if label == 'best' else 'health'}): "
                      f"{r['repair']} of the top {r['top']} by {r['score']}: "
                      + ", ".join(f"{k} {v}" for k, v in r.items() if k not in ("score", "top", "repair")))
    elif attack in ("peel", "search"):
        counts = "" if "removed_counterfeit" not in result else (
            f" ({result['removed_counterfeit']} of {result['counterfeits']} counterfeits, {result['removed_genuine']} genuine)")
        print(f"{attack}: {result.get('removed', result.get('trials'))} "
              f"{'channels removed' if attack == 'peel' else 'trials'}{counts}; before {result['before']}, after {result['after']}")
    elif attack == "signs":
        print(f"{len(result['layers'])} Conv+BatchNorm layers; before {result['before']}, after {result['after']}")
        for layer in result["layers"]:
            right = "" if "signs_right_after" not in layer else (
                f": signs right {layer['signs_right_before']} -> {layer['signs_right_after']}")
            print(f"  {layer['weight']} ({layer['weights_per_channel']} weights a channel"
                  f"{', every pattern' if layer['exhaustive'] else ''}){right}")
    elif attack == "base":
        scored = "".join(f", {k.replace('_', ' ')} {result[k]}" for k in ("counterfeit_auc", "signs_right") if k in result)
        print(f"removed {result['removed']} channels, copied the signs of {result['signs_copied']} tensors{scored}; "
              f"before {result['before']}, after {result['after']}")
    elif attack == "prune":
        print(f"before {result['before']}")
        for r in result["results"]:
            print(f"  {r['pruner']} at {r['rate']}: " + ", ".join(f"{k} {v}" for k, v in r.items() if k not in ("pruner", "rate")))
    else:
        for r in result["results"]:
            share = f", recovered share {r['recovered_share']}" if r.get("recovered_share") is not None else ""
            print(f"{r['samples']} samples ({r['fraction']:.0%}), {r['steps']} steps: fine-tuned {r['accuracy_finetuned']}, "
                  f"signs learned {r['accuracy_signs_learned']}, from scratch {r['accuracy_scratch']} "
                  f"(advantage of the better {r['advantage']:+.3f}{share})")
