"""The load benchmark's 'KDF excluded': it takes out scrypt's own work, not its first-call costs."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from onnxlock.key import recipients

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import bench_load  # noqa: E402


def test_timed_kdf_derives_the_same_key_and_times_only_the_real_derivation(monkeypatch):
    real, calls = recipients.scrypt, []

    def counting(*args):
        calls.append(args[2:])
        return real(*args)
    monkeypatch.setattr(recipients, "scrypt", counting)  # timed_kdf replaces it: undone after the test
    spent = bench_load.timed_kdf()
    assert calls == [(2, 1, 1)]  # the first-call costs, paid at once
    salt, walls = bytes(range(16)), []
    for _ in range(2):
        begin = time.perf_counter()
        key = recipients.scrypt(b"passphrase", salt, 2**12, 8, 1)
        walls.append(time.perf_counter() - begin)
        assert key == real(b"passphrase", salt, 2**12, 8, 1)
    assert calls == [(2, 1, 1), (2**12, 8, 1), (2**12, 8, 1)]
    # only the real derivations are taken out, the first-call costs off the first one's figure
    assert len(spent) == 2 and spent[0][0] < walls[0] and 0 < spent[1][0] <= walls[1]


def test_profile_load_times_every_phase_of_a_load(tmp_path):
    """tools/profile_load.py wraps the loader's own calls by name: a renamed call fails it loudly,
    and a load is timed phase by phase, no time counted twice."""
    import json
    import subprocess

    from onnxlock import lock_model, write_locked

    from conftest import MODELS

    folder = tmp_path / "digits_mlp" / "mask"
    folder.mkdir(parents=True)
    locked = lock_model(MODELS / "digits_mlp.onnx", passphrase=bench_load.PASSPHRASE, seed=0, tries=1,
                        kdf_params=bench_load.CHEAP_KDF, method="mask")
    write_locked(locked, folder / "locked.onnx", folder / "model.key")
    tool = Path(__file__).resolve().parent.parent / "tools" / "profile_load.py"
    out = subprocess.run([sys.executable, str(tool), "digits_mlp", "mask", "--cache", str(tmp_path), "--child", "2"],
                         capture_output=True, text=True, check=True).stdout
    import bench_start
    bench_start.with_identity(folder)  # the device identity --identity opens the key by
    (folder / "model.key").write_bytes(b"not a key")  # so only the identity's key can open the model
    by_identity = subprocess.run([sys.executable, str(tool), "digits_mlp", "mask", "--cache", str(tmp_path),
                                  "--identity", "--child", "1"], capture_output=True, text=True, check=True).stdout
    for row in json.loads(out) + json.loads(by_identity):
        assert {"option checks", "parse key", "open key", "restore (small tensors)", "onnxruntime"} <= set(row)
        assert row["onnxruntime"] > 0 and row["total"] > row["onnxruntime"]
        assert row["rest"] > 0  # no phase counted twice (a wrapped call inside another)


def test_bench_start_times_a_locked_start_without_the_kdf(tmp_path):
    """tools/bench_start.py's child: imports, creation (scrypt's own work out) and a first answer."""
    import json
    import os
    import subprocess

    from onnxlock import lock_model, write_locked

    from conftest import MODELS

    folder = tmp_path / "digits_mlp"
    (folder / "mask").mkdir(parents=True)
    locked = lock_model(MODELS / "digits_mlp.onnx", passphrase=bench_load.PASSPHRASE, seed=0, tries=1,
                        kdf_params=bench_load.CHEAP_KDF, method="mask")
    write_locked(locked, folder / "mask" / "locked.onnx", folder / "mask" / "model.key")
    tool = Path(__file__).resolve().parent.parent / "tools" / "bench_start.py"
    env = {**os.environ, "ONNXLOCK_PASSPHRASE": bench_load.PASSPHRASE}
    out = subprocess.run([sys.executable, str(tool), "--child", "locked", str(folder / "mask")], env=env,
                         capture_output=True, text=True, check=True).stdout
    row = json.loads(out.splitlines()[-1])
    assert all(row[phase] > 0 for phase in ("import_ms", "create_ms", "first_ms"))
    assert row["kdf_ms"] > 0  # the key's derivation was seen, and taken out of creation


def test_bench_threads_reports_both_kdfs(tmp_path):
    """tools/bench_threads.py runs both scrypt implementations on a real lock and reports each figure."""
    import json
    import subprocess

    tool = Path(__file__).resolve().parent.parent / "tools" / "bench_threads.py"
    out = tmp_path / "threads.json"
    subprocess.run([sys.executable, str(tool), "--repeat", "1", "--n", str(2**12), "--out", str(out)],
                   capture_output=True, text=True, check=True)
    report = json.loads(out.read_text())
    assert report["kdf"] == {"n": 2**12, "r": 8, "p": 1} and report["plain_stall_ms"] > 0
    for name in ("stdlib", "cryptography"):
        figures = report[name]
        assert figures["alone_ms"] > 0 and figures["two_ms"] > 0 and figures["stall_ms"] > 0
        assert figures["two_ratio"] == round(figures["two_ms"] / figures["alone_ms"], 2)


def test_bench_ab_times_two_checkouts_and_plain_side_by_side(tmp_path):
    """tools/bench_ab.py: each version's creation and plain creation, in fresh processes, per round."""
    import json
    import shutil
    import subprocess

    from onnxlock import lock_model, write_locked

    from conftest import MODELS

    folder = tmp_path / "digits_mlp" / "mask"
    folder.mkdir(parents=True)
    shutil.copy(MODELS / "digits_mlp.onnx", folder.parent / "original.onnx")
    locked = lock_model(MODELS / "digits_mlp.onnx", passphrase=bench_load.PASSPHRASE, seed=0, tries=1,
                        kdf_params=bench_load.CHEAP_KDF, method="mask")
    write_locked(locked, folder / "locked.onnx", folder / "model.key")
    root = Path(__file__).resolve().parent.parent
    subprocess.run([sys.executable, str(root / "tools" / "bench_ab.py"), str(root), str(root), "--models", "digits_mlp",
                    "--rounds", "2", "--cache", str(tmp_path), "--out", str(tmp_path / "ab.json")],
                   capture_output=True, text=True, check=True)
    [row] = json.loads((tmp_path / "ab.json").read_text())["results"]
    assert {label: len(times) for label, times in row["runs_ms"].items()} == {"before": 2, "after": 2, "plain": 2}
    assert all(t > 0 for times in row["runs_ms"].values() for t in times)
    assert row["ratio_vs_plain"]["after"] == row["median_ms"]["after"] / row["median_ms"]["plain"]


