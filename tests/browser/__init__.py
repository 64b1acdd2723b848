"""The browser test of the rendered book (run by `make browser-test`)."""
