#!/usr/bin/env python
"""Build the course website into `_docs/` and check it.

    .venv/bin/python tools/build_docs.py              # Quarto on PATH: nbdev_docs; otherwise the offline renderer
    .venv/bin/python tools/build_docs.py --offline    # the offline renderer, even where Quarto is installed
    .venv/bin/python tools/build_docs.py --browser no # skip the browser test (default: run it where Chromium is, always in CI)

Quarto cannot be installed everywhere (its installer downloads a binary), so that the site is built and checked on
every CI run anyway, the offline renderer does what `nbdev_docs` does without it:

1. nbdev's own processing (`proc_nbs`, the first half of `nbdev_docs`): directives applied, `show_doc` API
   documentation rendered, into `_proc/`;
2. each processed notebook rendered to one HTML page with nbconvert, in the sidebar's order (`nbs/sidebar.yml`),
   under the file name Quarto gives it (`output-file`), with the sidebar, the title and description, figures,
   outputs and prev/next links; links to other notebooks and to the site's own URL become relative links.

Then, with either builder, `check_site` verifies: a page for every notebook of the sidebar (and a sidebar entry for
every notebook), every figure of a notebook on its page, no error output, and every internal link (and `#anchor`)
resolving. Any problem is printed and the exit status is 1.
"""
import argparse, configparser, html, io, json, os, re, shutil, subprocess, sys, tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMAGE_MIMES = ("image/png", "image/jpeg", "image/svg+xml", "image/gif")

def settings() -> dict:
    cp = configparser.ConfigParser(); cp.read(ROOT/"settings.ini")
    return dict(cp["DEFAULT"])

def sidebar(proc:Path) -> list:
    "[(section title or None, [notebook file names])] in reading order"
    import yaml
    out = []
    def walk(items, section=None):
        for it in items:
            if isinstance(it, str):
                if not out or out[-1][0] != section: out.append((section, []))
                out[-1][1].append(it)
            elif isinstance(it, dict) and "section" in it: walk(it.get("contents", []), it["section"])
            elif isinstance(it, dict) and "href" in it: walk([it["href"]], section)
    walk(yaml.safe_load((proc/"sidebar.yml").read_text())["website"]["sidebar"]["contents"])
    return out

# ---------------------------------------------------------------- 1. nbdev's processing
def process(force:bool=True) -> Path:
    "nbdev's `proc_nbs` (what `nbdev_proc_nbs` runs after checking for Quarto): the processed notebooks in `_proc/`"
    os.chdir(ROOT)
    from nbdev.doclinks import _build_modidx
    from nbdev.serve import proc_nbs
    _build_modidx()
    proc_nbs(force=force, n_workers=int(os.environ.get("DOCS_WORKERS", "2")))
    return ROOT/"_proc"

# ---------------------------------------------------------------- 2. the offline renderer
_DIRECTIVE = re.compile(r"^\s*#\|\s*([\w-]+)\s*:?\s*(.*)$")
_ATTRS = re.compile(r"(\]\([^)\s]*\))\{[^}\n]*\}")            # pandoc link attributes: [text](url){target="_blank"}

def front_matter(nb) -> dict:
    import yaml
    c = nb.cells[0] if nb.cells else None
    if c is not None and c.cell_type == "raw" and c.source.lstrip().startswith("---"):
        return yaml.safe_load(c.source.strip().strip("-")) or {}
    return {}

def page_name(nb_name:str, fm:dict) -> str:
    return fm.get("output-file") or re.sub(r"^\d+[a-z]?_", "", Path(nb_name).stem) + ".html"

def prepare(nb):
    "Apply the Quarto cell options nbdev leaves in processed notebooks; drop the front matter cell"
    cells = []
    for c in nb.cells[1:] if front_matter(nb) else nb.cells:
        if c.cell_type == "markdown": c.source = _ATTRS.sub(r"\1", c.source)
        if c.cell_type != "code": cells.append(c); continue
        lines, opts = c.source.splitlines(), {}
        while lines and (m := _DIRECTIVE.match(lines[0])): opts[m[1]] = m[2].strip().strip('"'); lines.pop(0)
        c.source = "\n".join(lines)
        if opts.get("include") == "false": continue
        tags = set(c.metadata.get("tags", []))
        if opts.get("echo") == "false" or not c.source.strip(): tags.add("remove_input")
        if opts.get("output") == "false": c.outputs = []
        if opts.get("code-fold") == "true": tags.add("fold-" + re.sub(r"\W+", "_", opts.get("code-summary", "Code")))
        for o in c.get("outputs", []):
            if "text/markdown" in o.get("data", {}): o["data"]["text/markdown"] = _ATTRS.sub(r"\1", o["data"]["text/markdown"])
        c.metadata["tags"] = sorted(tags)
        cells.append(c)
    nb.cells = cells
    return nb

