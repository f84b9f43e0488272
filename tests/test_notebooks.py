"""The committed notebooks themselves: what a reader of the site sees must come from a clean run, without noise."""
import json
from pathlib import Path
import pytest

NBS = sorted((Path(__file__).resolve().parents[1]/"nbs").glob("*.ipynb"))

@pytest.mark.parametrize("path", NBS, ids=[p.name for p in NBS])
def test_no_stderr_in_committed_outputs(path):
    "Warnings, progress bars and log lines belong in a terminal: a notebook shows them on stdout, checked, or not at all"
    cells = json.loads(path.read_text())["cells"]
    bad = [(i, "".join(o["text"])[:120]) for i, c in enumerate(cells) for o in c.get("outputs", [])
           if o.get("output_type") == "stream" and o.get("name") == "stderr"]
    assert not bad, f"{path.name}: stderr output in cell(s) {bad}"
