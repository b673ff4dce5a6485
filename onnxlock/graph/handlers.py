"""Per-op widening rules, one small function per op family, dispatched by op type.

``rule(node, entry, axis, imap)`` answers: if tensor ``entry`` (an input or output of ``node``) grows
along ``axis`` with index map ``imap``, which other tensors of the node grow with it (links), which
of its constant inputs must grow (edits), or why it cannot be done (blocked). An op without a rule
blocks its group: nothing is ever guessed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from .channels import IDENTITY, AttrEdit, IndexMap, Link, ParamEdit, Role, Rule, ShapeEdit, blocked

Handler = Callable[[gs.Node, gs.Variable, int, IndexMap], Rule]


def rank(tensor: gs.Tensor) -> int | None:
    return None if tensor.shape is None else len(tensor.shape)


def static_dim(tensor: gs.Tensor, axis: int) -> int | None:
    if tensor.shape is None:
        return None
    dim = tensor.shape[axis]
    return dim if isinstance(dim, (int, np.integer)) and dim >= 0 else None


def present(node: gs.Node, index: int) -> gs.Tensor | None:
    """The node's input ``index`` if given (not omitted with an empty name)."""
    if len(node.inputs) > index and node.inputs[index].name:
        return node.inputs[index]
    return None


def extra_outputs_unused(node: gs.Node) -> bool:
    """True when only the first output of the node is consumed (Dropout mask, MaxPool indices...)."""
    return all(not t.outputs for t in node.outputs[1:])


def constant_values(tensor: gs.Tensor) -> np.ndarray | None:
    return np.asarray(tensor.values) if isinstance(tensor, gs.Constant) else None


# --- ops that keep the tensor's layout: the output widens exactly like the input -------------


def passthrough(node: gs.Node, entry: gs.Variable, axis: int, imap: IndexMap) -> Rule:
    """Unary element-wise ops: the first output widens like the first input, both ways."""
    if not extra_outputs_unused(node):
        return blocked(node, "a second output is used")
    data, out = node.inputs[0], node.outputs[0]
    other = out if entry is data else data
    if entry is not data and entry is not out:
        return blocked(node, f"only its data input can widen, not '{entry.name}'")
    return Rule(links=[Link(other, axis, imap)])


def channel_first(node: gs.Node, entry: gs.Variable, axis: int, imap: IndexMap) -> Rule:
    """Pooling and other NC... ops: fine when the channel axis is axis 1."""
    if axis != 1:
        return blocked(node, f"widening axis {axis} (only the channel axis 1 passes)")
    return passthrough(node, entry, axis, imap)


def elementwise(node: gs.Node, entry: gs.Variable, axis: int, imap: IndexMap) -> Rule:
    """Broadcasting n-ary ops: aligned inputs of full size widen too (variables link, constants grow)."""
    out = node.outputs[0]
    out_rank, entry_rank = rank(out), rank(entry)
    size = static_dim(entry, axis)
    if out_rank is None or entry_rank is None or size is None:
        return blocked(node, "shapes unknown")
    out_axis = axis + out_rank - entry_rank
    rule = Rule()
    if entry is not out:
        rule.links.append(Link(out, out_axis, imap))
    for index, tensor in enumerate(node.inputs):
        if tensor is entry or not tensor.name:
            continue
        t_axis = out_axis - (out_rank - (rank(tensor) or 0))
        if rank(tensor) is None:
            return blocked(node, f"shape of '{tensor.name}' unknown")
        if t_axis < 0 or tensor.shape[t_axis] == 1:
            continue  # broadcast along the channel axis: nothing to grow
        if static_dim(tensor, t_axis) != size:
            return blocked(node, f"'{tensor.name}' does not match the widened axis")
        constant = constant_edits(node, index, t_axis, imap)
        if constant is not None:
            rule.edits.extend(constant)
        else:
            rule.links.append(Link(tensor, t_axis, imap))
    return rule


def constant_edits(node: gs.Node, index: int, axis: int, imap: IndexMap) -> list | None:
    """Edits that grow a per-channel constant input along ``axis``: the constant itself, or the
    constant behind a Reshape/Unsqueeze to a broadcastable shape (a bias stored as [C] and reshaped
    to [1,C,1,1], as Paddle exports do). None if the input is not such a constant."""
    tensor = node.inputs[index]
    if isinstance(tensor, gs.Constant):
        return [ParamEdit(node, index, axis - rank(tensor), imap, Role.CHANNEL)]
    producer = tensor.inputs[0] if len(tensor.inputs) == 1 else None
    if producer is None or producer.op not in ("Reshape", "Unsqueeze") or len(tensor.outputs) != 1:
        return None
    source = producer.inputs[0]
    if not isinstance(source, gs.Constant) or sum(d != 1 for d in tensor.shape) != 1:
        return None
    wide = [a for a, d in enumerate(source.shape) if d != 1]
    if len(wide) != 1:
        return None
    edits = [ParamEdit(producer, 0, wide[0], imap, Role.CHANNEL)]
    if producer.op == "Reshape":
        target = constant_values(producer.inputs[1])
        if target is None or int(target[axis]) == 0:
            return None
        if int(target[axis]) > 0:
            edits.append(ShapeEdit(producer, 1, axis, imap.block))
    return edits


