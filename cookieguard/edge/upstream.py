"""HTTP/1.1 to the upstream app: pooled keep-alive connections, answers parsed by httptools.

The HTTP client is the largest cost of a Python reverse proxy: aiohttp's `ClientSession` was ~40 %
of a bare aiohttp pass-through's CPU per request on the bench (bench/README.md). This client does
only what a reverse proxy needs: write the request head in one send, stream the request body,
parse the answer with llhttp (through httptools, the parser uvicorn uses) and hand body chunks to
the relay as they arrive. Its read timeout is the longest silence, checked for every request in
flight by one timer every `SILENCE_CHECK_S` (a timeout fires up to that much late). WebSocket
upgrades still go through aiohttp's client (proxy.forward_websocket).

A connection goes back to the pool only after a complete answer the upstream agreed to keep
alive, that ended exactly where its framing said, with nothing after it; anything else (an error,
a cancelled request, a body not read to its end, bytes after the end) closes it. Each answer is
parsed from the parser's initial state (a reused connection's parser is reused only when it
completed the last answer itself; after a HEAD it is replaced), so nothing of one answer can ever
be read as part of the next: an answer
that is not exactly one well-formed message (a second head after the first, a duplicate
Content-Length) is a 502 (docs/proxy.md "The proxy": what no HTTP/1.1 proxy can tell apart).
A request without a body that fails on a reused connection before the upstream sent a byte, or
whose answer there was not exactly one message, is retried once on a new connection.

An answer is read ahead of the client into a buffer of up to `response_buffer` bytes
(`limits.response_buffer`): once the whole answer is in, its connection goes back to the pool at
once, however slowly the client reads what is buffered (docs/proxy.md "The proxy"). A larger
answer pauses the upstream at the buffer's size and holds its connection until it is sent; the
relay is told (`UpstreamResponse.watch`) so it can hold such answers to a per-address share.

At most `max_connections` connections per origin (in use and idle, WebSockets included: each
takes a slot with `reserve`; docs/proxy.md "The proxy", `limits.upstream_connections`); a request
that finds them all in use waits up to the connect timeout for one to be released, then fails
with UpstreamBusy (a 503).
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import ssl
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

import httptools

from cookieguard.edge.headers import HOP_BY_HOP

# RFC 9110 section 9.2.2. Retried only without a body, and only when the upstream sent nothing.
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
# Connections per origin, in use and idle (`limits.upstream_connections`'s default).
MAX_CONNECTIONS = 1000
# Answers that may be the previous answer's late bytes: on a reused connection, tried again.
_GARBLED = frozenset({"extra_bytes", "invalid_answer"})
# Below Node.js's default keepAliveTimeout (5 s): a connection the app is about to close is not reused.
IDLE_TIMEOUT_S = 4.0
# Upstream reading pauses while this much of an answer waits for a slow client
# (`limits.response_buffer`'s default); it resumes below a quarter of that.
RESPONSE_BUFFER = 1024 * 1024
# How often the requests in flight are checked for an upstream silent past its read timeout: one
# timer for all of them, running only while there are any. A timer armed and cancelled per
# request cost ~11,000 instructions of a ~360,000-instruction request (uvloop's timer handles).
SILENCE_CHECK_S = 0.1
# An answer complete in the buffer up to this size is handed to the relay in one piece (one write
# to the client with its head); a larger one is read chunk by chunk, without a joined copy.
WHOLE_BODY = 64 * 1024
_BYTES = "surrogateescape"  # header bytes that are not UTF-8 pass through unchanged
# Connection-specific fields, never relayed: left out of an answer's headers as it is parsed
# (llhttp hands the names over as bytes); `Connection`'s values are kept apart for the names they list.
_HOP_BY_HOP = frozenset(name.encode() for name in HOP_BY_HOP)


class UpstreamError(Exception):
    """The upstream could not be reached or did not answer properly (a 502)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason  # the `error` of the upstream_error log event


class UpstreamTimeout(UpstreamError):
    """No connection, or silence for longer than the read timeout (a 504)."""


class UpstreamBusy(UpstreamError):
    """Every connection the origin may have is in use, past the connect timeout (a 503)."""


class _Poisoned(Exception):
    """Raised from a parser callback: bytes after the end of the answer (stops llhttp)."""


