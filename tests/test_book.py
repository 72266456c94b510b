"""The offline HTML book (`make book`): what it contains, that its pages load nothing from the
network, and that a real headless Chromium renders its maths and figures without console errors.

The book is built once per session with scripts/build_book.py (as `make book` does). The build
needs npm once, for the pinned MathJax; the browser test needs Debian's chromium and
chromium-driver, which `.ci/run` installs (`make browser`).
"""
import functools
import html.parser
import http.server
import pkgutil
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HTML = ROOT / "book" / "_build" / "html"
SCREENSHOTS = ROOT / "book" / "_build" / "screenshots"
CHAPTERS = sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))

pytest.importorskip("myst_nb", reason="the book's toolchain (the book extra) is not installed")


@pytest.fixture(scope="module")
def book():
    """Build the book as `make book` does; return its HTML folder."""
    if shutil.which("npm") is None and not (ROOT / "book" / "_build" / "mathjax").exists():
        pytest.skip("npm is not installed: the book's pinned MathJax comes from the npm registry "
                    "(Debian: apt-get install npm; `make browser` installs it with Chromium)")
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_book.py")],
                            capture_output=True, text=True)
    assert result.returncode == 0, f"the book did not build:\n{result.stdout}\n{result.stderr}"
    return HTML


class Tags(html.parser.HTMLParser):
    """The ``(tag, attributes, text)`` of every <script>, <link> and <img> of a page."""

    def __init__(self):
        super().__init__()
        self.found, self._script = [], None

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "link", "img"):
            self.found.append([tag, dict(attrs), ""])
            self._script = self.found[-1] if tag == "script" else None

    def handle_data(self, data):
        if self._script is not None:
            self._script[2] += data

    def handle_endtag(self, tag):
        if tag == "script":
            self._script = None


def tags(page: Path):
    parser = Tags()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser.found


def test_chapters_in_notebook_order_with_figures_api_and_results(book):
    index = (book / "index.html").read_text(encoding="utf-8")
    positions = [index.find(f'href="notebooks/{name}.html"') for name in CHAPTERS]
    assert -1 not in positions, f"a chapter is missing from the index: {dict(zip(CHAPTERS, positions))}"
    assert positions == sorted(positions), "the chapters are not in notebook order"
    for page in ("README.html", "paper_figures.html", "api.html", "docs/RESULTS.html"):
        assert f'href="{page}"' in index, f"{page} is not linked from the index"
    gallery = sorted(p.name for p in (ROOT / "figures" / "paper").glob("*.png"))
    shown = {Path(attrs["src"]).name for tag, attrs, _ in tags(book / "paper_figures.html") if tag == "img"}
    assert set(gallery) <= shown, f"figures missing from the figures page: {set(gallery) - shown}"


def test_api_reference_documents_every_module(book):
    import dhlib

    api = (book / "api.html").read_text(encoding="utf-8")
    modules = [m.name for m in pkgutil.walk_packages(dhlib.__path__, "dhlib.")]
    missing = [m for m in modules if f'id="module-{m}"' not in api]
    assert not missing, f"modules without an API section: {missing}"
    # autodoc rendered the docstrings themselves, not only the headings
    assert 'id="dhlib.scores.hybrid"' in api and 'id="dhlib.losses.jsd_to_uniform"' in api


def test_pages_load_nothing_from_the_network(book):
    remote = re.compile(r"^\s*(https?:)?//", re.IGNORECASE)
    for page in sorted(book.rglob("*.html")):
        for tag, attrs, text in tags(page):
            if tag == "img":
                continue
            url = attrs.get("src" if tag == "script" else "href") or ""
            assert not remote.match(url), f"{page.relative_to(book)}: <{tag}> loads {url}"
            assert not re.search(r"https?://", text), \
                f"{page.relative_to(book)}: an inline <script> names a URL: {text[:200]}"
    assert (book / "_static" / "mathjax" / "tex-chtml.js").is_file(), "the local MathJax is missing"


def test_exercise_solutions_are_folded_and_hidden_tests_left_out(book):
    chapter = (book / "notebooks" / "05_losses.html").read_text(encoding="utf-8")
    assert "BEGIN SOLUTION" not in chapter and "ASSIGNMENT CONFIG" not in chapter
    assert "Show the solution" in chapter and "Show the tests" in chapter
    # the solution's code sits inside a folded <details> block
    folded = re.findall(r"<details class=\"[^\"]*hide above-input\">(.*?)</details>", chapter, re.S)
    assert any("my_likelihood_loss" in block for block in folded), "the nb05_q1 solution is not folded"
    assert "# HIDDEN" not in chapter and "400 * torch.randn" not in chapter, "a hidden test is shown"
    # a written answer (nb00_q3) opens on a click
    toy = (book / "notebooks" / "00_hybrid_toy.html").read_text(encoding="utf-8")
    answer = r'<div class="(?=[^"]*\bdropdown\b)(?=[^"]*\badmonition\b)[^"]*">\s*<p class="admonition-title">Answer'
    assert re.search(answer, toy), "the written answer is not folded"


def chromium_driver():
    """A headless Chromium under selenium, or a skip that says what is missing."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium (the book extra) is missing")
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if browser is None or driver is None:
        pytest.skip("Debian's chromium and chromium-driver are not installed: run `make browser` "
                    "(as root, or with sudo) to install them, then rerun the tests")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    # root needs --no-sandbox; the others keep Chromium off the (closed) network at start-up
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--window-size=1280,1600"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver))


@pytest.fixture(scope="module")
def served(book):
    """The book on http://127.0.0.1:<port>/, as `python -m http.server -d book/_build/html`."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):       # one line per request would flood pytest's output
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(book)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.parametrize("page", ["index.html", "notebooks/00_hybrid_toy.html"])
def test_page_renders_in_headless_chromium(served, page):
    from selenium.webdriver.support.ui import WebDriverWait

    driver = chromium_driver()
    try:
        driver.get(f"{served}/{page}")
        wait = WebDriverWait(driver, 60)
        wait.until(lambda d: d.execute_script("return document.readyState") == "complete")
        # MathJax typesets after the load event: wait for its promise, then count its output
        wait.until(lambda d: d.execute_script(
            "return window.MathJax !== undefined && MathJax.startup !== undefined"
            " && MathJax.startup.promise !== undefined"))
        driver.execute_async_script("MathJax.startup.promise.then(arguments[0])")
        rendered = driver.execute_script("return document.querySelectorAll('mjx-container').length")
        assert rendered > 0, "MathJax rendered no equation"
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.src, i.complete, i.naturalWidth])")
        assert images, "the page shows no figure"
        broken = [src for src, complete, width in images if not complete or width == 0]
        assert not broken, f"figures that did not load: {broken}"
        errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        assert not errors, f"console errors: {errors}"
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shot = SCREENSHOTS / (Path(page).stem + ".png")
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 0
    finally:
        driver.quit()
