"""The browser test of the rendered book needs a built book (`make book`) and Debian's
chromium: it runs only under `make browser-test`, which sets BOOK_BROWSER_TEST=1. A plain
`pytest` (and so `make test`) does not collect this folder."""

import os


def pytest_ignore_collect(collection_path, config):
    return os.environ.get("BOOK_BROWSER_TEST") != "1"
