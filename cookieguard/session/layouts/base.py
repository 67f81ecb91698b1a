"""What every cookie layout reads and writes, and the chunk codec the layouts share.

A layout knows where an app keeps its session in cookies: which names, how values are encoded,
how a value too large for one cookie is split. It reads a `Session` out of a `Cookie` header and,
after a refresh, writes `FreshTokens` back (the outgoing `Cookie` header and the `Set-Cookie`s
for the browser). Pure: no I/O, no clock, no logging.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar

from cookieguard.cookies import MAX_COOKIE_BYTES, SetCookie, format_cookie_header, is_valid_cookie_name
from cookieguard.lru import LRU, MISSING

if TYPE_CHECKING:
    from typing import Self

    from cookieguard.config import CookieAttributes, CookiesConfig
    from cookieguard.schema import Section
    from cookieguard.tokens.providers.base import ProviderConfig

Pairs = list[tuple[str, str]]
NO_CONTEXT: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True)
class Session:
    """The auth state one request carries in its cookies, as its layout read it. Tokens decoded.

    The tokens and the user are what the proxy decides on; `payload` is the layout's own (what
    it read that is not a token and that it must write back whole, e.g. a session JSON holding
    fields cookieguard does not own). `cookie_names` are every cookie (raw names, chunks
    included) that holds this session: what the layout rewrites, strips and expires.
    """

    user: str | None  # amplify: LastAuthUser, percent-decoded; named: None
    access_token: str | None = field(repr=False)
    id_token: str | None = field(repr=False)
    refresh_token: str | None = field(repr=False)
    clock_drift_ms: int = 0
    # What the provider needs beside the refresh token, as the layout read it (opaque here:
    # tokens.providers.base.Provider.refresh); empty for most layouts.
    refresh_context: Mapping[str, str] = field(default_factory=lambda: NO_CONTEXT, repr=False)
    cookie_names: frozenset[str] = frozenset()
    payload: Any = field(default=None, repr=False)
    # When the access token expires as the session itself records it (a layout whose app keeps
    # an `expires_at` beside the token, which may be opaque); None: the token's own `exp` decides.
    expires_at: float | None = None
    # The subject of a session only the app could have written (a cookie sealed with the app's
    # secret): proven without a token check (docs/security.md "Abuse limits"). None for most layouts.
    sealed_subject: str | None = None


@dataclass(frozen=True)
class FreshTokens:
    """What a refresh gave, ready for the layout to write back."""

    access_token: str = field(repr=False)
    id_token: str | None = field(repr=False)
    refresh_token: str = field(repr=False)  # the rotated one, else the old one
    clock_drift_ms: int = 0  # iat*1000 - now_ms, computed by the caller
    expires_in_s: int | None = None  # the token response's `expires_in`, for layouts that store it
    # The token response's other fields a layout stores (TokenSet.extra_fields).
    extra_fields: Mapping[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class LayoutConfig:
    """A layout's own keys of the `cookies:` section, read by the layout's record (as a provider
    kind reads its `provider:` keys). This base has none; a layout with keys subclasses it."""

    yaml_keys: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def load(cls, s: Section, provider: ProviderConfig | None) -> Self:
        """Read the keys from the `cookies:` section; problems go to `s` with their key path."""
        return cls()


# `explain`'s time formatter: (epoch seconds, "expires" | "issued") -> "in 5m (12:00:00 UTC)".
When = Callable[[float, str], str]


@dataclass(frozen=True)
class Offline:
    """The layout `cookieguard explain` reads a pasted header with, and what it says first.

    `layout` None: nothing to read; `notes` say why (and `ambiguous`: the header names several
    apps and the user must choose; else `no_session` is the verdict's reason)."""

    layout: Layout | None
    notes: tuple[str, ...] = ()
    ambiguous: bool = False
    no_session: str = ""


class Layout(ABC):
    """One way of keeping a session in cookies. Registered by name in `cookieguard.session.layouts`."""

    # The provider kinds whose tokens this layout holds; None: any kind.
    provider_kinds: ClassVar[tuple[str, ...] | None] = None
    # The record of its own `cookies:` keys (`cookies.layout_config` is one of these).
    config: ClassVar[type[LayoutConfig]] = LayoutConfig
    # `cookies.attributes` defaults of this layout where they differ from CookieAttributes' own
    # (field name -> value): what the app's own cookie library writes.
    attribute_defaults: ClassVar[Mapping[str, Any]] = {}
    # `refresh.on_rejected` policies this layout carries out beside clear | pass | login
    # (each by a method of its own: `flag` by `flag_rejected`).
    rejected_policies: ClassVar[tuple[str, ...]] = ()

    @classmethod
    @abstractmethod
    def from_config(cls, cookies: CookiesConfig, provider: ProviderConfig | None) -> Self:
        """The layout for this configuration; ValueError when it cannot be built from it."""

    @abstractmethod
    def relevant_cookies(self, header: str) -> Pairs:
        """The pairs of a `Cookie` header that `read` looks at (all of them would do too)."""

    @abstractmethod
    def owns(self, name: str) -> bool:
        """Whether a cookie of this name (raw, as in `Set-Cookie`) is one this layout keeps a
        session in: a chunk, the plain name, any of its cookies. An app that writes one is
        writing the session, and its write wins whole (cookieguard.session.merge)."""

    @abstractmethod
    def read(self, cookies: Sequence[tuple[str, str]]) -> Session | None:
        """The session in these cookies, or None when there are no auth cookies at all."""

    @abstractmethod
    def cookie_header(self, cookies: Sequence[tuple[str, str]], session: Session, tokens: FreshTokens) -> str:
        """The outgoing `Cookie` header: fresh tokens in place of the old, the rest unchanged."""

    @abstractmethod
    def set_cookies(self, session: Session, tokens: FreshTokens, attrs: CookieAttributes) -> list[SetCookie]:
        """What the browser must store after a refresh."""

    @classmethod
    def offline(
        cls, cookies: CookiesConfig, provider: ProviderConfig | None, header: Pairs, client_id: str | None
    ) -> Offline:
        """The layout for `cookieguard explain`: the configured one (`client_id`: from the command
        line or the configuration, printed when there is one)."""
        return Offline(cls.from_config(cookies, provider), (f"client id: {client_id}",) if client_id else ())

    def describe(self, session: Session, when: When) -> list[str]:
        """What `explain` prints about the session beside its cookie names and tokens (never a
        token or a cookie value): what the layout keeps that is not a token."""
        return []

    def flag_rejected(
        self, cookies: Sequence[tuple[str, str]], session: Session, attrs: CookieAttributes
    ) -> tuple[str, list[SetCookie]]:
        """`on_rejected: flag` (for a layout that lists it in `rejected_policies`): the outgoing
        `Cookie` header and the Set-Cookies of the session marked as over, its tokens kept, so the
        app's own code signs the user out."""
        raise NotImplementedError(f"{type(self).__name__} does not flag rejected sessions")

    def stripped_cookie_header(self, cookies: Sequence[tuple[str, str]], session: Session) -> str:
        """The outgoing `Cookie` header without any of the session's auth cookies."""
        return format_cookie_header([(n, v) for n, v in cookies if n not in session.cookie_names])

    def clear_cookies(self, session: Session, attrs: CookieAttributes) -> list[SetCookie]:
        """Expire every auth cookie of the session."""
        # A name the browser sent but that cannot be written safely (e.g. raw non-ASCII) is left alone.
        return [SetCookie.expired(n, attrs) for n in sorted(session.cookie_names) if is_valid_cookie_name(n)]


class SessionReader:
    """`layout.read(layout.relevant_cookies(header))`, remembered per Cookie header.

    A browser sends the same Cookie header on every request of a page load (documents, assets,
    API calls) until a cookie changes, so the hot path reads each header once. Sessions are
    immutable and the read depends on nothing but the header. Bounded (an `LRU`): its worst
    case is `size` headers of at most 64 KB each (typically ~4 KB: 2 MB at 512).
    """

    __slots__ = ("_seen", "layout")

    def __init__(self, layout: Layout, size: int = 512) -> None:
        self.layout = layout
        self._seen: LRU[str, Session | None] = LRU(size)

    def __len__(self) -> int:
        return len(self._seen)

    def read(self, header: str) -> Session | None:
        session = self._seen.get(header, MISSING)
        if session is MISSING:
            session = self.layout.read(self.layout.relevant_cookies(header))
            self._seen.put(header, session)
        return session


# ---------------------------------------------------------------------------------------------
# Chunks: one value over `<name>`, or `<name>.0`, `<name>.1`, ...
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Chunks:
    """One encoded value kept in the cookie `<name>` when it fits, else in `<name>.0`, `.1`, ...

    The one chunk codec: @supabase/ssr's chunker and the named layout's (and any layout that
    splits a value). `limit` bounds each cookie: its name plus value (browsers refuse more than
    4096 bytes), or with `value_only` its value alone (@supabase/ssr splits values longer than
    3180 characters). Values are percent-encoded (every `%` starts an escape); a chunk never ends
    inside an escape or inside a multi-byte character's escapes, because readers such as the
    `cookie` package decode each chunk on its own.
    """

    limit: int = MAX_COOKIE_BYTES
    value_only: bool = False

    def split(self, name: str, encoded: str) -> Pairs:
        """`[(name, encoded)]` when it fits in one cookie, else `[(name.0, part), (name.1, part), ...]`."""
        if (0 if self.value_only else len(name)) + len(encoded) <= self.limit:
            return [(name, encoded)]
        chunks: Pairs = []
        start = 0
        while start < len(encoded):
            chunk_name = f"{name}.{len(chunks)}"
            size = self.limit - (0 if self.value_only else len(chunk_name))
            end = _cut(encoded, start, start + size)
            if end <= start:
                raise ValueError(f"cookie name {name!r} leaves no room for a value")
            chunks.append((chunk_name, encoded[start:end]))
            start = end
        return chunks

    @staticmethod
    def index(name: str, base: str) -> int | None:
        """n for `<base>.<n>` (n written canonically: 0, 1, ..., never 01), else None."""
        if len(name) <= len(base) + 1 or not name.startswith(base) or name[len(base)] != ".":
            return None
        digits = name[len(base) + 1 :]
        if not digits.isascii() or not digits.isdigit() or (len(digits) > 1 and digits[0] == "0"):
            return None
        return int(digits) if len(digits) < 7 else None

    @classmethod
    def holds(cls, name: str, base: str) -> bool:
        """Whether the cookie `name` holds (a piece of) the value of `base`."""
        return name == base or cls.index(name, base) is not None

    @classmethod
    def order(cls, name: str, base: str) -> int:
        """Sort key of the cookies of `base`: the plain cookie first, then the chunks in order."""
        index = cls.index(name, base)
        return -1 if index is None else index

    @staticmethod
    def join(first: Mapping[str, str], base: str) -> str:
        """The encoded value of `base` from cookies by name (the first of duplicates): a non-empty
        plain `<base>` wins, else the chunks read contiguously from `.0`; "" when there is none."""
        raw = first.get(base, "")
        if raw:
            return raw
        parts: list[str] = []
        while part := first.get(f"{base}.{len(parts)}"):  # up to the first missing or empty one
            parts.append(part)
        return "".join(parts)

    @staticmethod
    def replace(
        cookies: Sequence[tuple[str, str]],
        owned: frozenset[str],
        fresh: Mapping[str, Pairs],
        base_of: Callable[[str], str | None],
    ) -> Pairs:
        """`cookies` with each base's old pieces (among `owned`) replaced by its `fresh` pairs, in
        the place of its first old piece; a base the header did not hold is appended."""
        out: Pairs = []
        placed: set[str] = set()
        for name, value in cookies:
            base = base_of(name) if name in owned else None
            if base is None or base not in fresh:
                out.append((name, value))
            elif base not in placed:
                out.extend(fresh[base])
                placed.add(base)
        for base, pairs in fresh.items():
            if base not in placed:
                out.extend(pairs)
        return out

    @classmethod
    def stale(cls, names: Iterable[str], base: str, written: Pairs) -> list[str]:
        """The cookies of `base` among `names` that writing `written` leaves behind: the plain
        cookie when chunks are written, the chunks when it is plain, and chunks past the new last
        one. Left in the browser, they would be read back into a corrupt value (@supabase/ssr #210)."""
        kept = {name for name, _ in written}
        return sorted(
            (n for n in names if n not in kept and cls.holds(n, base)), key=lambda n: cls.order(n, base)
        )


def _cut(encoded: str, start: int, end: int) -> int:
    """`end`, moved back so that `encoded[start:end]` ends neither inside a `%XX` escape nor
    inside the escapes of one multi-byte UTF-8 character."""
    if end >= len(encoded):
        return len(encoded)
    escape = encoded.rfind("%", max(start, end - 2), end)
    if escape != -1:
        end = escape
    i, continuation = end, 0
    while i - 3 >= start and encoded[i - 3] == "%":
        try:
            byte = int(encoded[i - 2 : i], 16)
        except ValueError:
            return end
        if byte & 0xC0 == 0x80:  # 10xxxxxx: a continuation byte
            continuation += 1
            i -= 3
            continue
        length = 2 if byte & 0xE0 == 0xC0 else 3 if byte & 0xF0 == 0xE0 else 4 if byte & 0xF8 == 0xF0 else 1
        return i - 3 if continuation + 1 < length else end
    return end
