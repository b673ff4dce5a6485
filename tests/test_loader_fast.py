"""The fast loader: exact outputs on every optimisation level, every input kind, integrity checks."""

from __future__ import annotations

import gc
import io
import os
import subprocess
import sys
import threading

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxlock import KeyFormatError, ModelMismatchError, OnnxlockError, lock_model, load_session, write_locked
from onnxlock.key import open_key, read_header, seal
from onnxlock.passes import secret_layers
from onnxlock.runtime import fast
from onnxlock.runtime.options import CARRIED_CONFIG_ENTRIES, copy_options
from onnxlock.runtime.restore import RESTORED_TENSORS
from onnxlock.runtime.wire import scan

from conftest import CHEAP_KDF, MODELS, PASSPHRASE

MODEL_NAMES = ["digits_mlp", "digits_cnn", "digits_resnet", "digits_transformer"]
LEVELS = [ort.GraphOptimizationLevel.ORT_DISABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
          ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, ort.GraphOptimizationLevel.ORT_ENABLE_ALL]


@pytest.fixture(scope="module")
def locked_models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fast")
    result = {}
    for name in MODEL_NAMES:
        method = "confusion,mask" if name == "digits_resnet" else "mask"  # the default, and one stack
        locked = lock_model(MODELS / f"{name}.onnx", passphrase=PASSPHRASE, seed=0, kdf_params=CHEAP_KDF, tries=2,
                            method=method)
        paths = (folder / f"{name}.onnx", folder / f"{name}.key")
        write_locked(locked, *paths)
        result[name] = paths
    return result


@pytest.fixture(autouse=True)
def weights_outside_the_model(monkeypatch):
    """The bundled models are small enough to be restored whole: these tests exercise the skeleton."""
    monkeypatch.setattr(fast, "INLINE_BYTES", 0)


def outputs(session, digits):
    feeds = {i.name: digits[i.name][:64] for i in session.get_inputs()}
    return session.run(None, feeds)


@pytest.mark.parametrize("level", LEVELS, ids=lambda level: level.name)
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_fast_path_is_bit_identical_on_every_optimisation_level(name, level, locked_models, digits, fast_calls):
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    session = load_session(*locked_models[name], passphrase=PASSPHRASE, providers="cpu", sess_options=options)
    plain = ort.InferenceSession(str(MODELS / f"{name}.onnx"), options, providers=["CPUExecutionProvider"])
    assert fast_calls and fast_calls[-1] is not None
    got, want = outputs(session, digits), outputs(plain, digits)
    assert all(np.array_equal(a, b) for a, b in zip(got, want))
    # the locked model computes something else, so the session really holds restored weights
    locked = ort.InferenceSession(str(locked_models[name][0]), providers=["CPUExecutionProvider"])
    assert not np.array_equal(outputs(locked, digits)[0], want[0])


def test_the_callers_session_options_are_not_changed(locked_models):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    for _ in range(2):  # reusing the options object is fine
        session = load_session(*locked_models["digits_mlp"], passphrase=PASSPHRASE, providers="cpu",
                               sess_options=options)
        assert session.get_session_options().intra_op_num_threads == 1
    with pytest.raises(Exception):
        options.get_session_config_entry(fast.FOLDER_ENTRY)


def test_the_callers_config_entries_are_carried(locked_models, digits):
    """Every carried entry reaches the loader's own options; a few, set to values that change how
    onnxruntime builds the session, reach the session it returns, which computes what plain does
    with the same options."""
    options = ort.SessionOptions()
    for entry in CARRIED_CONFIG_ENTRIES:
        options.add_session_config_entry(entry, "0")
    copied = copy_options(options)
    assert {entry: copied.get_session_config_entry(entry) for entry in CARRIED_CONFIG_ENTRIES} == \
        dict.fromkeys(CARRIED_CONFIG_ENTRIES, "0")
    chosen = {"session.intra_op.allow_spinning": "0", "session.set_denormal_as_zero": "1",
              "optimization.enable_gelu_approximation": "1", "session.graph_optimizations_loop_level": "1",
              "session.disable_prepacking": "1"}
    options = ort.SessionOptions()
    for entry, value in chosen.items():
        options.add_session_config_entry(entry, value)
    session = load_session(*locked_models["digits_transformer"], passphrase=PASSPHRASE, providers="cpu",
                           sess_options=options)
    built = session.get_session_options()
    assert {entry: built.get_session_config_entry(entry) for entry in chosen} == chosen
    plain = ort.InferenceSession(str(MODELS / "digits_transformer.onnx"), options, providers=["CPUExecutionProvider"])
    assert all(np.array_equal(a, b) for a, b in zip(outputs(session, digits), outputs(plain, digits)))


