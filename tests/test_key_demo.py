"""`onnxlock demo --workdir DIR` leaves a key the user can open with what it prints."""

import re
import shlex

import numpy as np


def test_demo_workdir_key_opens_with_the_printed_command(cli, tmp_path, digits, monkeypatch):
    monkeypatch.delenv("ONNXLOCK_PASSPHRASE", raising=False)
    result = cli("demo", "--workdir", tmp_path / "demo")
    assert result.code == 0, result.err
    line = re.search(r"open them with the demo passphrase: (.*)", result.out).group(1)
    words = shlex.split(line)
    name, passphrase = words[0].split("=", 1)
    assert name == "ONNXLOCK_PASSPHRASE" and len(passphrase) >= 12
    monkeypatch.setenv(name, passphrase)
    np.savez(tmp_path / "x.npz", pixels=digits["pixels"][:8])
    args = [tmp_path / "x.npz" if w == "BATCH.npz" else tmp_path / "y.npz" if w == "out.npz" else w for w in words[2:]]
    opened = cli(*args)
    assert opened.code == 0, opened.err
    assert (tmp_path / "y.npz").exists()
