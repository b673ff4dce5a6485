"""Device keys end to end: keygen, lock for recipients, run/unlock with an identity, rekey, expiry."""

import json
import os
import stat
from datetime import datetime, timedelta, timezone

import numpy as np
import onnxruntime as ort
import pytest

from onnxlock import keygen, load_session, lock_model, restore_model
from onnxlock.errors import KeyAuthError, KeyExpiredError, KeyFormatError, ModelMismatchError, OnnxlockError
from onnxlock.key import X25519Identity, X25519Recipient, load_identity, load_recipient, open_key, read_header, rekey

from conftest import CHEAP_KDF, MODELS, PASSPHRASE

MLP, CNN = MODELS / "digits_mlp.onnx", MODELS / "digits_cnn.onnx"


@pytest.fixture(scope="module")
def devices(tmp_path_factory):
    """Three device identities (device1..3) and their .pub files."""
    folder = tmp_path_factory.mktemp("devices")
    for name in ("device1", "device2", "device3"):
        keygen(folder / name)
    return folder


@pytest.fixture(scope="module")
def fleet_lock(devices, tmp_path_factory):
    """digits_mlp locked for device1 and device2 and a passphrase."""
    folder = tmp_path_factory.mktemp("fleet")
    locked = lock_model(MLP, passphrase=PASSPHRASE, kdf_params=CHEAP_KDF, tries=1, seed=0,
                        recipients=[devices / "device1.pub", devices / "device2.pub"])
    (folder / "m.onnx").write_bytes(locked.model)
    (folder / "m.key").write_bytes(locked.key)
    return folder


def test_keygen_writes_private_identity_and_public_key(devices):
    assert stat.S_IMODE(os.stat(devices / "device1").st_mode) == 0o600
    pub = (devices / "device1.pub").read_text()
    assert pub.startswith("onnxlock-pub/1 x25519 ") and pub.endswith("\n")
    assert load_identity(devices / "device1").public == load_recipient(devices / "device1.pub").public
    with pytest.raises(OnnxlockError, match="exists"):
        keygen(devices / "device1")


def test_any_recipient_or_the_passphrase_opens(fleet_lock, devices, digits):
    model, key = fleet_lock / "m.onnx", fleet_lock / "m.key"
    header = read_header(key.read_bytes())
    assert [s["type"] for s in header["recipients"]] == ["scrypt", "x25519", "x25519"]
    x = {"pixels": digits["pixels"][:64]}
    plain = ort.InferenceSession(str(MLP), providers=["CPUExecutionProvider"]).run(None, x)
    for how in ({"identity": devices / "device1"}, {"identity": (devices / "device2").read_bytes()},
                {"passphrase": PASSPHRASE}):
        out = load_session(model, key, providers="cpu", **how).run(None, x)
        assert all(np.array_equal(a, b) for a, b in zip(out, plain))
    with pytest.raises(KeyAuthError, match="not for this identity"):
        load_session(model, key, identity=devices / "device3")


def test_key_for_model_a_refused_on_model_b(fleet_lock, devices, locked_mlp):
    with pytest.raises(ModelMismatchError):
        load_session(locked_mlp.model, fleet_lock / "m.key", identity=devices / "device1")


def test_every_flipped_byte_of_a_recipient_key_is_refused(fleet_lock, devices):
    key = (fleet_lock / "m.key").read_bytes()
    identity = load_identity(devices / "device1")
    sha = read_header(key)["model_sha256"]
    for i in range(len(key)):
        tampered = bytearray(key)
        tampered[i] ^= 0x01
        with pytest.raises((KeyFormatError, KeyAuthError, ModelMismatchError)):
            open_key(bytes(tampered), identity=identity, model_sha256=sha)


def test_rekey_opens_for_the_new_device_only(fleet_lock, devices):
    key = (fleet_lock / "m.key").read_bytes()
    new = rekey(key, [load_identity(devices / "device1")], [X25519Recipient(load_identity(devices / "device3").public)])
    assert read_header(new)["model_sha256"] == read_header(key)["model_sha256"]
    restored = restore_model((fleet_lock / "m.onnx").read_bytes(), new, identity=devices / "device3")
    assert restored.SerializeToString() == restore_model((fleet_lock / "m.onnx").read_bytes(), key,
                                                         PASSPHRASE).SerializeToString()
    for removed in ({"identity": devices / "device1"}, {"identity": devices / "device2"}, {"passphrase": PASSPHRASE}):
        with pytest.raises(KeyAuthError):
            open_key(new, **removed)


