"""Auth.js session cookies (`next-auth` 4, `next-auth` 5 / `@auth/core`): JWE, chunks, token fields.

Auth.js keeps the whole session in one encrypted cookie: a compact JWE, `alg: dir`, with
`A256CBC-HS512` (v5) or `A256GCM` (v4, and v5 before 2024), under a key derived from the app's
secret with HKDF-SHA256. v5 names the key in the header (`kid`, its RFC 7638 thumbprint) so that
any of several secrets can decrypt while the first one encrypts. A value longer than one cookie is
split into `<name>.0`, `<name>.1`, ...; readers join every cookie whose name starts with the session
name, ordered by the number after its last dot, exactly as the libraries' `SessionStore` does.

The codec is pure: no I/O, no clock (callers pass `now_s`), no logging. Bad input of any kind
is "not a session" (None), never an exception. `AuthjsLayout` at the end is the `authjs` cookie
layout (docs/providers/authjs.md) built on it; its only state is a wall clock (a cookie past its
JWT's `exp` is no session, as for the library) and a memo of the cookie it wrote per refresh.
"""

from __future__ import annotations

import base64
import functools
import json
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeGuard

from cookieguard.cookies import SetCookie, format_cookie_header, is_valid_cookie_name, select_cookies
from cookieguard.lru import LRU
from cookieguard.schema import cookie_name as _cookie_name
from cookieguard.schema import key, nonempty_string, one_of, read_record, section_key
from cookieguard.session.layouts.base import FreshTokens, Layout, LayoutConfig, Pairs, Session, When
from cookieguard.tokens.claims import decode_claims

if TYPE_CHECKING:
    from joserfc.jwe import JWERegistry
    from joserfc.jwk import OctKey

    from cookieguard.config import CookieAttributes, CookiesConfig
    from cookieguard.schema import Section
    from cookieguard.tokens.providers.base import ProviderConfig

Version = Literal[4, 5]
ENC_CBC = "A256CBC-HS512"  # what v5 writes
ENC_GCM = "A256GCM"  # what v4 (and v5 before 2024) writes
ENCS = (ENC_CBC, ENC_GCM)
KEY_BYTES = {ENC_CBC: 64, ENC_GCM: 32}
# Both `decode`s pass jose `clockTolerance: 15`.
CLOCK_TOLERANCE_S = 15
# The libraries' CHUNK_SIZE: 4096 minus their estimate of an empty cookie's size (160 / 163).
CHUNK_SIZE: Mapping[int, int] = {5: 3936, 4: 3933}
SECURE_PREFIX = "__Secure-"
SESSION_COOKIE: Mapping[int, str] = {5: "authjs.session-token", 4: "next-auth.session-token"}


# The JOSE library (joserfc, on `cryptography`) is imported when a key is first derived, not with
# the module: the layouts package is imported by the pure plan, which imports nothing of crypto.
@functools.cache
def _registry() -> JWERegistry:
    from joserfc.jwe import JWERegistry

    # jose accepts header parameters it does not know; so does the reader here.
    return JWERegistry(algorithms=["dir", *ENCS], strict_check_header=False)


def default_cookie_name(version: Version) -> str:
    """The session cookie's name when the app does not configure one (over http)."""
    return SESSION_COOKIE[version]


def derive_key(version: Version, secret: str, cookie_name: str, enc: str) -> bytes:
    """The content encryption key the library derives from `secret` for a cookie of this name.

    v5: salt = the full cookie name (the `__Secure-` variant derives another key), info
    `Auth.js Generated Encryption Key (<name>)`. v4: salt empty, info `NextAuth.js Generated
    Encryption Key`. 64 bytes for A256CBC-HS512, 32 for A256GCM.
    """
    if version == 5:
        salt, info = cookie_name.encode(), f"Auth.js Generated Encryption Key ({cookie_name})".encode()
    else:
        salt, info = b"", b"NextAuth.js Generated Encryption Key"
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    # An empty salt is HKDF's default (HashLen zero bytes), as @panva/hkdf does with "".
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES[enc], salt=salt or None, info=info).derive(
        secret.encode()
    )


