"""A Sphinx extension for the book's HTML, loaded by _config.yml (sphinx.local_extensions),
so that every page works opened from disk with no network. Both fixes were found by
tests/browser/test_rendered_book.py.

1. matplotlib's `to_jshtml()` animations link Font Awesome 4 from a CDN for the icons of
   their buttons. The theme already loads Font Awesome (6, which keeps the v4 icon names)
   from _static, so the link is dropped from the page: the icons then draw offline. The
   notebooks keep the link, for Jupyter and Colab.
2. sphinx-thebe (which Jupyter Book always loads) registers its inline configuration script
   twice, once with the file name None and once with '' (so Sphinx does not see the
   copy), and the second `const THEBE_JS_URL = ...` is a JavaScript SyntaxError on every
   page. Each page keeps the first copy of every script.
"""

import os
import re

from docutils import nodes

REMOTE_FONT_AWESOME = re.compile(r'<link[^>]*href="https?://[^"]*font-awesome[^"]*"[^>]*>\n?')


def drop_remote_font_awesome(app, doctree, docname):
    for raw in doctree.findall(nodes.raw):
        if "html" in raw.get("format", "") and REMOTE_FONT_AWESOME.search(raw.astext()):
            raw[0] = nodes.Text(REMOTE_FONT_AWESOME.sub("", raw.astext()))


def drop_duplicate_scripts(app, pagename, templatename, context, doctree):
    seen, unique = set(), []
    for script in context.get("script_files", []):
        if isinstance(script, str):   # old-style entry: a file name
            key = (script, None, ())
        else:
            key = (os.fspath(script.filename or ""), script.priority,
                   tuple(sorted(script.attributes.items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app):
    app.connect("doctree-resolved", drop_remote_font_awesome)
    app.connect("html-page-context", drop_duplicate_scripts)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