def test_expired_key_refused_at_load(devices, tmp_path):
    past = datetime.now(timezone.utc) - timedelta(seconds=1)
    locked = lock_model(MLP, recipients=[devices / "device1.pub"], expires=past, tries=1)
    (tmp_path / "m.onnx").write_bytes(locked.model)
    (tmp_path / "m.key").write_bytes(locked.key)
    with pytest.raises(KeyExpiredError, match="key expired on"):
        load_session(tmp_path / "m.onnx", tmp_path / "m.key", identity=devices / "device1")
    with pytest.raises(KeyExpiredError):
        rekey(locked.key, [load_identity(devices / "device1")], [X25519Recipient(load_identity(devices / "device1").public)])


@pytest.mark.parametrize("short", ["", "x", "eleven char"])
def test_short_passphrases_refused(short, tmp_path):
    with pytest.raises(OnnxlockError, match="at least 12 characters"):
        lock_model(MLP, passphrase=short, kdf_params=CHEAP_KDF, tries=1)
    with pytest.raises(OnnxlockError, match="at least 12 characters"):
        keygen(tmp_path / "id", passphrase=short)


def test_protected_identity(tmp_path):
    keygen(tmp_path / "id", passphrase=PASSPHRASE, kdf_params=CHEAP_KDF)
    body = json.loads((tmp_path / "id").read_bytes().split(b"\n")[1])
    assert "private" not in body and body["protected"]["type"] == "scrypt"
    identity = load_identity(tmp_path / "id", PASSPHRASE)
    assert isinstance(identity, X25519Identity)
    with pytest.raises(KeyAuthError, match="passphrase-protected"):
        load_identity(tmp_path / "id")
    with pytest.raises(KeyAuthError, match="wrong passphrase"):
        load_identity(tmp_path / "id", PASSPHRASE + "!")


def test_lock_needs_a_way_to_open():
    with pytest.raises(OnnxlockError, match="passphrase or at least one recipient"):
        lock_model(MLP, tries=1)


def test_licensee_lock_refuses_a_seed(devices):
    with pytest.raises(OnnxlockError, match="fresh secret"):
        lock_model(MLP, recipients=[devices / "device1.pub"], licensee="acme", seed=3, tries=1)


def test_cli_device_workflow(cli, devices, tmp_path, digits, monkeypatch):
    """The README's device workflow: keygen, lock for two devices with expiry, run, rekey, unlock."""
    monkeypatch.delenv("ONNXLOCK_PASSPHRASE", raising=False)
    np.savez(tmp_path / "x.npz", pixels=digits["pixels"][:16])
    monkeypatch.chdir(tmp_path)
    assert cli("keygen", "-o", "owner").code == 0
    assert cli("keygen", "-o", "phone").code == 0
    done = cli("lock", MLP, "-o", "m.onnx", "--key", "m.key", "--recipient", "owner.pub",
               "--recipient", "phone.pub", "--expires", "2999-06-30", "--tries", "1")
    assert done.code == 0, done.err
    assert read_header((tmp_path / "m.key").read_bytes())["expires"] == "2999-07-01T00:00:00+00:00"
    assert cli("run", "m.onnx", "--key", "m.key", "--identity", "phone", "--input", "x.npz", "-o", "y.npz").code == 0
    assert cli("keygen", "-o", "tablet").code == 0
    assert cli("rekey", "m.key", "--identity", "owner", "--recipient", "owner.pub", "--recipient", "tablet.pub",
               "-o", "m2.key").code == 0
    assert cli("unlock", "m.onnx", "--key", "m2.key", "--identity", "tablet", "-o", "r.onnx").code == 0
    refused = cli("run", "m.onnx", "--key", "m2.key", "--identity", "phone", "--input", "x.npz", "-o", "z.npz")
    assert refused.code == 1 and "not for this identity" in refused.err
    bad_date = cli("lock", MLP, "-o", "n.onnx", "--key", "n.key", "--recipient", "owner.pub", "--expires", "soon")
    assert bad_date.code == 1 and "is not a date" in bad_date.err