def key_id(key: bytes) -> str:
    """v5's `kid`: the RFC 7638 thumbprint of `key` as an `oct` JWK, hashed with SHA-512 for a
    64-byte key and SHA-256 for a 32-byte one (the library's `sha${key.byteLength << 3}`)."""
    from joserfc.jwk import OctKey, thumbprint

    digest: Literal["sha256", "sha512"] = "sha512" if len(key) == 64 else "sha256"
    return thumbprint(OctKey.import_key(key).as_dict(), digest)


class Keys:
    """The derived keys of the app's secrets, per cookie name and `enc`, derived once each.

    The first secret encrypts; a reader picks the secret whose key's `kid` the header names, or,
    with no `kid` (v4, and v5 cookies from before `kid`), tries the first secret only, as the
    libraries do.
    """

    __slots__ = ("_derived", "secrets", "version")

    def __init__(self, version: Version, secrets: Sequence[str]) -> None:
        if not secrets:
            raise ValueError("at least one secret is needed")
        self.version: Version = version
        self.secrets = tuple(secrets)
        # (cookie name, enc) -> [(kid, key)] in the order of `secrets`; at most 2 names x 2 encs
        # through read_session. Imported once: a JWK import costs about as much as a decryption.
        self._derived: dict[tuple[str, str], list[tuple[str, OctKey]]] = {}

    def _keys(self, cookie_name: str, enc: str) -> list[tuple[str, OctKey]]:
        found = self._derived.get((cookie_name, enc))
        if found is None:
            from joserfc.jwk import OctKey

            found = []
            for secret in self.secrets:
                key = derive_key(self.version, secret, cookie_name, enc)
                found.append((key_id(key), OctKey.import_key(key)))
            self._derived[(cookie_name, enc)] = found
        return found

    def encrypting(self, cookie_name: str, enc: str) -> tuple[str, OctKey]:
        """(kid, key) of the first secret."""
        return self._keys(cookie_name, enc)[0]

    def decrypting(self, cookie_name: str, enc: str, kid: str | None) -> OctKey | None:
        keys = self._keys(cookie_name, enc)
        if kid is None:
            # v5's decode returns the first secret's key for a header without kid; v4 has one
            # secret (the first).
            return keys[0][1]
        if self.version == 4:
            return keys[0][1]  # next-auth 4 ignores kid
        return next((key for key_kid, key in keys if key_kid == kid), None)


@dataclass(frozen=True)
class Jwt:
    """A decrypted session: the claims as the app wrote them, and how the JWE was made."""

    claims: dict[str, Any] = field(repr=False)
    enc: str
    has_kid: bool


def decrypt(keys: Keys, token: str, cookie_name: str, now_s: float) -> Jwt | None:
    """The session in `token` (the joined cookie value), or None when it is not one: malformed,
    made with another secret or for another cookie name, not JSON claims, or expired past the
    15 s tolerance (jose's rule: `exp <= now - 15` is expired; `nbf > now + 15` not yet valid)."""
    from joserfc.errors import JoseError

    try:
        return _decrypt(keys, token, cookie_name, now_s)
    except (JoseError, ValueError, TypeError, KeyError, UnicodeError, OverflowError, RecursionError):
        return None


def _decrypt(keys: Keys, token: str, cookie_name: str, now_s: float) -> Jwt | None:
    if not token or token.count(".") != 4:
        return None
    header = _json_object(_b64url_decode(token.split(".", 1)[0]))
    if header is None or header.get("alg") != "dir" or header.get("enc") not in ENCS:
        return None
    enc = header["enc"]
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        return None
    key = keys.decrypting(cookie_name, enc, kid)
    if key is None:
        return None
    from joserfc import jwe

    plaintext = jwe.decrypt_compact(token, key, registry=_registry()).plaintext
    if plaintext is None:
        return None
    claims = _json_object(plaintext)
    if claims is None or not _claims_valid(claims, now_s):
        return None
    return Jwt(claims=claims, enc=enc, has_kid="kid" in header)