@pytest.mark.parametrize("kind", ["bytes", "file object", "full"])
def test_bytes_file_objects_and_full_verification_give_the_same_session(kind, locked_models, digits, fast_calls):
    model_path, key_path = locked_models["digits_cnn"]
    if kind == "bytes":
        session = load_session(model_path.read_bytes(), key_path.read_bytes(), passphrase=PASSPHRASE, providers="cpu")
    elif kind == "file object":
        session = load_session(io.BytesIO(model_path.read_bytes()), open(key_path, "rb"), passphrase=lambda: PASSPHRASE,
                               providers="cpu")
    else:
        session = load_session(model_path, key_path, passphrase=PASSPHRASE, providers="cpu", verify="full")
    assert fast_calls == ([] if kind == "full" else fast_calls[:1]) and all(c is not None for c in fast_calls)
    plain = ort.InferenceSession(str(MODELS / "digits_cnn.onnx"), providers=["CPUExecutionProvider"])
    assert np.array_equal(outputs(session, digits)[0], outputs(plain, digits)[0])


def largest_untouched(model_path, key_path):
    data = model_path.read_bytes()
    secret = open_key(key_path.read_bytes(), passphrase=PASSPHRASE)
    spans = [s for s in scan(data).initializers if s.data and s.name not in secret[RESTORED_TENSORS]]
    return data, max(spans, key=lambda s: s.nbytes)


@pytest.mark.parametrize("verify", ["fast", "full"])
def test_an_altered_untouched_weight_discards_the_session(verify, locked_models, tmp_path):
    model_path, key_path = locked_models["digits_cnn"]
    data, span = largest_untouched(model_path, key_path)
    altered = bytearray(data)
    altered[span.data[0] + 1] ^= 0x40
    (tmp_path / "altered.onnx").write_bytes(bytes(altered))
    with pytest.raises(ModelMismatchError, match="altered"):
        load_session(tmp_path / "altered.onnx", key_path, passphrase=PASSPHRASE, providers="cpu", verify=verify)


@pytest.mark.parametrize("case", ["advparams (fast path)", "default (full path)"])
def test_a_wrong_restore_of_a_touched_tensor_is_caught(case, locked_models, tmp_path):
    """A digest the restore disagrees with is refused where digests are checked: on the fast path
    for shortcuts that are not the pass's own restore code (advparams), and always on the full one."""
    model_path, key_path = locked_models["digits_mlp"]
    if case.startswith("advparams"):
        pytest.importorskip("torch")
        with np.load(MODELS / "digits_calib.npz") as data:
            locked = lock_model(MODELS / "digits_mlp.onnx", passphrase=PASSPHRASE, kdf_params=CHEAP_KDF, seed=0,
                                method="advparams", calibration={"pixels": data["pixels"][:64]}, max_weights=8)
        model_path, key_path = tmp_path / "adv.onnx", tmp_path / "adv.key"
        write_locked(locked, model_path, key_path)
    secret = open_key(key_path.read_bytes(), passphrase=PASSPHRASE)
    name = sorted(secret[RESTORED_TENSORS])[0]
    secret[RESTORED_TENSORS][name] = "0" * 64
    header = read_header(key_path.read_bytes())
    forged = seal(secret, model_sha256=header["model_sha256"], method=header["method"], passphrase=PASSPHRASE,
                  kdf_params=CHEAP_KDF)
    with pytest.raises(ModelMismatchError, match="does not match the original"):
        load_session(model_path, forged, passphrase=PASSPHRASE, providers="cpu",
                     verify="fast" if case.startswith("advparams") else "full")


