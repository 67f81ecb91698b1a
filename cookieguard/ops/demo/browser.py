"""The demo's scripted browser: a cookie jar for one host on plain http, one request at a time.

It keeps cookies the way a browser does for `http://<host>:<port>`: a `Set-Cookie` replaces the
cookie of that name, `Max-Age=0` (or a past `Expires`) deletes it, and a cookie marked `Secure` is
refused because the page is not https (RFC 6265bis 5.7: "Secure" cookies only from secure
origins). It does not follow redirects itself: the demo follows them hop by hop, so it can say
what happened on each one. It never shows a cookie's value.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import aiohttp

from cookieguard.cookies import format_cookie_header
from cookieguard.session.layouts import Layout, Session
from cookieguard.tokens.claims import decode_claims

_TITLE = re.compile(r"<title>([^<]*)</title>", re.IGNORECASE)


@dataclass(frozen=True)
class Hop:
    """One request and its answer, as the browser saw it. Cookie *names* only."""

    method: str
    path: str
    status: int
    location: str | None
    title: str | None
    stored: tuple[str, ...]  # cookies the browser stored (names)
    deleted: tuple[str, ...]  # cookies the browser deleted (names)
    refused: tuple[str, ...]  # Set-Cookie the browser refused (Secure on http)


@dataclass
class ScriptedBrowser:
    base_url: str
    http: aiohttp.ClientSession
    layout: Layout  # the app's cookie layout: what the page's own script reads
    jar: dict[str, str] = field(default_factory=dict)

    async def request(self, method: str, path: str, form: dict[str, str] | None = None) -> Hop:
        headers = {"Accept": "text/html", "Sec-Fetch-Mode": "navigate"}
        if self.jar:
            headers["Cookie"] = format_cookie_header(list(self.jar.items()))
        async with self.http.request(
            method, self.base_url + path, headers=headers, data=form, allow_redirects=False
        ) as resp:
            body = await resp.text(errors="replace")
            stored, deleted, refused = self._receive(resp.headers.getall("Set-Cookie", []))
            location = resp.headers.get("Location")
            if location:
                parts = urlsplit(location)
                location = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            match = _TITLE.search(body)
            return Hop(
                method=method,
                path=path,
                status=resp.status,
                location=location,
                title=match.group(1) if match else None,
                stored=tuple(stored),
                deleted=tuple(deleted),
                refused=tuple(refused),
            )

    def _receive(self, set_cookies: list[str]) -> tuple[list[str], list[str], list[str]]:
        stored: list[str] = []
        deleted: list[str] = []
        refused: list[str] = []
        for line in set_cookies:
            pair, *attributes = line.split(";")
            name, _, value = pair.partition("=")
            name, value = name.strip(), value.strip()
            attrs = {}
            for attribute in attributes:
                key, _, attr_value = attribute.strip().partition("=")
                attrs[key.lower()] = attr_value.strip()
            if "secure" in attrs:
                refused.append(name)
            elif _expired(attrs):
                if self.jar.pop(name, None) is not None:
                    deleted.append(name)
            else:
                self.jar[name] = value
                stored.append(name)
        return stored, deleted, refused

    # -- what the page's own script (Amplify or supabase-js in the browser) could read ---------

    def session(self) -> Session | None:
        return self.layout.read(list(self.jar.items()))

    def access_token_exp(self) -> float | None:
        session = self.session()
        claims = decode_claims(session.access_token or "") if session is not None else None
        return claims.exp if claims is not None else None

    def refresh_token_id(self) -> str | None:
        """A digest naming the refresh token the browser holds (never the token itself)."""
        session = self.session()
        if session is None or not session.refresh_token:
            return None
        return hashlib.sha256(session.refresh_token.encode()).hexdigest()[:12]


def _expired(attrs: dict[str, str]) -> bool:
    max_age = attrs.get("max-age")
    if max_age is not None:
        try:
            return int(max_age) <= 0
        except ValueError:
            return False
    expires = attrs.get("expires")
    if expires:
        try:
            return parsedate_to_datetime(expires) <= datetime.now(UTC)
        except (TypeError, ValueError):
            return False
    return False


def short_name(name: str) -> str:
    """`CognitoIdentityServiceProvider.<client>.<user>.accessToken` -> `accessToken`."""
    if name.startswith("CognitoIdentityServiceProvider."):
        return name.rsplit(".", 1)[-1]
    return name
