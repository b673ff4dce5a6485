"""Where a device identity comes from: an argument (path, bytes, text, callback) or the
environment (ONNXLOCK_IDENTITY, ONNXLOCK_IDENTITY_FILE), for load_session and the CLI; and an
identity's text is never echoed in an error."""

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from onnxlock import keygen, load_session, lock_model
from onnxlock.errors import InvalidArgumentError, KeyAuthError, KeyFormatError, OnnxlockError, UnsafeOptionError
from onnxlock.key.identity import IDENTITY_ENV, IDENTITY_FILE_ENV

from conftest import CHEAP_KDF, MODELS, PASSPHRASE

MLP = MODELS / "digits_mlp.onnx"
ENVIRONMENT = (IDENTITY_ENV, IDENTITY_FILE_ENV, "ONNXLOCK_PASSPHRASE")


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """digits_mlp locked for two identities only (no passphrase): ``plain`` and ``guarded``
    (passphrase-protected); ``other`` is no recipient."""
    folder = tmp_path_factory.mktemp("identity_sources")
    keygen(folder / "plain")
    keygen(folder / "guarded", passphrase=PASSPHRASE, kdf_params=CHEAP_KDF)
    keygen(folder / "other")
    locked = lock_model(MLP, recipients=[folder / "plain.pub", folder / "guarded.pub"], tries=1)
    (folder / "m.onnx").write_bytes(locked.model)
    (folder / "m.key").write_bytes(locked.key)
    return folder


@pytest.fixture
def clean_env(monkeypatch):
    for name in ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture(scope="module")
def expected(digits):
    x = {"pixels": digits["pixels"][:32]}
    return x, ort.InferenceSession(str(MLP), providers=["CPUExecutionProvider"]).run(None, x)


def _same(session, expected) -> bool:
    x, plain = expected
    return all(np.array_equal(a, b) for a, b in zip(session.run(None, x), plain))


def _private(path: Path) -> str:
    return json.loads(path.read_bytes().split(b"\n")[1])["private"]


def test_an_identity_opens_from_a_path_its_bytes_its_text_or_a_callback(pair, clean_env, expected):
    text = (pair / "plain").read_text()
    for identity in (pair / "plain", str(pair / "plain"), text.encode(), text, text.strip(), "\n" + text + "\n",
                     lambda: text, lambda: pair / "plain"):
        assert _same(load_session(pair / "m.onnx", pair / "m.key", identity=identity, providers="cpu"), expected)


def test_an_identity_from_the_environment(pair, clean_env, expected):
    clean_env.setenv(IDENTITY_ENV, (pair / "plain").read_text().strip())  # as "$(cat plain)" leaves it
    assert _same(load_session(pair / "m.onnx", pair / "m.key", providers="cpu"), expected)
    clean_env.delenv(IDENTITY_ENV)
    clean_env.setenv(IDENTITY_FILE_ENV, str(pair / "plain"))
    assert _same(load_session(pair / "m.onnx", pair / "m.key", providers="cpu"), expected)
    clean_env.setenv(IDENTITY_ENV, (pair / "plain").read_text())
    with pytest.raises(OnnxlockError, match=f"both {IDENTITY_ENV} and {IDENTITY_FILE_ENV} are set"):
        load_session(pair / "m.onnx", pair / "m.key", providers="cpu")


def test_arguments_win_over_the_environment(pair, clean_env, expected):
    clean_env.setenv(IDENTITY_FILE_ENV, str(pair / "other"))  # no recipient of this key
    with pytest.raises(KeyAuthError, match="not for this identity"):
        load_session(pair / "m.onnx", pair / "m.key", providers="cpu")
    assert _same(load_session(pair / "m.onnx", pair / "m.key", identity=pair / "plain", providers="cpu"), expected)
    # a passphrase argument means "open with this": the environment's identity is not read
    clean_env.setenv(IDENTITY_FILE_ENV, str(pair / "missing"))
    with pytest.raises(KeyAuthError) as refused:
        load_session(pair / "m.onnx", pair / "m.key", passphrase=PASSPHRASE, providers="cpu")
    assert "identity" not in str(refused.value)