def clip(node: gs.Node, entry: gs.Variable, axis: int, imap: IndexMap) -> Rule:
    """Clip with scalar bounds is element-wise on its data input."""
    for bound in node.inputs[1:]:
        if bound.name and (rank(bound) or 0) > 0 and bound.shape != [1]:
            return blocked(node, "non-scalar bounds")
    return passthrough(node, entry, axis, imap)


def batch_norm(node: gs.Node, entry: gs.Variable, axis: int, imap: IndexMap) -> Rule:
    if axis != 1:
        return blocked(node, f"widening axis {axis} (its statistics are on axis 1)")
    if not extra_outputs_unused(node) or node.attrs.get("training_mode", 0):
        return blocked(node, "training-mode outputs are used")
    params = node.inputs[1:5]
    if not all(isinstance(p, gs.Constant) for p in params):
        return blocked(node, "scale, bias, mean and variance must be constants")
    rule = passthrough(node, entry, axis, imap)
    rule.edits = [ParamEdit(node, i, 0, imap, Role.CHANNEL) for i in range(1, 5)]
    return rule


def instance_norm(node: gs.Node, entry: gs.Variable, axis: int, imap: IndexMap) -> Rule:
    if axis != 1 or not all(isinstance(p, gs.Constant) for p in node.inputs[1:3]):
        return blocked(node, "needs the channel axis 1 and constant scale/bias")
    rule = passthrough(node, entry, axis, imap)
    rule.edits = [ParamEdit(node, i, 0, imap, Role.CHANNEL) for i in (1, 2)]
    return rule


def layer_norm(node: gs.Node, entry: gs.Variable, axis: int, imap: IndexMap) -> Rule:
    """LayerNormalization: the widened axis either lies outside the normalised axes or is the last one."""
    if not extra_outputs_unused(node):
        return blocked(node, "Mean/InvStdDev outputs are used")
    r = rank(node.inputs[0])
    if r is None:
        return blocked(node, "shapes unknown")
    first = node.attrs.get("axis", -1) % r
    rule = passthrough(node, entry, axis, imap)
    if axis < first:
        return rule
    if first != r - 1:
        return blocked(node, "normalises over several axes including the widened one")
    for index in (1, 2):
        param = present(node, index)
        if param is None:
            continue
        if not isinstance(param, gs.Constant):
            return blocked(node, "scale/bias must be constants")
        if param.shape[-1] != 1:
            rule.edits.append(ParamEdit(node, index, -1, imap, Role.CHANNEL))
    rule.mixes = True
    return rule


def softmax(node: gs.Node, entry: gs.Variable, axis: int, imap: IndexMap) -> Rule:
    """Softmax keeps its shape; over the widened axis the confusion channels also mix in."""
    rule = passthrough(node, entry, axis, imap)
    r = rank(entry)
    default = -1 if node.attrs.get("axis") is None else node.attrs["axis"]
    rule.mixes = r is not None and default % r == axis
    return rule


def transpose(node: gs.Node, entry: gs.Variable, axis: int, imap: IndexMap) -> Rule:
    r = rank(node.inputs[0])
    if r is None:
        return blocked(node, "shapes unknown")
    perm = list(node.attrs.get("perm", list(reversed(range(r)))))
    if entry is node.inputs[0]:
        return Rule(links=[Link(node.outputs[0], perm.index(axis), imap)])
    return Rule(links=[Link(node.inputs[0], perm[axis], imap)])


def _reduce_axes(node: gs.Node, r: int) -> list[int] | None:
    axes = node.attrs.get("axes")
    if axes is None and present(node, 1) is not None:
        axes = constant_values(node.inputs[1])
        if axes is None:
            return None
    if axes is None or len(axes) == 0:
        return None if node.attrs.get("noop_with_empty_axes", 0) else list(range(r))
    return sorted(int(a) % r for a in axes)


def reduce(node: gs.Node, entry: gs.Variable, axis: int, imap: IndexMap) -> Rule:
    """Reduce*: over the widened axis the node absorbs the channels; otherwise it passes them on."""
    r = rank(node.inputs[0])
    if r is None or entry is not node.inputs[0]:
        return blocked(node, "only its data input can widen")
    axes = _reduce_axes(node, r)
    if axes is None:
        return blocked(node, "reduction axes are not constant")
    if axis in axes:
        return Rule(mixes=True)
    out_axis = axis if node.attrs.get("keepdims", 1) else axis - sum(a < axis for a in axes)
    return Rule(links=[Link(node.outputs[0], out_axis, imap)])


