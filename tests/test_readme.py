"""The README's commands are run here, so the docs cannot rot."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from onnxlock.cli import main

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def code_block_after(heading: str) -> list[str]:
    section = README.split(heading, 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def test_quick_start_is_two_commands_that_work(capsys):
    lines = code_block_after("## Quick start")
    assert len(lines) == 2
    install, demo = lines[0].split(" && ")
    assert install == "pip install ." and demo == "onnxlock demo"
    assert main(shlex.split(demo)[1:]) == 0
    assert "max |restored - original|: 0.0" in capsys.readouterr().out
    assert "pytest" in lines[1] and "'.[test]'" in lines[1]


def test_every_documented_verb_exists(capsys):
    verbs = {line.split()[1] for line in code_block_after("## Using it") if line.startswith("onnxlock ")}
    assert verbs == {"lock", "run", "unlock", "inspect", "demo", "keygen", "rekey", "trace", "attack"}
    for verb in sorted(verbs):
        assert main([verb, "--help"]) == 0
        assert "usage: onnxlock" in capsys.readouterr().out