@pytest.mark.parametrize("change", ["older key", "stacked"])
def test_older_keys_take_the_slow_path_and_stacks_the_fast_one(change, locked_models, digits, fast_calls):
    model_path, key_path = locked_models["digits_resnet"]
    secret = open_key(key_path.read_bytes(), passphrase=PASSPHRASE)
    if change == "older key":
        del secret[RESTORED_TENSORS]
    else:  # this model's lock is already a stack (confusion channels, then the mask)
        assert [layer["method"] for layer in secret_layers(secret)] == ["confusion", "mask"]
    header = read_header(key_path.read_bytes())
    key = seal(secret, model_sha256=header["model_sha256"], method=header["method"], passphrase=PASSPHRASE,
               kdf_params=CHEAP_KDF)
    session = load_session(model_path, key, passphrase=PASSPHRASE, providers="cpu")
    assert (fast_calls[-1] is None) == (change == "older key")
    plain = ort.InferenceSession(str(MODELS / "digits_resnet.onnx"), providers=["CPUExecutionProvider"])
    assert np.array_equal(outputs(session, digits)[0], outputs(plain, digits)[0])


def test_concurrent_loads_in_threads(locked_models, digits):
    plain = ort.InferenceSession(str(MODELS / "digits_transformer.onnx"), providers=["CPUExecutionProvider"])
    want = outputs(plain, digits)[0]
    results, errors = [], []

    def load():
        try:
            session = load_session(*locked_models["digits_transformer"], passphrase=PASSPHRASE, providers="cpu")
            results.append(np.array_equal(outputs(session, digits)[0], want))
        except Exception as exc:  # collected: an assert in a thread would be lost
            errors.append(exc)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and results == [True] * 4


def test_key_data_passed_as_a_path_is_not_echoed(locked_models):
    model_path, key_path = locked_models["digits_mlp"]
    text = key_path.read_text()
    payload = text.splitlines()[2][:40]
    for wrong in (text, text.splitlines()[2]):
        with pytest.raises(KeyFormatError) as caught:
            load_session(model_path, type("P", (), {"__fspath__": lambda self: wrong})(), passphrase=PASSPHRASE,
                         providers="cpu")
        assert payload not in str(caught.value) and len(str(caught.value)) < 200


def test_a_path_too_long_for_the_file_system_is_a_key_error_not_echoed(locked_models):
    """The check for an interrupted write looks for a journal beside the key: a name no file system
    holds (key data with a '/' cut into >255-character parts) has none, and the read says so."""
    model_path, _ = locked_models["digits_mlp"]
    secret_text = "A" * 300 + "/" + "B" * 300
    with pytest.raises(KeyFormatError) as caught:
        load_session(model_path, type("P", (), {"__fspath__": lambda self: secret_text})(), passphrase=PASSPHRASE,
                     providers="cpu")
    assert "AAAA" not in str(caught.value) and len(str(caught.value)) < 200


@pytest.mark.parametrize("providers", ["gpu", ["CPU"], [("CPUExecutionProvider", "x")], 3])
def test_unknown_provider_names_are_refused(providers, locked_models):
    with pytest.raises(OnnxlockError, match="provider"):
        load_session(*locked_models["digits_mlp"], passphrase=PASSPHRASE, providers=providers)


@pytest.mark.parametrize("method", ["advparams", "confusion,advparams,signflip"])
def test_advparams_locks_take_the_fast_path(method, tmp_path, digits, fast_calls):
    pytest.importorskip("torch")
    with np.load(MODELS / "digits_calib.npz") as data:
        locked = lock_model(MODELS / "digits_cnn.onnx", passphrase=PASSPHRASE, kdf_params=CHEAP_KDF, seed=0,
                            method=method, calibration={"pixels": data["pixels"][:64]}, max_weights=16)
    write_locked(locked, tmp_path / "m.onnx", tmp_path / "m.key")
    session = load_session(tmp_path / "m.onnx", tmp_path / "m.key", passphrase=PASSPHRASE, providers="cpu")
    plain = ort.InferenceSession(str(MODELS / "digits_cnn.onnx"), providers=["CPUExecutionProvider"])
    assert fast_calls and fast_calls[-1] is not None
    assert np.array_equal(outputs(session, digits)[0], outputs(plain, digits)[0])


