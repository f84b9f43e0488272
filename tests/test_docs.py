"""The website builder and its checks (tools/build_docs.py), on a small made-up course: the offline renderer gives a
page per notebook with its figures and working links, each check fails on the defect it is for, and the pages render
in headless Chromium. The real site is built and checked by `make docs` (CI runs it after `make test`)."""
import base64, io, json, os, shutil, sys
from pathlib import Path
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT/"tools"))
import build_docs as bd

SITE_URL = (bd.settings()["doc_host"].rstrip("/") + bd.settings()["doc_baseurl"]).rstrip("/") + "/"

def png_b64(colour=(200, 30, 30)) -> str:
    b = io.BytesIO(); Image.new("RGB", (40, 30), colour).save(b, format="PNG")
    return base64.b64encode(b.getvalue()).decode()

def cell(kind, src, outputs=None, **kw):
    c = {"cell_type": kind, "id": f"c{abs(hash(src)) % 10**8}", "metadata": {}, "source": src}
    if kind == "code": c.update(execution_count=None, outputs=outputs or [])
    return c

def notebook(title, cells):
    front = cell("raw", f"---\ntitle: {title}\ndescription: About `{title.lower()}`\noutput-file: {title.lower()}.html\n---\n")
    return {"cells": [front] + cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}

@pytest.fixture
def course(tmp_path):
    "A processed course (what nbdev's proc_nbs writes) of two notebooks, in a sidebar with one section"
    proc = tmp_path/"_proc"; proc.mkdir()
    (proc/"sidebar.yml").write_text("website:\n  sidebar:\n    contents:\n      - index.ipynb\n"
                                    "      - section: \"Part 1\"\n        contents:\n          - 01_alpha.ipynb\n")
    index = notebook("Home", [cell("markdown", "Start with [the first lesson](01_alpha.ipynb), or read "
                                               f"[`alpha`]({SITE_URL}alpha.html#alpha){{target=\"_blank\"}}.")])
    index["cells"][0]["source"] = "---\ntitle: Home\ndescription: The course\n---\n"          # index.html by default
    alpha = notebook("Alpha", [
        cell("markdown", "## Alpha\n\nA lesson with a figure. Back [home](index.ipynb)."),
        cell("code", "#| echo: false\nsecret_input()", [{"output_type": "display_data", "metadata": {},
             "data": {"text/markdown": "[source](https://example.org/x.py){target=\"_blank\" style=\"float:right\"}\n\n### alpha_fn"}}]),
        cell("code", "#| code-fold: true\nplot()", [{"output_type": "display_data", "metadata": {},
             "data": {"image/png": png_b64(), "text/plain": "<Figure>"}}]),
        cell("code", "print('hi')", [{"output_type": "stream", "name": "stdout", "text": "hi\n"}]),
    ])
    for name, nb in (("index.ipynb", index), ("01_alpha.ipynb", alpha)): (proc/name).write_text(json.dumps(nb))
    return proc

def test_offline_render_and_checks_pass(course, tmp_path):
    site = tmp_path/"_docs"
    pages = bd.render(course, site)
    assert pages == [("index.ipynb", "index.html"), ("01_alpha.ipynb", "alpha.html")]
    assert bd.check_site(site, course, pages) == []
    index, alpha = (site/"index.html").read_text(), (site/"alpha.html").read_text()
    assert '<title>Home – deit-scratch</title>' in index and 'href="alpha.html"' in index
    assert 'href="alpha.html#alpha"' in index                       # the site's own URL became a relative link
    assert "{target" not in index + alpha                           # pandoc attributes stripped
    assert "secret_input" not in alpha and "echo:" not in alpha      # echo: false hides the input
    assert ">plot<" in alpha and "code-fold:" not in alpha           # directives are removed, the code stays
    assert "<details class=\"code-fold\"><summary>Code</summary>" in alpha   # ... folded, as Quarto folds it
    assert alpha.count("<img") == 1 and 'href="index.html"' in alpha and "Alpha" in alpha
    assert 'class="description">About <code>alpha</code></p>' in alpha           # inline code in the front matter

@pytest.mark.parametrize("defect, expected", [
    ("broken link", "broken link nowhere.html"),
    ("missing anchor", "no #no-such-heading on alpha.html"),
    ("missing figure", "0 figures, 01_alpha.ipynb has 1"),
    ("error output", "error output, cell 4: ValueError: boom"),
    ("not in sidebar", "02_beta.ipynb: not in the sidebar"),
    ("missing page", "01_alpha.ipynb: no page alpha.html"),
    ("commented markdown", "level-1 headings besides the title"),
])
def test_each_check_catches_its_defect(course, tmp_path, defect, expected):
    site = tmp_path/"_docs"
    pages = bd.render(course, site)
    alpha = site/"alpha.html"
    if defect == "broken link": alpha.write_text(alpha.read_text().replace('href="index.html"', 'href="nowhere.html"', 1))
    if defect == "missing anchor": alpha.write_text(alpha.read_text().replace("</main>", '<a href="alpha.html#no-such-heading">x</a></main>'))
    if defect == "missing figure": alpha.write_text(alpha.read_text().replace("<img", "<span"))
    if defect == "error output":
        nb = json.loads((course/"01_alpha.ipynb").read_text())
        nb["cells"][4]["outputs"].append({"output_type": "error", "ename": "ValueError", "evalue": "boom", "traceback": []})
        (course/"01_alpha.ipynb").write_text(json.dumps(nb))
    if defect == "not in sidebar": shutil.copy(course/"01_alpha.ipynb", course/"02_beta.ipynb")
    if defect == "missing page": alpha.unlink()
    if defect == "commented markdown":
        nb = json.loads((course/"01_alpha.ipynb").read_text())
        nb["cells"][1]["source"] = "# ## Alpha\n#\n# A lesson written as comments."
        (course/"01_alpha.ipynb").write_text(json.dumps(nb))
        pages = bd.render(course, site)
    problems = bd.check_site(site, course, pages)
    assert any(expected in p for p in problems), problems

def chromium():
    c = bd.find_chromium()
    if c is None:
        if os.environ.get("CI"): pytest.fail("CI must run the browser test: install Chromium (.ci/run does, with apt-get)")
        pytest.skip("no Chromium here (Debian: apt-get install chromium); CI runs this test")
    return c

@pytest.mark.slow
def test_pages_render_in_chromium(course, tmp_path):
    c = chromium()
    site = tmp_path/"_docs"
    pages = [p for _, p in bd.render(course, site)]
    for page, title in (("index.html", "Home"), ("alpha.html", "Alpha")):
        shot = bd.browse(site/page, c)
        assert bd.check_rendered(shot, title, pages) == [], page
    blank = tmp_path/"blank.html"; blank.write_text("<html><head><title>x</title></head><body></body></html>")
    problems = bd.check_rendered(bd.browse(blank, c), "Home", pages)
    assert any("blank" in p for p in problems) and any("lacks 'Home'" in p for p in problems) and any("no link to" in p for p in problems)