class BodySource(Protocol):
    """The client's request body as it arrives: aiohttp's `request.content`."""

    def iter_any(self) -> AsyncIterator[bytes]: ...


@dataclass(frozen=True)
class Origin:
    """Where a route's requests go: parsed once from the route's `upstream` URL."""

    host: str
    port: int
    tls: bool
    prefix: str  # the URL's path, prepended to every request target ("" for none)
    authority: str  # the Host header when the client's is not kept

    @classmethod
    def parse(cls, url: str) -> Origin:
        parts = urlsplit(url)
        tls = parts.scheme == "https"
        port = parts.port or (443 if tls else 80)
        host = parts.hostname or ""
        default = (443 if tls else 80) == port
        name = f"[{host}]" if ":" in host else host
        return cls(
            host=host,
            port=port,
            tls=tls,
            prefix=parts.path.rstrip("/"),
            authority=name if default else f"{name}:{port}",
        )


# Where stray upstream bytes were caught (metrics.LATE_BYTES_CAUGHT: the `phase` of the
# upstream_error event): "idle" while the connection sat in the pool, "before_reuse" in the socket
# right before it was reused, "after_answer" right behind an answer.
_PEEK = socket.MSG_PEEK | socket.MSG_DONTWAIT


class _Connection(asyncio.Protocol):
    """One keep-alive connection; the state of the request in flight on it, if any."""

    __slots__ = (
        "_drain",
        "_peek",
        "_poll",
        "_write_paused",
        "body_task",
        "buffered",
        "chunks",
        "complete",
        "connection",
        "ended",
        "error",
        "framed",
        "got_bytes",
        "head_done",
        "head_only",
        "headers",
        "high_water",
        "idle_since",
        "in_flight",
        "interim",
        "keep_alive",
        "last_activity",
        "loop",
        "lost",
        "low_water",
        "on_late_bytes",
        "overflow",
        "parser",
        "poisoned",
        "read_paused",
        "read_timeout",
        "reader",
        "reason",
        "set_cookies",
        "status",
        "transport",
        "waiter",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        on_late_bytes: Callable[[str], None],
        response_buffer: int = RESPONSE_BUFFER,
    ) -> None:
        self.loop = loop
        self.high_water = response_buffer
        self.low_water = response_buffer // 4
        self.on_late_bytes = on_late_bytes
        self.transport: asyncio.Transport | None = None
        # A view of the socket to look into before reuse (asyncio's and uvloop's transports
        # offer none): made once per connection, detached (never closing the fd) when it goes.
        self._peek: socket.socket | None = None
        self._poll: select.poll | None = None  # readable (bytes or the upstream's close) without a read
        self.parser = httptools.HttpResponseParser(self)
        self.lost = False
        self.poisoned = False  # bytes after an answer's end: closed, never reused
        self.idle_since = 0.0
        self._drain: asyncio.Future[None] | None = None
        self._write_paused = False
        self._reset()

    def _reset(self) -> None:
        self.in_flight = False
        self.head_only = False  # HEAD: the answer ends with its headers
        self.status = 0
        self.reason = ""
        self.headers: list[tuple[str, str]] = []  # end to end: no hop-by-hop field
        self.set_cookies: list[str] = []  # the Set-Cookie values among `headers`, in order
        self.connection: list[str] = []  # the Connection header's values
        self.head_done = False
        self.complete = False
        self.ended = False  # the answer is over for its parser: any further byte poisons the connection
        self.keep_alive = False
        self.framed = False  # Content-Length or chunked: the end of the body is known without a close
        self.interim = False
        self.got_bytes = False
        self.error: UpstreamError | None = None
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.read_paused = False
        self.read_timeout = 0.0
        self.last_activity = 0.0
        self.waiter: asyncio.Future[None] | None = None
        self.body_task: asyncio.Task[None] | None = None
        self.reader: UpstreamResponse | None = None  # takes the buffered answer when it is whole
        self.overflow: Callable[[], None] | None = None  # told when the answer outgrows the buffer

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                self._peek = socket.socket(fileno=sock.fileno())
                self._poll = select.poll()
                self._poll.register(sock.fileno(), select.POLLIN)

    def connection_lost(self, exc: Exception | None) -> None:
        self._forget_peek()
        self.lost = True
        if self.in_flight and not self.complete and self.error is None:
            if self.head_done and not self.framed and not self.head_only:
                self.complete = True  # no Content-Length, not chunked: the close ends the body
                self.keep_alive = False
            else:
                self.error = UpstreamError("closed_mid_body" if self.head_done else "closed_before_answer")
        self._wake()
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)

    def data_received(self, data: bytes) -> None:
        if not self.in_flight:
            # Bytes nobody asked for: this connection cannot be trusted with the next request.
            if not self.lost:
                self.on_late_bytes("idle")
            self.close()
            return
        self.got_bytes = True
        self.last_activity = self.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            # Past the end of the answer (a callback raised _Poisoned, or llhttp choked on what
            # followed), the answer itself stands and only the connection is lost.
            if self.ended:
                self._poison()
            else:
                self._fail(UpstreamError("invalid_answer"))

    def _poison(self) -> None:
        if not self.poisoned:
            self.on_late_bytes("after_answer")
        self.poisoned = True
        self._wake()
        self.close()

    # -- httptools callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.ended:
            raise _Poisoned  # a second message after the answer: never read as part of it

    def on_status(self, status: bytes) -> None:
        self.reason = status.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        lname = name.lower()
        if lname == b"content-length" or (lname == b"transfer-encoding" and b"chunked" in value.lower()):
            self.framed = True
        text = value.decode("utf-8", _BYTES)
        if lname in _HOP_BY_HOP:
            if lname == b"connection":
                self.connection.append(text)
            return
        self.headers.append((name.decode("utf-8", _BYTES), text))
        if lname == b"set-cookie":  # picked out here, where the name is lowercased already
            self.set_cookies.append(text)

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200:
            # 100 Continue, 103 Early Hints: interim answers are not relayed (aiohttp's server
            # already answered the client's Expect); the final answer follows on this connection.
            self.interim = True
            self.headers = []
            self.set_cookies = []
            self.connection = []
            self.framed = False
            return
        self.status = status
        self.head_done = True
        if self.head_only:
            # llhttp does not know the request was a HEAD: the answer ends here, and the parser,
            # still waiting for a body, is replaced before the connection is reused.
            self.complete = True
            self.ended = True
            self.keep_alive = self.parser.should_keep_alive()
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self.head_only:
            raise _Poisoned  # RFC 9110 9.3.2: a HEAD answer has no content; these bytes belong to nothing
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > self.high_water and not self.read_paused and self.transport is not None:
            self.transport.pause_reading()
            self.read_paused = True
            if self.overflow is not None:
                self.loop.call_soon(self.overflow)
        self._wake()

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        if not self.head_only:
            self.complete = True
            self.ended = True
            self.keep_alive = self.parser.should_keep_alive()
            if self.waiter is None and self.chunks and self.reader is not None:
                # The relay is busy writing to a slow client: the answer is whole in the buffer,
                # so the connection need not wait for the client. After this feed, in case more
                # bytes follow in it (they would poison the connection).
                self.loop.call_soon(self.reader.detach)
        self._wake()

    # -- used by UpstreamClient / UpstreamResponse ----------------------------------------------

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: UpstreamError) -> None:
        if self.error is None:
            self.error = error
        self._wake()
        self.abort()

    async def wait(self) -> None:
        """Until the parser has more for the reader (or the connection failed)."""
        self.waiter = self.loop.create_future()
        try:
            await self.waiter
        finally:
            self.waiter = None

    def body_sent(self, task: asyncio.Task[None]) -> None:
        # The client's body stream fails when the client goes away (its request is cancelled
        # then) or breaks its framing: the upstream must not wait for the rest.
        if not task.cancelled() and task.exception() is not None:
            self._fail(UpstreamError("request_body"))

    def arm(self, read_timeout: float, head_only: bool) -> None:
        self.in_flight = True
        self.head_only = head_only
        self.read_timeout = read_timeout
        self.last_activity = self.loop.time()

    def check_silence(self, now: float) -> bool:
        """Fail the request once the upstream has been silent for its read timeout; True while
        the request still waits for its answer."""
        if not self.in_flight or self.complete or self.lost:
            return False
        if self.read_paused:
            self.last_activity = now  # the client is slow, not the upstream
        elif now - self.last_activity >= self.read_timeout:
            self._fail(UpstreamTimeout("timeout"))
            return False
        return True

    async def drain(self) -> None:
        if self._write_paused and not self.lost:
            self._drain = self.loop.create_future()
            await self._drain

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.lost:
            self.transport.write(data)

    def take(self) -> bytes | None:
        """The next body chunk if one is buffered; b"" at the end of the body."""
        if self.chunks:
            chunk = self.chunks.popleft()
            self.buffered -= len(chunk)
            if self.read_paused and self.buffered < self.low_water and self.transport is not None:
                self.read_paused = False
                self.transport.resume_reading()
            return chunk
        if self.complete:
            return b""
        if self.error is not None:
            raise self.error
        return None

    def hand_over_body(self) -> deque[bytes]:
        """The whole answer's buffered chunks, for its reader to keep once the connection goes."""
        chunks = self.chunks
        self.chunks = deque()
        self.buffered = 0
        if self.read_paused and self.transport is not None:
            self.read_paused = False
            self.transport.resume_reading()  # late bytes must be seen (and the connection reused)
        return chunks

    def finish(self) -> bool:
        """End the request; True when the connection can carry another one."""
        body_task = self.body_task
        reusable = (
            self.complete
            and self.keep_alive
            and not self.poisoned
            and not self.chunks
            and not self.lost
            and self.error is None
            and (body_task is None or body_task.done())
        )
        if body_task is not None and not body_task.done():
            body_task.cancel()
        if reusable and self.head_only:
            # llhttp does not know a HEAD's answer ended at its headers and still waits for the
            # body: the next answer gets a new parser. After any other answer the connection is
            # reused only when llhttp itself completed the message and nothing followed it, and
            # llhttp is then back where a new parser starts (what building one per answer, ~4 µs,
            # used to guarantee).
            self.parser = httptools.HttpResponseParser(self)
        self._reset()
        return reusable

    def stale(self) -> bool:
        """Right before reuse: is the connection gone, or has the upstream sent anything (or
        closed) since its last answer that the event loop has not delivered yet? Such bytes
        would be read as the next answer."""
        if self.lost:
            return True
        peek, poll = self._peek, self._poll
        if peek is None or poll is None:
            return False
        # One poll(2) with no timeout: an empty list is the clean connection, without the
        # BlockingIOError a non-blocking recv raises (and Python builds) when nothing is there.
        if not poll.poll(0):
            return False
        try:
            data = peek.recv(1, _PEEK)
        except (BlockingIOError, InterruptedError):
            return False  # nothing there: the connection is clean
        except OSError:
            self.lost = True
            return True
        if data:
            self.on_late_bytes("before_reuse")
        self.lost = True  # bytes, or b"": the upstream closed it
        return True

    def _forget_peek(self) -> None:
        peek, self._peek = self._peek, None
        self._poll = None
        if peek is not None:
            peek.detach()  # the transport owns the fd

    def close(self) -> None:
        self.lost = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.lost = True
        if self.transport is not None:
            self.transport.abort()


