"""The `named` layout: tokens in cookies with configured names (generic OIDC apps).

Values too large for one cookie are split into `<name>.0`, `<name>.1`, ... by the shared chunk
codec (`layouts.base.Chunks`); docs/behaviour.md §5.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from cookieguard.cookies import (
    MAX_COOKIE_BYTES,
    SetCookie,
    escape_cookie_value,
    format_cookie_header,
    is_valid_cookie_name,
    percent_decode,
    select_cookies,
)
from cookieguard.schema import cookie_name, key, read_record, section_key
from cookieguard.session.layouts.base import Chunks, FreshTokens, Layout, LayoutConfig, Pairs, Session

if TYPE_CHECKING:
    from cookieguard.config import CookieAttributes, CookiesConfig
    from cookieguard.schema import Section
    from cookieguard.tokens.providers.base import ProviderConfig


@dataclass(frozen=True)
class CookieNames:
    """`cookies.names`: the cookies the app keeps its tokens in."""

    access_token: str = key("access_token", cookie_name, "", default="access_token")
    refresh_token: str = key("refresh_token", cookie_name, "", default="refresh_token")
    id_token: str | None = key("id_token", cookie_name, "", default=None)


@dataclass(frozen=True)
class NamedCookies(LayoutConfig):
    """The named layout's keys of the `cookies:` section."""

    yaml_keys: ClassVar[tuple[str, ...]] = ("names",)

    names: CookieNames = section_key(
        "names",
        CookieNames,
        "`named` layout only: `{access_token, refresh_token, id_token}` cookie names",
        shown="`access_token`, `refresh_token`, no id token",
    )

    @classmethod
    def load(cls, s: Section, provider: ProviderConfig | None) -> NamedCookies:
        if not s.has("names"):
            s.seen.add("names")
            return cls()
        return cls(read_record(s.section("names"), CookieNames))


class NamedLayout(Layout):
    """Configured cookie names, large values split into numbered chunks.

    Values are stored as the app's cookie library writes them: raw when every character is a
    cookie-octet (JWTs, base64url, hex), with `%` and anything else percent-escaped; reading
    percent-decodes, so `abc%3D%3D` written by an app using encodeURIComponent reads `abc==`.
    A plain `<name>` with a value wins over chunks; chunks are read contiguously from `.0`.
    """

    config: ClassVar[type[LayoutConfig]] = NamedCookies

    @classmethod
    def from_config(cls, cookies: CookiesConfig, provider: ProviderConfig | None) -> NamedLayout:
        own = cookies.layout_config
        return cls(own.names if isinstance(own, NamedCookies) else CookieNames())

    def __init__(self, names: CookieNames, max_cookie_bytes: int = MAX_COOKIE_BYTES) -> None:
        self.names = names
        self.chunks = Chunks(max_cookie_bytes)
        bases = [names.access_token, names.refresh_token, names.id_token]
        self._bases = tuple(b for b in bases if b)
        if len(set(self._bases)) != len(self._bases):
            raise ValueError("cookie names for access, refresh and id token must differ")
        for base in self._bases:
            if not is_valid_cookie_name(base):
                raise ValueError(f"not a cookie name: {base!r}")

    def relevant_cookies(self, header: str) -> Pairs:
        return select_cookies(header, self._bases)

    def owns(self, name: str) -> bool:
        return self._base_of(name) is not None

    def _base_of(self, name: str) -> str | None:
        for base in self._bases:
            if Chunks.holds(name, base):
                return base
        return None

    def read(self, cookies: Sequence[tuple[str, str]]) -> Session | None:
        first: dict[str, str] = {}
        for name, value in cookies:
            if self._base_of(name) is not None:
                first.setdefault(name, value)
        if not first:
            return None

        def value_of(base: str | None) -> str | None:
            return (percent_decode(Chunks.join(first, base)) or None) if base else None

        return Session(
            user=None,
            access_token=value_of(self.names.access_token),
            id_token=value_of(self.names.id_token),
            refresh_token=value_of(self.names.refresh_token),
            cookie_names=frozenset(first),
        )

    def _fresh_cookies(self, tokens: FreshTokens) -> dict[str, Pairs]:
        fresh = {
            self.names.access_token: tokens.access_token,
            self.names.refresh_token: tokens.refresh_token,
        }
        if self.names.id_token and tokens.id_token is not None:
            fresh[self.names.id_token] = tokens.id_token
        return {base: self.chunks.split(base, escape_cookie_value(value)) for base, value in fresh.items()}

    def cookie_header(self, cookies: Sequence[tuple[str, str]], session: Session, tokens: FreshTokens) -> str:
        fresh = self._fresh_cookies(tokens)
        return format_cookie_header(Chunks.replace(cookies, session.cookie_names, fresh, self._base_of))

    def set_cookies(self, session: Session, tokens: FreshTokens, attrs: CookieAttributes) -> list[SetCookie]:
        written: list[SetCookie] = []
        for base, pairs in self._fresh_cookies(tokens).items():
            written.extend(SetCookie.with_attributes(name, value, attrs) for name, value in pairs)
            ours = [n for n in session.cookie_names if self._base_of(n) == base]
            written.extend(SetCookie.expired(name, attrs) for name in Chunks.stale(ours, base, pairs))
        return written