def _claims_valid(claims: Mapping[str, Any], now_s: float) -> bool:
    # jose's jwtDecrypt checks: numeric date claims are numbers, exp not past, nbf not ahead.
    for name in ("exp", "iat", "nbf"):
        if name in claims and not _is_number(claims[name]):
            return False
    now = math.floor(now_s)
    if "exp" in claims and claims["exp"] <= now - CLOCK_TOLERANCE_S:
        return False
    return not ("nbf" in claims and claims["nbf"] > now + CLOCK_TOLERANCE_S)


def encrypt(keys: Keys, claims: Mapping[str, Any], cookie_name: str, enc: str) -> str:
    """The compact JWE of `claims` as the library writes it, with the first secret's key: header
    `{"alg":"dir","enc":...,"kid":...}` for v5, `{"alg":"dir","enc":...}` for v4. The claims are
    written as given (the caller keeps `exp`, `iat`, `jti`: the libraries' `encode` stamps new
    ones, which is exactly what writing back must not do)."""
    kid, key = keys.encrypting(cookie_name, enc)
    header: dict[str, str] = {"alg": "dir", "enc": enc}
    if keys.version == 5:
        header["kid"] = kid
    from joserfc import jwe

    return jwe.encrypt_compact(header, _json_bytes(claims), key, registry=_registry())


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _json_bytes(claims: Mapping[str, Any]) -> bytes:
    """`JSON.stringify` as UTF-8: compact, non-ASCII kept, a lone surrogate (which a claim may hold,
    read from a `\\ud800` escape) written back as that escape."""
    text = json.dumps(claims, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text).encode()


# -- cookies -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SessionCookies:
    """The cookies of one request that hold the session, as the library's `SessionStore` reads them."""

    name: str  # the session cookie name the request used (`__Secure-` variant or not)
    value: str = field(repr=False)  # every piece joined, in the library's order
    cookie_names: tuple[str, ...]  # every cookie read (plain, chunks, and any other name the prefix matches)


def session_names(version: Version, cookie_name: str | None = None) -> tuple[str, ...]:
    """The names a request may carry the session under: the `__Secure-` variant first (the app
    writes it over https), then the plain one. A configured `__Secure-` name is the only one."""
    name = cookie_name or default_cookie_name(version)
    if name.startswith(SECURE_PREFIX):
        return (name,)
    return (SECURE_PREFIX + name, name)


def find_session_cookies(
    version: Version, cookies: Iterable[tuple[str, str]], name: str
) -> SessionCookies | None:
    """The pieces of the session named `name` in these cookie pairs, joined as the library joins
    them; None when there are none. Of two cookies with one name, v5 keeps the first (its `cookie`
    parser), next-auth 4 the last (Next.js's request cookies, a Map).

    The library keeps every cookie whose name *starts with* `name` (v5 skips empty values) and
    sorts them by `parseInt` of what follows the last dot; a name with no number there (the plain
    cookie itself) compares equal to everything, so a plain cookie left beside chunks is read with
    them (and the joined value does not decrypt): the order follows V8's sort, reproduced here.
    """
    store: dict[str, str] = {}
    for cookie_name, value in cookies:
        if not cookie_name.startswith(name):
            continue
        if version == 5:
            if value and cookie_name not in store:
                store[cookie_name] = value
        else:
            store[cookie_name] = value  # a Map: the last value, at the first one's place
    if not store:
        return None
    suffix = _suffix_v5 if version == 5 else _suffix_v4
    ordered = _v8_sort(list(store), lambda a, b: suffix(a) - suffix(b))
    return SessionCookies(name=name, value="".join(store[n] for n in ordered), cookie_names=tuple(ordered))


def split_chunks(version: Version, name: str, value: str) -> list[tuple[str, str]]:
    """The cookies the library writes for `value`: one named `name` when it fits, else `name.0`,
    `name.1`, ... of CHUNK_SIZE characters each."""
    size = CHUNK_SIZE[version]
    count = math.ceil(len(value) / size)
    if count <= 1:
        return [(name, value)]
    return [(f"{name}.{i}", value[i * size : (i + 1) * size]) for i in range(count)]


