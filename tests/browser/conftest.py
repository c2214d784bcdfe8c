"""The session's portal and Chromium for the walkthroughs (tests/browser/test_walkthrough_*.py).

test_console.py and test_hardening.py define their own `browser` fixture, which takes precedence.
"""

from tests.browser.walkthrough_portal import browser, portal  # noqa: F401 - session fixtures