class UpstreamResponse:
    """The upstream's answer: status, reason and headers at once, the body chunk by chunk."""

    __slots__ = (
        "_client",
        "_conn",
        "_key",
        "_rest",
        "connection",
        "headers",
        "reason",
        "set_cookies",
        "status",
    )

    def __init__(self, conn: _Connection, client: UpstreamClient, key: tuple[str, int, bool]) -> None:
        self.status = conn.status
        self.reason = conn.reason
        self.headers = conn.headers  # end to end: hop-by-hop fields are left out
        self.connection = conn.connection  # the Connection header's values, for the names they list
        self.set_cookies = conn.set_cookies  # the Set-Cookie values among `headers`
        self._conn: _Connection | None = conn
        self._client = client
        self._key = key
        self._rest: deque[bytes] | None = None  # what was buffered when the connection went
        conn.reader = self

    async def read(self) -> bytes:
        """The next chunk of the body as it arrived; b"" at its end. Raises UpstreamError when the
        upstream breaks off or falls silent in the middle of it."""
        conn = self._conn
        if conn is None:
            rest = self._rest
            return rest.popleft() if rest else b""
        while True:
            chunk = conn.take()
            if chunk is not None:
                if conn.complete:
                    self.detach()  # the whole answer is here: the connection is free already
                return chunk
            await conn.wait()

    def take_whole(self) -> bytes | None:
        """The whole body if all of it is here (the answer is complete) and at most `WHOLE_BODY`
        bytes, its connection released; else None, and nothing is taken (read it with `read`)."""
        conn = self._conn
        if conn is None:
            rest = self._rest
            if not rest:
                return b""
            if sum(map(len, rest)) > WHOLE_BODY:
                return None
            self._rest = None
            return b"".join(rest)
        if not conn.complete or conn.buffered > WHOLE_BODY:
            return None
        chunks = conn.hand_over_body()
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self.detach()
        return body

    def ready(self) -> bool:
        """True when `read` would not wait: a chunk is in, or the body is over (or broken)."""
        conn = self._conn
        return conn is None or bool(conn.chunks) or conn.complete or conn.error is not None

    def held(self) -> bool:
        """True while the answer still holds its upstream connection."""
        return self._conn is not None

    def watch(self, overflow: Callable[[], None]) -> None:
        """Call `overflow` when (or now, if) the answer outgrows the buffer: from then on it
        holds its connection until the client has taken the rest."""
        conn = self._conn
        if conn is not None:
            conn.overflow = overflow
            if conn.read_paused:
                overflow()

    def detach(self) -> None:
        """The answer is whole in the buffer: keep what is buffered, release the connection."""
        conn = self._conn
        if conn is None or not conn.complete:
            return
        self._conn = None
        if conn.chunks:
            self._rest = conn.hand_over_body()
        self._client._release(self._key, conn)

    def release(self) -> None:
        """Done with the answer: its connection goes back to the pool or is closed."""
        conn, self._conn = self._conn, None
        self._rest = None
        if conn is not None:
            self._client._release(self._key, conn)


