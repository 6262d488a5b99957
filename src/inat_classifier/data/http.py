"""HTTP for the download sources: polite, bounded, restartable, and only to the hosts we were given.

* Every request names the tool in its User-Agent (with a contact from ``$INAT_CLASSIFIER_CONTACT``) and goes only to an allow-listed origin (scheme,
  host and port), redirects included, so a hostile or changed API answer cannot send us elsewhere.
  The check runs in the transport adapter on the URL as urllib3 will connect to it, for every hop:
  a URL that Python's ``urlsplit`` reads differently (``https://evil\\@good/``) cannot slip by.
* Timeouts, dropped connections, 5xx and 429 are retried with exponential backoff, or after the
  server's Retry-After; after ``max_tries`` the failure is one line naming the URL.
* Every download has an overall ``deadline`` (all tries together: a server trickling one byte at a
  time cannot hold us forever) and a cap on its size; a body's declared size must fit on the disk.
* A :class:`RateLimiter` spaces requests evenly across threads (iNaturalist asks for <= 60/minute).
* :meth:`Client.fetch` completes a ``.part`` file with Range requests, so an interrupted download
  resumes where it stopped and bytes already on disk are never fetched again.

Waiting goes through :class:`HttpSettings` ``sleep``/``clock`` so tests run instantly and can check
what was waited for.
"""

from __future__ import annotations

import email.utils
import importlib.metadata
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import requests
import urllib3
from urllib3.util import parse_url

from ..atomic import check_free_space
from ..errors import DataError

CONTACT_ENV = "INAT_CLASSIFIER_CONTACT"  # an e-mail address or URL iNaturalist may write to
CHUNK = 1 << 16
MAX_JSON_BYTES = 64 << 20  # an API page of 200 observations is about 1 MB
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
GONE_STATUSES = frozenset({404, 410})  # the only answers that say a URL will not work tomorrow either
DEFAULT_PORTS = {"http": 80, "https": 443}
LOOPBACK = frozenset({"127.0.0.1", "localhost", "[::1]"})
# Backslashes, white space and control characters: parsers disagree on them, real URLs have none.
UNSAFE_URL = re.compile(r"[\\\s\x00-\x1f\x7f]")
Origin = tuple[str, str, int]  # scheme, host, port
# Reading the body through ``response.raw`` raises urllib3's own errors, not requests' wrappers.
TRANSIENT = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    urllib3.exceptions.ProtocolError,
    urllib3.exceptions.ReadTimeoutError,
)


def user_agent(contact: str | None = None) -> str:
    """Names the project and, when given or set in ``$INAT_CLASSIFIER_CONTACT``, whom to contact."""
    try:
        version = importlib.metadata.version("inat-classifier")
    except importlib.metadata.PackageNotFoundError:
        version = "0"
    contact = re.sub(r"[^\x21-\x7e]+", " ", os.environ.get(CONTACT_ENV, "") if contact is None else contact).strip()
    return f"inat-classifier/{version} (iNaturalist photo classifier pipeline{'; contact: ' + contact if contact else ''})"


@dataclass(frozen=True)
class HttpSettings:
    user_agent: str = field(default_factory=lambda: user_agent())
    timeout: tuple[float, float] = (15.0, 60.0)  # connect, read (seconds)
    max_tries: int = 6  # 1 + 5 retries: about a minute of backoff before giving up
    backoff: float = 2.0  # first retry waits this long, doubling each time
    max_wait: float = 300.0  # cap on backoff and on a server's Retry-After
    deadline: float = 600.0  # seconds for one download, all tries and waits included
    trust_env: bool = True  # honour HTTP(S)_PROXY etc.; tests turn it off
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic


class HttpError(DataError):
    """A request failed for good: a 4xx answer, or transient failures beyond ``max_tries``."""

    def __init__(self, message: str, transient: bool = False, permanent: bool = False):
        super().__init__(message)
        self.transient = transient  # the network failed, not this URL: worth a rerun later
        self.permanent = permanent  # the URL is gone (404, 410) or leads where we may not go: remember it


class _Retry(Exception):
    """One attempt failed in a way worth retrying, after ``wait`` seconds if the server said so."""

    def __init__(self, reason: str, wait: float | None = None):
        super().__init__(reason)
        self.wait = wait


