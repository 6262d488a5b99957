"""A thin client for the parts of the iNaturalist v1 API the download needs.

Why not pyinaturalist: its base URL is a module constant (tests need a local server) and it keeps its
own SQLite cache; this is a few requests with a configurable base URL and a transparent cache.

* Every answer is cached on disk by its request, so a restarted download does not ask again and a
  rerun with the same params sees the same observations (delete the cache folder to re-query).
* Observations are paged by ``order_by=id&id_above=<last id>``: plain ``page=`` paging answers 403
  once ``page * per_page`` passes 10,000, the id window has no such limit.
* Names resolve to ids by the documented rule: the result whose ``name`` equals the given name
  (case-insensitively), with rank species and active; none or several is an error naming the param.
* Each species' rank, common name and ancestry come from ``/taxa/<ids>``, whose answers (unlike the
  search's) carry the ``ancestors``: one more request per 30 species named, none for ids.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ...atomic import write_json
from ...errors import DataError
from ..http import Client, RateLimiter
from ...params import InaturalistSource
from .. import taxonomy

PER_PAGE = 200  # the API's silent maximum for /observations
TAXA_PER_REQUEST = 30  # /taxa/<id,id,...> takes at most 30 ids
EVIDENCE_OF_PRESENCE = 22  # controlled term; its values below
ORGANISM = 24
OTHER_EVIDENCE = frozenset({23, 25, 26, 27, 28, 29, 30, 31, 32, 35})  # feather, scat, track, bone, ...
KEY = "download.inaturalist.taxa"


@dataclass(frozen=True)
class Taxon:
    id: int
    name: str
    info: taxonomy.Taxon | None = field(default=None, compare=False)  # rank, common name, ancestry


class Api:
    def __init__(self, base_url: str, client: Client, limiter: RateLimiter, cache_dir: Path):
        self.base_url = base_url.rstrip("/")
        self.client = client
        self.limiter = limiter
        self.cache_dir = cache_dir

    def get(self, endpoint: str, params: dict) -> dict:
        """The answer to ``GET endpoint?params``, from the cache when this exact request was made."""
        url = f"{self.base_url}{endpoint}"
        request = json.dumps([url, sorted((k, str(v)) for k, v in params.items())])
        cached = self.cache_dir / f"{hashlib.sha256(request.encode()).hexdigest()[:32]}.json"
        try:
            data = json.loads(cached.read_text())
            if _is_answer(data):
                return data
        except (OSError, ValueError):  # not asked yet, or cut short by a crash or a power cut: ask again
            pass
        data = self.client.get_json(url, params, self.limiter)
        if not _is_answer(data):
            raise DataError(f"{url}: the answer has no 'results' list; is {self.base_url} the iNaturalist v1 API?")
        write_json(cached, data)
        return data

    def resolve(self, taxa: list[str | int]) -> list[Taxon]:
        """Each entry of ``download.inaturalist.taxa`` as an active species, in the given order."""
        by_id = self._by_ids([t for t in taxa if isinstance(t, int)])
        resolved = []
        for entry in taxa:
            if isinstance(entry, int):
                found = by_id.get(entry)
                if found is None:
                    raise DataError(f"{KEY}: taxon id {entry} does not exist on {self.base_url}")
                if found.get("rank") != "species" or not found.get("is_active", True):
                    raise DataError(
                        f"{KEY}: taxon id {entry} is {found.get('name')} ({found.get('rank')}"
                        f"{'' if found.get('is_active', True) else ', inactive'}), not an active species"
                    )
            else:
                found = self._by_name(entry)
            taxon = Taxon(int(found["id"]), str(found["name"]))
            for earlier_entry, earlier in zip(taxa, resolved):
                if taxon.id == earlier.id:
                    raise DataError(f"{KEY}: {earlier_entry!r} and {entry!r} are the same taxon, {taxon.name} "
                                    f"(id {taxon.id}); list each species once")
                if taxon.name.casefold() == earlier.name.casefold():
                    raise DataError(f"{KEY}: {earlier_entry!r} and {entry!r} are two taxa named {taxon.name} "
                                    f"(ids {earlier.id} and {taxon.id}); class names must differ")
            resolved.append(taxon)
        by_id.update(self._by_ids([t.id for t in resolved if t.id not in by_id]))
        return [Taxon(t.id, t.name, taxonomy.from_api(by_id.get(t.id) or {"id": t.id, "name": t.name}))
                for t in resolved]

    def _by_ids(self, ids: list[int]) -> dict[int, dict]:
        """Full taxon records (with ``ancestors``) by id, 30 to a request."""
        by_id: dict[int, dict] = {}
        for start in range(0, len(ids), TAXA_PER_REQUEST):
            chunk = ids[start : start + TAXA_PER_REQUEST]
            for found in self.get(f"/taxa/{','.join(map(str, chunk))}", {})["results"]:
                by_id[found.get("id")] = found
        return by_id

    def _by_name(self, name: str) -> dict:
        results = self.get("/taxa", {"q": name, "per_page": 30})["results"]
        same = [r for r in results if str(r.get("name", "")).lower() == name.lower()]
        species = [r for r in same if r.get("rank") == "species" and r.get("is_active", True)]
        if len(species) == 1:
            return species[0]
        if species:
            ids = ", ".join(str(r.get("id")) for r in species)
            raise DataError(f"{KEY}: '{name}' matches {len(species)} active species (ids {ids}); list the id instead")
        others = "; ".join(f"{r.get('name')} ({r.get('rank')}, {'active' if r.get('is_active', True) else 'inactive'})"
                           for r in same)
        raise DataError(
            f"{KEY}: '{name}' is not the name of an active species on {self.base_url}"
            + (f" (found {others})" if others else "; check the spelling or list the taxon id")
        )

    def observations(self, params: dict) -> Iterator[dict]:
        """Every observation matching ``params``, in ascending id order, one page at a time."""
        last = 0
        while True:
            page = self.get("/observations", {**params, "id_above": last} if last else params)
            results = page["results"]
            yield from results
            if not results or len(results) < int(page.get("per_page") or PER_PAGE):
                return
            newest = max(int(obs["id"]) for obs in results)
            if newest <= last:
                raise DataError(f"{self.base_url}/observations: ids do not increase past {last}; paging stopped")
            last = newest


def _is_answer(data: object) -> bool:
    return isinstance(data, dict) and isinstance(data.get("results"), list)


def observation_params(config: InaturalistSource, taxon_id: int, year: int) -> dict:
    """The server-side filters; licence per photo and 'not other evidence' are checked client-side."""
    params: dict = {
        "taxon_id": taxon_id,
        "year": year,
        "photos": "true",
        "photo_license": ",".join(config.licenses),
        "order_by": "id",
        "order": "asc",
        "per_page": PER_PAGE,
    }
    if config.quality_grade != "any":
        params["quality_grade"] = config.quality_grade
    if config.evidence == "organism":
        params.update(term_id=EVIDENCE_OF_PRESENCE, term_value_id=ORGANISM)
    return params


def evidence_ok(observation: dict, evidence: str) -> bool:
    """Whether the observation's Evidence of Presence annotations (votes >= 0) allow it.

    ``not_other`` drops observations annotated as tracks, scat, bones, ... and keeps unannotated ones.
    The API cannot do this itself: ``without_term_value_id`` only works together with ``term_id``,
    which then requires an evidence annotation and so drops every unannotated observation.
    """
    if evidence == "any":
        return True
    values = {
        a.get("controlled_value_id")
        for a in observation.get("annotations") or []
        if a.get("controlled_attribute_id") == EVIDENCE_OF_PRESENCE and (a.get("vote_score") or 0) >= 0
    }
    if values & OTHER_EVIDENCE:
        return False
    return evidence == "not_other" or ORGANISM in values
