"""The README's Python blocks run as written (in a temporary folder), so the front door never
shows code that does not work."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_python_blocks_run(tmp_path, monkeypatch, capsys):
    blocks = _python_blocks()
    assert len(blocks) >= 2
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "readme"}
    for block in blocks:  # later blocks use the names of earlier ones, as a reader would
        exec(compile(block, str(README), "exec"), namespace)
    assert (tmp_path / "group.json").is_file()
    assert "DiscoveredGroup(dim=1, d=3" in capsys.readouterr().out
