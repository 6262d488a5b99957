"""A local stand-in for the iNaturalist v1 API and its photo host, for offline tests.

Answers are shaped like the real API (its v1 OpenAPI spec and the iNaturalistAPI server source):
the taxa lookup (``/taxa/<ids>`` with each taxon's ``ancestors``, the search without), ``/v1/observations`` with its filters (``term_id`` requires an annotation, as on
the real server), ``per_page`` silently clamped to 200, HTTP 403 once ``page * per_page`` passes
10,000, ``order_by=id`` with ``id_above``, photos whose ``url`` is the square size (any other size
is served by replacing that word), and Range requests on photo and static files. Fault injection: ``faults["api"]`` is a queue of faults for the
next API requests in order, ``faults["photo:<id>"]`` one for successive requests of that photo
(``faults["static:<path>"]`` of a static file);
``"ok"`` in a queue means answer normally. Every request is logged. Binds 127.0.0.1 only.
"""

from __future__ import annotations

import io
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import numpy as np
from PIL import Image

MAX_PER_PAGE = 200
RANK_LEVELS = {"subspecies": 5, "species": 10, "genus": 20, "family": 30, "order": 40, "class": 50, "phylum": 60,
               "kingdom": 70}
RESULT_WINDOW = 10_000
SIZES = {"square": (24, 24), "thumb": (32, 24), "small": (48, 36), "medium": (64, 48), "large": (96, 72),
         "original": (128, 96)}
FAULTS = ("ok", "403", "404", "429", "500", "drop", "stall", "slow", "hang", "trickle")
# photo kind -> the file extension in its URL
KINDS = {
    "jpeg": "jpg",
    "gray": "jpeg",  # grayscale JPEG
    "png_alpha": "png",  # RGBA PNG
    "palette": "png",  # palette PNG with a transparent colour
    "cmyk": "JPG",  # CMYK JPEG
    "rotated": "jpg",  # EXIF orientation 6: stored upright it is taller than wide
    "truncated": "jpg",  # the first half of a JPEG, served as if complete
    "not_image": "jpg",  # an HTML error page with a .jpg name
    "redirect": "jpg",  # 302 to a host that is not allowed
}


@dataclass
class Taxon:
    id: int
    name: str
    rank: str = "species"
    is_active: bool = True
    ancestor_ids: tuple[int, ...] = ()  # without its own id
    common: str | None = None
    iconic: str = "Aves"

    def json(self, ancestors: list[Taxon] | None = None) -> dict:
        """As the API gives it; ``ancestors`` (root first, without "Life") only in ``/taxa/<ids>``
        answers, as on the real server: searches and observations carry ``ancestor_ids`` alone."""
        data = {
            "id": self.id,
            "name": self.name,
            "rank": self.rank,
            "rank_level": RANK_LEVELS.get(self.rank, 30),
            "iconic_taxon_name": self.iconic,
            "ancestor_ids": [*self.ancestor_ids, self.id],
            "is_active": self.is_active,
        }
        if self.common:
            data["preferred_common_name"] = self.common
        if ancestors is not None:
            data["ancestors"] = [ancestor.json() for ancestor in ancestors]
        return data


@dataclass
class Photo:
    id: int
    license_code: str | None = "cc-by"
    kind: str = "jpeg"
    host: str | None = None  # another base URL (a host that is not allowed); None = this server

    def json(self, base: str) -> dict:
        if self.license_code is None:
            attribution = "(c) observer, all rights reserved"
        elif self.license_code == "cc0":
            attribution = "(c) observer, no rights reserved (CC0)"
        else:
            attribution = f"(c) observer, some rights reserved ({self.license_code.upper().replace('CC-', 'CC ')})"
        return {
            "id": self.id,
            "license_code": self.license_code,
            "attribution": attribution,
            "url": f"{self.host or base}/photos/{self.id}/square.{KINDS[self.kind]}",
            "original_dimensions": {"width": 2048, "height": 1536},
            "flags": [],
            "hidden": False,
        }


