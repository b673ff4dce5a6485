"""Helpers the verbs share: output paths, reading inputs, writing outputs, printing reports."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..errors import OnnxlockError
from ..filepair import settle
from ..runtime.feeds import read_feeds


def refuse_existing(*paths: str | os.PathLike, force: bool, inputs: tuple = ()) -> None:
    """Fail before any work if an output is one of the inputs (even with ``--force``: that would
    destroy the input), or exists and ``--force`` was not given. A write of these outputs that an
    earlier command left interrupted is finished or undone first (``filepair``)."""
    sources = {Path(p).resolve() for p in inputs if p is not None}
    for path in paths:
        settle_pair(path)
        if Path(path).resolve() in sources:
            raise OnnxlockError(f"{path} is also an input; choose another output path")
        if Path(path).exists() and not force:
            raise OnnxlockError(f"{path} exists (use --force to overwrite)")


@contextlib.contextmanager
def writing(*paths: str | os.PathLike) -> Iterator[None]:
    """Report an OSError while writing ``paths`` by their names, not the temporary file's."""
    try:
        yield
    except OSError as exc:
        names = " and ".join(str(p) for p in paths)
        raise OnnxlockError(f"cannot write {names}: {exc.strerror or exc}") from exc


def settle_pair(anchor: str | os.PathLike) -> None:
    """Finish or undo an interrupted write of the pair whose key is ``anchor``, saying so."""
    done = settle(anchor)
    if done:
        warn(done)


def read_npz_feeds(path: str | os.PathLike, inputs) -> dict[str, np.ndarray]:
    """Feeds for the model inputs from an .npz; arrays that are not inputs get a warning and are ignored."""
    feeds, unused = read_feeds(path, inputs)
    if unused:
        warn(f"ignoring arrays in {path} that are not model inputs: {', '.join(unused)}")
    return feeds


def warn(message: str) -> None:
    print(f"onnxlock: warning: {message}", file=sys.stderr)


def print_json(data: dict) -> None:
    print(json.dumps(data, indent=2))


def percent(part: float, whole: float) -> str:
    return f"{100 * part / whole:.2f}%" if whole else "n/a"
