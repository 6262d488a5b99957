"""``inaturalist``: licensed photos of the configured species, train from one year, test from another.

For each split and species, observations are read in id order (``inat_api.py``) and each contributes
its first ``photos_per_observation`` photos whose own licence is accepted; photos are fetched until
``max_per_class`` of them decoded, so a broken photo does not leave the class short. An observation
is used at most once, so near-duplicate shots of one animal never straddle the splits.

Resumability: ``data/raw`` is deleted by DVC before this stage runs, so everything fetched lives in
a download cache outside it (``<cache>/inaturalist``): API answers, and per photo either
``<id>.jpg`` (decoded, stored as RGB JPEG), ``<id>.bad`` (why it was rejected for good: gone, 404
or 410, or not an image) or ``<id>.part`` (an unfinished download, resumed with a Range request, or
a photo over ``max_pixels`` kept for a larger cap). A restart skips what is finished, so no completed
photo is fetched twice; ``data/raw`` is then copied from the cache. Nothing is trusted for existing:
a cached photo is decoded again and one that does not decode (zero length after a power cut, half a
JPEG) is fetched again, like an unreadable ``.bad`` marker or API answer.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from tqdm import tqdm

from ...atomic import write_text
from ...errors import DataError
from ..http import Client, HttpError, HttpSettings, RateLimiter, is_local_http, origin_of
from ..images import ImageError, TooLarge, open_rgb
from ..manifest import sha256_of
from ...params import InaturalistSource
from .inat_api import Api, Taxon, evidence_ok, observation_params
from .paths import class_folders, inside
from .store import store_rgb_jpeg

CACHE_NAME = "inaturalist"
MAX_PHOTO_BYTES = 64 << 20  # an "original" is at most 2048 px, a few MB
PHOTO_SIZES = ("square", "thumb", "small", "medium", "large", "original")


@dataclass(frozen=True)
class Candidate:
    taxon: Taxon
    split: str
    observation_id: int
    photo: dict
    url: str  # at the configured size

    @property
    def photo_id(self) -> int:
        return int(self.photo["id"])

    def describe(self, reason: str) -> str:
        return f"inaturalist photo {self.photo_id} (observation {self.observation_id}, {self.url}): {reason}"


def sized_url(url: str, size: str) -> str | None:
    """The API gives ``.../photos/<id>/square.jpg``; other sizes replace only that file stem."""
    parts = urlsplit(url)
    head, _, name = parts.path.rpartition("/")
    stem, dot, extension = name.partition(".")
    if stem not in PHOTO_SIZES:
        return None
    return urlunsplit(parts._replace(path=f"{head}/{size}{dot}{extension}"))


class PhotoCache:
    """Photos of one size in the download cache; :meth:`get` fetches, verifies and stores once."""

    def __init__(self, folder: Path, client: Client, limiter: RateLimiter, max_pixels: int):
        self.folder, self.client, self.limiter, self.max_pixels = folder, client, limiter, max_pixels

    def path(self, candidate: Candidate) -> Path:
        return self.folder / f"{candidate.photo_id}.jpg"

    def get(self, candidate: Candidate) -> tuple[int, int] | str:
        """(width, height) of the stored photo, or why it was rejected (remembered if for good)."""
        done, bad = self.path(candidate), self.folder / f"{candidate.photo_id}.bad"
        if done.is_file():
            try:
                return open_rgb(done, self.max_pixels).size
            except TooLarge as exc:  # a smaller cap than when it was stored
                return str(exc).removeprefix(f"{done}: ")
            except ImageError:
                done.unlink()  # cut short by a crash or a power cut: fetch it again
        reason = _marker(bad)
        if reason:
            return reason
        refused = self.client.refusal(candidate.url)
        if refused:
            return f"refused, photos come only from download.inaturalist.photo_hosts over https: {refused}"
        part = self.folder / f"{candidate.photo_id}.part"
        try:
            size = self._download(candidate, part, done)
        except HttpError as exc:
            if exc.transient:
                raise  # the network, not the photo: stop here, a rerun resumes from the .part file
            reason, permanent = str(exc).removeprefix(f"{candidate.url}: "), exc.permanent
        except TooLarge as exc:  # kept as .part: a larger max_pixels accepts it without a new download
            return str(exc).removeprefix(f"{part}: ")
        except ImageError as exc:
            reason, permanent = str(exc).removeprefix(f"{part}: "), True
        else:
            part.unlink(missing_ok=True)
            return size
        if permanent:
            write_text(bad, reason)
            part.unlink(missing_ok=True)
        return reason


    def _download(self, candidate: Candidate, part: Path, done: Path) -> tuple[int, int]:
        """Fetch into ``part`` and store it; if bytes kept from an earlier run do not decode, once afresh."""
        resumed = part.is_file() and part.stat().st_size > 0
        self.client.fetch(candidate.url, part, self.limiter, MAX_PHOTO_BYTES)
        try:
            return store_rgb_jpeg(part, done, self.max_pixels)
        except TooLarge:
            raise
        except ImageError:
            if not resumed:
                raise
        part.unlink()  # a power cut may have left zeros in what an earlier run received
        self.client.fetch(candidate.url, part, self.limiter, MAX_PHOTO_BYTES)
        return store_rgb_jpeg(part, done, self.max_pixels)


def _marker(bad: Path) -> str | None:
    """The reason a ``.bad`` marker gives; an unreadable or empty one counts as none."""
    try:
        reason = bad.read_text().strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError):
        reason = ""
    if not reason:
        bad.unlink(missing_ok=True)
    return reason or None


def collect(
    config: InaturalistSource, out_dir: Path, max_pixels: int, cache_dir: Path, http: HttpSettings
) -> tuple[list[dict], list[str]]:
    """Fetch the photos into the cache, copy them to ``out_dir/<split>/<class>/``; rows and skips."""
    cache = cache_dir / CACHE_NAME
    with Client([config.api_url, *photo_origins(config)], http) as client:
        api = Api(config.api_url, client, RateLimiter(config.requests_per_minute, http), cache / "api")
        photos = PhotoCache(
            cache / "photos" / config.photo_size, client, RateLimiter(config.photo_requests_per_minute, http), max_pixels
        )
        taxa = api.resolve(config.taxa)
        caps = {"train": config.max_per_class.train, "test": config.max_per_class.test}
        years = {"train": config.train_year, "test": config.test_year}
        pool = ThreadPoolExecutor(config.concurrency)
        try:
            with tqdm(total=len(taxa) * sum(caps.values()), desc="photos", unit="photo") as bar:
                selection = Selection(api, photos, pool, config, bar)
                accepted = []
                for split, year in years.items():
                    for taxon in taxa:
                        accepted += selection.fill(taxon, split, year, caps[split])
        finally:  # on Ctrl-C or an error, queued photos are dropped rather than fetched first
            pool.shutdown(cancel_futures=True)
    folders = class_folders(taxon.name for taxon in taxa)
    rows = [_row(candidate, size, photos.path(candidate), out_dir, folders) for candidate, size in accepted]
    return rows, selection.skipped


def photo_origins(config: InaturalistSource) -> list[str]:
    """Photo hosts over https on port 443; against a local test API (http on loopback), its scheme and port."""
    if is_local_http(config.api_url):
        scheme, _, port = origin_of(config.api_url)
        return [f"{scheme}://{host}:{port}" for host in config.photo_hosts]
    return [f"https://{host}" for host in config.photo_hosts]


class Selection:
    """Chooses photos class by class; remembers what was used so nothing is taken twice."""

    def __init__(self, api: Api, photos: PhotoCache, pool: ThreadPoolExecutor, config: InaturalistSource, bar: tqdm):
        self.api, self.photos, self.pool, self.config, self.bar = api, photos, pool, config, bar
        self.observations: set[int] = set()
        self.photo_ids: set[int] = set()
        self.skipped: list[str] = []

    def fill(self, taxon: Taxon, split: str, year: int, cap: int) -> list[tuple[Candidate, tuple[int, int]]]:
        """Up to ``cap`` accepted photos, fetching only as many as are still needed at each step."""
        observations = self.api.observations(observation_params(self.config, taxon.id, year))
        got: list[tuple[Candidate, tuple[int, int]]] = []
        while len(got) < cap:
            batch = self._candidates(observations, taxon, split, cap - len(got))
            if not batch:
                break
            for candidate, result in zip(batch, self.pool.map(self.photos.get, batch)):
                if isinstance(result, str):
                    self.skipped.append(candidate.describe(result))
                elif len(got) < cap:
                    got.append((candidate, result))
                    self.bar.update()
        config = self.config
        if not got:
            raise DataError(
                f"download.inaturalist: no usable photo of {taxon.name} (id {taxon.id}) observed in {year} "
                f"(quality_grade {config.quality_grade}, licenses {', '.join(config.licenses)}, "
                f"evidence {config.evidence})"
            )
        if len(got) < cap:
            self.bar.write(f"note: {taxon.name}, {split} {year}: only {len(got)} of {cap} photos available", sys.stderr)
        return got

    def _candidates(self, observations: Iterator[dict], taxon: Taxon, split: str, wanted: int) -> list[Candidate]:
        """The next photos to try: at least ``wanted`` of them unless the observations run out."""
        batch: list[Candidate] = []
        for observation in observations:
            if observation["id"] in self.observations or not evidence_ok(observation, self.config.evidence):
                continue
            self.observations.add(observation["id"])
            licensed = [
                photo
                for photo in observation.get("photos") or []
                if str(photo.get("license_code") or "").lower() in self.config.licenses and not photo.get("hidden")
            ]
            for photo in licensed[: self.config.photos_per_observation]:
                if photo["id"] in self.photo_ids:
                    continue
                self.photo_ids.add(photo["id"])
                url = sized_url(str(photo.get("url") or ""), self.config.photo_size)
                if url is None:
                    self.skipped.append(
                        f"inaturalist photo {photo['id']} (observation {observation['id']}): "
                        f"unexpected url {photo.get('url')!r}"
                    )
                    continue
                batch.append(Candidate(taxon, split, int(observation["id"]), photo, url))
            if len(batch) >= wanted:
                break
        return batch


def _row(candidate: Candidate, size: tuple[int, int], cached: Path, out_dir: Path, folders: dict[str, str]) -> dict:
    # A copy, not a hard link: DVC may make its outputs read-only or move them into its cache.
    target = inside(out_dir, out_dir / candidate.split / folders[candidate.taxon.name] / f"{candidate.photo_id}.jpg")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(cached, target)
    return {
        "path": target.relative_to(out_dir).as_posix(),
        "split": candidate.split,
        "class": candidate.taxon.name,
        "source": "inaturalist",
        "observation_id": candidate.observation_id,
        "photo_id": candidate.photo_id,
        "url": candidate.url,
        "license": str(candidate.photo.get("license_code") or "").lower(),
        "attribution": candidate.photo.get("attribution") or "",
        "sha256": sha256_of(target),
        "width": size[0],
        "height": size[1],
        **(candidate.taxon.info.manifest_fields() if candidate.taxon.info else {}),
    }
