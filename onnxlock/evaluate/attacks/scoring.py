"""Rank statistics for scoring detectors: ROC AUC (also over a model's weights, tensor by tensor)
and its standard error, rank averages, a cross-validated logistic fit."""

from __future__ import annotations

import numpy as np

FOLDS = 5
RIDGE = 1.0  # L2 penalty of the logistic fit (features are ranks in [0, 1])


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 of ``values``, ties sharing their average rank; NaN (no score) gets the middle rank."""
    values = np.asarray(values, dtype=np.float64)
    ranks = np.full(len(values), (len(values) - 1) / 2.0)
    known = ~np.isnan(values)
    if known.any():
        _, inverse, counts = np.unique(values[known], return_inverse=True, return_counts=True)
        first = np.concatenate([[0], np.cumsum(counts)[:-1]])
        scaled = (first + (counts - 1) / 2.0)[inverse]  # average rank among the known values
        ranks[known] = scaled * (len(values) - 1) / max(known.sum() - 1, 1)
    return ranks


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """Probability that a positive scores above a negative (ties count half); None without both."""
    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if not n_pos or not n_neg:
        return None
    ranks = average_ranks(scores) + 1
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auc_standard_error(auc: float, positives: int) -> float:
    """Hanley & McNeil's (1982) standard error of an AUC over ``positives`` positives and
    (practically) infinitely many negatives, as for weights or channels among all of a model's."""
    q = 2 * auc * auc / (1 + auc)
    return float(np.sqrt(max(q - auc * auc, 0.0) / max(positives, 1)))


def roc_auc_parts(parts: list[np.ndarray], positives: list[np.ndarray]) -> float | None:
    """``roc_auc`` of the scores ``parts`` concatenated, the positives given as indices into each
    part: counted per part (one part sorted at a time), so a model's weights are never one array."""
    found = [np.asarray(part, dtype=np.float64)[np.asarray(index, dtype=np.int64)]
             for part, index in zip(parts, positives)]
    hits = np.sort(np.concatenate(found)) if found else np.zeros(0)
    n_pos, n_all = len(hits), sum(len(part) for part in parts)
    if not n_pos or n_pos == n_all:
        return None
    below = ties = 0.0  # over every score, the positives themselves included
    for part in parts:
        ordered = np.sort(np.asarray(part, dtype=np.float64))
        left, right = np.searchsorted(ordered, hits, "left"), np.searchsorted(ordered, hits, "right")
        below, ties = below + left.sum(), ties + (right - left).sum()
    left, right = np.searchsorted(hits, hits, "left"), np.searchsorted(hits, hits, "right")
    below, ties = below - left.sum(), ties - (right - left).sum()  # now over the negatives only
    return float((below + ties / 2) / (n_pos * (n_all - n_pos)))


def rank_matrix(scores: dict[str, np.ndarray]) -> np.ndarray:
    """One column per score: its ranks scaled to [0, 1]."""
    columns = [average_ranks(v) / max(len(v) - 1, 1) for v in scores.values()]
    return np.stack(columns, axis=1)


def rank_average(scores: dict[str, np.ndarray]) -> np.ndarray:
    """The unsupervised combination: every score's rank, averaged."""
    return rank_matrix(scores).mean(axis=1)


def logistic_fit(x: np.ndarray, y: np.ndarray, iterations: int = 25) -> np.ndarray:
    """Ridge-penalised logistic regression by Newton's method; returns weights (bias last)."""
    x = np.hstack([x, np.ones((len(x), 1))])
    w = np.zeros(x.shape[1])
    penalty = RIDGE * np.eye(x.shape[1])
    penalty[-1, -1] = 0.0
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(x @ w, -30, 30)))
        gradient = x.T @ (p - y) + penalty @ w
        hessian = (x * (p * (1 - p))[:, None]).T @ x + penalty
        w -= np.linalg.solve(hessian, gradient)
    return w


def logistic_cv(scores: dict[str, np.ndarray], positive: np.ndarray, seed: int = 0) -> float | None:
    """ROC AUC of a logistic fit on every score's ranks, each channel predicted by a fit on the
    other folds (stratified): what a thief who learned the weights on their own locks would reach."""
    positive = np.asarray(positive, dtype=bool)
    if positive.sum() < 2 or (~positive).sum() < 2:
        return None
    x, rng = rank_matrix(scores), np.random.default_rng(seed)
    folds = np.empty(len(x), dtype=np.int64)
    for cls in (True, False):
        members = rng.permutation(np.flatnonzero(positive == cls))
        folds[members] = np.arange(len(members)) % FOLDS
    predicted = np.empty(len(x))
    for fold in range(FOLDS):
        test = folds == fold
        if not test.any():
            continue
        w = logistic_fit(x[~test], positive[~test].astype(np.float64))
        predicted[test] = x[test] @ w[:-1] + w[-1]
    return roc_auc(predicted, positive)