@dataclass(frozen=True)
class CookieWrites:
    """What writing a session back changes: the cookies to set and the ones to delete."""

    set: list[tuple[str, str]] = field(repr=False)
    delete: list[str]
    secure: bool  # Auth.js sets Secure exactly on `__Secure-` names
    # The JWT's `exp` (seconds): the cookies' Expires, as the session cookie's lifetime is the
    # session's. None when the claims have none (a session cookie, then).
    expires_at_s: int | None = None

    def cookie_pairs(self, cookies: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        """An outgoing Cookie header's pairs: the session's cookies replaced by the new ones (at the
        place of the first old one), the others unchanged."""
        replaced = {*self.delete, *(n for n, _ in self.set)}
        out: list[tuple[str, str]] = []
        placed = False
        for name, value in cookies:
            if name in replaced:
                if not placed:
                    out.extend(self.set)
                    placed = True
                continue
            out.append((name, value))
        if not placed:
            out.extend(self.set)
        return out


def cookie_writes(
    version: Version, old: SessionCookies, token: str, expires_at_s: int | None = None
) -> CookieWrites:
    """As `SessionStore.chunk`: every cookie the request carried is deleted unless a new piece
    takes its name, so chunks replace a plain cookie, a plain cookie replaces chunks, and stale
    chunks go."""
    pieces = split_chunks(version, old.name, token)
    written = {n for n, _ in pieces}
    return CookieWrites(
        set=pieces,
        delete=[n for n in old.cookie_names if n not in written],
        secure=old.name.startswith(SECURE_PREFIX),
        expires_at_s=expires_at_s,
    )


# -- a session ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuthjsSession:
    """What one request carried: which cookies, the decrypted claims, and how to write them back."""

    cookies: SessionCookies
    jwt: Jwt

    @property
    def claims(self) -> dict[str, Any]:
        return self.jwt.claims


def read_session(
    keys: Keys, cookies: Sequence[tuple[str, str]], now_s: float, cookie_name: str | None = None
) -> AuthjsSession | None:
    """The Auth.js session in these cookies, or None (no session cookie, or none that decrypts).
    The `__Secure-` name is tried first, then the plain one; the first that decrypts is the session."""
    for name in session_names(keys.version, cookie_name):
        found = find_session_cookies(keys.version, cookies, name)
        if found is None:
            continue
        jwt = decrypt(keys, found.value, name, now_s)
        if jwt is not None:
            return AuthjsSession(cookies=found, jwt=jwt)
    return None


def write_session(keys: Keys, session: AuthjsSession, claims: Mapping[str, Any]) -> CookieWrites:
    """The cookies that carry `claims` in place of `session`: same cookie name, same `enc` it was
    read with, the first secret's key."""
    token = encrypt(keys, claims, session.cookies.name, session.jwt.enc)
    exp = claims.get("exp")
    expires_at_s = math.floor(exp) if _finite_number(exp) else None
    return cookie_writes(keys.version, session.cookies, token, expires_at_s)


# -- the token fields the app's jwt callback keeps ------------------------------------------------


def _unit(value: Any) -> Literal["s", "ms"]:
    return "ms" if one_of("s", "ms")(value) == "ms" else "s"


@dataclass(frozen=True)
class TokenFields:
    """Where the app's `jwt` callback keeps the provider's tokens (the refresh guide's names by
    default; the v4 tutorial's are `accessToken`, `refreshToken`, `accessTokenExpires` in ms).
    `cookies.authjs.fields` in the configuration."""

    access_token: str = key(
        "access_token",
        nonempty_string,
        "where the app's `jwt` callback keeps the access token (v4 tutorial: `accessToken`)",
        default="access_token",
    )
    refresh_token: str = key(
        "refresh_token",
        nonempty_string,
        "where it keeps the refresh token (v4 tutorial: `refreshToken`)",
        default="refresh_token",
    )
    expires_at: str = key(
        "expires_at",
        nonempty_string,
        "where it keeps the access token's expiry, which decides when to refresh (v4 tutorial: "
        "`accessTokenExpires`)",
        default="expires_at",
    )
    expires_at_unit: Literal["s", "ms"] = key(
        "expires_at_unit", _unit, "`s` or `ms` (v4 tutorial's `accessTokenExpires`: `ms`)", default="s"
    )
    id_token: str | None = key(
        "id_token", nonempty_string, "the field holding an id token, when the app keeps one", default=None
    )
    error: str = key(
        "error",
        nonempty_string,
        "the field `on_rejected: flag` sets (a session with it set is never refreshed again)",
        default="error",
    )
    error_value: str = key(
        "error_value",
        nonempty_string,
        "what `on_rejected: flag` writes there (v4 tutorials check `RefreshAccessTokenError`)",
        default="RefreshTokenError",
    )


@dataclass(frozen=True)
class Tokens:
    """The provider's tokens as the session holds them; a field that is missing or not a string
    (a number for expires_at) is None."""

    access_token: str | None = field(repr=False)
    refresh_token: str | None = field(repr=False)
    id_token: str | None = field(repr=False)
    expires_at_s: float | None
    error: str | None


def read_tokens(claims: Mapping[str, Any], fields: TokenFields) -> Tokens:
    expires_at = claims.get(fields.expires_at)
    expires_at_s: float | None = None
    if _finite_number(expires_at):
        expires_at_s = expires_at / 1000 if fields.expires_at_unit == "ms" else float(expires_at)
    error = claims.get(fields.error)
    return Tokens(
        access_token=_text(claims.get(fields.access_token)),
        refresh_token=_text(claims.get(fields.refresh_token)),
        id_token=_text(claims.get(fields.id_token)) if fields.id_token else None,
        expires_at_s=expires_at_s,
        error=error if isinstance(error, str) and error else None,
    )


def is_flagged(claims: Mapping[str, Any], fields: TokenFields) -> bool:
    """Whether the session carries an error (the app's, or `on_rejected: flag`'s): never refreshed again."""
    return read_tokens(claims, fields).error is not None


def with_tokens(
    claims: Mapping[str, Any],
    fields: TokenFields,
    *,
    access_token: str,
    expires_at_s: float,
    refresh_token: str | None = None,
    id_token: str | None = None,
) -> dict[str, Any]:
    """`claims` with fresh tokens: every other claim (exp, iat, jti, sub, the app's own) and its
    order kept; the refresh token replaced only when given (the IdP rotated it), the id token only
    when `fields.id_token` names one and one is given. expires_at is written as the guide does:
    whole seconds (`Math.floor`), or whole milliseconds for `ms`."""
    fresh = dict(claims)
    fresh[fields.access_token] = access_token
    if fields.expires_at_unit == "ms":
        fresh[fields.expires_at] = math.floor(expires_at_s * 1000)
    else:
        fresh[fields.expires_at] = math.floor(expires_at_s)
    if refresh_token is not None:
        fresh[fields.refresh_token] = refresh_token
    if fields.id_token and id_token is not None:
        fresh[fields.id_token] = id_token
    return fresh


def flagged(claims: Mapping[str, Any], fields: TokenFields) -> dict[str, Any]:
    """`claims` with the error field set (`on_rejected: flag`): the tokens kept, so the app's own
    code sees the error and signs the user out the way the guide does."""
    return {**claims, fields.error: fields.error_value}


# -- helpers -------------------------------------------------------------------------------------


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _finite_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _b64url_decode(text: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _json_object(raw: bytes) -> dict[str, Any] | None:
    # JSON.parse: UTF-8 only, no NaN/Infinity literals; a number too large for a double is
    # Infinity there, which JSON.stringify would write back as null: not a session here.
    value = json.loads(raw.decode("utf-8"), parse_constant=_reject, parse_float=_finite_float)
    return value if isinstance(value, dict) else None


def _reject(literal: str) -> Any:
    raise ValueError(f"not JSON: {literal}")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError("number out of range")
    return number


_PARSE_INT = re.compile(r"[\s\ufeff]*([+-]?)(?:(0[xX])([0-9a-fA-F]+)|([0-9]+))")


def _parse_int(text: str) -> float:
    """JavaScript's `parseInt(text)` (radix undefined): NaN when no digits lead."""
    match = _PARSE_INT.match(text)
    if match is None:
        return math.nan
    sign = -1 if match.group(1) == "-" else 1
    digits = int(match.group(3), 16) if match.group(2) else int(match.group(4))
    return float(sign * digits)


def _suffix_v5(name: str) -> float:
    return _parse_int(name.split(".")[-1] or "0")  # `parseInt(a.split(".").pop() || "0")`


def _suffix_v4(name: str) -> float:
    return _parse_int(name.split(".")[-1])  # `?? "0"`: an empty last part stays "" -> NaN


def _v8_sort(items: list[str], compare: Callable[[str, str], float]) -> list[str]:
    """`items.sort(compare)` as V8 runs it for fewer than 64 items (one run, then binary insertion
    sort; a NaN comparison counts as 0). Only matters when names without a number sort among chunks."""

    def cmp(a: str, b: str) -> float:
        order = compare(a, b)
        return 0.0 if math.isnan(order) else order

    work = list(items)
    n = len(work)
    if n < 2:
        return work
    # CountAndMakeRun
    run = 2
    descending = cmp(work[1], work[0]) < 0
    previous = work[1]
    for i in range(2, n):
        order = cmp(work[i], previous)
        if (descending and order >= 0) or (not descending and order < 0):
            break
        previous = work[i]
        run += 1
    if descending:
        work[:run] = reversed(work[:run])
    # BinaryInsertionSort(low=0, start=run, high=n)
    for start in range(run, n):
        pivot = work[start]
        left, right = 0, start
        while left < right:
            mid = left + ((right - left) >> 1)
            if cmp(pivot, work[mid]) < 0:
                right = mid
            else:
                left = mid + 1
        work[left + 1 : start + 1] = work[left:start]
        work[left] = pivot
    return work


# -- the layout ----------------------------------------------------------------------------------


def _version(value: Any) -> Version:
    if value in (4, 5) and not isinstance(value, bool):
        return 4 if value == 4 else 5
    raise ValueError(f"must be 5 (@auth/core, next-auth 5) or 4 (next-auth 4), got {value!r}")


def _secrets(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ValueError("must be a list of the app's secrets (the first encrypts)")
    secrets = tuple(nonempty_string(item) for item in value)
    if not secrets:
        raise ValueError("must name at least one secret (the app's AUTH_SECRET / NEXTAUTH_SECRET)")
    return secrets


@dataclass(frozen=True)
class AuthjsKeys:
    """`cookies.authjs`: the app's Auth.js version and secret(s), its session cookie's name, and
    where its `jwt` callback keeps the provider's tokens (docs/providers/authjs.md)."""

    version: Version = key(
        "version",
        _version,
        "`authjs` layout only: `5` (`@auth/core`, `next-auth` 5) or `4` (`next-auth` 4)",
        default=5,
    )
    secrets: tuple[str, ...] = key(
        "secrets",
        _secrets,
        "the app's `AUTH_SECRET` (v4: `NEXTAUTH_SECRET`) as a list: the first encrypts, any decrypts "
        "(v5, by `kid`); v4 takes exactly one; never printed or logged",
        default=(),
        shown="required for authjs",
        repr=False,
    )
    cookie_name: str | None = key(
        "cookie_name",
        _cookie_name,
        "the session cookie's name when the app set its own; the `__Secure-` variant is read and "
        "written as the request had it",
        default=None,
        shown="`authjs.session-token` (v5), `next-auth.session-token` (v4)",
    )
    fields: TokenFields = section_key("fields", TokenFields)


@dataclass(frozen=True)
class AuthjsConfig(LayoutConfig):
    """The authjs layout's keys of the `cookies:` section."""

    yaml_keys: ClassVar[tuple[str, ...]] = ("authjs",)

    authjs: AuthjsKeys = section_key("authjs", AuthjsKeys)

    @property
    def version(self) -> Version:
        return self.authjs.version

    @property
    def secrets(self) -> tuple[str, ...]:
        return self.authjs.secrets

    @classmethod
    def load(cls, s: Section, provider: ProviderConfig | None) -> AuthjsConfig:
        a = s.section("authjs")
        keys = read_record(a, AuthjsKeys)
        if not a.has("secrets"):
            a.error("secrets", "required with layout authjs: the app's AUTH_SECRET (NEXTAUTH_SECRET for v4)")
        elif keys.version == 4 and len(keys.secrets) > 1:
            # next-auth 4 takes one secret: its JWE has no kid to pick the decrypting one by.
            a.error("secrets", "next-auth 4 (version: 4) takes exactly one secret")
        return cls(keys)


class AuthjsLayout(Layout):
    """One encrypted session cookie (chunked when long), as Auth.js writes it.

    A cookie that decrypts with a configured secret is a proven session (only the app could
    have written it: `Session.sealed_subject`); one that does not is no session at all and is
    forwarded untouched. The session's expiry is its `expires_at` field, as the app's own `jwt`
    callback reads it (the access token may be opaque). A session whose error field is set
    (by the app, or by `on_rejected: flag`) is never refreshed again: it has no refresh token
    here.
    """

    config: ClassVar[type[LayoutConfig]] = AuthjsConfig
    # What Auth.js writes; only `cookies.attributes.domain` applies to this layout.
    attribute_defaults: ClassVar[Mapping[str, Any]] = {"http_only": True, "same_site": "Lax", "secure": False}
    rejected_policies: ClassVar[tuple[str, ...]] = ("flag",)

    @classmethod
    def from_config(cls, cookies: CookiesConfig, provider: ProviderConfig | None) -> AuthjsLayout:
        own = cookies.layout_config
        if not isinstance(own, AuthjsConfig) or not own.secrets:
            raise ValueError("the authjs cookie layout needs cookies.authjs.secrets")
        return cls(Keys(own.version, own.secrets), own.authjs.fields, own.authjs.cookie_name)

    def __init__(
        self,
        keys: Keys,
        fields: TokenFields | None = None,
        cookie_name: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.keys = keys
        self.fields = fields or TokenFields()
        self.cookie_name = cookie_name
        self.clock = clock
        self._names = session_names(keys.version, cookie_name)
        # The write of each refresh, made once: a JWE has a random IV, and the upstream's Cookie
        # and the browser's Set-Cookie must carry the same bytes (and so must every request
        # that joined the refresh).
        self._written: LRU[tuple[str, str, str, str | None], CookieWrites] = LRU(256)

    def relevant_cookies(self, header: str) -> Pairs:
        return select_cookies(header, self._names)

    def owns(self, name: str) -> bool:
        # The libraries read every cookie whose name starts with the session cookie's.
        return name.startswith(self._names)

    def read(self, cookies: Sequence[tuple[str, str]]) -> Session | None:
        found = read_session(self.keys, cookies, self.clock(), self.cookie_name)
        if found is None:
            return None
        claims = found.claims
        tokens = read_tokens(claims, self.fields)
        subject = _text(claims.get("sub")) or _text(claims.get("jti"))
        return Session(
            user=_text(claims.get("email")) or _text(claims.get("name")) or _text(claims.get("sub")),
            access_token=tokens.access_token,
            id_token=tokens.id_token,
            refresh_token=None if tokens.error else tokens.refresh_token,
            cookie_names=frozenset(found.cookies.cookie_names),
            payload=found,
            expires_at=tokens.expires_at_s,
            sealed_subject=subject,
        )

    def _fresh_claims(self, old: AuthjsSession, tokens: FreshTokens) -> dict[str, Any]:
        """The session's claims with the refresh's tokens; `expires_at` as the guide computes it
        (now + `expires_in`), else the fresh access token's `exp`, else the old one."""
        expires_at_s: float | None = None
        if tokens.expires_in_s is not None:
            expires_at_s = self.clock() + tokens.expires_in_s
        else:
            claims = decode_claims(tokens.access_token)
            if claims is not None and claims.exp is not None:
                expires_at_s = claims.exp
        if expires_at_s is None:
            expires_at_s = read_tokens(old.claims, self.fields).expires_at_s or self.clock()
        rotated = tokens.refresh_token != read_tokens(old.claims, self.fields).refresh_token
        return with_tokens(
            old.claims,
            self.fields,
            access_token=tokens.access_token,
            expires_at_s=expires_at_s,
            refresh_token=tokens.refresh_token if rotated else None,
            id_token=tokens.id_token,
        )

    def _write(self, session: Session, tokens: FreshTokens) -> CookieWrites:
        old = _payload(session)
        key = (old.cookies.value, tokens.access_token, tokens.refresh_token, tokens.id_token)
        writes = self._written.get(key)
        if writes is None:
            writes = write_session(self.keys, old, self._fresh_claims(old, tokens))
            self._written.put(key, writes)
        return writes

    def cookie_header(self, cookies: Sequence[tuple[str, str]], session: Session, tokens: FreshTokens) -> str:
        return format_cookie_header(self._write(session, tokens).cookie_pairs(cookies))

    def set_cookies(self, session: Session, tokens: FreshTokens, attrs: CookieAttributes) -> list[SetCookie]:
        return _set_cookies(self._write(session, tokens), attrs)

    def flag_rejected(
        self, cookies: Sequence[tuple[str, str]], session: Session, attrs: CookieAttributes
    ) -> tuple[str, list[SetCookie]]:
        writes = write_session(self.keys, _payload(session), flagged(_payload(session).claims, self.fields))
        return format_cookie_header(writes.cookie_pairs(cookies)), _set_cookies(writes, attrs)

    def clear_cookies(self, session: Session, attrs: CookieAttributes) -> list[SetCookie]:
        return [_deletion(n, attrs) for n in sorted(session.cookie_names) if is_valid_cookie_name(n)]

    def describe(self, session: Session, when: When) -> list[str]:
        """The cookie's version, `enc` and claim names, its `expires_at` and `exp`, and whether it
        is flagged; never a claim's value beside those times."""
        old = _payload(session)
        claims = old.claims
        fields = self.fields
        names = ", ".join(sorted(claims))
        lines = [
            f"Auth.js v{self.keys.version} session cookie {old.cookies.name}: {old.jwt.enc}"
            f"{', kid' if old.jwt.has_kid else ''}, decrypted with a configured secret (a proven session)",
            f"  claims: {names}",
        ]
        tokens = read_tokens(claims, fields)
        if tokens.expires_at_s is not None:
            lines.append(
                f"  {fields.expires_at} {when(tokens.expires_at_s, 'expires')} (the access token's expiry)"
            )
        else:
            lines.append(f"  {fields.expires_at} absent: the access token's own exp decides")
        exp = claims.get("exp")
        if _finite_number(exp):
            lines.append(f"  exp {when(float(exp), 'expires')} (the cookie's end)")
        if tokens.error is not None:
            lines.append(f"  flagged: {fields.error} is set, so the session is never refreshed again")
        return lines


def _payload(session: Session) -> AuthjsSession:
    payload = session.payload
    assert isinstance(payload, AuthjsSession), "a session this layout read"
    return payload


def _set_cookies(writes: CookieWrites, attrs: CookieAttributes) -> list[SetCookie]:
    """As Auth.js writes them: HttpOnly, SameSite=Lax, Path=/, Secure exactly for `__Secure-`
    names, Expires = the JWT's `exp`; of `cookies.attributes` only the domain. Stale pieces the
    request carried are deleted."""
    deletions = [_deletion(name, attrs) for name in writes.delete if is_valid_cookie_name(name)]
    return deletions + [
        SetCookie(
            name=name,
            value=value,
            path="/",
            domain=attrs.domain,
            max_age_s=attrs.max_age_s,
            secure=writes.secure,
            http_only=True,
            same_site="Lax",
            expires_at=writes.expires_at_s,
        )
        for name, value in writes.set
    ]


def _deletion(name: str, attrs: CookieAttributes) -> SetCookie:
    # A browser refuses any `__Secure-` cookie, deletions included, without Secure.
    return SetCookie(
        name=name,
        value="",
        path="/",
        domain=attrs.domain,
        max_age_s=0,
        secure=name.startswith(SECURE_PREFIX),
        http_only=True,
        same_site="Lax",
    )
