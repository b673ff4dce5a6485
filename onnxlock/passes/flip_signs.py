"""FlipSignsPass: the signs of every layer weight flipped by a keystream (issue 8, "genuine weights locked too").

Confusion channels leave every genuine weight in the file unchanged, so a thief who peels them off,
or fine-tunes around them, starts from the trained model. This pass locks the genuine weights
themselves: each weight of every Conv, ConvTranspose, Gemm and MatMul weight matrix and of every
embedding table has its sign flipped where a secret keystream bit is set (half of them, at
positions only the key determines). Magnitudes, and so every tensor's distribution of absolute
values, are unchanged; the file is the same size and architecture.

The keystream is ChaCha20 under a key derived with HKDF-SHA256 from a fresh 32-byte secret per
lock and the tensor's name, so no keystream is reused across tensors, models or locks. The secret
the key holds is that seed and the list of tensor names. The mask's keystream (version 2) is
ChaCha20 as RFC 8439 defines it (the cipher of ChaCha20-Poly1305) under one key derived from the
seed, with the first 12 bytes of the SHA-256 of the tensor's name as nonce: one key schedule a
lock, and a tensor's keystream in one call, where a key per tensor cost a cipher object each
(most of the loader's restore time on small models). Version 1 (a key per tensor, as the sign
flip's) is still restored. Restoring flips the same bits back: it
is an exact bit operation (XOR of the IEEE sign bit), so the original bytes come back for every
value, NaN and zero included.

MaskPass (``mask``, the default lock) is the same pass with every bit of each value XORed but the
exponent's top one (so a value below 2 in magnitude stays below 2): the values themselves are
hidden, not only their signs, and over the layers' other trained parameters too (biases,
normalisation scales and shifts: ``parameter_tensors``). Both passes also lock the float
initializers no node reads (originals that normalisation folded into a new weight). Against a
thief who holds the checkpoint the model was fine-tuned from (evaluate/attacks/base_model.py),
sign flips give the model back (the base tells the signs, the file keeps the magnitudes); masked
values tell nothing beyond that base.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import math
import os
from typing import TYPE_CHECKING

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from ..background import first_use
from ..errors import KeyFormatError, ModelMismatchError, UnsupportedGraphError
from ..graph.values import raw_dtype, read_values, write_values
from ..hkdf import hkdf_sha256
from ..proto import TensorProto
from .base import PassResult

if TYPE_CHECKING:  # annotations only: the loader does not import onnx (see proto.py)
    import onnx

SECRET_VERSION = 1
SEED_BYTES = 32
# op type -> input indices that may hold a layer's weights (MatMul, Einsum: any operand may be the constant)
WEIGHT_INPUTS = {"Conv": (1,), "ConvTranspose": (1,), "Gemm": (0, 1), "MatMul": (0, 1), "Gather": (0,),
                 "Einsum": (0, 1, 2), "LSTM": (1, 2), "GRU": (1, 2), "RNN": (1, 2)}
# float types whose sign bit is flipped (other weights, e.g. quantized integers, are left alone)
FLIPPABLE = (TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16)
# quantized layers (standard ops, and onnxruntime's contrib ops its quantizers and LLM exporters
# write): op type -> input indices of the integer weights and biases they read; a mask XORs these
# whole (every bit pattern is a valid integer; MatMulNBits' 4-bit weights are packed in uint8)
QUANTIZED_INPUTS = {"DequantizeLinear": (0,), "QLinearConv": (3, 8), "QLinearMatMul": (0, 3), "ConvInteger": (1,),
                    "MatMulInteger": (0, 1), "QGemm": (3, 6), "DynamicQuantizeLSTM": (1, 2),
                    "DynamicQuantizeMatMul": (1,), "MatMulIntegerToFloat": (0, 1), "QAttention": (1,),
                    "MatMulNBits": (1,), "GatherBlockQuantized": (0,)}
LAYER_DOMAINS = ("", "ai.onnx", "com.microsoft")  # where the mask looks for layers: standard and onnxruntime ops
MASKED_INTEGERS = (TensorProto.INT8, TensorProto.UINT8, TensorProto.INT16, TensorProto.UINT16, TensorProto.INT32)
# op type -> input indices holding a layer's other trained parameters: biases, normalisation scales
# and shifts (BatchNorm's running statistics are not trained, and a thief recomputes them anyway)
PARAMETER_INPUTS = {"Conv": (2,), "ConvTranspose": (2,), "Gemm": (2,), "BatchNormalization": (1, 2),
                    "LayerNormalization": (1, 2), "GroupNormalization": (1, 2), "InstanceNormalization": (1, 2),
                    "PRelu": (1,), "LSTM": (3,), "GRU": (3,), "RNN": (3,), "DynamicQuantizeLSTM": (3,)}
AFFINE_OPS = ("Add", "Mul")  # a several-valued constant added to or multiplying a computed tensor: a bias or scale
MAX_TENSORS = 1 << 16
FLIP_CHUNK = 1 << 16  # values per keystream chunk (a multiple of 8: chunks start on a keystream byte)
MASK_LABEL = b"onnxlock mask v1"  # version 1: a key per tensor
MASK_KEY_LABEL = b"onnxlock mask v2"  # version 2: one key, a nonce per tensor
MASK_VERSION = 2  # what a lock writes; restore takes MASK_VERSIONS
MASK_VERSIONS = (1, 2)
FIRST_BLOCK = (1).to_bytes(4, "little")  # RFC 8439 encrypts from block 1 (block 0 keys Poly1305)
MAX_MASK_BLOCKS = (1 << 32) - 1  # its block counter is 32 bits: a tensor's keystream up to 256 GiB
# per float width, the bits a mask XORs: all but the exponent's top bit (bit 14, 30 or 62)
MASK_FIELDS = {2: 0xBFFF, 4: 0xBFFF_FFFF, 8: 0xBFFF_FFFF_FFFF_FFFF}


def weight_tensors(model: onnx.ModelProto) -> list[str]:
    """Names of the float initializers of rank >= 2 that layers (Conv, ConvTranspose, Gemm, MatMul,
    Einsum, embedding Gather, LSTM/GRU/RNN) use as weights, in graph order."""
    inits = {t.name: t for t in model.graph.initializer}
    names: list[str] = []
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx"):
            continue
        for index in WEIGHT_INPUTS.get(node.op_type, ()):
            tensor = inits.get(node.input[index]) if index < len(node.input) else None
            if (tensor is not None and tensor.data_type in FLIPPABLE and len(tensor.dims) >= 2
                    and tensor.name not in names):
                names.append(tensor.name)
    return names


def parameter_tensors(model: onnx.ModelProto, weights: list[str] | None = None) -> list[str]:
    """``weights`` (by default ``weight_tensors``) and then the other trained float parameters, in
    graph order: biases and normalisation scales and shifts (PARAMETER_INPUTS), and the float
    constants of more than one value that an Add or Mul applies to a computed tensor (a MatMul's
    bias, a decomposed LayerNorm's scale, a positional embedding)."""
    inits = {t.name: t for t in model.graph.initializer if t.data_type in FLIPPABLE}
    parameter_ops = AFFINE_OPS + tuple(WEIGHT_INPUTS) + tuple(PARAMETER_INPUTS)
    elsewhere = {name for node in model.graph.node for name in node.input  # e.g. a Resize's scales: left alone
                 if node.op_type not in parameter_ops or node.domain not in ("", "ai.onnx")}
    names = list(weight_tensors(model) if weights is None else weights)
    chosen = set(names)
    for node in model.graph.node:
        if node.domain not in LAYER_DOMAINS:  # (onnxruntime's: a dynamically quantized LSTM's bias)
            continue
        if node.op_type in AFFINE_OPS:
            if len(node.input) != 2 or all(name in inits for name in node.input):
                continue
            picks = [name for name in node.input
                     if name in inits and math.prod(inits[name].dims) > 1 and name not in elsewhere]
        else:
            picks = [node.input[i] for i in PARAMETER_INPUTS.get(node.op_type, ()) if i < len(node.input)]
        for name in picks:
            if name in inits and name not in chosen:
                chosen.add(name)
                names.append(name)
    return names


def quantized_tensors(model: onnx.ModelProto) -> list[str]:
    """Integer initializers of more than one value that quantized layers read as weights or biases
    (QUANTIZED_INPUTS: an int8 model's Conv/MatMul weights and int32 biases), in graph order."""
    inits = {t.name for t in model.graph.initializer if t.data_type in MASKED_INTEGERS and math.prod(t.dims) > 1}
    names: dict[str, None] = {}  # ordered, without repeats
    for node in model.graph.node:
        if node.domain in LAYER_DOMAINS:
            for index in QUANTIZED_INPUTS.get(node.op_type, ()):
                if index < len(node.input) and node.input[index] in inits:
                    names[node.input[index]] = None
    return list(names)


def unread_tensors(model: onnx.ModelProto) -> list[str]:
    """Float initializers no node reads: originals that normalisation folded into a new weight (an
    Identity- or Transpose-routed kernel) and keeps under their own names for the restore. They
    hold the weight's values, so a keyed pass locks them too."""
    read = {name for node in model.graph.node for name in node.input}
    read.update(output.name for output in model.graph.output)
    return [t.name for t in model.graph.initializer
            if t.data_type in FLIPPABLE and t.name not in read and math.prod(t.dims) > 1]


def _keystream(seed: bytes, name: str, label: bytes = b"onnxlock signflip v1"):
    """The ChaCha20 encryptor under HKDF(seed, label and name) whose output on zeros is the tensor's
    keystream (``label`` separates the methods: a mask and a sign flip never share a keystream)."""
    key = hkdf_sha256(seed, label + b"\x00" + name.encode("utf-8"))
    return Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor()


class MaskKeystream:
    """The mask's version 2 keystream of each tensor: RFC 8439 ChaCha20 under HKDF(seed) with nonce
    SHA-256(name)[:12], from block 1. ``encryptor(name, nbytes)`` XORs a tensor's bytes with it:
    one ChaCha20-Poly1305 call for a tensor of one chunk (the tag is dropped), a seekable ChaCha20
    for a larger one, streamed chunk by chunk (both give the same keystream)."""

    def __init__(self, seed: bytes):
        self.key = hkdf_sha256(seed, MASK_KEY_LABEL)
        self._aead = ChaCha20Poly1305(self.key)

    def encryptor(self, name: str, nbytes: int, chunk_bytes: int):
        """The keystream of ``name`` (``nbytes`` long), to be XORed in chunks of ``chunk_bytes``."""
        if (nbytes + 63) // 64 > MAX_MASK_BLOCKS:
            raise UnsupportedGraphError(f"{name} is too large to mask (over 256 GiB)")
        nonce = hashlib.sha256(name.encode("utf-8")).digest()[:12]
        if nbytes <= chunk_bytes:
            return _OneCall(self._aead, nonce)
        return Cipher(algorithms.ChaCha20(self.key, FIRST_BLOCK + nonce), mode=None).encryptor()


class _OneCall:
    """A tensor's whole keystream XORed in one ChaCha20-Poly1305 call: ``update_into`` once only
    (a second call would reuse the keystream)."""

    def __init__(self, aead: ChaCha20Poly1305, nonce: bytes):
        self._aead, self._nonce = aead, nonce

    def update_into(self, data: memoryview, out: memoryview) -> None:
        if self._nonce is None:
            raise RuntimeError("a one-call keystream was asked for a second chunk")
        out[:] = memoryview(self._aead.encrypt(self._nonce, data, None))[:len(data)]
        self._nonce = None


def keystream_bits(seed: bytes, name: str, count: int) -> np.ndarray:
    """``count`` keystream bits (0/1 as uint8) for tensor ``name``: ChaCha20 under HKDF(seed, name)."""
    stream = _keystream(seed, name).update(bytes((count + 7) // 8))
    return np.unpackbits(np.frombuffer(stream, dtype=np.uint8), count=count, bitorder="little")


@first_use
def _first_keystreams() -> None:
    """The first uses a restore makes here (ChaCha20's, HMAC's, numpy's loops): 0.8-1 ms in a fresh process."""
    _keystream(bytes(32), "").update(bytes(64))
    mask_values(np.zeros(2, np.float32), bytes(32), "")


def _words(values: np.ndarray, out: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """``values`` and ``out`` (``values`` itself when None) as flat unsigned words of their width
    and byte order (the sign is the top bit), after the checks both transforms need."""
    out = values if out is None else out
    if out.shape != values.shape or out.dtype != values.dtype:
        raise ValueError("out must have the shape and dtype of values")
    source, target = values.reshape(-1), out.reshape(-1)
    if not (source.flags.c_contiguous and target.flags.c_contiguous and target.flags.writeable):
        raise ValueError("values must be a contiguous array and the target writable")
    words = np.dtype(f"u{source.dtype.itemsize}").newbyteorder(source.dtype.byteorder)
    return source.view(words), target.view(words)


def _chunks(size: int):
    """(start, stop) of each FLIP_CHUNK-value chunk of ``size`` values."""
    return ((start, min(size, start + FLIP_CHUNK)) for start in range(0, size, FLIP_CHUNK))


def flip_signs(values: np.ndarray, seed: bytes, name: str, out: np.ndarray | None = None) -> None:
    """Flip the IEEE sign bit of the floats in contiguous ``values`` where the keystream bit is 1:
    in place, or into ``out`` (same shape and dtype; ``values`` may then be read-only, e.g. a
    view of a memory-mapped file, and is read once).

    An exact bit operation: each value is XORed with its sign bit's mask. The keystream is drawn
    in chunks of FLIP_CHUNK values, so temporaries stay small whatever the tensor's size."""
    source, target = _words(values, out)
    masks, stream = _sign_masks(source.itemsize), _keystream(seed, name)
    for start, stop in _chunks(source.size):  # one keystream bit a value
        bits = np.frombuffer(stream.update(bytes((stop - start + 7) // 8)), dtype=np.uint8)
        spread = np.take(masks, bits).view(f"u{source.itemsize}")[:stop - start]  # native words, by value
        np.bitwise_xor(source[start:stop], spread, out=target[start:stop])


def mask_values(values: np.ndarray, seed: bytes | MaskKeystream, name: str, out: np.ndarray | None = None,
                *, version: int = MASK_VERSION) -> None:
    """XOR every bit of each float in contiguous ``values`` but its exponent's top one (every bit of
    an integer) with the mask keystream (one keystream word a value), in place or into ``out``, as
    ``flip_signs`` does. ``seed`` may be given as its MaskKeystream (version 2), made once for
    many tensors.

    The cipher XORs each chunk itself into one reused buffer, and the kept bit is copied back from
    ``values``: (values ^ keystream) & field | values & ~field is values ^ (keystream & field)."""
    source, target = _words(values, out)
    field = np.array(_field(values.dtype), dtype=source.dtype)
    if version == 1:
        stream = _keystream(seed, name, MASK_LABEL)
    else:
        keystream = seed if isinstance(seed, MaskKeystream) else MaskKeystream(seed)
        stream = keystream.encryptor(name, source.nbytes, FLIP_CHUNK * source.itemsize)
    kept = np.bitwise_not(field)
    buffer = np.empty(min(FLIP_CHUNK, source.size), dtype=source.dtype)
    for start, stop in _chunks(source.size):
        chunk, xored = source[start:stop], buffer[:stop - start]
        stream.update_into(memoryview(chunk.view(np.uint8)), memoryview(xored.view(np.uint8)))
        np.bitwise_and(xored, field, out=xored)
        np.bitwise_and(chunk, kept, out=target[start:stop])  # ``target`` may be ``source``: read first above
        np.bitwise_or(target[start:stop], xored, out=target[start:stop])


def _field(dtype: np.dtype) -> int:
    """The bits the mask XORs in each word of ``dtype``: all but a float's exponent top bit, all of an integer's."""
    return MASK_FIELDS[dtype.itemsize] if dtype.kind == "f" else (1 << 8 * dtype.itemsize) - 1


def mask_raw_tensors(tensors: list[TensorProto], keystream: MaskKeystream) -> list[TensorProto]:
    """``mask_values`` (version 2) on the raw bytes of each of ``tensors`` that fits one keystream
    call, those of a width together: one XOR over them all, where each tensor on its own costs
    more in numpy's per-call overhead than in its bytes (most of a small model's restore time).
    Returns the tensors left for ``flip_tensor``."""
    groups, left = {}, []
    for tensor in tensors:
        raw = tensor.raw_data if tensor.HasField("raw_data") else b""  # (each read of the field is a copy)
        dtype = raw_dtype(tensor, raw)
        if dtype is None or len(raw) > FLIP_CHUNK * dtype.itemsize:
            left.append(tensor)
        else:
            groups.setdefault((dtype.itemsize, _field(dtype)), []).append((tensor, raw))
    for (width, field), group in groups.items():
        data = b"".join(raw for _, raw in group)
        xored, start = bytearray(len(data)), 0
        into = memoryview(xored)
        for tensor, raw in group:
            stop = start + len(raw)
            keystream.encryptor(tensor.name, len(raw), len(raw)).update_into(memoryview(raw), into[start:stop])
            start = stop
        # x ^ (keystream & field) = (xored & field) | (x & ~field): the kept bits from the original
        words, original = np.frombuffer(xored, f"<u{width}"), np.frombuffer(data, f"<u{width}")
        np.bitwise_and(words, np.array(field, f"<u{width}"), out=words)
        np.bitwise_or(words, original & np.array(~field & ((1 << 8 * width) - 1), f"<u{width}"), out=words)
        start = 0
        for tensor, raw in group:
            tensor.raw_data, start = bytes(into[start:start + len(raw)]), start + len(raw)
    return left


@functools.cache
def _sign_masks(width: int) -> np.ndarray:
    """For each keystream byte, the 8 sign-bit masks of ``width``-byte words it selects, as one
    opaque item (so ``np.take`` spreads a chunk with one copy per byte). Bits are used
    little-endian: value i takes bit i % 8 of keystream byte i // 8."""
    bits = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1, bitorder="little")
    words = bits.astype(f"u{width}") << np.array(8 * width - 1, dtype=f"u{width}")
    return np.ascontiguousarray(words).view(f"V{8 * width}").reshape(256)


def flip_tensor(tensor: TensorProto, transform) -> None:
    """Apply ``transform`` (a pass's ``transform_for``: its own inverse) to ``tensor``'s values, in place."""
    values = np.ascontiguousarray(read_values(tensor))
    flipped = np.empty_like(values)
    transform(values, tensor.name, flipped)
    write_values(tensor, flipped)


class FlipSignsPass:
    """Lock every layer weight by flipping half of its signs at secret positions."""

    method = "signflip"
    version = SECRET_VERSION
    types = FLIPPABLE  # the data types of the tensors it locks
    weights = staticmethod(weight_tensors)  # the layer weights; without any, a model is refused
    nothing = "no float Conv, Gemm, MatMul, Einsum, Gather or RNN weight to lock"

    @staticmethod
    def tensors(model: onnx.ModelProto, weights: list[str]) -> list[str]:
        """What the pass locks, given the model's layer weights (restore reads the names from the key)."""
        return list(weights)

    def __init__(self, seed: bytes | None = None):
        if seed is not None and len(seed) != SEED_BYTES:
            raise ValueError(f"{self.method} seed must be {SEED_BYTES} bytes")
        self.seed = seed

    def __call__(self, model: onnx.ModelProto, *, in_place: bool = False) -> PassResult:
        """Lock ``model`` (a copy of it, or ``model`` itself when ``in_place``: a large model is
        then held once, not twice)."""
        secret, report = self.plan(model)
        return PassResult(self.restore(model, secret, in_place=in_place), secret, report)  # an XOR undoes itself

    def plan(self, model: onnx.ModelProto) -> tuple[dict, dict]:
        """The secret and report of locking ``model``, which is not changed: the tensors to lock
        and the seed. Applying the secret is restoring it (``restore``: the XOR is its own inverse)."""
        weights = self.weights(model)
        if not weights:  # e.g. a quantized model for signflip: a float bias alone is no lock
            raise UnsupportedGraphError(self.nothing)
        names = self.tensors(model, weights)
        chosen = set(names)
        names += [name for name in unread_tensors(model) if name not in chosen]
        seed = self.seed or os.urandom(SEED_BYTES)
        dims = {t.name: t.dims for t in model.graph.initializer}
        secret = {"method": self.method, "version": self.version,
                  "seed": base64.b64encode(seed).decode("ascii"), "tensors": names}
        report = {"method": self.method, "tensors": len(names),
                  "weights_locked": sum(math.prod(dims[name]) for name in names)}
        return secret, report

    @classmethod
    def restore(cls, model: onnx.ModelProto, secret: dict, *, in_place: bool = False) -> onnx.ModelProto:
        """The inverse pass: the same keystream XORed again (it is its own inverse)."""
        transform, names = cls.transform_for(secret), secret["tensors"]  # transform_for validates the whole secret
        restored = model if in_place else type(model)()
        if not in_place:
            restored.CopyFrom(model)
        inits = {t.name: t for t in restored.graph.initializer}
        tensors = [inits.get(name) for name in names]
        if any(tensor is None or tensor.data_type not in cls.types for tensor in tensors):
            raise ModelMismatchError("the key does not fit this model (a locked weight is missing)")
        for tensor in transform.together(tensors):
            flip_tensor(tensor, transform)
        return restored

    @classmethod
    def transform_for(cls, secret: dict) -> SignFlips:
        """The secret's transform of one tensor's values: ``transform(values, name, out=None)``."""
        return SignFlips(_check_secret(secret)[0])


class MaskPass(FlipSignsPass):
    """Lock every layer weight by XORing each value's bits (all but a float's exponent top one;
    all of a quantized weight's) with the keystream."""

    method = "mask"
    version = MASK_VERSION
    types = FLIPPABLE + MASKED_INTEGERS
    tensors = staticmethod(parameter_tensors)
    nothing = "no float or quantized Conv, Gemm, MatMul, Einsum, Gather or RNN weight to lock"

    @staticmethod
    def weights(model: onnx.ModelProto) -> list[str]:
        return weight_tensors(model) + quantized_tensors(model)

    @classmethod
    def transform_for(cls, secret: dict) -> Masking:
        seed, version = _check_secret(secret)[0], secret.get("version")
        if isinstance(version, bool) or version not in MASK_VERSIONS:
            raise KeyFormatError(f"mask secret: version {version!r} is not one this onnxlock restores "
                                 f"({', '.join(map(str, MASK_VERSIONS))})")
        return Masking(seed if version == 1 else MaskKeystream(seed), version)  # one key schedule a restore


class SignFlips:
    """A sign-flip secret's transform: ``flip_signs`` with its seed, one tensor at a time."""

    __slots__ = ("seed",)

    def __init__(self, seed: bytes):
        self.seed = seed

    def __call__(self, values: np.ndarray, name: str, out: np.ndarray | None = None) -> None:
        flip_signs(values, self.seed, name, out)

    def together(self, tensors: list[TensorProto]) -> list[TensorProto]:
        """Transform those of ``tensors`` that can be taken at once; returns the others."""
        return tensors


class Masking:
    """A mask secret's transform: ``mask_values`` with its keystream (version 2) or seed (version 1);
    small raw tensors of version 2 are taken together (``mask_raw_tensors``)."""

    __slots__ = ("keystream", "version")

    def __init__(self, keystream: MaskKeystream | bytes, version: int):
        self.keystream, self.version = keystream, version

    def __call__(self, values: np.ndarray, name: str, out: np.ndarray | None = None) -> None:
        mask_values(values, self.keystream, name, out, version=self.version)

    def together(self, tensors: list[TensorProto]) -> list[TensorProto]:
        return tensors if self.version == 1 else mask_raw_tensors(tensors, self.keystream)


def _check_secret(secret: dict) -> tuple[bytes, list[str]]:
    """The seed and tensor names of a signflip or mask secret, validated before use."""
    seed, names = secret.get("seed"), secret.get("tensors")
    try:
        seed = base64.b64decode(seed, validate=True) if isinstance(seed, str) else b""
    except ValueError:
        seed = b""
    if len(seed) != SEED_BYTES:
        raise KeyFormatError(f"{secret.get('method')} secret: 'seed' must be 32 bytes of base64")
    if (not isinstance(names, list) or len(names) > MAX_TENSORS
            or not all(isinstance(n, str) for n in names) or len(set(names)) != len(names)):
        raise KeyFormatError(f"{secret.get('method')} secret: 'tensors' must be a list of distinct tensor names")
    return seed, names


restore_signs = FlipSignsPass.restore
restore_mask = MaskPass.restore
