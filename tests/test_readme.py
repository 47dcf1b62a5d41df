"""The README's Python example runs and prints the accuracy it claims."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_readme_example_runs_and_its_claimed_accuracy_holds(capsys):
    (block,) = python_blocks()
    namespace = {}
    exec(compile(block, str(README), "exec"), namespace)
    claimed = re.search(r"accuracy on all 10 classes.*# (0\.\d+)", block).group(1)
    printed = capsys.readouterr().out
    assert f"accuracy on all 10 classes: {claimed}" in printed