def pandoc_id(text:str) -> str:
    "The identifier pandoc (so Quarto) gives a heading"
    s = re.sub(r"[^\w\s.-]", "", text.strip().lower())
    s = re.sub(r"\s+", "-", s)
    return re.sub(r"^[^a-z]+", "", s) or "section"

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} – {site}</title><link rel="stylesheet" href="site.css">{extra_css}
<script>window.MathJax = {{tex: {{inlineMath: [['$', '$'], ['\\\\(', '\\\\)']]}}}};</script>
<script async src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-chtml.js"></script>
</head><body>
<nav id="sidebar"><a class="site-title" href="index.html">{site}</a>{nav}</nav>
<main><header><h1 class="title">{title}</h1><p class="description">{description}</p></header>
{body}
<footer class="pager">{prev}{next}</footer></main>
</body></html>
"""

def render(proc:Path, out:Path) -> list:
    "Render the processed notebooks to `out`; returns [(notebook name, page name)] in reading order"
    import nbformat
    from bs4 import BeautifulSoup
    from nbconvert import HTMLExporter
    from pygments.formatters import HtmlFormatter
    from traitlets.config import Config
    cfg = settings()
    site_url = (cfg.get("doc_host", "").rstrip("/") + cfg.get("doc_baseurl", "")).rstrip("/") + "/"
    order = sidebar(proc)
    names = [n for _, ns in order for n in ns]
    nbs = {n: nbformat.read(proc/n, as_version=4) for n in names}
    fms = {n: front_matter(nb) for n, nb in nbs.items()}
    pages = {n: page_name(n, fms[n]) for n in names}
    c = Config(); c.TagRemovePreprocessor.remove_input_tags = {"remove_input"}; c.TagRemovePreprocessor.enabled = True
    exporter = HTMLExporter(config=c, template_name="basic", exclude_input_prompt=True, exclude_output_prompt=True)
    if out.exists(): shutil.rmtree(out)
    out.mkdir(parents=True)
    for f in ("styles.css",):
        if (proc/f).exists(): shutil.copy(proc/f, out/f)
    if (proc/"images").is_dir(): shutil.copytree(proc/"images", out/"images")     # pictures the markdown links to
    (out/"site.css").write_text(SITE_CSS + HtmlFormatter(style="friendly").get_style_defs(".highlight"))
    extra_css = '<link rel="stylesheet" href="styles.css">' if (out/"styles.css").exists() else ""
    def nav(current):
        parts = []
        for section, ns in order:
            items = "".join(f'<li><a href="{pages[n]}"{" class=active" if n == current else ""}>{html.escape(fms[n].get("title") or n)}</a></li>' for n in ns)
            parts.append((f"<p class=section>{html.escape(section)}</p>" if section else "") + f"<ul>{items}</ul>")
        return "".join(parts)
    for i, n in enumerate(names):
        body, _ = exporter.from_notebook_node(prepare(nbs[n]))
        soup = BeautifulSoup(body, "html.parser")
        for cell in soup.find_all("div", class_=re.compile("^celltag_fold-")):      # code-fold: the input collapsed
            summary = next(c for c in cell["class"] if c.startswith("celltag_fold-"))[len("celltag_fold-"):].replace("_", " ")
            inp = cell.find("div", class_=["jp-Cell-inputWrapper", "input"])
            if inp is None: continue
            details = soup.new_tag("details"); details["class"] = "code-fold"
            summ = soup.new_tag("summary"); summ.string = summary
            inp.wrap(details); details.insert(0, summ)
        for h in soup.find_all(re.compile("^h[1-6]$")):
            for a in h.find_all("a", class_="anchor-link"): a.decompose()
            h["id"] = pandoc_id(h.get_text())
        for a in soup.find_all("a", href=True):
            href = a["href"]
            if href.startswith(site_url): href = href[len(site_url):] or "index.html"
            base, _, frag = href.partition("#")
            if base.endswith(".ipynb") and "://" not in base and Path(base).name in pages: base = pages[Path(base).name]
            a["href"] = base + ("#" + frag if frag else "")
        fm = fms[n]
        prev = f'<a class="prev" href="{pages[names[i-1]]}">← {html.escape(fms[names[i-1]].get("title", ""))}</a>' if i else ""
        nxt = f'<a class="next" href="{pages[names[i+1]]}">{html.escape(fms[names[i+1]].get("title", ""))} →</a>' if i + 1 < len(names) else ""
        code = lambda t: re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(t))     # the front matter's inline code
        (out/pages[n]).write_text(PAGE.format(title=html.escape(fm.get("title") or n), site=html.escape(cfg.get("lib_name", "docs")),
                                              description=code(fm.get("description", "")), nav=nav(n), body=str(soup),
                                              prev=prev, next=nxt, extra_css=extra_css), encoding="utf-8")
    return [(n, pages[n]) for n in names]

SITE_CSS = """
body { margin: 0; font: 16px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #212529; display: flex; }
#sidebar { position: sticky; top: 0; height: 100vh; overflow-y: auto; width: 17rem; flex: none; padding: 1rem;
           background: #f7f7f9; border-right: 1px solid #ddd; box-sizing: border-box; font-size: 14px; }
#sidebar .site-title { display: block; font-weight: 700; font-size: 18px; margin-bottom: .8rem; color: #2780e3; }
#sidebar .section { font-weight: 600; margin: .9rem 0 .2rem; color: #555; }
#sidebar ul { list-style: none; margin: 0; padding-left: .4rem; } #sidebar li { margin: .15rem 0; }
#sidebar a { text-decoration: none; color: #333; } #sidebar a.active { color: #2780e3; font-weight: 600; }
main { max-width: 60rem; padding: 1rem 2.5rem 3rem; min-width: 0; flex: 1; }
header .description { color: #666; font-size: 18px; margin-top: -.4rem; }
a { color: #2780e3; } pre { overflow-x: auto; font-size: 13px; line-height: 1.4; }
.jp-InputArea pre, .input_area pre { background: #f8f8f8; padding: .6rem; border-radius: 4px; }
.jp-OutputArea pre { padding: .3rem .6rem; } .jp-InputPrompt, .jp-OutputPrompt { display: none; }
.jp-OutputArea-output img { max-width: 100%; } table { border-collapse: collapse; margin: .5rem 0; }
th, td { border: 1px solid #ddd; padding: .2rem .5rem; font-size: 14px; }
[data-mime-type="application/vnd.jupyter.stderr"] pre { background: #fff5f5; }
details.code-fold > summary { cursor: pointer; color: #2780e3; margin: .3rem 0; }
.pager { display: flex; justify-content: space-between; margin-top: 3rem; border-top: 1px solid #ddd; padding-top: 1rem; }
"""

# ---------------------------------------------------------------- 3. checks (any builder)
def _figures(nb:dict) -> int:
    return sum(any(m in o.get("data", {}) for m in IMAGE_MIMES) for c in nb["cells"] for o in c.get("outputs", []))

def _errors(nb:dict) -> list:
    out = []
    for i, c in enumerate(nb["cells"]):
        for o in c.get("outputs", []):
            text = "".join(o.get("text", "")) if o.get("output_type") == "stream" else ""
            if o.get("output_type") == "error": out.append(f"cell {i}: {o.get('ename')}: {o.get('evalue')}")
            elif "Traceback (most recent call last)" in text: out.append(f"cell {i}: a traceback in its output")
    return out

def expected_pages(proc:Path) -> list:
    "[(notebook, page file, title)] in the sidebar's order, as the processed notebooks' front matter names them"
    import nbformat
    fms = {n: front_matter(nbformat.read(proc/n, as_version=4)) for _, ns in sidebar(proc) for n in ns}
    return [(n, page_name(n, fm), fm.get("title", "")) for n, fm in fms.items()]

def check_site(site:Path, proc:Path, expected:list|None=None) -> list:
    "Problems of the built site `site` (a list of strings; empty when all is well). `expected`: [(notebook, page)]"
    from bs4 import BeautifulSoup
    problems = []
    if expected is None: expected = [(n, pg) for n, pg, _ in expected_pages(proc)]
    listed = {n for n, _ in expected}
    for nb in sorted(p.name for p in proc.glob("*.ipynb")):
        if nb not in listed: problems.append(f"{nb}: not in the sidebar, so no page links to it")
    ids, soups = {}, {}
    for p in sorted(site.rglob("*.html")):
        soups[p] = BeautifulSoup(p.read_text(encoding="utf-8", errors="replace"), "html.parser")
        ids[p.resolve()] = {t["id"] for t in soups[p].find_all(id=True)}
    for n, page in expected:
        p = site/page
        if p not in soups: problems.append(f"{n}: no page {page}"); continue
        nb = json.loads((proc/n).read_text())
        want = _figures(nb)
        main = soups[p].find("main") or soups[p]
        got = len([i for i in main.find_all("img") if not i.find_parent("nav")]) + len(main.find_all("svg"))
        if got < want: problems.append(f"{page}: {got} figures, {n} has {want}")
        h1 = [h.get_text(" ", strip=True)[:40] for h in main.find_all("h1") if "title" not in (h.get("class") or [])]
        if h1: problems.append(f"{page}: {len(h1)} level-1 headings besides the title ({h1[:3]}): markdown written as '# ' comments?")
        problems += [f"{n}: error output, {e}" for e in _errors(nb)]
    for p, soup in soups.items():
        for tag, attr in (("a", "href"), ("img", "src"), ("link", "href"), ("script", "src")):
            for t in soup.find_all(tag, **{attr: True}):
                url = t[attr]
                if re.match(r"^[a-z][\w+.-]*:", url) or url.startswith("//"): continue   # http:, data:, mailto:
                base, _, frag = url.partition("#")
                target = (p.parent/base).resolve() if base else p.resolve()
                if base and not target.exists(): problems.append(f"{p.relative_to(site)}: broken link {url}"); continue
                if frag and target.suffix == ".html" and frag not in ids.get(target, set()):
                    problems.append(f"{p.relative_to(site)}: link {url}: no #{frag} on {target.name}")
    return problems

# ---------------------------------------------------------------- 4. the browser test
def find_chromium() -> str|None:
    return next((shutil.which(c) for c in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable") if shutil.which(c)), None)

def browse(page:Path, chromium:str|None=None, size=(1280, 900)) -> dict:
    "Load `page` in headless Chromium: {'dom': the DOM after loading, 'png': the screenshot's bytes}"
    chromium = chromium or find_chromium()
    if chromium is None: raise RuntimeError("no Chromium found (Debian: apt-get install chromium)")
    url = page.resolve().as_uri()
    with tempfile.TemporaryDirectory() as d:
        flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--user-data-dir={d}/profile",
                 f"--window-size={size[0]},{size[1]}", "--virtual-time-budget=3000"]
        dom = subprocess.run(flags + ["--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
        subprocess.run(flags + [f"--screenshot={d}/shot.png", url], capture_output=True, timeout=120)
        png = Path(f"{d}/shot.png").read_bytes() if Path(f"{d}/shot.png").exists() else b""
    return {"dom": dom, "png": png}

def check_rendered(shot:dict, title:str, pages:list) -> list:
    "Problems of one page as the browser rendered it: a blank screenshot, a missing title, missing sidebar links"
    from bs4 import BeautifulSoup
    from PIL import Image
    problems = []
    if not shot["png"]: return ["no screenshot"]
    im = Image.open(io.BytesIO(shot["png"])).convert("L")
    hist = im.histogram()
    dark = sum(hist[:200]) / (im.width * im.height)                       # share of pixels with ink on them
    if dark < 0.001: problems.append(f"the screenshot is blank ({dark:.2%} of the pixels are not background)")
    soup = BeautifulSoup(shot["dom"], "html.parser")
    if soup.title is None or title not in soup.title.get_text(): problems.append(f"title {soup.title.get_text() if soup.title else None!r} lacks {title!r}")
    hrefs = {a["href"].split("#")[0].split("/")[-1] for a in soup.find_all("a", href=True)}
    if missing := [p for p in pages if p not in hrefs]: problems.append(f"no link to {missing[:5]} ({len(missing)} pages)")
    return problems

# ---------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--offline", action="store_true", help="use the offline renderer even where Quarto is installed")
    ap.add_argument("--browser", choices=("auto", "yes", "no"), default="auto",
                    help="load the index and one lesson in headless Chromium; auto (default): where Chromium is installed, always under CI")
    ap.add_argument("--lesson", default="03_attention.ipynb", help="the lesson the browser loads (default: %(default)s)")
    a = ap.parse_args(argv)
    site = ROOT/settings().get("doc_path", "_docs")
    if shutil.which("quarto") and not a.offline:
        subprocess.run([str(Path(sys.executable).parent/"nbdev_docs")], check=True, cwd=ROOT)
        proc = ROOT/"_proc"
    else:
        proc = process()
        render(proc, site)
        print(f"offline site: {len(expected_pages(proc))} pages in {site.relative_to(ROOT)}/ (Quarto not used)")
    pages = expected_pages(proc)
    expected = [(n, pg) for n, pg, _ in pages]
    problems = check_site(site, proc, expected)
    browser = a.browser == "yes" or (a.browser == "auto" and (find_chromium() is not None or bool(os.environ.get("CI"))))
    if browser and find_chromium() is None: problems.append("no Chromium for the browser test (Debian: apt-get install chromium)")
    elif browser:
        names = [pg for _, pg in expected]
        for n, pg, title in [p for p in pages if p[0] in ("index.ipynb", a.lesson)]:
            bad = check_rendered(browse(site/pg), title, names)
            problems += [f"{pg} in Chromium: {b}" for b in bad]
            if not bad: print(f"{pg}: rendered in Chromium (title, sidebar links to all {len(names)} pages, non-blank screenshot)")
    for p in problems: print("!!", p)
    print(f"site check: {len(expected)} pages, " + (f"{len(problems)} problem(s)" if problems else "every figure and internal link in place, no error output"))
    return 1 if problems else 0

if __name__ == "__main__": sys.exit(main())
