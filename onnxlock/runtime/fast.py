"""The fast path: restore only what the key touches and hand onnxruntime the rest in place.

The locked model is never parsed or re-serialised as a whole. ``wire.scan`` finds each
initializer's bytes; large ones become external-data placeholders in a small "skeleton" model:
  * untouched tensors are read by onnxruntime straight from the locked file (its own external
    data loading, as for any model with external data) or, for bytes, from the buffer in memory
    (``add_external_initializers_from_files_in_memory``);
  * touched tensors are restored on a few threads, each read once from the mapped file into its
    own buffer by the methods' array shortcuts (``touches.py``; the mapped pages are dropped once
    read), or else by ``passes.restore`` on a one-tensor model, and given as OrtValues
    (``add_external_initializers``; onnxruntime copies them during session creation: on CPU,
    ``add_initializer`` would not, but graph optimisers then read the placeholder's bytes).
    Shortcut results are checked against the key's per-tensor digests in a thread during
    session creation, except where the shortcut is the pass's own code (``Touches.exact``).
Small initializers and node attributes stay in the skeleton, restored by ``passes.restore`` on it.
A locked model under INLINE_BYTES is simply restored whole in memory and handed over as bytes.
``prepare`` returns None for anything else (older keys, unknown methods, unusual protobuf layout),
and the caller takes the slow path.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from ..errors import ModelFormatError, ModelMismatchError
from ..graph.external import data_path, path_needed
from ..graph.io import parse_model
from ..passes import restore
from . import wire
from .restore import EXTERNAL_DATA, RESTORED_TENSORS, check_digest, check_external
from .options import copy_options
from .source import LockedSource
from .touches import needs_digest, only, restore_array, restrict, tensor_digest, touched_tensors

LARGE_BYTES = 1024  # initializers at least this large are handed over outside the skeleton
INLINE_BYTES = 4 << 20  # locked models smaller than this are restored whole, in the skeleton
IN_MEMORY_NAME = "onnxlock-locked-weights"  # the external "file" name when the model came as bytes
RESTORED_NAME = "onnxlock-restored-weights"  # placeholder location for tensors given as OrtValues
RESTORE_THREADS = min(4, os.cpu_count() or 1)  # touched tensors restored side by side
THREADED_BYTES = 8 << 20  # below this much work, threads only add waiting
FOLDER_ENTRY = "session.model_external_initializers_file_folder_path"


@dataclass
class Prepared:
    """What onnxruntime needs: the small model and the options carrying the large weights, and the
    digest checks still running (``verified`` waits for them)."""

    model: bytes
    options: ort.SessionOptions | None
    keepalive: list = field(default_factory=list)  # buffers onnxruntime reads during creation
    checks: "DigestChecks | None" = None
    data: LockedSource | None = None  # the external data file, hashed in a thread like the model

    def verified(self) -> bool:
        return self.checks is None or self.checks.passed()


class DigestChecks:
    """Restored tensors compared with the key's per-tensor digests in a thread (hashlib releases
    the GIL), so the hashing overlaps session creation; ``passed()`` waits for the verdict."""

    def __init__(self, arrays: dict[str, np.ndarray], expected: dict[str, str]):
        self._passed, self._thread = False, None
        if sum(array.nbytes for array in arrays.values()) < THREADED_BYTES:
            self._run(arrays, expected)  # quicker than starting a thread
            return
        self._thread = threading.Thread(target=self._run, args=(arrays, expected), daemon=True)
        self._thread.start()

    def _run(self, arrays: dict[str, np.ndarray], expected: dict[str, str]) -> None:
        self._passed = all(tensor_digest(array) == expected.get(name) for name, array in arrays.items())

    def passed(self) -> bool:
        if self._thread is not None:
            self._thread.join()
        return self._passed


def prepare(source: LockedSource, secret: dict, options: ort.SessionOptions | None) -> Prepared | None:
    """The skeleton and a copy of ``options`` (the caller's is never changed) carrying the restored
    weights; a model under INLINE_BYTES is restored whole and keeps the caller's options (copying
    them costs more than such a model's bytes: onnxruntime raises on every unset entry read)."""
    touched = touched_tensors(secret)
    if touched is None or not isinstance(secret.get(RESTORED_TENSORS), dict) \
            or set(secret[RESTORED_TENSORS]) != touched:
        return None
    if len(source.buffer) < INLINE_BYTES and EXTERNAL_DATA not in secret:
        return _prepare_whole(source, secret, options)
    try:
        layout = wire.scan(source.buffer)
    except (wire.WireError, UnicodeDecodeError):
        return None
    if not touched <= {span.name for span in layout.initializers}:
        return None  # the key does not fit: the slow path says so precisely
    data = open_data(source, secret, {span.location for span in layout.initializers} - {None})
    try:
        return _prepare_layout(source, data, layout, secret, touched, options)
    except BaseException:
        if data is not None:
            data.close()
        raise


def open_data(source: LockedSource, secret: dict, locations: set[str]) -> LockedSource | None:
    """The locked model's external data file (mapped, hashed in a thread), or None if it has none;
    the graph must point to the one file the key names, beside the model."""
    expected = secret.get(EXTERNAL_DATA)
    if not locations and expected is None:
        return None
    if expected is None or locations != {expected.get("location")}:
        raise ModelMismatchError("the locked model's external data references do not match its key")
    if not source.path:
        raise path_needed(expected["location"])
    data = LockedSource(data_path(source.path, expected["location"]), ModelFormatError, what="external data file")
    size = len(data.buffer)
    if size != expected.get("bytes"):  # truncated, or another lock's: before reading any of it
        data.close()
        check_external("", size, secret)
    return data


def _prepare_layout(source: LockedSource, data: LockedSource | None, layout: wire.Layout, secret: dict,
                    touched: set[str], options: ort.SessionOptions | None) -> Prepared:
    large = [span for span in layout.initializers
             if span.data is not None and (span.nbytes >= LARGE_BYTES or span.location is not None)]
    large_names, to_check = {span.name for span in large}, needs_digest(secret)
    placeholders, restored, unchecked = {}, {}, {}
    location = os.path.basename(source.path) if source.path else IN_MEMORY_NAME
    done = _restore_all(source, data, [span for span in large if span.name in touched], secret)
    for span in large:
        if span.name in touched:
            array, checked = done[span.name]
            restored[span.name] = array
            if span.name in to_check and not checked:
                unchecked[span.name] = array
            placeholders[span.name] = wire.external_placeholder(
                span.name, array.shape, span.data_type, RESTORED_NAME, 0, array.nbytes)
        elif span.location is None:  # external data stays as it is: onnxruntime reads it from the file
            placeholders[span.name] = wire.external_placeholder(
                span.name, span.dims, span.data_type, location, span.data[0], span.nbytes)
    checks = DigestChecks(unchecked, secret[RESTORED_TENSORS]) if unchecked else None
    model = parse_model(wire.skeleton(source.buffer, layout, placeholders), source="locked model")
    model = restore(model, restrict(secret, lambda name: name not in large_names), in_place=True)
    _check_initializers(model, to_check - large_names, secret)
    prepared = Prepared(model.SerializeToString(), copy_options(options), checks=checks, data=data)
    _attach(prepared, source, restored, untouched=len(large) > len(restored))
    return prepared


def _prepare_whole(source: LockedSource, secret: dict, options: ort.SessionOptions | None) -> Prepared:
    """A small model restored whole by ``passes.restore``, its non-exact tensors checked against the
    key's digests, handed over as bytes with the caller's own options (nothing to add to them)."""
    model = restore(parse_model(bytes(source.buffer), source="locked model"), secret, in_place=True)
    _check_initializers(model, needs_digest(secret), secret)
    return Prepared(model.SerializeToString(), options)


def _check_initializers(model: onnx.ModelProto, names: set[str], secret: dict) -> None:
    """Check the restored initializers named in ``names`` against the key's per-tensor digests."""
    for tensor in model.graph.initializer:
        if tensor.name in names:
            check_digest(tensor.name, numpy_helper.to_array(tensor), secret)


def _restore_all(source: LockedSource, data: LockedSource | None, spans: list[wire.Span],
                 secret: dict) -> dict[str, tuple[np.ndarray, bool]]:
    """``_restore_one`` for each span, on RESTORE_THREADS threads when there is enough to share
    (numpy releases the GIL on large arrays; on small ones threads only add waiting)."""
    def one(span):
        return _restore_one(source, data if span.location is not None else None, span, secret)

    if len(spans) < 2 or sum(span.nbytes for span in spans) < THREADED_BYTES:
        return {span.name: one(span) for span in spans}
    with ThreadPoolExecutor(min(RESTORE_THREADS, len(spans))) as pool:
        return {span.name: result for span, result in zip(spans, pool.map(one, spans))}


def _restore_one(source: LockedSource, data: LockedSource | None, span: wire.Span,
                 secret: dict) -> tuple[np.ndarray, bool]:
    """One touched initializer restored on its own, and whether it was checked already: by the
    methods' array shortcut on a view of the locked bytes when they have one (one copy, the
    mapped pages dropped once read; ``prepare`` checks the result's digest where needed), else by
    ``passes.restore`` on a one-tensor model, checked here. ``data``: the external data file
    holding the span's bytes (None: the locked model's own bytes)."""
    holder = source if data is None else data
    values = span.array(holder.buffer)
    try:
        array = restore_array(secret, span.name, values)
    except (KeyError, IndexError, ValueError, TypeError):
        array = None
    if array is not None:
        array = np.ascontiguousarray(array)
        holder.release(*span.data)
        return array, False
    single = onnx.ModelProto()
    tensor = single.graph.initializer.add()
    tensor.ParseFromString(span.message(source.buffer))
    if data is not None:
        del tensor.external_data[:]
        tensor.data_location, tensor.raw_data = onnx.TensorProto.DEFAULT, values.tobytes()
    single = restore(single, restrict(secret, only({span.name})), in_place=True)
    array = numpy_helper.to_array(single.graph.initializer[0])
    check_digest(span.name, array, secret)
    return np.ascontiguousarray(array), True


def _attach(prepared: Prepared, source: LockedSource, restored: dict[str, np.ndarray], untouched: bool) -> None:
    options = prepared.options
    if untouched and source.path:
        options.add_session_config_entry(FOLDER_ENTRY, os.path.dirname(source.path))
    elif untouched:
        options.add_external_initializers_from_files_in_memory([IN_MEMORY_NAME], [source.buffer], [len(source.buffer)])
        prepared.keepalive.append(source.buffer)
    if restored:
        values = [ort.OrtValue.ortvalue_from_numpy(array) for array in restored.values()]
        options.add_external_initializers(list(restored), values)
        prepared.keepalive += [restored, values]