@dataclass
class Observation:
    id: int
    taxon_id: int
    year: int
    photos: list[Photo]
    quality_grade: str = "research"
    annotations: list[tuple[int, int, int]] = field(default_factory=list)  # attribute, value, vote score

    def json(self, base: str, taxon: Taxon) -> dict:
        return {
            "id": self.id,
            "uuid": f"00000000-0000-4000-8000-{self.id:012d}",
            "quality_grade": self.quality_grade,
            "observed_on": f"{self.year}-06-15",
            "time_observed_at": f"{self.year}-06-15T08:30:00-04:00",
            "license_code": "cc-by-nc",
            "user": {"id": 7, "login": "observer"},
            "annotations": [
                {"controlled_attribute_id": a, "controlled_value_id": v, "vote_score": s} for a, v, s in self.annotations
            ],
            "photos": [photo.json(base) for photo in self.photos],
            "taxon": taxon.json(),
        }


def image_bytes(kind: str, size: str, seed: int) -> bytes:
    """Small deterministic image bytes of the given kind and photo size."""
    if kind == "not_image":
        return b"<html><body>503 Service Temporarily Unavailable</body></html>"
    width, height = SIZES[size]
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
    out = io.BytesIO()
    if kind == "gray":
        image.convert("L").save(out, "JPEG")
    elif kind == "png_alpha":
        image.convert("RGBA").save(out, "PNG")
    elif kind == "palette":
        image.convert("P").save(out, "PNG", transparency=0)
    elif kind == "cmyk":
        image.convert("CMYK").save(out, "JPEG")
    elif kind == "rotated":
        exif = Image.Exif()
        exif[0x0112] = 6
        image.save(out, "JPEG", exif=exif)
    else:
        image.save(out, "JPEG")
    data = out.getvalue()
    return data[: len(data) // 2] if kind == "truncated" else data


@dataclass
class World:
    taxa: list[Taxon] = field(default_factory=list)
    observations: list[Observation] = field(default_factory=list)

    def photo(self, photo_id: int) -> Photo | None:
        for observation in self.observations:
            for photo in observation.photos:
                if photo.id == photo_id:
                    return photo
        return None


class FakeInaturalist:
    """``with FakeInaturalist(world) as fake:`` serves ``fake.api_url`` until the block ends."""

    def __init__(self, world: World | None = None):
        self.world = world or World()
        self.faults: dict[str, list[str]] = {}
        self.static: dict[str, bytes] = {}  # path -> bytes, e.g. archives
        self.redirects: dict[str, str] = {}  # path -> Location of a 302 answer
        self.log: list[dict] = []
        self.release = threading.Event()  # ends a "hang"
        self.stall_seconds = 2.5  # longer than the tests' read timeout
        self._lock = threading.Lock()
        self._images: dict[tuple[int, str], bytes] = {}
        handler = type("Handler", (_Handler,), {"fake": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FakeInaturalist":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/v1"

    def fault(self, key: str) -> str:
        with self._lock:
            queue = self.faults.get(key)
            fault = queue.pop(0) if queue else "ok"
        assert fault in FAULTS, fault
        return fault

    def record(self, entry: dict) -> dict:
        with self._lock:
            self.log.append(entry)
        return entry

    def image(self, photo: Photo, size: str) -> bytes:
        with self._lock:
            key = (photo.id, size)
            if key not in self._images:
                self._images[key] = image_bytes(photo.kind, size, photo.id)
            return self._images[key]

    def photo_requests(self, since: int = 0) -> list[dict]:
        return [entry for entry in self.log[since:] if entry["kind"] == "photo"]

    def api_requests(self, since: int = 0) -> list[dict]:
        return [entry for entry in self.log[since:] if entry["kind"] == "api"]

    # --- the API -------------------------------------------------------------------------------

    def observations(self, query: dict[str, str]) -> tuple[int, dict]:
        per_page = min(int(query.get("per_page", 30)), MAX_PER_PAGE)
        page = int(query.get("page", 1))
        if page * per_page > RESULT_WINDOW:
            return 403, {
                "error": "Result window is too large, page * per_page must be less than or equal to 10000, "
                "use a sliding window approach with id_above or id_below params.",
                "status": 403,
            }
        matches = [obs for obs in self.world.observations if self._matches(obs, query)]
        descending = query.get("order", "desc") != "asc"
        matches.sort(key=lambda obs: obs.id, reverse=descending)  # ids stand in for created_at too
        taxa = {taxon.id: taxon for taxon in self.world.taxa}
        chosen = matches[(page - 1) * per_page : page * per_page]
        return 200, {
            "total_results": len(matches),
            "page": page,
            "per_page": per_page,
            "results": [obs.json(self.base_url, taxa[obs.taxon_id]) for obs in chosen],
        }

    def _matches(self, obs: Observation, query: dict[str, str]) -> bool:
        def listed(name: str) -> list[str]:
            return query[name].split(",") if query.get(name) else []

        taxa = {taxon.id: taxon for taxon in self.world.taxa}
        lineage = {str(i) for i in taxa[obs.taxon_id].ancestor_ids} | {str(obs.taxon_id)}
        evidence = [(a, v) for a, v, score in obs.annotations if score >= 0]
        checks = [
            not listed("taxon_id") or bool(lineage & set(listed("taxon_id"))),
            not listed("year") or str(obs.year) in listed("year"),
            query.get("quality_grade", "any") == "any" or obs.quality_grade in listed("quality_grade"),
            query.get("photos") != "true" or bool(obs.photos),
            not listed("photo_license") or any(p.license_code in listed("photo_license") for p in obs.photos),
            not query.get("id_above") or obs.id > int(query["id_above"]),
            not query.get("id_below") or obs.id < int(query["id_below"]),
        ]
        if query.get("term_id"):  # as the real API: term_id requires such an annotation
            term = int(query["term_id"])
            values = {str(v) for a, v in evidence if a == term}
            checks.append(bool(values) and (not listed("term_value_id") or bool(values & set(listed("term_value_id")))))
            if listed("without_term_value_id"):
                checks.append(not values & set(listed("without_term_value_id")))
        if query.get("without_term_id"):
            checks.append(all(a != int(query["without_term_id"]) for a, _ in evidence))
        return all(checks)

    def taxa_search(self, query: dict[str, str]) -> dict:
        q = query.get("q", "").lower()
        per_page = min(int(query.get("per_page", 30)), 500)
        found = [t for t in self.world.taxa if q in t.name.lower() or q in (t.common or "").lower()]
        found.sort(key=lambda t: (t.name.lower() != q, t.id))
        return {"total_results": len(found), "page": 1, "per_page": per_page,
                "results": [t.json() for t in found[:per_page]]}

    def taxa_by_id(self, ids: str) -> dict:
        wanted = {int(i) for i in ids.split(",")}
        known = {t.id: t for t in self.world.taxa}
        found = [t.json([known[i] for i in t.ancestor_ids if i in known]) for t in self.world.taxa if t.id in wanted]
        return {"total_results": len(found), "page": 1, "per_page": 30, "results": found}


class _Handler(BaseHTTPRequestHandler):
    fake: FakeInaturalist
    server_version = "FakeINat/1.0"

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def do_GET(self) -> None:  # noqa: N802
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        entry = {"path": parts.path, "query": query, "range": self.headers.get("Range"),
                 "agent": self.headers.get("User-Agent"), "status": None, "complete": False}
        photo = re.fullmatch(r"/photos/(\d+)/(\w+)\.(\w+)", parts.path)
        try:
            if parts.path.startswith("/v1/"):
                self._api(parts.path, query, self.fake.record({**entry, "kind": "api"}))
            elif photo and self.fake.world.photo(int(photo.group(1))):
                entry = self.fake.record({**entry, "kind": "photo", "photo_id": int(photo.group(1)),
                                          "size": photo.group(2)})
                self._photo(self.fake.world.photo(int(photo.group(1))), photo.group(2), entry)
            elif parts.path in self.fake.redirects:
                entry = self.fake.record({**entry, "kind": "redirect", "status": 302})
                self.send_response(302)
                self.send_header("Location", self.fake.redirects[parts.path])
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif parts.path in self.fake.static:
                entry = self.fake.record({**entry, "kind": "static"})
                fault = self.fake.fault(f"static:{parts.path}")
                self._body(self.fake.static[parts.path], "application/octet-stream", entry, fault)
            else:
                self._send(404, b'{"error":"Not found","status":404}', "application/json", self.fake.record(entry))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away (a timeout or a kill); the log says the body was not complete

    def _api(self, path: str, query: dict[str, str], entry: dict) -> None:
        fault = self.fake.fault("api")
        if path == "/v1/observations":
            status, data = self.fake.observations(query)
        elif path == "/v1/taxa":
            status, data = 200, self.fake.taxa_search(query)
        elif re.fullmatch(r"/v1/taxa/[\d,]+", path):
            status, data = 200, self.fake.taxa_by_id(path.rsplit("/", 1)[1])
        else:
            status, data = 404, {"error": "Not found", "status": 404}
        if status != 200:
            self._send(status, json.dumps(data).encode(), "application/json", entry)
        else:
            self._body(json.dumps(data).encode(), "application/json", entry, fault)

    def _photo(self, photo: Photo, size: str, entry: dict) -> None:
        fault = self.fake.fault(f"photo:{photo.id}")
        if photo.kind == "redirect" and fault == "ok":
            entry["status"] = 302
            self.send_response(302)
            self.send_header("Location", f"http://elsewhere.invalid/photos/{photo.id}/{size}.jpg")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if size not in SIZES:
            self._send(404, b"no such size", "text/plain", entry)
            return
        content_type = "image/png" if KINDS[photo.kind] == "png" else "image/jpeg"
        self._body(self.fake.image(photo, size), content_type, entry, fault)

    def _body(self, body: bytes, content_type: str, entry: dict, fault: str) -> None:
        """Send ``body`` (or its requested range), applying ``fault``."""
        if fault == "429":
            self._send(429, b'{"error":"Too Many Requests","status":429}', "application/json", entry, {"Retry-After": "1"})
            return
        if fault in ("403", "404", "500"):
            self._send(int(fault), f'{{"error":"HTTP {fault}","status":{fault}}}'.encode(), "application/json", entry)
            return
        if fault == "stall":  # longer than the client's read timeout, then hang up without answering
            time.sleep(self.fake.stall_seconds)
            self.close_connection = True
            return
        if fault == "slow":
            time.sleep(0.2)
        start, status, headers = 0, 200, {"Accept-Ranges": "bytes"}
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match:
            start = int(match.group(1))
            if start >= len(body):
                self._send(416, b"", "text/plain", entry, {"Content-Range": f"bytes */{len(body)}"})
                return
            status, headers["Content-Range"] = 206, f"bytes {start}-{len(body) - 1}/{len(body)}"
        chunk = body[start:]
        entry["status"], entry["start"] = status, start
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(chunk)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if fault in ("drop", "hang"):  # half the body, then the connection goes away
            self.wfile.write(chunk[: len(chunk) // 2])
            self.wfile.flush()
            entry["sent"] = len(chunk) // 2
            if fault == "hang":
                entry["hanging"] = True
                self.fake.release.wait(30)
            self.close_connection = True
            return
        if fault == "trickle":  # a byte at a time, each well within the read timeout
            for i in range(len(chunk)):
                self.wfile.write(chunk[i : i + 1])
                self.wfile.flush()
                time.sleep(0.05)
        else:
            self.wfile.write(chunk)
            self.wfile.flush()
        entry["sent"], entry["complete"] = len(chunk), True

    def _send(self, status: int, body: bytes, content_type: str, entry: dict, headers: dict | None = None) -> None:
        entry["status"] = status
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)
