"""Secrets inside URLs: found, hidden and refused without trusting the URL to parse.

A password with an unencoded ``/``, ``#``, ``?`` or ``@`` makes a URL ambiguous: a parser
that stops the authority at the first ``/``, ``?`` or ``#`` (as RFC 3986 says) would show
the tail of the password as a path, query or fragment. So the userinfo is taken to run
from ``://`` to the *last* ``@`` of the whole URL: that hides too much rather than too
little when the URL is malformed. :func:`userinfo_problem` is what the configuration uses
to refuse such URLs, with the fix, before anything runs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote

__all__ = ["redact_url", "scrub", "scrub_fields", "url_secrets", "userinfo_problem"]

_SECRET_PARAMS = re.compile(
    r"(?i)((?:^|[?&;])[a-z_]*(?:password|passwd|pass|token|secret|pwd)[a-z_]*=)[^&;#]*"
)
# Schemes whose user part alone is a secret: nats://TOKEN@host.
_TOKEN_SCHEMES = ("nats", "tls", "ws")


def _split_userinfo(url: str) -> tuple[str, str, str] | None:
    """(prefix up to ``://``, userinfo, rest from the last ``@``), or None without ``@``."""
    scheme_end = url.find("://")
    if scheme_end < 0:
        return None
    start = scheme_end + 3
    at = url.rfind("@", start)
    if at < 0:
        return None
    return url[:start], url[start:at], url[at:]


def userinfo_problem(url: str) -> str | None:
    """Why the user name or password of ``url`` is ambiguous, with the fix; None if it is not.

    The text never contains any part of the URL.
    """
    scheme_end = url.find("://")
    if scheme_end < 0:
        return None
    start = scheme_end + 3
    ends = [i for i in (url.find(c, start) for c in "/?#") if i >= 0]
    authority_end = min(ends, default=len(url))
    if url.count("@", start, authority_end) > 1 or "@" in url[authority_end:]:
        return (
            "the user name or password holds an unencoded '/', '#', '?' or '@' (or an '@' "
            "follows the host): percent-encode them in the URL as %2F, %23, %3F, %40"
        )
    return None


def redact_url(url: str) -> str:
    """Hide secrets in a URL: ``user:***@host``, ``***@host`` (a NATS token), ``password=***``."""
    parts = _split_userinfo(url)
    if parts is not None:
        prefix, userinfo, rest = parts
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":***"
        elif prefix.lower().startswith(_TOKEN_SCHEMES):
            userinfo = "***"  # nats://TOKEN@host: the user part is the token
        url = prefix + userinfo + rest
    head, sep, query = url.partition("?")
    if sep:
        url = head + sep + _SECRET_PARAMS.sub(r"\1***", query)
    return url


def url_secrets(url: str) -> list[str]:
    """The secret strings inside a URL (password, token, secret query values), also decoded."""
    found: list[str] = []
    parts = _split_userinfo(url)
    if parts is not None:
        userinfo = parts[1]
        if ":" in userinfo:
            found.append(userinfo.split(":", 1)[1])
        elif parts[0].lower().startswith(_TOKEN_SCHEMES):
            found.append(userinfo)
    _, _, query = url.partition("?")
    for m in _SECRET_PARAMS.finditer(query):
        value = query[m.end() :].split("&", 1)[0].split(";", 1)[0].split("#", 1)[0]
        found.append(value)
    # Client libraries report the decoded password (S3cret/x, not S3cret%2Fx).
    found += [unquote(f) for f in found if unquote(f) != f]
    return [f for f in found if f]


def scrub(text: str, secrets: Iterable[str]) -> str:
    """Remove secrets, and any long fragment of them, from an error message."""
    for secret in secrets:
        pieces = {secret, *re.split(r"[/#?@:%&;]", secret)}
        for piece in sorted(pieces, key=len, reverse=True):
            if len(piece) >= 4:
                text = text.replace(piece, "***")
    return text


def scrub_fields(value: Any, secrets: tuple[str, ...], keys: frozenset[str]) -> Any:
    """``value`` with :func:`scrub` applied to every string under one of ``keys``, at any depth.

    Only free-text fields (error messages) are scrubbed: a password that happens to equal
    a name (``postgres``) must not turn a destination's type into ``***``.
    """
    if not secrets:
        return value
    if isinstance(value, Mapping):
        return {
            k: _scrub_all(v, secrets) if k in keys else scrub_fields(v, secrets, keys)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [scrub_fields(v, secrets, keys) for v in value]
    return value


def _scrub_all(value: Any, secrets: tuple[str, ...]) -> Any:
    if isinstance(value, str):
        return scrub(value, secrets)
    if isinstance(value, Mapping):
        return {k: _scrub_all(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub_all(v, secrets) for v in value]
    return value
