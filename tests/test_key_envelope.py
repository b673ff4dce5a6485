"""Tests for the key envelope (onnxlock.key) and the file helpers it relies on (onnxlock.fileio)."""

import base64
import json
import os
import stat
import zlib
from datetime import datetime, timedelta, timezone

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from onnxlock import fileio
from onnxlock.errors import KeyAuthError, KeyExpiredError, KeyFormatError, ModelMismatchError
from onnxlock.key import open_key, read_header, seal

SHA = "ab" * 32
OTHER_SHA = "ef567890" + "0" * 56
SECRET = {"perm": [3, 1, 2], "note": "ZEBRA-PLAINTEXT-MARKER"}
FAST = {"n": 2**12}


def make(secret=SECRET, **kwargs):
    kwargs = {"model_sha256": SHA, "method": "confusion", "passphrase": "correct horse",
              "kdf_params": FAST, **kwargs}
    return seal(secret, **kwargs)


@pytest.fixture(scope="module")
def key():
    return make()


def lines(data):
    magic, header, payload, end = data.split(b"\n")
    assert end == b""
    return magic, header, payload


def with_header(data, edit):
    """Re-serialise the header after ``edit(header_dict)``, keeping the payload."""
    magic, header, payload = lines(data)
    obj = json.loads(header)
    edit(obj)
    return b"\n".join([magic, json.dumps(obj, separators=(",", ":")).encode(), payload, b""])


def flip(b64_text, index=0):
    raw = bytearray(base64.b64decode(b64_text))
    raw[index] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


# --- round trip and authentication -------------------------------------------------------

def test_round_trip(key):
    assert open_key(key, passphrase="correct horse", model_sha256=SHA) == SECRET
    assert open_key(key, passphrase="correct horse") == SECRET


def test_file_shape(key):
    magic, header, payload = lines(key)
    assert magic == b"onnxlock-key/2"
    assert json.loads(header)["recipients"][0]["type"] == "scrypt"
    base64.b64decode(payload, validate=True)


def test_wrong_passphrase(key):
    with pytest.raises(KeyAuthError) as err:
        open_key(key, passphrase="wrong horse")
    assert str(err.value) == "wrong passphrase or corrupted key"
    assert err.value.__cause__ is None  # no chained detail about what failed
    assert err.value.__context__ is None or err.value.__suppress_context__


def test_flipped_payload_byte(key):
    magic, header, payload = lines(key)
    tampered = b"\n".join([magic, header, flip(payload.decode(), 5).encode(), b""])
    with pytest.raises(KeyAuthError):
        open_key(tampered, passphrase="correct horse")


@pytest.mark.parametrize("edit", [
    lambda h: h.update(method="confusioN"),
    lambda h: h.update(created="2001-01-01T00:00:00+00:00"),
    lambda h: h.update(expires="2999-01-01T00:00:00+00:00"),
    lambda h: h.update(nonce=flip(h["nonce"])),
], ids=["method", "created", "expires", "nonce"])
def test_tampered_header_field(key, edit):
    with pytest.raises(KeyAuthError):
        open_key(with_header(key, edit), passphrase="correct horse")


def test_tampered_header_bytes_without_reserialising(key):
    tampered = key.replace(b'"method":"confusion"', b'"method":"confusioN"')
    assert tampered != key
    with pytest.raises(KeyAuthError):
        open_key(tampered, passphrase="correct horse")


def test_flipped_wrapped_key(key):
    def edit(h):
        h["recipients"][0]["wrapped"] = flip(h["recipients"][0]["wrapped"], 7)
    with pytest.raises(KeyAuthError):
        open_key(with_header(key, edit), passphrase="correct horse")


def test_plaintext_never_in_file(key):
    assert b"ZEBRA" not in key
    assert b"ZEBRA" not in base64.b64decode(lines(key)[2])


def test_fresh_randomness_each_seal():
    a, b = make(), make()
    assert a != b
    assert json.loads(lines(a)[1])["recipients"][0]["salt"] != json.loads(lines(b)[1])["recipients"][0]["salt"]


# --- structure errors ---------------------------------------------------------------------

def test_truncated_anywhere_is_a_key_error(key):
    for cut in range(len(key)):
        with pytest.raises((KeyFormatError, KeyAuthError)):
            open_key(key[:cut], passphrase="correct horse")


def test_any_flipped_byte_is_a_key_error(key):
    for i in range(len(key)):
        tampered = bytearray(key)
        tampered[i] ^= 0x01
        with pytest.raises((KeyFormatError, KeyAuthError, ModelMismatchError)):
            open_key(bytes(tampered), passphrase="correct horse", model_sha256=SHA)


@pytest.mark.parametrize("cut", [0, 5, 15, 40, -30, -1])
def test_truncated_is_reported_as_such(key, cut):
    with pytest.raises(KeyFormatError, match="truncated|empty"):
        open_key(key[:cut], passphrase="correct horse")


@pytest.mark.parametrize("name", ["format", "version", "model_sha256", "method", "created",
                                  "expires", "licensee", "recipients", "nonce"])
