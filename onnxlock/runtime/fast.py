"""The fast path: restore only what the key touches and hand onnxruntime the rest in place.

The locked model is never parsed or re-serialised as a whole. ``wire.scan`` finds each
initializer's bytes; large ones become external-data placeholders in a small "skeleton" model:
  * untouched tensors are read by onnxruntime straight from the locked file (its own external
    data loading, as for any model with external data) or, for bytes, from the buffer in memory
    (``add_external_initializers_from_files_in_memory``);
  * touched tensors are restored on a few threads, each read from the file into its own buffer
    (``LockedSource.read``) and restored there in place by the methods' array shortcuts
    (``touches.py``), or else by ``passes.restore`` on a one-tensor model, and given as OrtValues that
    onnxruntime copies in (``add_external_initializers``); the restored arrays are freed once
    the session is built, so what stays is what a plain session holds. On CPU, from a file,
    those only Gather tables use (``SHAREABLE_USES``) are lent in place instead
    (``add_initializer``: no copy, the session keeps them); their placeholders point past the
    end of the file, so a graph optimiser that reads one fails the creation loudly instead of
    reading wrong bytes, and the session is created again with every restored tensor copied in.
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
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort

from ..errors import ModelFormatError, ModelMismatchError
from ..graph.external import data_path, path_needed
from ..graph.io import parse_model
from ..passes.restorers import restore
from ..proto import AttributeProto, ModelProto, TensorProto, to_array
from . import wire
from .restore import EXTERNAL_DATA, RESTORED_TENSORS, check_digest, check_external
from .options import copy_options
from .source import LockedSource
from .touches import ArrayRestorer, Scratch, needs_digest, only, restrict, tensor_digest, touched_tensors

if TYPE_CHECKING:  # annotations only: the loader does not import onnx (see proto.py)
    import onnx

LARGE_BYTES = 1024  # initializers at least this large are handed over outside the skeleton
INLINE_BYTES = 4 << 20  # locked models smaller than this are restored whole, in the skeleton
IN_MEMORY_NAME = "onnxlock-locked-weights"  # the external "file" name when the model came as bytes
RESTORED_NAME = "onnxlock-restored-weights"  # placeholder location for tensors given as OrtValues
RESTORE_THREADS = min(4, os.cpu_count() or 1)  # touched tensors restored side by side
THREADED_BYTES = 8 << 20  # below this much work, threads only add waiting
THREADED_SPAN = 1 << 20  # smaller tensors are restored in the calling thread: a task each costs more than it saves
FOLDER_ENTRY = "session.model_external_initializers_file_folder_path"
# (op type, input index) of the uses that graph optimisers leave alone and onnxruntime computes
# with as they are, so a restored tensor with only these uses is lent to onnxruntime in place (a
# wrong guess costs a second creation). Not MatMul/Gemm weights: onnxruntime packs those into
# its own copy and drops the original, so a lent one would stay beside its packed copy for the
# session's life (2x the weights), where a copy given in is freed once the session is built
SHAREABLE_USES = {("Gather", 0)}
QUIET = 4  # onnxruntime's fatal-only log level, for the in-place try a failure is retried from
VERBOSE = (0, 1)  # log levels a caller sets to see more: the in-place try keeps them
_GRAPH_TYPES = (AttributeProto.GRAPH, AttributeProto.GRAPHS)


class Prepared:
    """What onnxruntime needs: the small model and the options carrying the large weights, and the
    digest checks still running (``verified`` waits for them). ``keepalive``: buffers onnxruntime
    reads during creation; ``data``: the external data file, hashed in a thread like the model;
    ``lent``: the restored tensors lent in place, which the session must keep; ``copied``, when
    some are lent: the model and options giving every restored tensor by copy instead, to retry with."""

    __slots__ = ("model", "options", "keepalive", "checks", "data", "lent", "copied")

    def __init__(self, model: bytes, options: ort.SessionOptions | None, keepalive: list | None = None,
                 checks: DigestChecks | None = None, data: LockedSource | None = None, lent: list | None = None,
                 copied: Callable[[], tuple[bytes, ort.SessionOptions, list]] | None = None):
        self.model, self.options, self.keepalive = model, options, keepalive or []
        self.checks, self.data, self.lent, self.copied = checks, data, lent or [], copied

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


def prepare(source: LockedSource, secret: dict, options: ort.SessionOptions | None,
            cpu_only: bool = False) -> Prepared | None:
    """The skeleton and a copy of ``options`` (the caller's is never changed) carrying the restored
    weights, lent in place where ``cpu_only`` allows; a model under INLINE_BYTES is restored whole
    and keeps the caller's options (copying them costs more than such a model's bytes:
    onnxruntime raises on every unset entry read)."""
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
        return _prepare_layout(source, data, layout, secret, touched, options, cpu_only)
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
    data = LockedSource(data_path(source.path, expected["location"]), ModelFormatError, what="external data file",
                        defer=True)
    size = len(data.buffer)
    if size != expected.get("bytes"):  # truncated, or another lock's: before reading any of it
        data.close()
        check_external("", size, secret)
    return data


def _prepare_layout(source: LockedSource, data: LockedSource | None, layout: wire.Layout, secret: dict,
                    touched: set[str], options: ort.SessionOptions | None, cpu_only: bool) -> Prepared:
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
    model = parse_model(wire.skeleton(source.buffer, layout, placeholders), source="locked model", kind=ModelProto)
    model = restore(model, restrict(secret, lambda name: name not in large_names), in_place=True)
    _check_initializers(model, to_check - large_names, secret)
    untouched = len(large) > len(restored)
    for name in drop_unread(model):  # onnxruntime would drop them too, then refuse them given in
        restored.pop(name, None)

    def handover(lent: set[str]) -> tuple[bytes, ort.SessionOptions, list, list]:
        """The skeleton and options lending ``lent`` in place and copying the other restored tensors."""
        _point(model, restored, lent, location, len(source.buffer))
        handed = copy_options(options)
        during, kept = _attach(handed, source, restored, lent, untouched)
        return model.SerializeToString(), handed, during, kept

    lend = shareable(model.graph, set(restored)) if cpu_only and source.path else set()
    skeleton, handed, during, kept = handover(lend)
    if lend and handed.log_severity_level not in VERBOSE:  # -1, onnxruntime's default, included
        handed.log_severity_level = QUIET  # a failed try is retried: its error is not the caller's
    return Prepared(skeleton, handed, during, checks, data, lent=kept,
                    copied=(lambda: handover(set())[:3]) if lend else None)


def drop_unread(model: onnx.ModelProto) -> set[str]:
    """Remove the initializers no node reads (what normalisation folded, kept for the exact
    restore) from what onnxruntime is given: it would drop each with a warning line. Their names."""
    read = read_names(model.graph) | {value.name for value in model.graph.input}  # (an input's default stays)
    initializers = model.graph.initializer
    names = [tensor.name for tensor in initializers]
    for index in reversed(range(len(names))):  # deleted where they are: the kept ones are not copied
        if names[index] not in read:
            del initializers[index]
    return set(names) - read


def read_names(graph: onnx.GraphProto) -> set[str]:
    """Every name a node of ``graph`` or of its subgraphs (at any depth) reads, and its outputs."""
    names = {output.name for output in graph.output}
    for node in graph.node:
        names.update(node.input)
        for sub in _subgraphs(node):
            names |= read_names(sub)
    return names


def shareable(graph: onnx.GraphProto, names: set[str]) -> set[str]:
    """Those of ``names`` whose every use in ``graph`` is in SHAREABLE_USES, by a node that some
    graph input feeds (not one constant folding computes once), and that are neither a graph
    output nor used in a subgraph."""
    uses: dict[str, set] = {name: set() for name in names}
    barred = {output.name for output in graph.output}
    constant = {tensor.name for tensor in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" or all(not name or name in constant for name in node.input):
            constant.update(node.output)
            barred.update(node.input)
        for index, name in enumerate(node.input):
            if name in uses:
                uses[name].add((node.op_type if node.domain in ("", "ai.onnx") else "", index))
        for sub in _subgraphs(node):
            barred |= read_names(sub)
    return {name for name, used in uses.items() if used and used <= SHAREABLE_USES and name not in barred}


def _subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    """The graphs in ``node``'s attributes, found by the attributes' types (reading every attribute's
    fields took twice as long: this runs on each node of each load)."""
    return [g for attribute in node.attribute if attribute.type in _GRAPH_TYPES
            for g in ([attribute.g] if attribute.type == AttributeProto.GRAPH else attribute.graphs)]


def _point(model: onnx.ModelProto, restored: dict[str, np.ndarray], lent: set[str], location: str,
           past_end: int) -> None:
    """Point each restored tensor's placeholder at RESTORED_NAME (given by copy) or, if lent, past
    the end of ``location`` (onnxruntime never reads it; an optimiser that tries fails)."""
    for tensor in model.graph.initializer:
        if tensor.name in restored:
            where = (location, past_end) if tensor.name in lent else (RESTORED_NAME, 0)
            values = {"location": where[0], "offset": str(where[1]), "length": str(restored[tensor.name].nbytes)}
            for entry in tensor.external_data:
                entry.value = values.get(entry.key, entry.value)


def _prepare_whole(source: LockedSource, secret: dict, options: ort.SessionOptions | None) -> Prepared:
    """A small model restored whole by ``passes.restore``, its non-exact tensors checked against the
    key's digests, handed over as bytes with the caller's own options (nothing to add to them)."""
    model = restore(parse_model(bytes(source.buffer), source="locked model", kind=ModelProto), secret, in_place=True)
    _check_initializers(model, needs_digest(secret), secret)
    drop_unread(model)
    return Prepared(model.SerializeToString(), options)


def _check_initializers(model: onnx.ModelProto, names: set[str], secret: dict) -> None:
    """Check the restored initializers named in ``names`` against the key's per-tensor digests."""
    for tensor in model.graph.initializer:
        if tensor.name in names:
            check_digest(tensor.name, to_array(tensor), secret)


