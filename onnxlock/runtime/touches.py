"""Which initializers a key's restore changes, and the same secret narrowed to some of them.

The fast loader rebuilds only the tensors a secret touches; for that it must know, per pass
method, which initializers a layer names and how to keep only the parts of the layer that act on
chosen tensors. ``onnxlock.passes.restore`` stays what defines restoring: it is run on the
narrowed secrets. A method missing from ``TOUCHES`` sends the loader down the slow path.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Container

import numpy as np

from ..graph.patch import TENSOR_EDITS as _TENSOR_EDITS, narrow_array
from ..passes.flip_signs import FlipSignsPass, MaskPass
from ..passes.restorers import ADVPARAMS, CONFUSION
from ..passes.stack import secret_layers, stack_secrets



class Scratch:
    """A buffer reused from tensor to tensor (one per thread) for a result another layer's shortcut
    reads next and copies: a fresh buffer each time would cost its page faults again. A shortcut
    writes into it only from a read-only input, so no input is ever the scratch itself."""

    def __init__(self):
        self._buffer = np.empty(0, dtype=np.uint8)

    def __call__(self, shape: tuple, dtype: np.dtype) -> np.ndarray:
        size = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        if self._buffer.size < size:
            self._buffer = np.empty(size, dtype=np.uint8)
        return self._buffer[:size].view(dtype).reshape(shape)

    def holds(self, array: np.ndarray) -> bool:
        return np.shares_memory(array, self._buffer)


Shortcut = Callable[[str, np.ndarray, "Scratch | None"], np.ndarray]  # (name, values, scratch) -> restored


class Touches:
    """For one pass method: the initializers a layer touches, the layer kept to some targets, and
    optionally a shortcut that restores one tensor's numpy array directly, prepared once per layer
    (``shortcut(layer)``: a key schedule, a lookup by name) and then called per tensor. A shortcut
    may work in place on a writable array and copies a read-only one (into ``scratch`` when given:
    another layer's shortcut reads it next). Its result must equal ``passes.restore``'s: the loader
    checks it against the digest the key recorded, unless ``exact`` says the shortcut
    runs the very code the pass's restore runs (then the digest would only re-check the locked
    file's hash and the key's AES-GCM tag, which bind those inputs already). ``in_place``: the
    layer changes nothing but the values of the tensors it names, and its shortcut restores a
    writable array in place (so a restore can work inside the serialized model's bytes)."""

    __slots__ = ("tensors", "restrict", "shortcut", "exact", "in_place")

    def __init__(self, tensors: Callable[[dict], set[str]], restrict: Callable[[dict, Callable[[str], bool]], dict],
                 shortcut: Callable[[dict], Shortcut] | None = None, exact: bool = False, in_place: bool = False):
        self.tensors, self.restrict, self.shortcut = tensors, restrict, shortcut
        self.exact, self.in_place = exact, in_place


def _confusion_tensors(layer: dict) -> set[str]:
    return {edit[1] for group in layer["groups"] for edit in group["edits"] if edit[0] in _TENSOR_EDITS}


def _confusion_restrict(layer: dict, keep: Callable[[str], bool]) -> dict:
    """The layer with only the edits that ``keep`` accepts (tensor edits by tensor name, node
    attribute edits under the name ''), each group keeping its positions."""
    groups = [{**group, "edits": [edit for edit in group["edits"]
                                  if keep(edit[1] if edit[0] in _TENSOR_EDITS else "")]}
              for group in layer["groups"]]
    return {**layer, "groups": groups}


def _confusion_shortcut(layer: dict) -> Shortcut:
    """The pass's own narrowing (graph/patch.py ``narrow_array``) on one tensor's array."""
    return lambda name, values, scratch: narrow_array(layer["groups"], name, values)


def _keyed_tensors(layer: dict) -> set[str]:
    return set(layer["tensors"])


def _keyed_restrict(layer: dict, keep: Callable[[str], bool]) -> dict:
    return {**layer, "tensors": [name for name in layer["tensors"] if keep(name)]}


def _keyed_xor(keyed):
    """The array shortcut of a keyed XOR pass (signflip, mask): the same transform its restore
    applies (``transform_for``: the key schedule once a layer), in place (on a copy if read-only)."""
    def shortcut(layer: dict) -> Shortcut:
        transform, names = keyed.transform_for(layer), frozenset(layer["tensors"])

        def restore_array(name: str, values: np.ndarray, scratch: Scratch | None) -> np.ndarray:
            if name not in names:
                return values
            values = np.ascontiguousarray(values)
            out = values if values.flags.writeable else (scratch or np.empty)(values.shape, values.dtype)
            transform(values, name, out)  # read once, written once
            return out
        return restore_array
    return shortcut


def _advparams_tensors(layer: dict) -> set[str]:
    return {entry[0] for entry in layer["weights"]}


def _advparams_restrict(layer: dict, keep: Callable[[str], bool]) -> dict:
    return {**layer, "weights": [entry for entry in layer["weights"] if keep(entry[0])]}


def _advparams_shortcut(layer: dict) -> Shortcut:
    """The original float32 bits written back at their flat indices (on a copy if read-only)."""
    by_name: dict[str, list] = {}
    for tensor, index, bits in layer["weights"]:
        by_name.setdefault(tensor, []).append((index, bits))

    def restore_array(name: str, values: np.ndarray, scratch: Scratch | None) -> np.ndarray:
        entries = by_name.get(name)
        if not entries:
            return values
        if values.dtype != np.float32:
            raise TypeError(f"{name} is not float32")
        out = np.ascontiguousarray(values)
        out = out if out.flags.writeable else out.copy()
        indices, bits = np.array(entries, dtype=np.int64).T
        if indices.min() < 0 or (bits >> 32).any():
            raise ValueError("advparams entry out of range")
        out.reshape(-1).view(np.uint32)[indices] = bits.astype(np.uint32)  # IndexError past the end
        return out
    return restore_array


TOUCHES: dict[str, Touches] = {
    CONFUSION: Touches(_confusion_tensors, _confusion_restrict, _confusion_shortcut, exact=True),
    **{keyed.method: Touches(_keyed_tensors, _keyed_restrict, _keyed_xor(keyed), exact=True, in_place=True)
       for keyed in (FlipSignsPass, MaskPass)},
    ADVPARAMS: Touches(_advparams_tensors, _advparams_restrict, _advparams_shortcut, in_place=True)}


def touched_tensors(secret: dict) -> set[str] | None:
    """Initializers any layer of ``secret`` changes; None when a layer's method is not in TOUCHES."""
    names: set[str] = set()
    for layer in secret_layers(secret):
        touches = TOUCHES.get(layer.get("method"))
        if touches is None:
            return None
        try:
            names |= touches.tensors(layer)
        except (KeyError, IndexError, TypeError):
            return None  # malformed: the slow path reports it properly
    return names


def restrict(secret: dict, keep: Callable[[str], bool]) -> dict:
    """``secret`` narrowed, layer by layer, to the tensor edits on names ``keep`` accepts
    (node attribute edits are offered as '')."""
    return stack_secrets([TOUCHES[layer["method"]].restrict(layer, keep) for layer in secret_layers(secret)])


class ArrayRestorer:
    """A secret's array shortcuts, each layer's prepared once (its key schedule, its lookup by
    name) for all the tensors restored with it; safe to call from several threads.
    ``restorer(name, values, scratch)`` is ``name``'s array restored, last layer first, or None
    when a layer has no shortcut (or a malformed one: the slow path reports it). Layers before the
    first may write into ``scratch``; a result still in it is copied out."""

    def __init__(self, secret: dict):
        try:
            layers = secret_layers(secret)
            makers = [TOUCHES[layer["method"]].shortcut for layer in layers]
            self.shortcuts = None if None in makers else [make(layer) for make, layer in zip(makers, layers)][::-1]
        except (KeyError, IndexError, ValueError, TypeError):
            self.shortcuts = None

    def __call__(self, name: str, values: np.ndarray, scratch: Scratch | None = None) -> np.ndarray | None:
        if self.shortcuts is None:
            return None
        for depth, shortcut in enumerate(self.shortcuts, start=1):
            values = shortcut(name, values, scratch if depth < len(self.shortcuts) else None)
        if scratch is not None and scratch.holds(values):
            values = values.copy()
        return values


def restore_array(secret: dict, name: str, values: np.ndarray, scratch: Scratch | None = None) -> np.ndarray | None:
    """``ArrayRestorer(secret)`` for one tensor (several: make the restorer once)."""
    return ArrayRestorer(secret)(name, values, scratch)


def needs_digest(secret: dict) -> set[str]:
    """The tensors whose shortcut result must be checked against their digest: those a layer
    without an ``exact`` shortcut touches."""
    names: set[str] = set()
    for layer in secret_layers(secret):
        if not TOUCHES[layer["method"]].exact:
            names |= TOUCHES[layer["method"]].tensors(layer)
    return names


def only(names: Container[str]) -> Callable[[str], bool]:
    return lambda name: name in names


def tensor_digest(array: np.ndarray) -> str:
    """SHA-256 of a tensor's dtype, shape and little-endian C-order bytes."""
    array = np.ascontiguousarray(array)
    digest = hashlib.sha256(f"{array.dtype.newbyteorder('<').str}{list(array.shape)}".encode())
    digest.update(array.astype(array.dtype.newbyteorder("<"), copy=False).data)
    return digest.hexdigest()
