"""trace: five licensees' copies of one model, each named from the provider's keys (default and confusion locks)."""

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from onnxlock import keygen, lock_model, restore_model
from onnxlock.cli.trace import key_files, trace
from onnxlock.key import load_identity, read_header

from conftest import MODELS

LICENSEES = ("acme", "globex", "initech", "umbrella", "hooli")


@pytest.fixture(scope="module", params=["mask", "confusion,signflip"])
def issued(tmp_path_factory, request):
    """The owner's identity, a keys/ folder with one key per licensee, and each licensee's locked
    bytes, for the default lock (masked values fingerprint a copy) and a confusion lock (its counterfeits)."""
    root = tmp_path_factory.mktemp("trace")
    keygen(root / "owner")
    (root / "keys").mkdir()
    copies = {}
    for name in LICENSEES:
        locked = lock_model(MODELS / "digits_mlp.onnx", recipients=[root / "owner.pub"], licensee=name,
                            method=request.param)
        (root / "keys" / f"{name}.key").write_bytes(locked.key)
        copies[name] = locked
    (root / "keys" / "notes.txt").write_text("not a key")
    return root, copies


def modified(data: bytes, noise: float = 0.0) -> bytes:
    """The model re-saved with other metadata and, optionally, relative noise on every weight."""
    model = onnx.load_from_string(data)
    model.producer_name = "someone-else"
    rng = np.random.default_rng(0)
    for tensor in model.graph.initializer:
        values = numpy_helper.to_array(tensor)
        if noise and values.dtype == np.float32:
            values = (values * (1 + noise * rng.standard_normal(values.shape))).astype(np.float32)
            tensor.CopyFrom(numpy_helper.from_array(values, tensor.name))
    return model.SerializeToString()


def test_each_licensee_has_a_distinct_lock(issued):
    _, copies = issued
    assert len({c.model for c in copies.values()}) == len(LICENSEES)
    assert [read_header(c.key)["licensee"] for c in copies.values()] == list(LICENSEES)


def test_exact_copies_are_named_without_any_secret(issued):
    root, copies = issued
    keys = key_files(root / "keys")
    assert len(keys) == len(LICENSEES)  # notes.txt is skipped
    for name, copy in copies.items():
        report = trace(copy.model, keys)
        assert report["licensee"] == name and report["confidence"] == 1.0


@pytest.mark.parametrize("noise", [0.0, 0.001])
def test_altered_copies_are_named_by_their_fingerprint(issued, noise):
    root, copies = issued
    owner = load_identity(root / "owner")
    for name, copy in copies.items():
        report = trace(modified(copy.model, noise), key_files(root / "keys"), identity=owner)
        assert report["licensee"] == name, report["reason"]
        fits = {row["licensee"]: row["fit"] for row in report["keys"]}
        assert fits[name] >= 0.9
        assert max(fit for other, fit in fits.items() if other != name) <= 0.1


def test_altered_copy_without_a_secret_is_not_named(issued):
    root, copies = issued
    report = trace(modified(copies["acme"].model), key_files(root / "keys"))
    assert report["licensee"] is None and "--identity" in report["reason"]


def test_restored_model_cannot_be_attributed(issued):
    root, copies = issued
    restored = restore_model(copies["globex"].model, copies["globex"].key, identity=root / "owner")
    report = trace(restored.SerializeToString(), key_files(root / "keys"), identity=load_identity(root / "owner"))
    assert report["licensee"] is None and "restored original" in report["reason"]


def test_cli_trace(issued, cli, tmp_path):
    root, copies = issued
    suspect = tmp_path / "leak.onnx"
    suspect.write_bytes(modified(copies["initech"].model, 0.001))
    result = cli("trace", suspect, "--keys", root / "keys", "--identity", root / "owner")
    assert result.code == 0
    assert f"{suspect}: licensed to initech" in result.out
