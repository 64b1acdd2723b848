"""The built book (_build/html) in a real browser, offline: Debian's chromium, headless,
driven by Selenium, every page opened from disk (file:// URLs) with the network cut.

Run by `make browser-test` after `make book` (it installs chromium and chromium-driver
from Debian's packages when missing). For every page: no JavaScript console error, no
request leaves the machine, every image loads and has alt text or a caption, math is
typeset (no raw TeX left, no MathJax error), one h1 and no skipped heading level, the
animations step, the Colab link opens this chapter on the configured repository and
branch, internal links and their anchors resolve, at the desktop width no code block,
equation or table is wider than the content column (folds opened), nothing overflows a
phone screen. Then
the search page finds a chapter-4 word, and each chapter is screenshot at a desktop and a
phone width into _build/screenshots/.
"""

from __future__ import annotations

import base64
import json
import os
import pathlib
import re
import time
import urllib.parse

import pytest
import yaml

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
HTML = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "screenshots"
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
DESKTOP, PHONE = (1280, 900), (390, 844)   # CSS pixels; 390 x 844 is a common phone
SEARCH_WORD, SEARCH_PAGE = "closed", "book/04_closed_form.html"   # chapter 4's subject

if not (HTML / "index.html").exists():
    pytest.fail("no built book: run `make book` first", pytrace=False)

# every page of the book (search.html and genindex.html are Sphinx's own; the top
# index.html only redirects to the book's first page)
PAGES = sorted(str(p.relative_to(HTML)) for p in HTML.rglob("*.html")
               if p.parts[len(HTML.parts)] not in ("_static", "_sources", "_images")
               and str(p.relative_to(HTML)) not in ("search.html", "genindex.html", "index.html"))
CHAPTERS = [p for p in PAGES if re.match(r"book/\d\d_", p)]
NOTEBOOK_PAGES = [p for p in PAGES if (ROOT / p).with_suffix(".ipynb").exists()]


def file_url(page: str) -> str:
    return (HTML / page).as_uri()


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-dev-shm-usage", "--hide-scrollbars",
                 "--force-device-scale-factor=1",
                 # network off: no name resolves and every request goes to a dead proxy,
                 # except to localhost (the one http.server check below, if needed)
                 "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost",
                 "--proxy-server=http://127.0.0.1:9"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    os.environ.setdefault("SE_OFFLINE", "true")   # Selenium Manager: never download a driver
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    set_viewport(driver, *DESKTOP)
    yield driver
    driver.quit()


def set_viewport(driver, width: int, height: int) -> None:
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600})