class RateLimiter:
    """At most ``per_minute`` requests a minute, evenly spaced, shared by all threads."""

    def __init__(self, per_minute: float, settings: HttpSettings = HttpSettings()):
        self.interval = 60.0 / per_minute
        self._clock, self._sleep = settings.clock, settings.sleep
        self._next = float("-inf")
        self._lock = threading.Lock()

    def wait(self) -> None:
        with self._lock:
            now = self._clock()
            slot = max(now, self._next)
            self._next = slot + self.interval
        if slot > now:
            self._sleep(slot - now)

    def defer(self, seconds: float) -> None:
        """A 429 means we all go too fast: nobody sends before ``seconds`` from now."""
        with self._lock:
            self._next = max(self._next, self._clock() + seconds)


def origin_of(url: str) -> Origin | None:
    """(scheme, host, port) as urllib3 connects for ``url``; None for anything but a plain http(s) URL."""
    try:
        parts = parse_url(url)
    except urllib3.exceptions.LocationParseError:
        return None
    scheme = (parts.scheme or "").lower()
    if scheme not in DEFAULT_PORTS or not parts.host or parts.auth is not None or UNSAFE_URL.search(url):
        return None
    return scheme, parts.host.lower(), parts.port or DEFAULT_PORTS[scheme]


def host_of(url: str) -> str:
    try:
        return (parse_url(url).host or "").lower()
    except urllib3.exceptions.LocationParseError:
        return ""


def is_local_http(url: str) -> bool:
    """A plain-http URL on this machine: a test server, the only place http and odd ports are allowed."""
    origin = origin_of(url)
    return origin is not None and origin[0] == "http" and origin[1] in LOOPBACK


def retry_after(value: str | None, max_wait: float) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), capped at ``max_wait``."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), max_wait)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return min(max(0.0, (when - datetime.now(timezone.utc)).total_seconds()), max_wait)