class _Pool:
    """One origin's connections: the idle ones, how many exist, who waits for one."""

    __slots__ = ("count", "idle", "waiters")

    def __init__(self) -> None:
        self.idle: deque[_Connection] = deque()
        self.count = 0  # open or being opened: in use + idle + connecting
        # FIFO; each gets a released connection, or None: a slot to open a new one in.
        self.waiters: deque[asyncio.Future[_Connection | None]] = deque()


class UpstreamClient:
    """Keep-alive connections to the upstreams, reused most recent first, at most
    `max_connections` per origin."""

    def __init__(
        self,
        connect_timeout_s: float,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
        max_connections: int = MAX_CONNECTIONS,
        on_late_bytes: Callable[[str], None] | None = None,
        response_buffer: int = RESPONSE_BUFFER,
    ) -> None:
        self.connect_timeout_s = connect_timeout_s
        self.response_buffer = response_buffer
        # Told where stray bytes were caught (one of LATE_BYTES_CAUGHT): a log line and a metric.
        self.on_late_bytes = on_late_bytes or _ignore
        self.idle_timeout_s = idle_timeout_s
        self.max_connections = max_connections
        self._pools: dict[tuple[str, int, bool], _Pool] = {}
        self._busy: set[_Connection] = set()
        self._silence_check: asyncio.TimerHandle | None = None
        self._tls: ssl.SSLContext | None = None

    async def request(
        self,
        origin: Origin,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        *,
        body: BodySource | None,
        content_length: int | None,
        read_timeout_s: float,
    ) -> UpstreamResponse:
        """Send one request; return once the answer's headers are in. `headers` must not hold
        hop-by-hop fields; Host is the origin's unless `headers` has one."""
        head = _head(method, origin.prefix + target, headers, origin.authority, body, content_length)
        retry = body is None and method in IDEMPOTENT
        key = (origin.host, origin.port, origin.tls)
        fresh = False
        while True:
            conn, reused = await self._acquire(origin, key, fresh)
            conn.arm(read_timeout_s, method == "HEAD")
            if self._silence_check is None:
                self._silence_check = conn.loop.call_later(SILENCE_CHECK_S, self._check_silence, conn.loop)
            conn.write(head)
            if body is not None:
                conn.body_task = asyncio.ensure_future(_send_body(conn, body, chunked=content_length is None))
                conn.body_task.add_done_callback(conn.body_sent)
            try:
                while not conn.head_done:
                    if conn.error is not None:
                        raise conn.error
                    await conn.wait()
                if conn.poisoned and not conn.head_only:
                    # More than one message before the head was even handed over (a HEAD's
                    # stray body is only the connection's loss: its head is the whole answer).
                    raise UpstreamError("extra_bytes")
            except UpstreamError as exc:
                # On a reused connection, silence-then-close is the upstream's idle timeout, and
                # a garbled answer may be the late bytes of the answer before: a new connection
                # settles both. Never for a body (consumed) or a timeout (the app is slow).
                stale = (
                    reused
                    and retry
                    and not isinstance(exc, UpstreamTimeout)
                    and (not conn.got_bytes or exc.reason in _GARBLED)
                )
                self._release(key, conn)
                if stale:
                    retry = False
                    fresh = True
                    continue
                raise
            except BaseException:
                self._release(key, conn)  # cancelled (the client went away): the connection is closed
                raise
            return UpstreamResponse(conn, self, key)

    def _check_silence(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        waiting = False
        for conn in list(self._busy):  # a failed request's connection leaves the set
            waiting = conn.check_silence(now) or waiting
        self._silence_check = loop.call_later(SILENCE_CHECK_S, self._check_silence, loop) if waiting else None

    async def _acquire(
        self, origin: Origin, key: tuple[str, int, bool], fresh: bool
    ) -> tuple[_Connection, bool]:
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = _Pool()
        loop = asyncio.get_running_loop()
        if pool.idle:
            self._prune(pool, loop.time())
        if not fresh:
            while pool.idle:
                conn = pool.idle.pop()
                if not conn.stale():
                    self._busy.add(conn)
                    return conn, True
                conn.close()
                self._closed(pool)
        if pool.count >= self.max_connections:
            if pool.idle:  # a retry wants a new connection: the oldest idle one makes room
                pool.idle.popleft().close()
                pool.count -= 1
            else:
                handed = await self._wait_for_connection(pool, loop)
                if handed is not None:
                    if not handed.stale():
                        return handed, True
                    # Checked like one from the pool: stray bytes since its answer (or a close)
                    # arrived on the way here. Its slot opens a new one.
                    self._busy.discard(handed)
                    handed.close()
                pool.count -= 1  # the slot handed over is taken again just below
        pool.count += 1
        try:
            conn = await self._connect(origin)
        except BaseException:
            self._closed(pool)
            raise
        self._busy.add(conn)
        return conn, False

    async def reserve(self, origin: Origin) -> Callable[[], None]:
        """A slot of `origin`'s pool for a connection opened elsewhere (a WebSocket, through
        aiohttp's client): counted against `max_connections` like ours, waited for like ours
        (UpstreamBusy past the connect timeout). Returns what gives the slot back."""
        key = (origin.host, origin.port, origin.tls)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = _Pool()
        loop = asyncio.get_running_loop()
        self._prune(pool, loop.time())
        if pool.count < self.max_connections:
            pool.count += 1
        elif pool.idle:  # an idle keep-alive connection makes room
            pool.idle.popleft().close()
        else:
            handed = await self._wait_for_connection(pool, loop)
            if handed is not None:  # a released connection: closed, its slot is ours
                self._busy.discard(handed)
                handed.close()
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._closed(pool)

        return release

    async def _wait_for_connection(self, pool: _Pool, loop: asyncio.AbstractEventLoop) -> _Connection | None:
        """A connection another request released, or None: a free slot to open one in."""
        waiter: asyncio.Future[_Connection | None] = loop.create_future()
        pool.waiters.append(waiter)
        try:
            await asyncio.wait((waiter,), timeout=self.connect_timeout_s)
        except BaseException:  # cancelled: the client went away while waiting
            if waiter.done() and not waiter.cancelled():
                self._give_back(pool, waiter.result())
            else:
                self._forget(pool, waiter)
            raise
        if not waiter.done() or waiter.cancelled():  # timed out, or the client is closing
            self._forget(pool, waiter)
            raise UpstreamBusy("pool_full")
        return waiter.result()

    @staticmethod
    def _forget(pool: _Pool, waiter: asyncio.Future[_Connection | None]) -> None:
        waiter.cancel()
        with contextlib.suppress(ValueError):
            pool.waiters.remove(waiter)

    def _give_back(self, pool: _Pool, conn: _Connection | None) -> None:
        # Handed to a request that is gone: pass it on to the next waiter, or park it.
        if conn is None:
            self._closed(pool)
            return
        self._busy.discard(conn)
        if not self._hand_over(pool, conn):
            conn.idle_since = conn.loop.time()
            pool.idle.append(conn)

    def _hand_over(self, pool: _Pool, conn: _Connection | None) -> bool:
        while pool.waiters:
            waiter = pool.waiters.popleft()
            if not waiter.done():
                if conn is not None:
                    self._busy.add(conn)
                waiter.set_result(conn)
                return True
        return False

    def _closed(self, pool: _Pool) -> None:
        """One of the pool's connections is gone: its slot goes to the first waiter, if any."""
        if not self._hand_over(pool, None):
            pool.count -= 1

    async def _connect(self, origin: Origin) -> _Connection:
        loop = asyncio.get_running_loop()
        tls = None
        if origin.tls:
            if self._tls is None:
                self._tls = ssl.create_default_context()
            tls = self._tls
        try:
            _transport, conn = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _Connection(loop, self.on_late_bytes, self.response_buffer),
                    origin.host,
                    origin.port,
                    ssl=tls,
                    server_hostname=origin.host if tls else None,
                ),
                self.connect_timeout_s,
            )
        except TimeoutError:
            raise UpstreamTimeout("connect_timeout") from None
        except OSError as exc:  # refused, unreachable, DNS, TLS
            raise UpstreamError(type(exc).__name__) from None
        return conn

    def _release(self, key: tuple[str, int, bool], conn: _Connection) -> None:
        pool = self._pools[key]
        self._busy.discard(conn)
        if not conn.finish():
            conn.close()
            self._closed(pool)
            return
        if self._hand_over(pool, conn):
            return
        now = conn.loop.time()
        conn.idle_since = now
        pool.idle.append(conn)
        self._prune(pool, now)

    def _prune(self, pool: _Pool, now: float) -> None:
        # Oldest first: the connections idle past the limit (or closed by the upstream) go.
        idle = pool.idle
        while idle and (idle[0].lost or now - idle[0].idle_since > self.idle_timeout_s):
            idle.popleft().close()
            self._closed(pool)

    async def close(self) -> None:
        if self._silence_check is not None:
            self._silence_check.cancel()
            self._silence_check = None
        for pool in self._pools.values():
            while pool.idle:
                pool.idle.pop().close()
            while pool.waiters:
                pool.waiters.popleft().cancel()
            pool.count = 0
        for conn in list(self._busy):
            conn.close()
        self._busy.clear()