def _restore_all(source: LockedSource, data: LockedSource | None, spans: list[wire.Span],
                 secret: dict) -> dict[str, tuple[np.ndarray, bool]]:
    """``_restore_one`` for each span, the large ones on RESTORE_THREADS threads when there is enough
    to share (numpy releases the GIL on large arrays; on small ones threads only add waiting: 2,000
    tensors of 16 KiB took twice as long as tasks)."""
    local, restorer = threading.local(), ArrayRestorer(secret)

    def one(span):
        if not hasattr(local, "scratch"):
            local.scratch = Scratch()
        return _restore_one(source, data if span.location is not None else None, span, secret, restorer,
                            local.scratch)

    shared = [span for span in spans if span.nbytes >= THREADED_SPAN]
    if len(shared) < 2 or sum(span.nbytes for span in shared) < THREADED_BYTES:
        return {span.name: one(span) for span in spans}
    from concurrent.futures import ThreadPoolExecutor  # (8 ms to import: only a large model pays it)
    with ThreadPoolExecutor(min(RESTORE_THREADS, len(shared))) as pool:
        futures = {span.name: pool.submit(one, span) for span in shared}
        done = {span.name: one(span) for span in spans if span.name not in futures}  # the small ones, meanwhile
        return done | {name: future.result() for name, future in futures.items()}