def test_side_by_side_runs_for_its_time_budget_past_the_steady_pairs(tmp_path, monkeypatch):
    """bench_load's side-by-side latency: 2 x ``steady`` pairs at least, more while ``seconds`` last."""
    import shutil

    from onnxlock import lock_model, write_locked

    from conftest import MODELS

    monkeypatch.setattr(recipients, "scrypt", recipients.scrypt)  # timed_kdf replaces it: undone after the test
    folder = tmp_path / "digits_mlp"
    (folder / "mask").mkdir(parents=True)
    shutil.copy(MODELS / "digits_mlp.onnx", folder / "original.onnx")
    locked = lock_model(MODELS / "digits_mlp.onnx", passphrase=bench_load.PASSPHRASE, seed=0, tries=1,
                        kdf_params=bench_load.CHEAP_KDF, method="mask")
    write_locked(locked, folder / "mask" / "locked.onnx", folder / "mask" / "model.key")
    counted = bench_load.side_by_side(folder / "mask", steady=3, seconds=0.0)
    assert counted["batch1_runs"] == counted["batch32_runs"] == 6
    timed = bench_load.side_by_side(folder / "mask", steady=3, seconds=0.3)
    assert timed["batch1_runs"] > 6 and timed["batch32_runs"] > 6 and timed["side_seconds"] == 0.3
    assert 0.5 < timed["batch1"] < 2 and 0.5 < timed["batch32"] < 2  # the same model, run the same way