def embedding_model() -> onnx.ModelProto:
    """y = Gather(T1, ids) @ W + Gather(T2, [3]): T1 is only ever looked up; the lock's
    normalisation folds the second Gather (constant indices) and keeps T2, now unread, for the
    exact restore."""
    rng = np.random.default_rng(0)
    weights = {"T1": rng.standard_normal((64, 32)).astype(np.float32),
               "W": rng.standard_normal((32, 32)).astype(np.float32),
               "T2": rng.standard_normal((64, 32)).astype(np.float32), "three": np.array([3], np.int64)}
    nodes = [helper.make_node("Gather", ["T1", "ids"], ["e"]), helper.make_node("MatMul", ["e", "W"], ["a"]),
             helper.make_node("Gather", ["T2", "three"], ["b"]), helper.make_node("Add", ["a", "b"], ["y"])]
    graph = helper.make_graph(nodes, "embedding", [helper.make_tensor_value_info("ids", TensorProto.INT64, [None])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 32])],
                              [numpy_helper.from_array(value, name) for name, value in weights.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_only_looked_up_tables_are_lent_in_place(tmp_path):
    """On CPU from a file, a Gather table is lent (no copy: the session keeps it); a MatMul weight
    is copied in (onnxruntime packs it into its own copy: a lent one would be held twice); the
    unread T2 is not given at all (onnxruntime drops unused initializers, then refused it given
    in: every such model failed to load from 4 MiB on)."""
    model = embedding_model()
    locked = lock_model(model, passphrase=PASSPHRASE, method="mask", kdf_params=CHEAP_KDF)
    write_locked(locked, tmp_path / "m.onnx", tmp_path / "m.key")
    session = load_session(tmp_path / "m.onnx", tmp_path / "m.key", passphrase=PASSPHRASE, providers="cpu")
    table = numpy_helper.to_array(model.graph.initializer[0])
    assert [array.tobytes() for array, _ in session._onnxlock_lent] == [table.tobytes()]  # T1 only
    gc.collect()  # nothing the session computes with may be freed once load_session returns
    ids = np.array([0, 5, 63, 5])
    plain = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert np.array_equal(session.run(None, {"ids": ids})[0], plain.run(None, {"ids": ids})[0])


@pytest.mark.parametrize("inline", [True, False], ids=["whole", "skeleton"])
def test_initializers_no_node_reads_are_not_given_to_onnxruntime(tmp_path, monkeypatch, capfd, inline):
    """Originals normalisation folded stay in the locked file for the exact restore, but the session
    is built without them: onnxruntime would drop each with a warning line on every load."""
    if inline:
        monkeypatch.setattr(fast, "INLINE_BYTES", 4 << 20)
    model = embedding_model()
    write_locked(lock_model(model, passphrase=PASSPHRASE, method="mask", kdf_params=CHEAP_KDF),
                 tmp_path / "m.onnx", tmp_path / "m.key")
    assert "T2" in {t.name for t in onnx.load(tmp_path / "m.onnx").graph.initializer}
    session = load_session(tmp_path / "m.onnx", tmp_path / "m.key", passphrase=PASSPHRASE, providers="cpu")
    ids = np.array([1, 2])
    plain = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert np.array_equal(session.run(None, {"ids": ids})[0], plain.run(None, {"ids": ids})[0])
    assert "Removing initializer" not in capfd.readouterr().err


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads the RSS from /proc")
def test_restored_matmul_weights_are_not_kept_beside_the_sessions_own(tmp_path):
    """After load_session returns, the process holds about what a plain session holds: the restored
    arrays given in are freed (measured in fresh processes; a lent MatMul weight would add its
    whole size, 64 MiB here)."""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array((rng.standard_normal((2048, 2048)) / 45).astype(np.float32), f"w{i}")
               for i in range(4)]
    nodes = [helper.make_node("MatMul", ["x" if i == 0 else f"h{i - 1}", f"w{i}"], [f"h{i}"]) for i in range(4)]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2048])],
                              [helper.make_tensor_value_info("h3", TensorProto.FLOAT, [None, 2048])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, tmp_path / "plain.onnx")
    locked = lock_model(model, passphrase=PASSPHRASE, kdf_params=CHEAP_KDF)
    write_locked(locked, tmp_path / "m.onnx", tmp_path / "m.key")
    script = """
import sys
import numpy as np, onnxruntime as ort
from onnxlock import load_session
def rss():
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmRSS")) / 1024
folder, mode = sys.argv[1], sys.argv[2]
before = rss()
if mode == "plain":
    session = ort.InferenceSession(folder + "/plain.onnx", providers=["CPUExecutionProvider"])
else:
    session = load_session(folder + "/m.onnx", folder + "/m.key", passphrase=sys.argv[3], providers="cpu")
session.run(None, {"x": np.ones((1, 2048), np.float32)})
print(rss() - before)
"""
    held = {mode: float(subprocess.run([sys.executable, "-c", script, str(tmp_path), mode, PASSPHRASE], check=True,
                                       capture_output=True, text=True).stdout) for mode in ("plain", "locked")}
    assert held["locked"] - held["plain"] < 16, held  # MiB, against 64 MiB of weights


