"""Fixtures shared by the test files: the browser tests' ``browser_ready`` and ``app_server``
(``browser_support``; they start nothing until a test asks for them)."""

pytest_plugins = ["browser_support"]