def test_a_protected_identity_from_the_environment_takes_its_passphrase_from_it(pair, clean_env, expected):
    clean_env.setenv(IDENTITY_FILE_ENV, str(pair / "guarded"))
    with pytest.raises(OnnxlockError, match="passphrase-protected"):
        load_session(pair / "m.onnx", pair / "m.key", providers="cpu")
    clean_env.setenv("ONNXLOCK_PASSPHRASE", PASSPHRASE)
    assert _same(load_session(pair / "m.onnx", pair / "m.key", providers="cpu"), expected)
    clean_env.setenv("ONNXLOCK_PASSPHRASE", PASSPHRASE + "!")
    with pytest.raises(KeyAuthError, match="wrong passphrase"):
        load_session(pair / "m.onnx", pair / "m.key", providers="cpu")


def test_an_identity_is_never_echoed(pair, clean_env):
    """Identity text where a path belongs, or mangled, gives an error without the private key."""
    text = (pair / "plain").read_text()
    private = _private(pair / "plain")
    mangled = text.replace("onnxlock-identity/1", "onnxlock-identity/9")  # not identity text: taken as a path
    broken = text.replace(private, private[:-6] + "A" * 5 + "=")  # another private key: public mismatch
    attempts = [dict(identity=Path(text)), dict(identity=mangled), dict(identity=mangled.encode()),
                dict(identity=broken), dict(identity=lambda: Path(text))]
    for arguments in attempts:
        with pytest.raises(OnnxlockError) as caught:
            load_session(pair / "m.onnx", pair / "m.key", providers="cpu", **arguments)
        assert private not in str(caught.value) and private[:16] not in str(caught.value), arguments
    for name, value in ((IDENTITY_FILE_ENV, text), (IDENTITY_ENV, broken), (IDENTITY_ENV, private)):
        clean_env.setenv(name, value)
        with pytest.raises(OnnxlockError) as caught:
            load_session(pair / "m.onnx", pair / "m.key", providers="cpu")
        assert private[:16] not in str(caught.value), name
        clean_env.delenv(name)


def test_what_is_not_an_identity_is_refused(pair, clean_env, tmp_path):
    with pytest.raises(InvalidArgumentError, match="an identity must be a path"):
        load_session(pair / "m.onnx", pair / "m.key", identity=0, providers="cpu")  # not fd 0 read
    with pytest.raises(OnnxlockError, match="identity callback returned None"):
        load_session(pair / "m.onnx", pair / "m.key", identity=lambda: None, providers="cpu")
    clean_env.setenv(IDENTITY_ENV, str(pair / "plain"))  # a path in the text variable
    with pytest.raises(KeyFormatError, match=f"for a path, set {IDENTITY_FILE_ENV}"):
        load_session(pair / "m.onnx", pair / "m.key", providers="cpu")


def test_cli_run_takes_the_identity_from_the_environment(cli, pair, clean_env, tmp_path, digits):
    np.savez(tmp_path / "x.npz", pixels=digits["pixels"][:8])
    run = ("run", pair / "m.onnx", "--key", pair / "m.key", "--input", tmp_path / "x.npz")
    clean_env.setenv(IDENTITY_FILE_ENV, str(pair / "plain"))
    assert cli(*run, "-o", tmp_path / "a.npz").code == 0
    clean_env.delenv(IDENTITY_FILE_ENV)
    clean_env.setenv(IDENTITY_ENV, (pair / "plain").read_text())
    assert cli(*run, "-o", tmp_path / "b.npz").code == 0
    a, b = np.load(tmp_path / "a.npz"), np.load(tmp_path / "b.npz")
    assert a.files and a.files == b.files and all(np.array_equal(a[k], b[k]) for k in a.files)
    clean_env.setenv(IDENTITY_FILE_ENV, str(pair / "plain"))
    both = cli(*run, "-o", tmp_path / "c.npz")
    assert both.code == 1 and "set one" in both.err and not (tmp_path / "c.npz").exists()
    clean_env.delenv(IDENTITY_ENV)
    clean_env.delenv(IDENTITY_FILE_ENV)
    assert cli(*run, "--identity", pair / "plain", "-o", tmp_path / "d.npz").code == 0


def test_an_identity_load_refuses_an_unsafe_entry_with_no_kdf_to_read_it_beside(pair, clean_env, tmp_path):
    """An identity key derives nothing: the session options' entries are checked once it is open,
    still before any session is built."""
    options = ort.SessionOptions()
    options.add_session_config_entry("ep.context_enable", "1")
    options.add_session_config_entry("ep.context_file_path", str(tmp_path / "context.onnx"))
    with pytest.raises(UnsafeOptionError, match="ep.context_enable"):
        load_session(pair / "m.onnx", pair / "m.key", identity=pair / "plain", sess_options=options)
    assert list(tmp_path.iterdir()) == []