def pad(node: gs.Node, entry: gs.Variable, axis: int, imap: IndexMap) -> Rule:
    pads = node.attrs.get("pads")
    if pads is None and present(node, 1) is not None:
        pads = constant_values(node.inputs[1])
    if pads is None or len(node.inputs) > 3 and present(node, 3) is not None:
        return blocked(node, "pads are not constant")
    r = len(pads) // 2
    if pads[axis] != 0 or pads[axis + r] != 0:
        return blocked(node, "pads the widened axis")
    return passthrough(node, entry, axis, imap)


def resize(node: gs.Node, entry: gs.Variable, axis: int, imap: IndexMap) -> Rule:
    """Resize/Upsample keep the channel axis when its scale is 1 and no explicit sizes are given."""
    sizes = present(node, 3)
    if sizes is not None:
        return blocked(node, "explicit output sizes would need the widened channel count")
    scales_input = present(node, 2) if node.op == "Resize" else present(node, 1)
    scales = constant_values(scales_input) if scales_input is not None else node.attrs.get("scales")
    if scales is None or float(np.asarray(scales)[axis]) != 1.0:
        return blocked(node, "scales on the widened axis are not a constant 1")
    return passthrough(node, entry, axis, imap)


def concat(node: gs.Node, entry: gs.Variable, axis: int, imap: IndexMap) -> Rule:
    """Along the concat axis the entry lands at an offset; along any other axis all parts widen."""
    out = node.outputs[0]
    r = rank(out)
    if r is None:
        return blocked(node, "shapes unknown")
    cat_axis = node.attrs["axis"] % r
    if axis != cat_axis:
        rule = elementwise_all(node, entry, axis, imap)
        return rule
    if entry is out:
        return blocked(node, "cannot widen a concatenation from its output")
    offset = 0
    for tensor in node.inputs:
        if tensor is entry:
            return Rule(links=[Link(out, axis, imap.shift(offset))])
        size = static_dim(tensor, axis)
        if size is None:
            return blocked(node, f"size of '{tensor.name}' unknown")
        offset += size
    return blocked(node, "entry is not an input")


def elementwise_all(node: gs.Node, entry: gs.Variable, axis: int, imap: IndexMap) -> Rule:
    """Every input and output widens along the same axis (same-rank ops such as Concat on another axis)."""
    rule = Rule()
    for index, tensor in enumerate(list(node.inputs) + list(node.outputs)):
        if tensor is entry:
            continue
        if isinstance(tensor, gs.Constant):
            rule.edits.append(ParamEdit(node, index, axis, imap, Role.CHANNEL))
        else:
            rule.links.append(Link(tensor, axis, imap))
    return rule


def split_sizes(node: gs.Node) -> tuple[list[int] | None, bool]:
    """The Split's chunk sizes, and whether they are an input (opset >= 13) rather than an attribute."""
    sizes = present(node, 1)
    if sizes is not None:
        values = constant_values(sizes)
        return (None if values is None else [int(v) for v in values]), True
    if "split" in node.attrs:
        return [int(v) for v in node.attrs["split"]], False
    return None, False  # equal chunks: every output would have to grow alike


def split(node: gs.Node, entry: gs.Variable, axis: int, imap: IndexMap) -> Rule:
    """Split: along another axis every part widens; along the split axis one output's channels sit
    at an offset in the input, and that output's chunk size grows."""
    r = rank(node.inputs[0])
    if r is None:
        return blocked(node, "shapes unknown")
    if axis != node.attrs.get("axis", 0) % r:
        return Rule(links=[Link(t, axis, imap) for t in [node.inputs[0], *node.outputs] if t is not entry])
    if entry is node.inputs[0]:
        return blocked(node, "splits the widened axis (its outputs are widened one by one instead)")
    sizes, as_input = split_sizes(node)
    if sizes is None:
        return blocked(node, "split sizes are not constant")
    j = list(node.outputs).index(entry)
    growth = imap.growth(1)
    edit = ShapeEdit(node, 1, j, growth) if as_input else AttrEdit(node, "split", growth, item=j)
    return Rule(links=[Link(node.inputs[0], axis, imap.shift(sum(sizes[:j])))], edits=[edit])


def flatten(node: gs.Node, entry: gs.Variable, axis: int, imap: IndexMap) -> Rule:
    """Flatten folds the axis and everything after it: each channel becomes a block of entries."""
    data = node.inputs[0]
    r = rank(data)
    if entry is not data or r is None:
        return blocked(node, "cannot widen a flattened tensor back through Flatten")
    start = node.attrs.get("axis", 1) % r if r else 0
    if axis < start:
        return blocked(node, "the widened axis is in the outer (batch) part")
    inner = [static_dim(data, a) for a in range(start, axis)]
    trailing = [static_dim(data, a) for a in range(axis + 1, r)]
    if None in inner or None in trailing or any(d != 1 for d in inner):
        return blocked(node, "dimensions around the widened axis are dynamic or interleave channels")
    return Rule(links=[Link(node.outputs[0], 1, imap.expand(int(np.prod(trailing, dtype=np.int64))))])