def open_page(driver, url: str) -> tuple[list[str], list[str]]:
    """Load a page, wait until MathJax has typeset it (when the page loads MathJax), and
    return its console errors and the URLs it requested from the network."""
    driver.get_log("browser"), driver.get_log("performance")   # drop the previous page's
    driver.get(url)
    WebDriverWait(driver, 30).until(
        lambda d: d.execute_script("return document.readyState") == "complete")
    driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const wait = (n) => {
          if (window.MathJax && MathJax.startup && MathJax.startup.promise)
            MathJax.startup.promise.then(() => done(true), () => done(false));
          else if (n > 0 && document.querySelector('script[src*="mathjax"]'))
            setTimeout(() => wait(n - 1), 100);
          else done(false);
        };
        wait(100);""")
    return console_errors(driver), remote_requests(driver)


def console_errors(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def remote_requests(driver) -> list[str]:
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            url = message["params"]["request"]["url"]
            if not url.startswith(("file:", "data:", "blob:", "about:")):
                urls.append(url)
    return urls


# ------------------------------------------------------------------ every page
# One load of each page serves all its checks: the `page` fixture is module-scoped, so
# pytest runs the tests page by page, in the order they are written here.

@pytest.fixture(scope="module", params=PAGES)
def page(browser, request):
    set_viewport(browser, *DESKTOP)
    errors, remote = open_page(browser, file_url(request.param))
    return {"name": request.param, "errors": errors, "remote": remote}


def test_page_loads_offline_without_errors(browser, page):
    assert not page["errors"], "console errors:\n" + "\n".join(page["errors"])
    assert not page["remote"], "requests to the network:\n" + "\n".join(page["remote"])
    widgets = browser.find_elements(
        By.CSS_SELECTOR, 'script[type="application/vnd.jupyter.widget-view+json"]')
    assert not widgets, "an ipywidgets view, blank without a kernel: tag its cell remove-cell"


def test_images_load_and_have_alt_text_or_a_caption(browser, page):
    images = browser.execute_script("""
        return [...document.images].map(img => ({
          src: img.getAttribute('src') || '', alt: (img.getAttribute('alt') || '').trim(),
          width: img.naturalWidth, complete: img.complete,
          caption: (img.closest('figure')?.querySelector('figcaption')?.innerText || '').trim(),
          visible: img.checkVisibility()}));""")
    assert all(i["complete"] and i["width"] > 0 for i in images), \
        [i["src"][:80] for i in images if not (i["complete"] and i["width"] > 0)]
    # docutils writes the file name as alt when a cell gives none: that is no description
    undescribed = [i["src"][:80] for i in images if i["visible"] and not i["caption"]
                   and (not i["alt"] or i["alt"] in i["src"] or i["alt"].endswith(".png"))]
    assert not undescribed, (
        "images with neither alt text nor a caption (give the cell "
        f'mystnb={{"image": {{"alt": ...}}}} metadata): {undescribed}')


TEX_LEFT = re.compile(r"\$\$|\\begin\{|\\[()\[\]]|\\[a-zA-Z]{2,}")


def test_math_is_typeset(browser, page):
    math_sources = len(browser.find_elements(By.CSS_SELECTOR, "span.math, div.math"))
    rendered = len(browser.find_elements(By.CSS_SELECTOR, "mjx-container"))
    errors = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "mjx-merror")]
    # visible text outside code blocks and typeset math
    text = browser.execute_script("""
        const skip = 'pre, code, script, style, mjx-container, .highlight, .output';
        const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
        const out = [];
        while (walker.nextNode()) {
          const parent = walker.currentNode.parentElement;
          if (parent && !parent.closest(skip) && parent.checkVisibility())
            out.push(walker.currentNode.textContent);
        }
        return out.join(' ');""")
    raw = sorted(set(m.group(0) for m in TEX_LEFT.finditer(text)))
    assert rendered >= math_sources, f"{math_sources} math elements, {rendered} typeset"
    assert not errors, f"MathJax errors: {errors}"
    assert not raw, f"raw TeX left in the page: {raw}"


def test_one_h1_and_no_skipped_heading_level(browser, page):
    levels = browser.execute_script("""
        return [...document.querySelectorAll('h1, h2, h3, h4, h5, h6')]
          .filter(h => h.checkVisibility()).map(h => [parseInt(h.tagName[1]), h.innerText]);""")
    assert [lvl for lvl, _ in levels].count(1) == 1, f"h1s: {levels}"
    assert levels[0][0] == 1, f"the first heading is not the h1: {levels[0]}"
    for (before, _), (level, title) in zip(levels, levels[1:]):
        assert level <= before + 1, f"h{before} then h{level} ({title!r})"


def test_internal_links_and_anchors_resolve(browser, page):
    hrefs = browser.execute_script("""
        return [...document.querySelectorAll('a[href], link[href], img[src], script[src]')]
          .map(e => e.getAttribute('href') || e.getAttribute('src'));""")
    base = browser.current_url
    broken = []
    for href in set(hrefs):
        if href == "#" or href.startswith(("http:", "https:", "mailto:", "javascript:", "data:")):
            continue
        url = urllib.parse.urlsplit(urllib.parse.urljoin(base, href))
        target = pathlib.Path(urllib.parse.unquote(url.path))
        if not target.is_file():
            broken.append(href)
        elif url.fragment and target.suffix == ".html":
            html = target.read_text(errors="replace")
            if f'id="{urllib.parse.unquote(url.fragment)}"' not in html:
                broken.append(href)
    assert not broken, f"links to nothing: {sorted(broken)}"


def test_colab_link_opens_this_chapter_on_the_configured_branch(browser, page):
    links = {a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "a")
             if "colab.research.google.com" in (a.get_attribute("href") or "")}
    if page["name"] not in NOTEBOOK_PAGES:
        assert not links   # a markdown page has no notebook to open
        return
    repo = urllib.parse.urlsplit(CONFIG["repository"]["url"]).path.strip("/")
    notebook = CONFIG["repository"].get("path_to_book", "") + page["name"][:-5] + ".ipynb"
    expected = (f'{CONFIG["launch_buttons"]["colab_url"]}/github/{repo}/blob/'
                f'{CONFIG["repository"]["branch"]}/{notebook.lstrip("/")}')
    assert links == {expected}
    assert (ROOT / notebook).is_file()


def test_animations_step(browser, page):
    for animation in browser.find_elements(By.CSS_SELECTOR, "div.animation"):
        img = animation.find_element(By.TAG_NAME, "img")
        buttons = {b.get_attribute("title"): b
                   for b in animation.find_elements(By.TAG_NAME, "button")}
        assert {"Play", "Pause", "First frame", "Next frame", "Previous frame"} <= set(buttons)
        icons = animation.find_elements(By.CSS_SELECTOR, "button svg")   # Font Awesome drew them
        assert len(icons) == len(buttons), "animation buttons without their icons"
        slider = animation.find_element(By.CSS_SELECTOR, "input[type=range]")
        assert int(slider.get_attribute("max")) > 1, "an animation of one frame"
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", animation)
        buttons["Pause"].click()
        buttons["First frame"].click()
        first = img.get_attribute("src")
        buttons["Next frame"].click()
        second = img.get_attribute("src")
        assert first.startswith("data:image/png") and second != first, \
            "'Next frame' did not change the image"
        assert slider.get_attribute("value") == "1"
        assert int(img.get_attribute("naturalWidth")) > 0


def screenshot(browser, page: str, size: tuple[int, int]) -> pathlib.Path:
    """The whole page (up to 16000 px high) at this width, as a PNG. The viewport is made
    as tall as the page: Chrome's capture beyond the viewport lays the theme out wrong
    (no sidebars)."""
    height = min(browser.execute_script("return document.documentElement.scrollHeight"), 16000)
    set_viewport(browser, size[0], height)
    try:
        time.sleep(0.3)   # let the layout settle
        shot = browser.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})
    finally:
        set_viewport(browser, *size)
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / (pathlib.Path(page).stem + ("_desktop" if size == DESKTOP else "_phone")
                    + ".png")
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


def test_desktop_screenshot(browser, page):
    assert screenshot(browser, page["name"], DESKTOP).stat().st_size > 10_000


def test_nothing_is_wider_than_the_content_column(browser, page):
    """At the desktop width, with every fold opened (hidden code cells, solutions), no code
    block, displayed equation or table is wider than the text column: none hides part of
    itself behind a scroll bar. (The phone test below only asks that the page itself does
    not scroll sideways.)"""
    set_viewport(browser, *DESKTOP)
    browser.execute_script("""
        document.querySelectorAll('details').forEach(d => { d.open = true; });
        document.querySelectorAll('button.toggle-button[aria-expanded="false"]')
          .forEach(b => b.click());""")
    time.sleep(0.3)   # let the layout settle
    result = browser.execute_script("""
        const column = document.querySelector('article.bd-article')
          || document.querySelector('main') || document.body;
        const style = getComputedStyle(column);
        const box = column.getBoundingClientRect();
        const left = box.left + parseFloat(style.paddingLeft);
        const right = box.right - parseFloat(style.paddingRight);
        const wide = [...column.querySelectorAll('pre, mjx-container[display="true"], table')]
          .filter(e => e.checkVisibility())
          .map(e => {
            const r = e.getBoundingClientRect();
            // wider than the column, or scrolling inside its own box (code, equations)
            const overflow = Math.max(r.right - right, e.scrollWidth - e.clientWidth);
            return {what: e.tagName.toLowerCase() + ': '
                      + (e.textContent || '').trim().replace(/\\s+/g, ' ').slice(0, 70),
                    overflow: Math.round(overflow)};
          })
          .filter(e => e.overflow > 2);
        return {column: Math.round(right - left), wide: wide};""")
    assert not result["wide"], (
        f"wider than the {result['column']} px content column (by so many px): "
        + "; ".join(f"{e['what']} (+{e['overflow']})" for e in result["wide"]))


def test_phone_layout_and_screenshot(browser, page):
    """Last for each page: it reloads the page at a phone's width."""
    set_viewport(browser, *PHONE)
    try:
        open_page(browser, file_url(page["name"]))
        result = browser.execute_script("""
            const width = document.documentElement.clientWidth;
            // a wide equation or table must scroll inside its own box, not widen the page
            const wide = [...document.querySelectorAll(
                'article mjx-container, article table, article img')]
              .filter(e => e.checkVisibility() && e.getBoundingClientRect().right > width + 1)
              .filter(e => {
                for (let p = e.parentElement; p; p = p.parentElement) {
                  const o = getComputedStyle(p).overflowX;
                  if ((o === 'auto' || o === 'scroll') && p.clientWidth <= width) return false;
                }
                return true;
              }).map(e => e.tagName + ': '
                          + (e.textContent || e.getAttribute('src') || '').slice(0, 60));
            const article = document.querySelector('article') || document.body;
            return {page: document.documentElement.scrollWidth, width: width, wide: wide,
                    font: parseFloat(
                      getComputedStyle(article.querySelector('p') || article).fontSize)};""")
        path = screenshot(browser, page["name"], PHONE)
    finally:
        set_viewport(browser, *DESKTOP)
    assert result["page"] <= result["width"] + 1, f"the page scrolls sideways: {result}"
    assert not result["wide"], f"overflowing elements: {result['wide']}"
    assert result["font"] >= 14, f"body text of {result['font']} px on a phone"
    assert path.stat().st_size > 10_000


# ------------------------------------------------------------------ the site

def test_top_index_leads_to_the_first_page(browser):
    open_page(browser, (HTML / "index.html").as_uri())
    WebDriverWait(browser, 10).until(lambda d: d.current_url.endswith("book/index.html"))


def test_search_from_disk_finds_a_chapter_4_word(browser):
    """Sphinx's search page works from file:// (searchindex.js is a script, and the
    summaries that would need fetch() are off in _config.yml)."""
    errors, _ = open_page(browser, f"{HTML.as_uri()}/search.html?q={SEARCH_WORD}")
    WebDriverWait(browser, 30).until(lambda d: d.execute_script(
        "const r = document.querySelector('#search-results');"
        " return r && r.querySelector('p.search-summary') && !r.innerText.includes('Searching')"))
    links = [a.get_attribute("href") for a in
             browser.find_elements(By.CSS_SELECTOR, "#search-results ul.search li a")]
    assert any(link.split("#")[0].endswith(SEARCH_PAGE) for link in links), links
    assert not errors + console_errors(browser)
