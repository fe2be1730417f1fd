"""The browser test (run by ``make test-browser``, not by ``make test``)."""