@dataclass(frozen=True)
class ShapeTarget:
    """The entries of a shape-valued input (Reshape target, Expand shape): known values, None for
    entries computed at run time, and where each known value is stored, so that it can grow."""

    values: list[int | None]
    places: list[tuple[gs.Node, int, int] | None]

    def edit(self, dim: int, per_channel: int) -> ShapeEdit:
        node, index, item = self.places[dim]
        return ShapeEdit(node, index, item, per_channel)


def shape_target(node: gs.Node, index: int) -> ShapeTarget | None:
    """Input ``index`` of ``node`` as a ShapeTarget: a constant, or a Concat of constants and run-time
    pieces (``x.view(x.size(0), C, -1)`` with a dynamic batch). None when its length is unknown."""
    tensor = node.inputs[index]
    if isinstance(tensor, gs.Constant):
        values = [int(v) for v in np.asarray(tensor.values).reshape(-1)]
        return ShapeTarget(values, [(node, index, i) for i in range(len(values))])
    producer = tensor.inputs[0] if len(tensor.inputs) == 1 else None
    if producer is None or producer.op != "Concat" or producer.attrs.get("axis", 0) not in (0, -1):
        return None
    values, places = [], []
    for j, piece in enumerate(producer.inputs):
        if isinstance(piece, gs.Constant):
            flat = [int(v) for v in np.asarray(piece.values).reshape(-1)]
            values += flat
            places += [(producer, j, i) for i in range(len(flat))]
        elif rank(piece) == 1 and static_dim(piece, 0) is not None:
            values += [None] * piece.shape[0]
            places += [None] * piece.shape[0]
        else:
            return None
    return ShapeTarget(values, places)


def _same_leading(src: list, dst: list, target: list) -> bool:
    """Leading dims unchanged by a Reshape: equal, or one inferred (-1) where the other is the
    same single dynamic dim (``x.reshape(-1, C*H*W)`` with a dynamic batch)."""
    if len(src) != len(dst):  # dims of size 1 squeezed or added (``x[:, 0:1]`` reshaped to [B, C])
        return [d for d in src if d != 1] == [d for d in dst if d != 1] and 0 not in target
    unknown = [i for i, (a, b) in enumerate(zip(src, dst)) if a != b]
    if not unknown:
        return True
    return (len(unknown) == 1 and target[unknown[0]] == -1
            and not isinstance(src[unknown[0]], (int, np.integer)))


def head_split(short: list, long: list, target: list) -> tuple[int, int, int, int] | None:
    """(axis, copies, head size, split dims) when ``long`` is ``short`` with one axis D split into
    several (D -> H, D/H; or 3, H, D/3H for a fused q/k/v projection), every other dim unchanged:
    the multi-head attention reshape (and, read backwards, the merge). The head features are last."""
    for extra in range(1, len(long) - len(short) + 1 if len(long) > len(short) else 1):
        if len(long) != len(short) + extra:
            continue
        for a in range(len(short)):
            if not _same_leading(short[:a], long[:a], target[:a]) or short[a + 1:] != long[a + 1 + extra:]:
                continue
            sizes = [short[a], *long[a:a + extra + 1]]
            if not all(isinstance(d, (int, np.integer)) and d > 1 for d in sizes):
                continue
            copies = int(np.prod(sizes[1:-1], dtype=np.int64))
            if sizes[0] == copies * sizes[-1]:
                return a, copies, int(sizes[-1]), extra
    return None


def reshape_heads(node: gs.Node, entry: gs.Variable, axis: int, imap: IndexMap, target: ShapeTarget) -> Rule | None:
    """Attention head split/merge: the base space is one head's features, repeated per head on the
    merged axis. Widening adds k features to every head at the same positions."""
    data, out = node.inputs[0], node.outputs[0]
    src, dst = list(data.shape), list(out.shape)
    split = head_split(src, dst, target.values) if entry is out else head_split(dst, src, target.values)
    if split is None or not imap.plain:
        return None
    a, heads, size, extra = split
    if axis != a + extra:
        return None
    merged = IndexMap(copies=heads, period=size)
    if entry is out:  # [.., D, ..] -> [.., H, D/H, ..], entered from the head-feature axis
        link, dim, per_channel = Link(data, a, merged), a + extra, 1
    else:  # [.., H, D/H, ..] -> [.., D, ..]
        link, dim, per_channel = Link(out, a, merged), a, heads
    value = target.values[dim]
    if value is None:
        return blocked(node, "the size of the widened axis is computed at run time")
    if value == 0:
        return blocked(node, "target shape copies a dimension that moves")
    edits = [target.edit(dim, per_channel)] if value > 0 else []
    return Rule(links=[link], edits=edits)


def _same_product(src: list, dst: list) -> bool:
    """Leading dims that hold the same number of rows: equal static products, same dynamic dims."""
    static = [[d for d in dims if isinstance(d, (int, np.integer))] for dims in (src, dst)]
    dynamic = [sorted(str(d) for d in dims if not isinstance(d, (int, np.integer))) for dims in (src, dst)]
    return int(np.prod(static[0], dtype=np.int64)) == int(np.prod(static[1], dtype=np.int64)) and dynamic[0] == dynamic[1]


