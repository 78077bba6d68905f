"""Keeping passwords out of text: the one masker every printed line and message goes
through. Standard library only, so the command line uses it before SQLAlchemy loads."""

from __future__ import annotations

import re
from urllib.parse import unquote

_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&\s,;'\"]*", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"([\w+.-]+://[^:/?#@\s]*):[^@\s]*@")


def password_of(url: str) -> str | None:
    """The password in a URL's ``user:password@`` part, as written (%-escaped)."""
    match = re.match(r"^[\w+.-]+://[^:/?#@]*:(.*)@", url, re.DOTALL)
    return match[1] if match else None


def mask(text: str, url: str = "") -> str:
    """``text`` with passwords hidden: ``url``'s wherever it appears (also %-decoded), every
    ``scheme://user:password@`` and ``?password=``, and in a malformed URL
    (``postgres:user:pw@host``, ``postgresql//user:pw@host``) all before its last ``@``."""
    password = password_of(url) if url else None
    if password is None and (given := re.search(r"[?&]password=([^&\s]*)", url, re.I)):
        password = given[1]
    if not password and url and not re.match(r"^[\w+.-]+://", url):
        head = url.rpartition("@")[0]
        if ":" in head:  # malformed: hide everything between the scheme and the last @
            password = re.sub(r"^[A-Za-z][\w+.-]*[:/]*", "", head)
    if password and len(password) >= 3:
        for form in {password, unquote(password)}:
            text = text.replace(form, "***")
    text = _URL_PASSWORD.sub(r"\1:***@", text)
    return _QUERY_PASSWORD.sub(r"\1***", text)