@pytest.mark.parametrize("level", LEVELS, ids=lambda level: level.name)
def test_a_lent_weight_an_optimiser_reads_is_copied_in_instead(level, locked_models, digits, monkeypatch):
    """Conv weights, which graph optimisers read from the basic level on, lent anyway: the in-place
    try fails loudly and the session is created again with copies, computing the original."""
    monkeypatch.setattr(fast, "shareable", lambda graph, names: set(names))
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    session = load_session(*locked_models["digits_cnn"], passphrase=PASSPHRASE, providers="cpu",
                           sess_options=options)
    reads = level != ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    assert hasattr(session, "_onnxlock_lent") != reads
    plain = ort.InferenceSession(str(MODELS / "digits_cnn.onnx"), options, providers=["CPUExecutionProvider"])
    assert np.array_equal(outputs(session, digits)[0], outputs(plain, digits)[0])


def test_a_refused_in_place_try_logs_nothing(locked_models, monkeypatch, capfd):
    """The in-place try that an optimiser refuses is retried: its error is not shown to the caller
    (with onnxruntime's default log level, -1, as much as with an explicit one)."""
    monkeypatch.setattr(fast, "shareable", lambda graph, names: set(names))
    session = load_session(*locked_models["digits_cnn"], passphrase=PASSPHRASE, providers="cpu")
    assert not hasattr(session, "_onnxlock_lent")  # the retry made it
    assert "Exception during initialization" not in capfd.readouterr().err


def test_many_tensors_share_one_key_schedule(tmp_path, monkeypatch):
    """A model of 300 small MatMul weights (over the inline size, so the skeleton path): the mask's
    key schedule is made once for the large tensors, not once per tensor (2,000 tensors took 0.9-1.4 s
    that way against 0.5-0.6 s), and the restored session computes what the original does."""
    from onnxlock.passes.flip_signs import MaskPass

    rng, d, nodes, weights, previous = np.random.default_rng(0), 64, [], [], "x"
    for i in range(300):
        weights.append(numpy_helper.from_array((rng.standard_normal((d, d)) / 8).astype(np.float32), f"w{i}"))
        nodes.append(helper.make_node("MatMul", [previous, f"w{i}"], [f"h{i}"]))
        previous = f"h{i}"
    graph = helper.make_graph(nodes, "many", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, d])],
                              [helper.make_tensor_value_info(previous, TensorProto.FLOAT, [1, d])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    locked = lock_model(model, passphrase=PASSPHRASE, kdf_params=CHEAP_KDF)
    assert len(locked.model) > fast.INLINE_BYTES
    schedules, real = [], MaskPass.transform_for.__func__
    monkeypatch.setattr(MaskPass, "transform_for", classmethod(lambda cls, secret: schedules.append(1) or real(cls, secret)))
    calls = []
    monkeypatch.setattr(fast, "_prepare_layout", lambda *args, _real=fast._prepare_layout: calls.append(1) or _real(*args))
    session = load_session(locked.model, locked.key, passphrase=PASSPHRASE)
    x = {"x": rng.standard_normal((1, d)).astype(np.float32)}
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, x)[0]
    assert calls and len(schedules) <= 2  # the large tensors' restorer, and the skeleton's restore
    assert session.run(None, x)[0].tobytes() == want.tobytes()