def _folded_axis(src: list, axis: int, dst: list, target: list) -> tuple[int, int] | None:
    """(axis of ``dst``, entries per channel there) where axis ``axis`` of ``src`` lands when a
    Reshape keeps the rows before it and folds it with trailing dims into one axis; None if it
    does not (split, or merged with a leading dim)."""
    tail = src[axis + 1:]
    if not all(isinstance(d, (int, np.integer)) for d in tail):
        return None
    per_channel = int(np.prod(tail, dtype=np.int64))
    for out_axis in range(len(dst)):
        if not (_same_leading(src[:axis], dst[:out_axis], target[:out_axis]) or _same_product(src[:axis], dst[:out_axis])):
            continue
        out_tail = dst[out_axis + 1:]
        if not all(isinstance(d, (int, np.integer)) for d in out_tail):
            continue
        rows = int(np.prod(out_tail, dtype=np.int64))
        if rows and per_channel % rows == 0:
            return out_axis, per_channel // rows
    return None


def reshape(node: gs.Node, entry: gs.Variable, axis: int, imap: IndexMap) -> Rule:
    """Reshape that keeps the rows before the widened axis and folds it with trailing dims into one
    axis (window partitions, flattening, squeezes; back through it when nothing folds), or
    splits/merges attention heads."""
    data, out = node.inputs[0], node.outputs[0]
    target = shape_target(node, 1)
    if target is None or data.shape is None or out.shape is None:
        return blocked(node, "target shape is not constant")
    heads = reshape_heads(node, entry, axis, imap, target)
    if heads is not None:
        return heads
    src, dst = list(data.shape), list(out.shape)
    if entry is data:
        found = _folded_axis(src, axis, dst, target.values)
        if found is None:
            return blocked(node, "the widened axis is split or merged with leading dims")
        out_axis, block = found
        link, per_channel = Link(out, out_axis, imap.expand(block)), block * imap.block
    else:
        found = _folded_axis(dst, axis, src, [-1] * len(src))
        if found is None or found[1] != 1:
            return blocked(node, "cannot widen a folded tensor back through Reshape")
        out_axis, per_channel = axis, imap.growth(1)
        link = Link(data, found[0], imap)
    value = target.values[out_axis]
    copied = [i for i, v in enumerate(target.values) if v == 0]
    if value is None:
        return blocked(node, "the size of the widened axis is computed at run time")
    if any(i == link.axis or i == out_axis for i in copied) and not (copied == [out_axis] and link.axis == out_axis
                                                                     and per_channel == imap.growth(1)):
        return blocked(node, "target shape copies a dimension that moves")
    edits = [target.edit(out_axis, per_channel)] if value > 0 else []
    return Rule(links=[link], edits=edits)


# --- ops with weights: they create channels (output side) or consume them (input side) -------


def conv(node: gs.Node, entry: gs.Variable, axis: int, imap: IndexMap) -> Rule:
    """Conv: grows filters on the output side, filter inputs on the input side; depthwise passes through."""
    weight = node.inputs[1]
    if not isinstance(weight, gs.Constant) or axis != 1:
        return blocked(node, "needs a constant weight and the channel axis 1")
    group = int(node.attrs.get("group", 1))
    out_channels = weight.shape[0]
    bias = [ParamEdit(node, 2, 0, imap, Role.CHANNEL)] if present(node, 2) is not None else []
    if group == 1:
        if entry is node.outputs[0]:
            return Rule(edits=[ParamEdit(node, 1, 0, imap, Role.OUT), *bias])
        if entry is node.inputs[0]:
            return Rule(edits=[ParamEdit(node, 1, 1, imap, Role.IN)], mixes=True)
    elif group == out_channels and weight.shape[1] == 1 and imap.block == 1:
        other = node.outputs[0] if entry is node.inputs[0] else node.inputs[0]
        edits = [ParamEdit(node, 1, 0, imap, Role.OUT), *bias, AttrEdit(node, "group", 1)]
        return Rule(links=[Link(other, 1, imap)], edits=edits)
    elif imap == group_map(node):  # every group grows alike: k more inputs and outputs in each
        other = node.outputs[0] if entry is node.inputs[0] else node.inputs[0]
        edits = [ParamEdit(node, 1, 0, imap, Role.OUT), ParamEdit(node, 1, 1, IDENTITY, Role.IN), *bias]
        return Rule(links=[Link(other, 1, imap)], edits=edits, mixes=True)
    return blocked(node, f"grouped convolution (group={group}) is entered outside its per-group channel space")


def group_map(node: gs.Node) -> IndexMap | None:
    """The channel space of a grouped (not depthwise) Conv with as many inputs as outputs per group:
    one group's channels, repeated per group. None for other convolutions."""
    weight, group = node.inputs[1], int(node.attrs.get("group", 1))
    if node.op != "Conv" or group == 1 or not isinstance(weight, gs.Constant):
        return None
    per_group = weight.shape[0] // group
    if per_group != weight.shape[1] or per_group == 1:
        return None
    return IndexMap(copies=group, period=per_group)


