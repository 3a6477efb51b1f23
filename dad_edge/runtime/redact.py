"""Credentials out of what we print: `rtsp://user:password@host/...` becomes `rtsp://***@host/...`.

Camera and stream URLs carry their credentials in them (RTSP cameras almost always do), and
the source's name goes into logs, error messages, Result.source and every line of an events
file. Everything that shows a source shows redact_url(spec); only the capture itself gets the URL.
"""
from __future__ import annotations

import re

REDACTED = "***"
# scheme://userinfo@ : the userinfo runs to the last '@' of the authority (a password with an unescaped '@'
# is common in camera URLs, and FFmpeg splits at the last one as well).
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^/\s?#]*@")
# ?user=...&password=... : cameras and media servers that take credentials or tokens in the query.
_SECRET_QUERY = re.compile(r"(?P<key>[?&;](?:user|username|login|password|passwd|pass|pwd|token|access_token|"
                           r"auth|key|api_key|apikey|secret|signature|sig)=)[^&#\s]*", re.IGNORECASE)


def redact_url(text: str) -> str:
    """`text` with the credentials of every URL in it replaced by ***."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{REDACTED}@", text)
    return _SECRET_QUERY.sub(lambda m: f"{m['key']}{REDACTED}", text)
