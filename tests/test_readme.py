"""The README's Python examples run and print what they claim."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_example_runs_and_prints_what_it_claims(block, capsys):
    exec(compile(block, str(README), "exec"), {})
    printed = capsys.readouterr().out
    # A print(...) line whose comment states the output: "print(x)  # output".
    claims = re.findall(r"^print\(.*?\)\s+#\s+(.+)$", block, flags=re.M)
    for claim in claims:
        assert claim.strip() in printed, (claim, printed)


def test_readme_has_examples_with_claims():
    assert len(BLOCKS) >= 2
    assert all(re.search(r"^print\(.*#", block, flags=re.M) for block in BLOCKS)