def conv_transpose(node: gs.Node, entry: gs.Variable, axis: int, imap: IndexMap) -> Rule:
    weight = node.inputs[1]
    if not isinstance(weight, gs.Constant) or axis != 1 or int(node.attrs.get("group", 1)) != 1:
        return blocked(node, "needs a constant weight, group 1 and the channel axis 1")
    if entry is node.outputs[0]:
        bias = [ParamEdit(node, 2, 0, imap, Role.CHANNEL)] if present(node, 2) is not None else []
        return Rule(edits=[ParamEdit(node, 1, 1, imap, Role.OUT), *bias])
    return Rule(edits=[ParamEdit(node, 1, 0, imap, Role.IN)], mixes=True)


def gemm(node: gs.Node, entry: gs.Variable, axis: int, imap: IndexMap) -> Rule:
    """Gemm Y = A'B' + C with constant B: output columns are new rows of B', A's columns new inputs."""
    weight = node.inputs[1]
    if not isinstance(weight, gs.Constant):
        return blocked(node, "weight B is not a constant")
    trans_a, trans_b = int(node.attrs.get("transA", 0)), int(node.attrs.get("transB", 0))
    if entry is node.outputs[0] and axis == 1:
        rule = Rule(edits=[ParamEdit(node, 1, 0 if trans_b else 1, imap, Role.OUT)])
        bias = present(node, 2)
        if bias is not None and rank(bias) is None:
            return blocked(node, "shape of bias C unknown")
        if bias is not None and rank(bias) > 0 and bias.shape[-1] != 1:
            if not isinstance(bias, gs.Constant):
                return blocked(node, "bias C is not a constant")
            rule.edits.append(ParamEdit(node, 2, -1, imap, Role.CHANNEL))
        return rule
    if entry is node.inputs[0] and axis == (0 if trans_a else 1):
        return Rule(edits=[ParamEdit(node, 1, 1 if trans_b else 0, imap, Role.IN)], mixes=True)
    return blocked(node, f"widening axis {axis} of '{entry.name}' (only features can widen)")


def matmul(node: gs.Node, entry: gs.Variable, axis: int, imap: IndexMap) -> Rule:
    """MatMul A[..,M,K] @ B[..,K,N] = Y[..,M,N]: K contracts, M follows A, N follows B."""
    a, b, y = node.inputs[0], node.inputs[1], node.outputs[0]
    ra, rb, ry = rank(a), rank(b), rank(y)
    if None in (ra, rb, ry) or min(ra, rb) < 2:
        return blocked(node, "needs known shapes of rank >= 2")
    # (tensor, axis) pairs that form the same index: K, M, N
    roles = {
        "K": [(a, ra - 1), (b, rb - 2)],
        "M": [(a, ra - 2), (y, ry - 2)],
        "N": [(b, rb - 1), (y, ry - 1)],
    }
    for name, pair in roles.items():
        if any(t is entry and ax == axis for t, ax in pair):
            break
    else:
        return blocked(node, "widening a batch axis")
    rule = Rule(mixes=name == "K")
    for index_in_node, (tensor, ax) in enumerate(pair):
        if tensor is entry:
            continue
        if isinstance(tensor, gs.Constant):
            if rank(tensor) != 2:
                return blocked(node, "constant operand is not a matrix")
            role = Role.IN if name == "K" else Role.OUT
            rule.edits.append(ParamEdit(node, 0 if tensor is a else 1, ax - rank(tensor), imap, role))
        else:
            rule.links.append(Link(tensor, ax, imap))
    return rule


def gather(node: gs.Node, entry: gs.Variable, axis: int, imap: IndexMap) -> Rule:
    """Embedding lookup Gather(table, ids): the table grows along the looked-up feature axis.
    A Gather along another axis (``x[:, 0]``) passes the widened axis through, both ways."""
    data, out = node.inputs[0], node.outputs[0]
    r = rank(data)
    gather_axis = node.attrs.get("axis", 0) % r if r else 0
    if r is None or rank(out) is None:
        return blocked(node, "shapes unknown")
    q = rank(out) - r + 1  # rank of the indices, whose axes replace the gathered one
    if entry is out and isinstance(data, gs.Constant):
        if axis == rank(out) - 1 and gather_axis != r - 1:
            return Rule(edits=[ParamEdit(node, 0, -1, imap, Role.OUT)])
        return blocked(node, "looks up a constant along the widened axis")
    if entry is data and axis != gather_axis:
        return Rule(links=[Link(out, axis if axis < gather_axis else axis + q - 1, imap)])
    if entry is out and (axis < gather_axis or axis >= gather_axis + q):
        return Rule(links=[Link(data, axis if axis < gather_axis else axis - q + 1, imap)])
    return blocked(node, "gathers along the widened axis")