def test_missing_header_field(key, name):
    data = with_header(key, lambda h: h.pop(name))
    with pytest.raises(KeyFormatError, match=f"key header field '{name}' missing"):
        read_header(data)
    with pytest.raises(KeyFormatError, match=f"'{name}' missing"):
        open_key(data, passphrase="correct horse")


@pytest.mark.parametrize("name", ["salt", "n", "nonce", "wrapped"])
def test_missing_stanza_field(key, name):
    data = with_header(key, lambda h: h["recipients"][0].pop(name))
    with pytest.raises(KeyFormatError, match=f"key recipient 0 \\(scrypt\\) field '{name}' missing"):
        read_header(data)


@pytest.mark.parametrize("data, message", [
    (b"hello\nworld\n", "not an onnxlock key \\(bad first line\\)"),
    (b"\x89PNG\r\n", "bad first line"),
    (b"onnxlock-key/3\n{}\nAAAA\n", "unsupported key version 3"),
])
def test_bad_first_line(data, message):
    with pytest.raises(KeyFormatError, match=message):
        read_header(data)


@pytest.mark.parametrize("edit, message", [
    (lambda h: h.update(version=7), "unsupported key version 7"),
    (lambda h: h.update(version="1"), "'version' must be an integer"),
    (lambda h: h.update(version=1), "version 1 does not match the first line"),
    (lambda h: h.update(licensee=""), "'licensee': a licensee name is 1 to 100"),
    (lambda h: h.update(licensee="a\nb"), "printable"),
    (lambda h: h.update(licensee=7), "'licensee' must be a string or null"),
    (lambda h: h.update(recipients=h["recipients"] * 2), "at most 1 scrypt recipient"),
    (lambda h: h.update(recipients=h["recipients"] * 17), "1 to 16 recipients"),
    (lambda h: h.update(format="other"), "'format' is 'other'"),
    (lambda h: h.update(extra=1), "unknown field 'extra'"),
    (lambda h: h.update(model_sha256="xyz"), "'model_sha256' is not a lowercase hex"),
    (lambda h: h.update(created="yesterday"), "'created' is not an ISO-8601 time"),
    (lambda h: h.update(expires="2030-01-01T00:00:00"), "'expires' has no UTC offset"),
    (lambda h: h.update(nonce="!!!"), "'nonce' is not valid base64"),
    (lambda h: h.update(nonce="AAAA"), "'nonce' must be 12 bytes, got 3"),
    (lambda h: h.update(recipients=[]), "1 to 16 recipients"),
    (lambda h: h["recipients"][0].update(n=2**30), "scrypt n=1073741824"),
    (lambda h: h["recipients"][0].update(n=5000), "power of two"),
    (lambda h: h["recipients"][0].update(r=10**6), "scrypt r=1000000"),
    (lambda h: h["recipients"][0].update(p=0), "scrypt p=0"),
    (lambda h: h["recipients"][0].update(n=2**16, r=1), "must be below 2\\*\\*16 when r=1"),
    (lambda h: h["recipients"][0].update(n=True), "'n' must be an integer"),
    (lambda h: h["recipients"][0].update(salt="AAAA"), "'salt' must be 16 bytes"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_invalid_header(key, edit, message):
    data = with_header(key, edit)
    with pytest.raises(KeyFormatError, match=message):
        read_header(data)
    with pytest.raises(KeyFormatError, match=message):
        open_key(data, passphrase="correct horse")


def test_unknown_recipient_type_is_readable_but_does_not_open(key):
    data = with_header(key, lambda h: h.update(recipients=[{"type": "future-kind", "epk": "AAAA"}]))
    assert read_header(data)["recipients"][0]["type"] == "future-kind"
    with pytest.raises(KeyAuthError):
        open_key(data, passphrase="correct horse")


@pytest.mark.parametrize("tail, message", [
    (b"!!!!\n", "payload is not valid base64"),
    (b"AAAA\n", "payload is too short"),
    (b"AAAA\nmore\n", "data after the payload"),
])
def test_bad_payload_line(key, tail, message):
    magic, header, _ = lines(key)
    with pytest.raises(KeyFormatError, match=message):
        open_key(b"\n".join([magic, header, tail]), passphrase="correct horse")


def test_size_caps_come_before_any_parsing(key):
    with pytest.raises(KeyFormatError, match="larger than 16 MiB"):
        read_header(key + b"A" * (16 << 20))
    magic, header, payload = lines(key)
    long_header = header[:-1] + b',"pad":"' + b"x" * (16 << 10) + b'"}'
    with pytest.raises(KeyFormatError, match="longer than 16384 bytes"):
        read_header(b"\n".join([magic, long_header, payload, b""]))


def test_header_not_json(key):
    with pytest.raises(KeyFormatError, match="not valid JSON"):
        read_header(b"onnxlock-key/1\n{nope\nAAAA\n")
    with pytest.raises(KeyFormatError, match="duplicate field 'method'"):
        read_header(lines(key)[0] + b'\n{"method":"a","method":"b"}\nAAAA\n')


# --- model binding and expiry -------------------------------------------------------------

def test_wrong_model(key):
    with pytest.raises(ModelMismatchError) as err:
        open_key(key, passphrase="correct horse", model_sha256=OTHER_SHA)
    assert str(err.value) == ("key belongs to another model "
                              "(key is for sha256 abababab..., this model is ef567890...), "
                              "or the locked file was altered")


def test_wrong_model_is_reported_before_passphrase(key):
    with pytest.raises(ModelMismatchError):
        open_key(key, passphrase="wrong", model_sha256=OTHER_SHA)


def test_expired():
    past = datetime.now(timezone.utc) - timedelta(days=1)
    data = make(expires=past)
    with pytest.raises(KeyExpiredError, match="key expired on"):
        open_key(data, passphrase="correct horse")


def test_not_yet_expired():
    data = make(expires=datetime.now(timezone.utc) + timedelta(days=1))
    assert open_key(data, passphrase="correct horse") == SECRET


# --- seal argument checks -----------------------------------------------------------------

@pytest.mark.parametrize("params", [{"n": 2**11}, {"n": 3000}, {"n": 2**21}, {"r": 0},
                                    {"n": 2**16, "r": 1}, {"q": 1}])
def test_seal_rejects_bad_kdf_params(params):
    with pytest.raises(ValueError):
        make(kdf_params=params)


@pytest.mark.parametrize("kwargs", [{"model_sha256": "AB" * 32}, {"method": ""},
                                    {"passphrase": ""},
                                    {"expires": datetime(2030, 1, 1)}])
def test_seal_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        make(**kwargs)


# --- known-answer vector: version 1, still read --------------------------------------------

KAT_FILE_KEY = bytes(range(32, 64))
KAT_NONCE = bytes(range(100, 112))
KAT_SECRET = {"perm": [3, 1, 2], "tag": "kat"}
# A version-1 file as onnxlock 0.1 wrote it (no 'licensee' field); version 2 vectors are in
# tests/test_key_vectors.py. The payload also depends on zlib's deflate output, which is stable
# across zlib releases but could differ under a reimplementation such as zlib-ng.
KAT_V1 = (
    b'onnxlock-key/1\n'
    b'{"format":"onnxlock-key","version":1,'
    b'"model_sha256":"abababababababababababababababababababababababababababababababab",'
    b'"method":"confusion","created":"2025-01-01T00:00:00+00:00","expires":null,'
    b'"recipients":[{"type":"scrypt","salt":"AAECAwQFBgcICQoLDA0ODw==","n":4096,"r":8,"p":1,'
    b'"nonce":"ZGVmZ2hpamtsbW5v",'
    b'"wrapped":"eV8Nk1r8keRHQXw7P8Hs65OSW8zXCHPMP6GsnR0zY+pq2I7kC0o0JW5GTDRFWaAZ"}],'
    b'"nonce":"ZGVmZ2hpamtsbW5v"}\n'
    b'zbclhfX52QeJ5lXuXCZKXENXtFR3hjn/kYogUybjIiMZ5x1IE3NVAAg+T95kSgc0bL9fGw==\n'
)


def test_version_1_keys_still_open():
    assert open_key(KAT_V1, passphrase="pw", model_sha256=SHA) == KAT_SECRET
    assert read_header(KAT_V1)["version"] == 1


def test_version_1_payload_follows_the_spec():
    """Decrypt by hand: AES-GCM under the file key, AAD = the header line, zlib'd JSON inside."""
    _, header, payload = lines(KAT_V1)
    plaintext = AESGCM(KAT_FILE_KEY).decrypt(KAT_NONCE, base64.b64decode(payload), header)
    assert json.loads(zlib.decompress(plaintext)) == KAT_SECRET


def test_version_1_header_may_not_carry_a_licensee():
    data = with_header(KAT_V1, lambda h: h.update(licensee=None))
    with pytest.raises(KeyFormatError, match="unknown field 'licensee'"):
        read_header(data)


# --- read_header --------------------------------------------------------------------------

def test_read_header_needs_no_passphrase(key):
    header = read_header(key)
    assert header["model_sha256"] == SHA
    assert header["method"] == "confusion"
    assert header["version"] == 2 and header["expires"] is None and header["licensee"] is None
    assert datetime.fromisoformat(header["created"]).tzinfo is not None


# --- fileio -------------------------------------------------------------------------------

def test_atomic_write_creates_private_file(tmp_path):
    target = tmp_path / "model.key"
    fileio.atomic_write_bytes(target, b"one")
    fileio.atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    assert os.listdir(tmp_path) == ["model.key"]


def test_atomic_write_failure_keeps_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "model.key"
    target.write_bytes(b"old")

    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        fileio.atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["model.key"]


def test_sha256_helpers(tmp_path):
    data = os.urandom(3 * (1 << 20) + 7)  # spans several read chunks
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert fileio.sha256_file(path) == fileio.sha256_bytes(data)
    assert fileio.sha256_bytes(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_base64_fields_must_be_canonical():
    from onnxlock.key.fields import b64decode

    assert b64decode("AAE=") == b"\x00\x01"
    with pytest.raises(ValueError, match="non-canonical"):
        b64decode("AAF=")  # same bytes with a set padding bit: a flipped key byte must not pass
