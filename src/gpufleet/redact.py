"""Keep credentials out of what gpufleet shows: headers, /status, metrics labels, logs.

A remote `url` may carry credentials (`http://user:secret@host/v1`, which aiohttp sends as Basic auth);
everything that displays a URL shows `redact_url(url)` instead (issue 12).

    redact_url("http://bob:hunter2@10.0.0.5:8000/v1?key=abc")  # 'http://***@10.0.0.5:8000/v1?key=***'
"""

from __future__ import annotations

import re
from collections.abc import Iterable
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


# Values that look like credentials wherever they appear in an engine's log: `--api-key X`, `api_key=X`,
# vLLM's `'api_key': ['X']` (its "non-default args" line), `token: X`, `Authorization: Bearer X`, and
# Hugging Face tokens (`hf_` + 30 or more letters and digits).
_NAMED_SECRET = re.compile(
    r"(?i)(?P<name>--?(?:api[-_]?key|hf[-_]token|token|password|secret)[= ]|"
    r"\b(?:[a-z0-9_]*(?:api[-_]?key|token|password|passwd|secret))\b['\"]?\s*[:=]\s*\[?\s*['\"]?|"
    r"\bbearer\s+)"
    r"(?P<value>[^\s'\",\]\}]+)"
)
_HF_TOKEN = re.compile(r"\bhf_[A-Za-z0-9]{30,}\b")
# Environment variable names whose values are credentials (HF_TOKEN, VLLM_API_KEY, AWS_SECRET_ACCESS_KEY, ...).
_SECRET_ENV_NAME = re.compile(r"(?i)(key|token|secret|password|passwd|credential)")


def secret_env_values(env: dict[str, str]) -> list[str]:
    """The values of `env` whose variable names say they are credentials (for `mask_secrets`)."""
    return [value for name, value in env.items() if value and _SECRET_ENV_NAME.search(name)]


def mask_secrets(text: str, known: Iterable[str] = ()) -> str:
    """`text` with every `known` secret, URL user-info, and credential-looking value replaced by `***`.

    For free text a process printed (an engine's log): the known values are the ones gpufleet handed it (its
    per-start API key, the secrets in its environment); the patterns catch the ones it did not.
    """
    for secret in sorted({s for s in known if len(s) >= 4}, key=len, reverse=True):  # longest first: no partials
        text = text.replace(secret, MASK)
    text = _HF_TOKEN.sub(MASK, text)
    text = _NAMED_SECRET.sub(lambda m: m.group("name") + (m.group("value") if m.group("value") == MASK else MASK), text)
    return mask_credentials(text)
