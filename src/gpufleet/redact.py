"""Keep credentials out of what gpufleet shows: headers, /status, metrics labels, logs.

A remote `url` may carry credentials (`http://user:secret@host/v1`, which aiohttp sends as Basic auth);
everything that displays a URL shows `redact_url(url)` instead (issue 12).

    redact_url("http://bob:hunter2@10.0.0.5:8000/v1?key=abc")  # 'http://***@10.0.0.5:8000/v1?key=***'
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "***"
# user-info in a URL inside free text (an aiohttp error, a message someone formatted with the raw url):
# `scheme://anything-but-slash@` and a scheme-less `user:password@`.
_URL_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^/\s@'\"]+@")
_BARE_USERINFO = re.compile(r"(?<![\w/@*])[^\s/@:'\"=]+:[^\s/@'\"]+@")


def redact_url(url: str) -> str:
    """`url` with its user-info and every query-parameter value replaced by `***`."""
    if "@" not in url and "?" not in url:
        return url  # the common case, on every request's x-gpufleet-target header
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rpartition('@')[2]}"
    query = parts.query
    if query:
        query = urlencode([(key, MASK) for key, _ in parse_qsl(query, keep_blank_values=True)], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def mask_credentials(text: str) -> str:
    """`text` with the user-info of every URL in it replaced by `***` (for messages built from errors)."""
    if "@" not in text:
        return text
    return _BARE_USERINFO.sub(f"{MASK}@", _URL_USERINFO.sub(rf"\g<scheme>{MASK}@", text))


def url_has_credentials(url: str) -> bool:
    """True when `url` carries a user name or password before its host."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.username is not None or parts.password is not None
