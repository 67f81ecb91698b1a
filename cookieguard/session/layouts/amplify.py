"""The `amplify` layout: the cookies Amplify v6 (Cognito) keeps a session in.

`CognitoIdentityServiceProvider.<clientId>.<username>.<key>`, one cookie per key, names built from
`LastAuthUser` with js-cookie v3's name encoding, values percent-encoded (docs/behaviour.md §5).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

from cookieguard.cookies import (
    SetCookie,
    encode_uri_component,
    format_cookie_header,
    is_valid_cookie_name,
    js_cookie_name,
    percent_decode,
    select_cookies,
    unquote_value,
)
from cookieguard.lru import LRU, MISSING
from cookieguard.session.layouts.base import FreshTokens, Layout, Offline, Pairs, Session, When

if TYPE_CHECKING:
    from cookieguard.config import CookieAttributes, CookiesConfig
    from cookieguard.tokens.providers.base import ProviderConfig

AMPLIFY_PREFIX = "CognitoIdentityServiceProvider"
ACCESS_TOKEN = "accessToken"
ID_TOKEN = "idToken"
REFRESH_TOKEN = "refreshToken"
CLOCK_DRIFT = "clockDrift"
DEVICE_KEY = "deviceKey"
LAST_AUTH_USER = "LastAuthUser"
# What Amplify's own sign-out (TokenStore.clearTokens) removes; the device keys survive a
# sign-out there, so they do here too.
_AMPLIFY_SESSION_KEYS = (ACCESS_TOKEN, ID_TOKEN, REFRESH_TOKEN, CLOCK_DRIFT, "signInDetails", "oauthMetadata")
_AMPLIFY_READ_KEYS = (*_AMPLIFY_SESSION_KEYS, DEVICE_KEY)
_CLOCK_DRIFT = re.compile(r"[+-]?\d{1,15}")
_KEY_MEMO_SIZE = 4096  # (cookie name, user) pairs; a few KB per hundred users


class AmplifyLayout(Layout):
    """`CognitoIdentityServiceProvider.<clientId>.<username>.<key>`, as Amplify v6 stores it."""

    provider_kinds: ClassVar[tuple[str, ...] | None] = ("cognito",)

    @classmethod
    def from_config(cls, cookies: CookiesConfig, provider: ProviderConfig | None) -> AmplifyLayout:
        if provider is None or not provider.client_id:
            raise ValueError("the amplify cookie layout needs the Cognito app client id")
        return cls(provider.client_id)

    def __init__(self, client_id: str) -> None:
        self.client_id = client_id
        self._prefix = f"{AMPLIFY_PREFIX}.{client_id}."
        self._prefixes = (self._prefix,)
        self._keys: LRU[tuple[str, str], str | None] = LRU(_KEY_MEMO_SIZE)
        self.last_auth_user_name = js_cookie_name(f"{AMPLIFY_PREFIX}.{client_id}.{LAST_AUTH_USER}")
        if not is_valid_cookie_name(self.last_auth_user_name):
            raise ValueError(f"client id {client_id!r} cannot be part of a cookie name")

    def cookie_name(self, user: str, key: str) -> str:
        """The name Amplify writes for one of a user's keys (e.g. accessToken)."""
        return js_cookie_name(f"{self._prefix}{user}.{key}")

    @classmethod
    def offline(
        cls, cookies: CookiesConfig, provider: ProviderConfig | None, header: Pairs, client_id: str | None
    ) -> Offline:
        """Without a configured client id, the one the cookie names carry (one app client)."""
        if client_id:
            return Offline(cls(client_id), (f"client id: {client_id}",))
        found = client_ids(header)
        if len(found) == 1:
            note = f"client id: {found[0]} (from the cookie names; the config has no provider)"
            return Offline(cls(found[0]), (note,))
        if found:
            note = f"cookies for {len(found)} app clients: {', '.join(found)}; choose one with --client-id"
            return Offline(None, (note,), ambiguous=True)
        return Offline(None, no_session=f"no auth cookies (no {AMPLIFY_PREFIX}.*.{LAST_AUTH_USER})")

    def describe(self, session: Session, when: When) -> list[str]:
        if not session.user:
            return []
        present = {percent_decode(n) for n in session.cookie_names}
        prefix = f"{self._prefix}{session.user}."
        missing = [k for k in (ACCESS_TOKEN, ID_TOKEN, REFRESH_TOKEN) if prefix + k not in present]
        return [f"  missing: {', '.join(missing)}"] if missing else []

    def owns(self, name: str) -> bool:
        return name.startswith(self._prefix)

    def relevant_cookies(self, header: str) -> list[tuple[str, str]]:
        return select_cookies(header, self._prefixes)

    def _key_of(self, raw_name: str, user: str) -> str | None:
        # The same few names come back on every request: decoding them is worth remembering.
        memo_key = (raw_name, user)
        key = self._keys.get(memo_key, MISSING)
        if key is MISSING:
            key = self._decode_key(raw_name, user)
            self._keys.put(memo_key, key)
        return key

    def _decode_key(self, raw_name: str, user: str) -> str | None:
        # Matching on the decoded name (as js-cookie's reader does) finds the cookie whether it
        # was written by js-cookie in the browser (`(` as %28) or by the server side (raw `(`).
        decoded = percent_decode(raw_name)
        user_prefix = f"{self._prefix}{user}."
        if decoded.startswith(user_prefix):
            key = decoded[len(user_prefix) :]
            if key in _AMPLIFY_READ_KEYS:
                return key
        return None

    def read(self, cookies: Sequence[tuple[str, str]]) -> Session | None:
        ours = [(n, v) for n, v in cookies if n.startswith(self._prefix)]
        if not ours:
            return None
        user = next((_decode_value(v) for n, v in ours if n == self.last_auth_user_name), None)
        # Without LastAuthUser there is no telling whose cookies these are (Amplify would look for
        # a user literally named "username"); names are never guessed from token claims.
        if not user:
            return None
        names = {self.last_auth_user_name}
        values: dict[str, str] = {}
        for name, value in ours:
            key = self._key_of(name, user)
            if key is None:
                continue
            if key in _AMPLIFY_SESSION_KEYS:
                names.add(name)
            # The first of duplicates wins: browsers send the longest path first (RFC 6265 5.4).
            values.setdefault(key, value)
        drift = _decode_value(values.get(CLOCK_DRIFT, "")).strip()
        return Session(
            user=user,
            access_token=_decode_value(values.get(ACCESS_TOKEN, "")) or None,
            id_token=_decode_value(values.get(ID_TOKEN, "")) or None,
            refresh_token=_decode_value(values.get(REFRESH_TOKEN, "")) or None,
            clock_drift_ms=int(drift) if _CLOCK_DRIFT.fullmatch(drift) else 0,
            refresh_context=_refresh_context(user, _decode_value(values.get(DEVICE_KEY, ""))),
            cookie_names=frozenset(names),
        )

    def _fresh_values(self, tokens: FreshTokens) -> dict[str, str]:
        fresh = {ACCESS_TOKEN: encode_uri_component(tokens.access_token)}
        # No id token in the refresh response (OIDC Core 12.2 makes it optional): keep the old one.
        if tokens.id_token is not None:
            fresh[ID_TOKEN] = encode_uri_component(tokens.id_token)
        fresh[REFRESH_TOKEN] = encode_uri_component(tokens.refresh_token)
        fresh[CLOCK_DRIFT] = str(int(tokens.clock_drift_ms))
        return fresh

    def _user(self, session: Session) -> str:
        if not session.user:
            raise ValueError("an amplify session needs a user (LastAuthUser)")
        return session.user

    def cookie_header(self, cookies: Sequence[tuple[str, str]], session: Session, tokens: FreshTokens) -> str:
        user = self._user(session)
        fresh = self._fresh_values(tokens)
        out: list[tuple[str, str]] = []
        replaced: set[str] = set()
        for name, value in cookies:
            key = self._key_of(name, user) if name in session.cookie_names else None
            if key is not None and key in fresh:
                out.append((name, fresh[key]))
                replaced.add(key)
            else:
                out.append((name, value))
        out.extend(
            (self.cookie_name(user, key), value) for key, value in fresh.items() if key not in replaced
        )
        return format_cookie_header(out)

    def set_cookies(self, session: Session, tokens: FreshTokens, attrs: CookieAttributes) -> list[SetCookie]:
        user = self._user(session)
        existing: dict[str, list[str]] = {}
        for name in sorted(session.cookie_names):
            key = self._key_of(name, user)
            if key is not None and is_valid_cookie_name(name):
                existing.setdefault(key, []).append(name)
        written = [SetCookie.with_attributes(self.last_auth_user_name, encode_uri_component(user), attrs)]
        for key, value in self._fresh_values(tokens).items():
            # Overwrite the cookie the browser already has under whichever spelling it has, rather
            # than adding a second one beside it that could shadow ours on the next request.
            for name in existing.get(key) or [self.cookie_name(user, key)]:
                written.append(SetCookie.with_attributes(name, value, attrs))
        return written


def client_ids(cookies: Sequence[tuple[str, str]]) -> list[str]:
    """Client ids named by `CognitoIdentityServiceProvider.<clientId>.LastAuthUser` cookies."""
    found: list[str] = []
    for name, _ in cookies:
        parts = percent_decode(name).split(".")
        is_last_auth_user = len(parts) == 3 and parts[0] == AMPLIFY_PREFIX and parts[2] == LAST_AUTH_USER
        if is_last_auth_user and parts[1] not in found:
            found.append(parts[1])
    return found


def _refresh_context(user: str, device_key: str) -> dict[str, str]:
    """What the Cognito provider needs to refresh (its keys are providers/cognito.py's)."""
    return {"username": user, "device_key": device_key} if device_key else {"username": user}


def _decode_value(raw: str) -> str:
    return percent_decode(unquote_value(raw))
