#!/usr/bin/env python
"""Write README.md from nbs/index.ipynb without Quarto (which `nbdev_readme` needs).

Markdown cells are copied; code cells that are not hidden or exported are shown as ```python blocks with their text
outputs. `--check` exits 1 if README.md is out of date (tests/test_packaging.py runs it).
"""
import json, re, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMAGE = re.compile(r"\]\((images/)")   # the notebook's images are in nbs/images/, next to it; the README is one level up
SKIP = re.compile(r"^\s*#\s*\|\s*(hide|export|exporti|exports|default_exp)\b", re.M)

def render(nb_path=ROOT/"nbs"/"index.ipynb") -> str:
    nb = json.loads(Path(nb_path).read_text())
    parts = []
    for c in nb["cells"]:
        src = "".join(c["source"]).strip()
        if c["cell_type"] == "markdown": parts.append(IMAGE.sub(r"](nbs/\1", src)); continue
        if c["cell_type"] != "code" or SKIP.search(src) or not src: continue
        parts.append(f"```python\n{src}\n```")
        text = "".join("".join(o.get("text", "")) if o["output_type"] == "stream" else "".join(o.get("data", {}).get("text/plain", ""))
                       for o in c.get("outputs", []) if o["output_type"] in ("stream", "execute_result"))
        if text.strip(): parts.append(f"```\n{text.rstrip()}\n```")
    # the title cell: '# Title' + '> subtitle'
    return "<!-- generated from nbs/index.ipynb by tools/make_readme.py: edit the notebook, not this file -->\n\n" + "\n\n".join(parts) + "\n"

if __name__ == "__main__":
    text, readme = render(), ROOT/"README.md"
    if "--check" in sys.argv:
        ok = readme.exists() and readme.read_text() == text
        if not ok: print("README.md is out of date: run tools/make_readme.py")
        sys.exit(0 if ok else 1)
    readme.write_text(text)
