"""A service that only loads models imports none of the lock-time machinery (graph surgery,
calibration, progress bars) and not onnx itself (its messages come from onnxlock.proto): together
most of a service's start otherwise (reports/bench_start.json)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import onnxlock
from onnxlock import keygen, lock_model, write_locked
from onnxlock.runtime.session import PASSPHRASE_ENV

from conftest import CHEAP_KDF, MODELS, PASSPHRASE

# what the lock and the attacks need and a load must not import
LOCK_TIME = ("onnxlock.lock", "onnxlock.passes.confusion", "onnxlock.passes.advparams", "onnxlock.passes.peel_guard",
             "onnxlock.graph.normalize", "onnxlock.evaluate", "onnxlock.torchbridge", "onnx_graphsurgeon", "tqdm",
             "onnx", "torch")

PROBE = """
import json, sys
from onnxlock import load_session
session = load_session(sys.argv[1], sys.argv[2], providers="cpu", **json.loads(sys.argv[3]))
print(json.dumps(sorted(sys.modules)))
"""
# what cryptography imports for its public X25519 constructors' check (its whole OpenSSL backend,
# 10 ms in a fresh process) and for its KDFs (the loader's scrypt and HKDF are the standard library's)
SLOW_CRYPTOGRAPHY = ("cryptography.hazmat.backends.openssl", "cryptography.hazmat.primitives.kdf")


RUN_PROBE = """
import json, sys
import numpy as np
np.savez(sys.argv[3], pixels=np.zeros((2, 1, 8, 8), np.float32))
from onnxlock.cli import main
status = main(["run", sys.argv[1], "--key", sys.argv[2], "--input", sys.argv[3], "-o", sys.argv[4]])
print(json.dumps([status, sorted(sys.modules)]))
"""


def lock_time(modules, names=LOCK_TIME) -> list[str]:
    """The ``names`` (packages or modules) among ``modules``."""
    return [name for name in names if any(m == name or m.startswith(name + ".") for m in modules)]


@pytest.fixture(scope="module")
def stacked(tmp_path_factory):
    """digits_mlp locked with every method a load restores: confusion channels, AdvParams, mask."""
    folder = tmp_path_factory.mktemp("stacked")
    device = keygen(folder / "device")
    locked = lock_model(MODELS / "digits_mlp.onnx", passphrase=PASSPHRASE, seed=0, tries=1, kdf_params=CHEAP_KDF,
                        method="confusion,advparams,mask", recipients=[device])
    write_locked(locked, folder / "locked.onnx", folder / "model.key")
    return folder


@pytest.mark.parametrize("opener", ["passphrase", "identity"])
def test_a_load_imports_no_lock_time_module(stacked, opener):
    credentials = {"passphrase": PASSPHRASE} if opener == "passphrase" else {"identity": str(stacked / "device")}
    out = subprocess.run([sys.executable, "-c", PROBE, str(stacked / "locked.onnx"), str(stacked / "model.key"),
                          json.dumps(credentials)], capture_output=True, text=True, check=True).stdout
    modules = set(json.loads(out.splitlines()[-1]))
    assert "onnxruntime" in modules and "onnxlock.runtime.session" in modules  # the probe did load
    assert not lock_time(modules), f"a load imported lock-time modules: {lock_time(modules)}"
    # an identity's X25519 goes straight to cryptography's Rust binding (its public module: 5-8 ms)
    slow = lock_time(modules, SLOW_CRYPTOGRAPHY + ("cryptography.hazmat.primitives.asymmetric",))
    assert not slow, f"a load imported {slow}"


def test_onnxlock_run_imports_no_lock_time_module(stacked, tmp_path):
    """The command imports only the verb it runs."""
    env = {**os.environ, PASSPHRASE_ENV: PASSPHRASE}
    out = subprocess.run([sys.executable, "-c", RUN_PROBE, str(stacked / "locked.onnx"), str(stacked / "model.key"),
                          str(tmp_path / "in.npz"), str(tmp_path / "out.npz")], env=env, capture_output=True,
                         text=True, check=True).stdout
    status, modules = json.loads(out.splitlines()[-1])
    assert status == 0 and (tmp_path / "out.npz").exists()
    assert not lock_time(modules), f"onnxlock run imported lock-time modules: {lock_time(modules)}"
    assert "onnxlock.cli.lock" not in modules and "onnxlock.cli.attack" not in modules


def test_the_lazy_exports_resolve_and_are_listed():
    assert onnxlock.lock_model is lock_model
    assert {"lock_model", "load_session", "keygen", "restore_model"} <= set(dir(onnxlock))
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        onnxlock.nothing  # noqa: B018
    from onnxlock import passes
    from onnxlock.passes.confusion import WidenChannelsPass
    assert passes.WidenChannelsPass is WidenChannelsPass and WidenChannelsPass.restore is passes.restore_channels