def _ignore(_caught: str) -> None:
    pass


def _head(
    method: str,
    target: str,
    headers: list[tuple[str, str]],
    authority: str,
    body: BodySource | None,
    content_length: int | None,
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1"]
    has_host = False
    for name, value in headers:
        if len(name) == 4 and name.lower() == "host":
            has_host = True
        elif len(name) == 14 and name.lower() == "content-length":
            continue  # framing is ours: set below from what the body is
        lines.append(f"{name}: {value}")
    if not has_host:
        lines.append(f"Host: {authority}")
    if body is not None:
        chunked = content_length is None
        lines.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {content_length}")
    elif content_length == 0:
        lines.append("Content-Length: 0")
    # A CR or LF inside a name or value would split the request (aiohttp's parser rejects them
    # from clients; this guards what we built). Searched for in the lines joined without their
    # separators: `in` finds one character with memchr, where `str.count` walks every character
    # (~40,000 instructions for the 4 KB head of a request with a session cookie).
    joined = "".join(lines)
    if "\n" in joined or "\r" in joined:
        raise UpstreamError("invalid_header")
    lines += ("", "")
    return "\r\n".join(lines).encode("utf-8", "surrogateescape")


async def _send_body(conn: _Connection, body: BodySource, *, chunked: bool) -> None:
    async for chunk in body.iter_any():
        if conn.lost:
            return
        if chunked:
            if chunk:
                conn.write(b"%x\r\n" % len(chunk))
                conn.write(chunk)
                conn.write(b"\r\n")
        else:
            conn.write(chunk)
        conn.last_activity = conn.loop.time()  # a long upload is not a silent upstream
        await conn.drain()
    if chunked:
        conn.write(b"0\r\n\r\n")
