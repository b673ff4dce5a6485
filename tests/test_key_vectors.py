"""Known-answer vectors for key format version 2 and identity files, and a by-hand decryption
that follows docs/key-format.md using only `cryptography` primitives (a second implementation)."""

import base64
import hashlib
import json
import zlib
from datetime import datetime, timezone

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from onnxlock.key import X25519Identity, X25519Recipient, open_key, parse_identity, public_text, seal
from onnxlock.key.identity import identity_bytes

SHA = "ab" * 32
SECRET = {"perm": [3, 1, 2], "tag": "kat"}
PRIVATE = bytes(range(64, 96))
EPHEMERAL = bytes(range(96, 128))
SALT = bytes(range(16))
NONCE = bytes(range(100, 112))
FILE_KEY = bytes(range(32, 64))
KAT = (
    b'onnxlock-key/2\n'
    b'{"format":"onnxlock-key","version":2,'
    b'"model_sha256":"abababababababababababababababababababababababababababababababab",'
    b'"method":"confusion","created":"2025-01-01T00:00:00+00:00","expires":"2027-07-01T00:00:00+00:00",'
    b'"licensee":"acme","recipients":['
    b'{"type":"scrypt","salt":"AAECAwQFBgcICQoLDA0ODw==","n":4096,"r":8,"p":1,"nonce":"ZGVmZ2hpamtsbW5v",'
    b'"wrapped":"eV8Nk1r8keRHQXw7P8Hs65OSW8zXCHPMP6GsnR0zY+pq2I7kC0o0JW5GTDRFWaAZ"},'
    b'{"type":"x25519","kid":"67ca2ffd6fe9efab","epk":"Z13VdO13iTELPS52gfN5C0ZsdzsVIf7PNld5WDcepS8=",'
    b'"wrapped":"JEMWDou0cUo7z+YwXXpUu4gtRXrCu4fn+on2lSOCztuUBAiRj2QfvMrNI2yXcbjg"}],'
    b'"nonce":"ZGVmZ2hpamtsbW5v"}\n'
    b'zbclhfX52QeJ5lXuXCZKXENXtFR3hjn/kYogUybjIiMZ5x1I+tssjOeXDAawP2D/6ABYIQ==\n'
)
IDENTITY_KAT = (
    b'onnxlock-identity/1\n'
    b'{"format":"onnxlock-identity","version":1,"type":"x25519",'
    b'"public":"eaYx7t4b+cmPEgMs3q3Q56B5OY/HhriMyEbsia+FpRo=",'
    b'"private":"QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xdXl8="}\n'
)
PUBLIC_KAT = "onnxlock-pub/1 x25519 eaYx7t4b+cmPEgMs3q3Q56B5OY/HhriMyEbsia+FpRo="


def kat_seal() -> bytes:
    identity = X25519Identity(PRIVATE)
    return seal(SECRET, model_sha256=SHA, method="confusion", passphrase="pw",
                recipients=[X25519Recipient(identity.public, _ephemeral=EPHEMERAL)], kdf_params={"n": 2**12},
                licensee="acme", expires=datetime(2027, 7, 1, tzinfo=timezone.utc),
                _salt=SALT, _nonce=NONCE, _file_key=FILE_KEY, _created=datetime(2025, 1, 1, tzinfo=timezone.utc))


def test_known_answer_vector():
    assert kat_seal() == KAT
    assert open_key(KAT, passphrase="pw", model_sha256=SHA) == SECRET
    assert open_key(KAT, identity=IDENTITY_KAT, model_sha256=SHA) == SECRET


def test_identity_and_public_key_vectors():
    identity = X25519Identity(PRIVATE)
    assert identity_bytes(identity) == IDENTITY_KAT
    assert public_text(identity) == PUBLIC_KAT
    assert parse_identity(IDENTITY_KAT).public == identity.public


def _payload(file_key: bytes) -> dict:
    _, header, payload, _ = KAT.split(b"\n")
    plaintext = AESGCM(file_key).decrypt(NONCE, base64.b64decode(payload), header)
    return json.loads(zlib.decompress(plaintext))


def test_x25519_stanza_by_hand():
    """docs/key-format.md, 'x25519 stanza': ECDH, HKDF-SHA256(salt = epk || public), AES-GCM, zero nonce."""
    stanza = json.loads(KAT.split(b"\n")[1])["recipients"][1]
    private = X25519PrivateKey.from_private_bytes(PRIVATE)
    public = private.public_key().public_bytes_raw()
    assert stanza["kid"] == hashlib.sha256(public).hexdigest()[:16]
    epk = base64.b64decode(stanza["epk"])
    assert epk == X25519PrivateKey.from_private_bytes(EPHEMERAL).public_key().public_bytes_raw()
    shared = private.exchange(X25519PublicKey.from_public_bytes(epk))
    wrap_key = HKDF(hashes.SHA256(), 32, salt=epk + public, info=b"onnxlock-key x25519").derive(shared)
    file_key = AESGCM(wrap_key).decrypt(bytes(12), base64.b64decode(stanza["wrapped"]), None)
    assert file_key == FILE_KEY
    assert _payload(file_key) == SECRET


def test_scrypt_stanza_by_hand():
    """docs/key-format.md, 'scrypt stanza': scrypt(passphrase, salt, n, r, p) -> AES-GCM with a fixed AAD."""
    stanza = json.loads(KAT.split(b"\n")[1])["recipients"][0]
    kek = Scrypt(salt=base64.b64decode(stanza["salt"]), length=32, n=stanza["n"], r=stanza["r"],
                 p=stanza["p"]).derive(b"pw")
    file_key = AESGCM(kek).decrypt(base64.b64decode(stanza["nonce"]), base64.b64decode(stanza["wrapped"]),
                                   b"onnxlock-key/1 scrypt")
    assert file_key == FILE_KEY
    assert _payload(file_key) == SECRET