INT_END = 2**31 - 1  # Slice ends at or past this mean "to the end of the axis"


def slice_params(node: gs.Node) -> tuple[list[int], list[int], list[int], list[int]] | None:
    """Constant (starts, ends, axes, steps) of a Slice (axes made non-negative), or None."""
    r = rank(node.inputs[0])
    starts, ends = constant_values(node.inputs[1]), constant_values(node.inputs[2])
    if r is None or starts is None or ends is None:
        return None
    axes = constant_values(node.inputs[3]) if present(node, 3) is not None else np.arange(len(starts))
    steps = constant_values(node.inputs[4]) if present(node, 4) is not None else np.ones(len(starts), np.int64)
    if axes is None or steps is None:
        return None
    return ([int(v) for v in starts], [int(v) for v in ends], [int(a) % r for a in axes], [int(v) for v in steps])


def slice_(node: gs.Node, entry: gs.Variable, axis: int, imap: IndexMap) -> Rule:
    """Slice (``strided_slice``): other axes pass through; the widened axis taken whole passes
    through (a finite end grows); a part of it, entered from the output, sits at its start offset."""
    data, out = node.inputs[0], node.outputs[0]
    params = slice_params(node)
    if params is None or entry not in (data, out):
        return blocked(node, "starts, ends, axes or steps are not constant")
    starts, ends, axes, steps = params
    other = out if entry is data else data
    if axis not in axes:
        return Rule(links=[Link(other, axis, imap)])
    j = axes.index(axis)
    size, start, end = static_dim(data, axis), starts[j], ends[j]
    if size is None or steps[j] != 1 or start < 0 or end < 0:
        return blocked(node, "slices the widened axis with a step, a negative index or an unknown size")
    edits = [] if end >= INT_END else [ShapeEdit(node, 2, j, imap.growth(1))]
    if start == 0 and end >= size:
        return Rule(links=[Link(other, axis, imap)], edits=edits)
    if entry is data:
        return blocked(node, "takes part of the widened axis (the part is widened on its own instead)")
    return Rule(links=[Link(data, axis, imap.shift(start))], edits=edits)


def _picked(consumer: gs.Node, shape: gs.Variable) -> set[int] | None:
    """Entries of a shape vector a Gather or Slice with constant indices reads; None if unknown."""
    n = static_dim(shape, 0)
    if n is None or consumer.inputs[0] is not shape:
        return None
    if consumer.op == "Gather" and isinstance(consumer.inputs[1], gs.Constant):
        return {int(i) % n for i in np.asarray(consumer.inputs[1].values).reshape(-1)}
    if consumer.op == "Slice" and (params := slice_params(consumer)) is not None:
        starts, ends, _, steps = params
        return set(range(n)[slice(starts[0], ends[0], steps[0])])
    return None


def shape_of(node: gs.Node, entry: gs.Variable, axis: int, imap: IndexMap) -> Rule:
    """Shape of a widened tensor is harmless when nothing reads the widened axis's size from it."""
    r = rank(entry)
    if r is None:
        return blocked(node, "shapes unknown")
    start, end, _ = slice(node.attrs.get("start", 0), node.attrs.get("end", r)).indices(r)  # Python's clamping rules
    if not start <= axis < end:
        return Rule()
    for consumer in node.outputs[0].outputs:
        picked = _picked(consumer, node.outputs[0])
        if picked is None or axis - start in picked:
            return blocked(node, f"the widened axis's size is read at run time (by {consumer.op} '{consumer.name}')")
    return Rule()


def expand(node: gs.Node, entry: gs.Variable, axis: int, imap: IndexMap) -> Rule:
    """Expand that keeps the widened axis (shape entry 1, or the full size, which grows)."""
    data, out = node.inputs[0], node.outputs[0]
    target = shape_target(node, 1)
    if target is None or rank(data) is None or rank(out) is None or entry not in (data, out):
        return blocked(node, "shape is not constant")
    shift = rank(out) - rank(data)
    out_axis = axis + shift if entry is data else axis
    if out_axis - shift < 0 or static_dim(data, out_axis - shift) != static_dim(out, out_axis):
        return blocked(node, "broadcasts along the widened axis")
    t_axis = out_axis - (rank(out) - len(target.values))
    value = target.values[t_axis] if t_axis >= 0 else 1
    if value is None:
        return blocked(node, "the size of the widened axis is computed at run time")
    edits = [] if value == 1 else [target.edit(t_axis, imap.growth(1))]
    other = Link(out, out_axis, imap) if entry is data else Link(data, out_axis - shift, imap)
    return Rule(links=[other], edits=edits)


def einsum_terms(node: gs.Node) -> tuple[list[str], str] | None:
    """Input subscripts and output subscripts of an explicit Einsum without ellipsis, or None."""
    equation = str(node.attrs.get("equation", "")).replace(" ", "")
    if "->" not in equation or "." in equation:
        return None
    lhs, rhs = equation.split("->")
    terms = lhs.split(",")
    return (terms, rhs) if len(terms) == len(node.inputs) else None