def test_an_initializer_only_a_subgraph_reads_is_kept():
    """drop_unread looks inside If branches (and their branches): what a subgraph reads stays."""
    def branch(name, reads):
        out = helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, [2])
        return helper.make_graph([helper.make_node("Add", ["x", reads], [f"{name}_out"])], name, [], [out])

    inner = helper.make_node("If", ["c"], ["deep_out"], then_branch=branch("deep_then", "W_deep"),
                             else_branch=branch("deep_else", "W_deep"))
    deep_out = helper.make_tensor_value_info("deep_out", TensorProto.FLOAT, [2])
    nested = helper.make_graph([inner], "nested", [], [deep_out])
    outer = helper.make_node("If", ["c"], ["y"], then_branch=branch("then", "W_then"), else_branch=nested)
    weights = [numpy_helper.from_array(np.ones(2, np.float32), name) for name in ("W_then", "W_deep", "W_unread")]
    graph = helper.make_graph([outer], "g", [helper.make_tensor_value_info("c", TensorProto.BOOL, []),
                                             helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])], weights)
    model = helper.make_model(graph)
    assert fast.drop_unread(model) == {"W_unread"}
    assert [t.name for t in model.graph.initializer] == ["W_then", "W_deep"]


def _resealed(key_path, change) -> bytes:
    """The key at ``key_path`` with its secret changed by ``change`` and sealed again (same header)."""
    secret = open_key(key_path.read_bytes(), passphrase=PASSPHRASE)
    change(secret)
    header = read_header(key_path.read_bytes())
    return seal(secret, model_sha256=header["model_sha256"], method=header["method"], passphrase=PASSPHRASE,
                kdf_params=CHEAP_KDF)


def test_the_fast_path_checks_the_files_tag_not_its_sha256(locked_models, monkeypatch):
    """A new key's secret carries a Poly1305 tag of the locked file; the fast loader checks it (no
    SHA-256 of the file is computed), and a wrong tag is refused though the file is the key's."""
    from onnxlock import binding
    from onnxlock.key.fields import b64encode
    from onnxlock.runtime.source import LockedSource

    model_path, key_path = locked_models["digits_cnn"]  # 190 KB: hashed in a thread
    secret = open_key(key_path.read_bytes(), passphrase=PASSPHRASE)
    assert set(secret[binding.MAC]) == {"model"}
    assert binding.matches(binding.tag_file(model_path, binding.expected(secret, "model")[0]),
                           binding.expected(secret, "model"))

    def no_sha256(*_):
        raise AssertionError("the SHA-256 was computed")
    with monkeypatch.context() as patch:
        patch.setattr(LockedSource, "_hash_bytes", staticmethod(no_sha256))
        patch.setattr(LockedSource, "_hash_file", staticmethod(no_sha256))
        load_session(model_path, key_path, passphrase=PASSPHRASE, providers="cpu")

    def wrong_tag(secret):
        secret[binding.MAC]["model"]["tag"] = b64encode(bytes(16))
    with pytest.raises(ModelMismatchError, match="tag"):
        load_session(model_path, _resealed(key_path, wrong_tag), passphrase=PASSPHRASE, providers="cpu")


def test_a_key_without_tags_is_checked_by_the_sha256(locked_models, tmp_path):
    model_path, key_path = locked_models["digits_cnn"]
    older = _resealed(key_path, lambda secret: secret.pop("mac"))
    load_session(model_path, older, passphrase=PASSPHRASE, providers="cpu")
    data, span = largest_untouched(model_path, key_path)
    altered = bytearray(data)
    altered[span.data[0] + 1] ^= 0x40
    (tmp_path / "altered.onnx").write_bytes(bytes(altered))
    with pytest.raises(ModelMismatchError, match="altered"):
        load_session(tmp_path / "altered.onnx", older, passphrase=PASSPHRASE, providers="cpu")


def test_an_onnxruntime_error_after_the_tag_started_is_reported_as_itself(locked_models):
    """The file is the key's: creation's own failure is what the caller hears, not a binding error."""
    model_path, key_path = locked_models["digits_cnn"]
    options = ort.SessionOptions()
    options.add_session_config_entry("session.disable_cpu_ep_fallback", "1")  # refused beside the CPU EP
    with pytest.raises(OnnxlockError, match="onnxruntime cannot load") as caught:
        load_session(model_path, key_path, passphrase=PASSPHRASE, providers="cpu", sess_options=options)
    assert not isinstance(caught.value, ModelMismatchError)