class Client:
    """Requests to allow-listed origins with retries; one ``requests.Session`` per thread.

    ``origins`` are URLs (only their scheme, host and port count) or bare host names, which mean
    https on port 443.
    """

    def __init__(self, origins: Iterable[str], settings: HttpSettings = HttpSettings()):
        self.origins = frozenset(origin_of(o if "://" in o else f"https://{o}") for o in origins) - {None}
        self.settings = settings
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            for session in self._sessions:
                session.close()
            self._sessions.clear()

    def refusal(self, url: str) -> str | None:
        """Why ``url`` may not be requested, or None if it may."""
        origin = origin_of(url)
        if origin is None:
            return "not a plain http(s) URL (user info, a backslash, white space or a control character)"
        if origin not in self.origins:
            allowed = ", ".join(sorted(f"{s}://{h}:{p}" for s, h, p in self.origins))
            return f"{origin[0]}://{origin[1]}:{origin[2]} is not an allowed origin (allowed: {allowed})"
        return None

    def allowed(self, url: str) -> bool:
        return self.refusal(url) is None

    def check(self, url: str) -> None:
        why = self.refusal(url)
        if why:
            raise HttpError(f"{' '.join(url.split())}: refused, {why}", permanent=True)

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.trust_env = self.settings.trust_env
            session.headers["User-Agent"] = self.settings.user_agent
            adapter = _CheckedAdapter(self)
            for scheme in DEFAULT_PORTS:
                session.mount(f"{scheme}://", adapter)
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    def _attempts(self, url: str, limiter: RateLimiter | None, attempt: Callable[[float], object]) -> object:
        """Run ``attempt(stop)`` until it succeeds, retrying :class:`_Retry` and transient errors with
        backoff, all before the clock reaches ``stop``."""
        self.check(url)
        stop = self.settings.clock() + self.settings.deadline
        reason = ""
        for tries in range(1, self.settings.max_tries + 1):
            if limiter:
                limiter.wait()
            self._on_time(stop, url)
            try:
                return attempt(stop)
            except _Retry as exc:
                reason, wait = str(exc), exc.wait
            except TRANSIENT as exc:
                reason, wait = _one_line(exc), None
            except requests.RequestException as exc:  # too many redirects, an invalid URL, ...
                raise HttpError(f"{url}: {_one_line(exc)}") from None
            if tries == self.settings.max_tries:
                break
            if wait is None:
                wait = min(self.settings.backoff * 2 ** (tries - 1), self.settings.max_wait)
            elif limiter:
                limiter.defer(wait)
            self.settings.sleep(wait)
        raise HttpError(f"{url}: gave up after {self.settings.max_tries} tries; last: {reason}", transient=True)

    def _on_time(self, stop: float, url: str) -> None:
        if self.settings.clock() > stop:
            raise HttpError(f"{url}: gave up, not done within the {self.settings.deadline:g} s deadline", transient=True)

    def _check_status(self, response: requests.Response, url: str) -> None:
        """Nothing for a success; otherwise raise :class:`_Retry` or a final :class:`HttpError`."""
        status = response.status_code
        if status < 400:
            return
        try:
            detail = " ".join(next(response.iter_content(300), b"").decode("utf-8", "replace").split())
        except TRANSIENT:
            detail = ""
        response.close()
        if status in RETRY_STATUSES:
            raise _Retry(f"HTTP {status}", retry_after(response.headers.get("retry-after"), self.settings.max_wait))
        raise HttpError(f"{url}: HTTP {status} {response.reason}{': ' + detail if detail else ''}",
                        permanent=status in GONE_STATUSES)

    def get_json(
        self, url: str, params: dict | None = None, limiter: RateLimiter | None = None, max_bytes: int = MAX_JSON_BYTES
    ) -> object:
        """GET a JSON document of at most ``max_bytes``; a body cut short or not JSON counts as transient."""

        def attempt(stop: float) -> object:
            response = self._session().get(url, params=params, stream=True, timeout=self.settings.timeout)
            with response:
                self._check_status(response, response.url)
                body = bytearray()
                for block in response.iter_content(CHUNK):
                    body += block
                    _cap(response.url, len(body), max_bytes)
                    self._on_time(stop, url)
            try:
                return json.loads(body)
            except ValueError:
                raise _Retry("the answer is not complete JSON") from None

        return self._attempts(url, limiter, attempt)

    def fetch(self, url: str, part: Path, limiter: RateLimiter | None = None, max_bytes: int | None = None) -> None:
        """Complete ``part`` with the body of ``url`` (at most ``max_bytes``), resuming from the bytes in it."""

        def attempt(stop: float) -> None:
            have = part.stat().st_size if part.exists() else 0
            headers = {"Accept-Encoding": "identity"}
            if have:
                headers["Range"] = f"bytes={have}-"
            response = self._session().get(url, headers=headers, stream=True, timeout=self.settings.timeout)
            with response:
                if response.status_code == 416 and have:
                    if _total_size(response.headers.get("content-range")) == have:
                        return  # finished before an interruption; nothing left to fetch
                    part.unlink()
                    raise _Retry("the partial file does not match the server's; starting again", 0.0)
                self._check_status(response, url)
                start = _range_start(response.headers.get("content-range")) if response.status_code == 206 else 0
                if start not in (0, have):
                    part.unlink()
                    raise _Retry(f"server resumed at byte {start}, not {have}", 0.0)
                expected = _integer(response.headers.get("content-length"))
                if expected is not None:
                    _cap(url, start + expected, max_bytes)
                    check_free_space(part.parent, expected, url)
                written = 0
                with open(part, "ab" if start else "wb") as handle:
                    # read1 hands over whatever has arrived and flush puts it on disk, so a kill
                    # loses almost nothing that was received
                    while block := response.raw.read1(CHUNK, decode_content=True):
                        handle.write(block)
                        handle.flush()
                        written += len(block)
                        _cap(url, start + written, max_bytes)
                        self._on_time(stop, url)
                if expected is not None and written != expected:
                    raise _Retry(f"connection closed after {written} of {expected} bytes")

        part.parent.mkdir(parents=True, exist_ok=True)
        self._attempts(url, limiter, attempt)


class _CheckedAdapter(requests.adapters.HTTPAdapter):
    """Checks every request on the wire, redirects included, against the client's origins."""

    def __init__(self, client: Client):
        super().__init__()
        self._client = client

    def send(self, request: requests.PreparedRequest, *args: object, **kwargs: object) -> requests.Response:
        self._client.check(request.url or "")
        return super().send(request, *args, **kwargs)


def _cap(url: str, size: int, max_bytes: int | None) -> None:
    if max_bytes is not None and size > max_bytes:
        raise HttpError(f"{url}: refused, the body is larger than the cap of {max_bytes} bytes", permanent=True)


def _integer(value: str | None) -> int | None:
    return int(value) if value and value.strip().isdigit() else None


def _one_line(exc: Exception) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"


def _range_start(content_range: str | None) -> int | None:
    match = re.match(r"bytes (\d+)-\d+/(\d+|\*)", content_range or "")
    return int(match.group(1)) if match else None


def _total_size(content_range: str | None) -> int | None:
    match = re.match(r"bytes (?:\*|\d+-\d+)/(\d+)", content_range or "")
    return int(match.group(1)) if match else None