def einsum(node: gs.Node, entry: gs.Variable, axis: int, imap: IndexMap) -> Rule:
    """Einsum: the widened axis is one index letter; every operand and the output that carry it
    widen with it. A contracted letter is read (mixes); a constant is a weight when it contracts."""
    parsed = einsum_terms(node)
    if parsed is None:
        return blocked(node, "the equation has an implicit output or an ellipsis")
    terms, rhs = parsed
    labels, tensors = [*terms, rhs], [*node.inputs, node.outputs[0]]
    letter = labels[next(i for i, t in enumerate(tensors) if t is entry)][axis]
    if any(label.count(letter) > 1 for label in labels):
        return blocked(node, f"index '{letter}' repeats within an operand")
    contracted = letter not in rhs
    rule = Rule(mixes=contracted)
    for index, (label, tensor) in enumerate(zip(labels, tensors)):
        if tensor is entry or letter not in label:
            continue
        pos = label.index(letter)
        if isinstance(tensor, gs.Constant):
            weight = any(c not in rhs for c in label)
            role = Role.IN if contracted else Role.OUT if weight else Role.CHANNEL
            rule.edits.append(ParamEdit(node, index, pos - len(label), imap, role))
        else:
            rule.links.append(Link(tensor, pos, imap))
    return rule


def einsum_source_axis(node: gs.Node) -> int | None:
    """Output axis of the last index a constant operand brings into an Einsum's output (x @ W)."""
    parsed = einsum_terms(node)
    if parsed is None or len(node.inputs) != 2:
        return None
    terms, rhs = parsed
    for weight, data in ((1, 0), (0, 1)):
        if isinstance(node.inputs[weight], gs.Constant) and not isinstance(node.inputs[data], gs.Constant):
            new = [c for c in rhs if c in terms[weight] and c not in terms[data]]
            return rhs.index(new[-1]) if new else None
    return None


def recurrent(node: gs.Node, entry: gs.Variable, axis: int, imap: IndexMap) -> Rule:
    """LSTM/GRU/RNN read widened input features through the columns of W [dirs, gates*H, in]."""
    data, weight = node.inputs[0], node.inputs[1]
    if entry is data and axis == (rank(data) or 0) - 1 and isinstance(weight, gs.Constant):
        return Rule(edits=[ParamEdit(node, 1, -1, imap, Role.IN)], mixes=True)
    return blocked(node, "widening its hidden state (only its input features can widen)")


UNARY = (
    "Relu LeakyRelu PRelu Sigmoid HardSigmoid HardSwish Tanh Elu Selu Celu Softplus Softsign Gelu Erf "
    "Exp Log Sqrt Reciprocal Neg Abs Floor Ceil Round Sign Sin Cos Identity Dropout Cast Mish "
    "ThresholdedRelu Shrink IsNaN IsInf Not"
).split()
BINARY = "Add Sub Mul Div Pow Max Min Mean Sum Equal Less Greater LessOrEqual GreaterOrEqual And Or Xor".split()
CHANNEL_FIRST = "MaxPool AveragePool GlobalAveragePool GlobalMaxPool LpPool GlobalLpPool".split()
REDUCE = "ReduceMean ReduceSum ReduceMax ReduceMin ReduceProd ReduceL1 ReduceL2 ReduceLogSumExp ReduceSumSquare".split()

HANDLERS: dict[str, Handler] = {
    **{op: passthrough for op in UNARY},
    **{op: elementwise for op in BINARY},
    **{op: channel_first for op in CHANNEL_FIRST},
    **{op: reduce for op in REDUCE},
    "PRelu": elementwise,
    "Where": elementwise,
    "Clip": clip,
    "BatchNormalization": batch_norm,
    "InstanceNormalization": instance_norm,
    "LayerNormalization": layer_norm,
    "Softmax": softmax,
    "LogSoftmax": softmax,
    "Transpose": transpose,
    "Pad": pad,
    "Resize": resize,
    "Upsample": resize,
    "Concat": concat,
    "Split": split,
    "Flatten": flatten,
    "Reshape": reshape,
    "Conv": conv,
    "ConvTranspose": conv_transpose,
    "Gemm": gemm,
    "MatMul": matmul,
    "Gather": gather,
    "Slice": slice_,
    "Shape": shape_of,
    "Expand": expand,
    "Einsum": einsum,
    "LSTM": recurrent,
    "GRU": recurrent,
    "RNN": recurrent,
}


def rule_for(node: gs.Node, entry: gs.Variable, axis: int, imap: IndexMap = IDENTITY) -> Rule:
    """The rule of ``node`` for widening ``entry`` along ``axis``; blocked if the op has none."""
    if node.domain not in (None, "", "ai.onnx"):
        return blocked(node, f"custom domain '{node.domain}' has no widening rule")
    handler = HANDLERS.get(node.op)
    if handler is None:
        return blocked(node, "no widening rule for this op")
    return handler(node, entry, axis, imap)