def _restore_one(source: LockedSource, data: LockedSource | None, span: wire.Span, secret: dict,
                 restorer: ArrayRestorer, scratch: Scratch) -> tuple[np.ndarray, bool]:
    """One touched initializer restored on its own, and whether it was checked already: by the
    methods' array shortcut on a view of the locked bytes when they have one (one copy, the
    mapped pages dropped once read; ``prepare`` checks the result's digest where needed), else by
    ``passes.restore`` on a one-tensor model, checked here. ``data``: the external data file
    holding the span's bytes (None: the locked model's own bytes)."""
    holder = source if data is None else data
    view = span.array(holder.buffer)  # checks the span lies in the file
    values = holder.read(*span.data).view(view.dtype).reshape(view.shape)  # our own copy, restored in place
    try:
        array = restorer(span.name, values, scratch)
    except (KeyError, IndexError, ValueError, TypeError):
        array = None
    if array is not None:
        return np.ascontiguousarray(array), False
    single = ModelProto()
    tensor = single.graph.initializer.add()
    tensor.ParseFromString(span.message(source.buffer))
    if data is not None:
        del tensor.external_data[:]
        tensor.data_location, tensor.raw_data = TensorProto.DEFAULT, values.tobytes()
    single = restore(single, restrict(secret, only({span.name})), in_place=True)
    array = to_array(single.graph.initializer[0])
    check_digest(span.name, array, secret)
    return np.ascontiguousarray(array), True


def _attach(options: ort.SessionOptions, source: LockedSource, restored: dict[str, np.ndarray], lent: set[str],
            untouched: bool) -> tuple[list, list]:
    """Add the weights to ``options``; what must stay alive during creation, and what the session
    must keep (the lent arrays and their OrtValues)."""
    during, kept = [], []
    if source.path and (untouched or lent):
        options.add_session_config_entry(FOLDER_ENTRY, os.path.dirname(source.path))
    elif untouched:
        options.add_external_initializers_from_files_in_memory([IN_MEMORY_NAME], [source.buffer], [len(source.buffer)])
        during.append(source.buffer)
    copied = [name for name in restored if name not in lent]
    if copied:
        values = [ort.OrtValue.ortvalue_from_numpy(restored[name]) for name in copied]
        options.add_external_initializers(copied, values)
        during += [[restored[name] for name in copied], values]
    for name in lent:
        value = ort.OrtValue.ortvalue_from_numpy(restored[name])
        options.add_initializer(name, value)
        kept.append((restored[name], value))
    return during, kept
