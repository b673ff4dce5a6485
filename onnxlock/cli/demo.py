"""Quick start: lock a bundled model, then compare original, locked-without-key and restored outputs."""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..bundled import bundled_path
from ..errors import OnnxlockError
from ..evaluate.damage import cpu_session, top1_agreement
from ..graph.io import load_model
from ..lock import lock_model, write_locked
from ..runtime import load_session
from ..runtime.feeds import check_feeds, load_npz
from ..runtime.session import PASSPHRASE_ENV

TEST_SET = "digits_test.npz"
CALIBRATION = "digits_calib.npz"  # training images: where the lock measures damage; never scored


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="digits_cnn", metavar="NAME",
                        help="bundled model to lock (default: digits_cnn)")
    parser.add_argument("--workdir", metavar="DIR",
                        help="keep the locked model and key in DIR, replacing earlier demo files "
                             "(default: a temporary folder, removed afterwards)")


def run(args: argparse.Namespace) -> int:
    model_path = bundled_path(args.model)
    arrays = load_npz(bundled_path(TEST_SET))
    feeds, _ = check_feeds(arrays, load_model(model_path), source=TEST_SET)
    with _workdir(args.workdir) as workdir:
        locked_path, key_path, passphrase, seconds = _lock(model_path, workdir)
        outputs = {
            "original": cpu_session(model_path.read_bytes()).run(None, feeds),
            "locked, no key": cpu_session(locked_path.read_bytes()).run(None, feeds),
            "locked + key": load_session(locked_path, key_path, passphrase=passphrase,
                                         providers="cpu").run(None, feeds),
        }
        sizes = (model_path.stat().st_size, locked_path.stat().st_size)
    print(f"{model_path.stem} on {len(arrays['labels'])} test images ({TEST_SET})")
    _print_table(outputs, arrays["labels"])
    original, restored = outputs["original"], outputs["locked + key"]
    diff = max(float(np.max(np.abs(r - o))) for r, o in zip(restored, original))
    print(f"max |restored - original|: {diff}")
    print(f"file size: original {sizes[0]:,} bytes, locked {sizes[1]:,} bytes (+{sizes[1] / sizes[0] - 1:.1%})")
    print(f"lock time: {seconds:.2f} s (scrypt key derivation included)")
    if args.workdir:
        print(f"locked model and key are in {args.workdir}")
        command = f"onnxlock run {locked_path} --key {key_path} --input BATCH.npz -o out.npz"
        if os.environ.get(PASSPHRASE_ENV) == passphrase:
            print(f"open them with your ${PASSPHRASE_ENV}: {command}")
        else:  # a one-off passphrase made for this demo, shown so the demo key stays usable
            print(f"open them with the demo passphrase: {PASSPHRASE_ENV}='{passphrase}' {command}")
    if not all(np.array_equal(r, o) for r, o in zip(restored, original)):
        raise OnnxlockError("the restored model's outputs differ from the original's")
    return 0


@contextlib.contextmanager
def _workdir(requested: str | None) -> Iterator[Path]:
    """The requested folder (created if needed), or a temporary one removed on exit."""
    if requested:
        Path(requested).mkdir(parents=True, exist_ok=True)
        yield Path(requested)
        return
    folder = tempfile.mkdtemp(prefix="onnxlock-demo-")
    try:
        yield Path(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _lock(model_path: Path, workdir: Path) -> tuple[Path, Path, str, float]:
    """Lock with the default KDF under $ONNXLOCK_PASSPHRASE or a one-off passphrase; time it."""
    passphrase = os.environ.get(PASSPHRASE_ENV) or secrets.token_urlsafe(16)
    locked_path, key_path = workdir / f"{model_path.stem}.locked.onnx", workdir / f"{model_path.stem}.key"
    start = time.perf_counter()
    model = load_model(model_path)
    calibration, _ = check_feeds(load_npz(bundled_path(CALIBRATION)), model, source=CALIBRATION)
    locked = lock_model(model, passphrase=passphrase, calibration=calibration, progress=sys.stderr.isatty())
    seconds = time.perf_counter() - start
    write_locked(locked, locked_path, key_path, force=True)
    return locked_path, key_path, passphrase, seconds


def _print_table(outputs: dict[str, list[np.ndarray]], labels: np.ndarray) -> None:
    reference = outputs["original"][0]
    print(f"  {'':<16}{'accuracy':>10}{'top-1 agreement':>17}")
    for name, result in outputs.items():
        accuracy = float(np.mean(np.argmax(result[0], axis=-1) == labels))
        print(f"  {name:<16}{accuracy:>10.2%}{top1_agreement(reference, result[0]):>17.2%}")
