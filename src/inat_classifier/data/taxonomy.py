"""Where each class sits in the tree of life: iNaturalist's taxon id, rank, common name and ancestry.

A class is a scientific name; its :class:`Taxon` travels from the source (the iNaturalist API's
taxa, the competition JSON's category fields, the sample's made-up tree) through the manifest's
taxon columns into the class-names files, so that evaluate can score the genus and family of a
prediction, ``predict --rollup`` can answer "Catharus, 0.93" where no species is likely enough, and
the model card can link each class to its iNaturalist page. Everything is optional: a class known
only by name (the folder source, older files) is a plain name and every use degrades to the name.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import DataError

# iNaturalist's rank_level of each rank (its taxa's ``rank_level``): what orders an ancestry.
RANK_LEVELS = {
    "form": 5, "variety": 5, "subspecies": 5, "hybrid": 10, "species": 10, "complex": 11, "subsection": 12,
    "section": 13, "subgenus": 15, "genushybrid": 20, "genus": 20, "subtribe": 24, "tribe": 25, "supertribe": 26,
    "subfamily": 27, "family": 30, "epifamily": 32, "superfamily": 33, "zoosubsection": 33.5, "zoosection": 34,
    "parvorder": 34.5, "infraorder": 35, "suborder": 37, "order": 40, "superorder": 43, "subterclass": 44,
    "infraclass": 45, "subclass": 47, "class": 50, "superclass": 53, "subphylum": 57, "phylum": 60,
    "kingdom": 70,
}
SCORED_RANKS = ("genus", "family")  # evaluate.json's genus_accuracy and family_accuracy
COMPETITION_RANKS = ("kingdom", "phylum", "class", "order", "family", "genus")  # iNat 2018+ category fields
MANIFEST_COLUMNS = ["taxon_id", "rank", "common_name", "ancestry"]
TAXON_URL = "https://www.inaturalist.org/taxa/{}"
DIGITS = 6  # probabilities are shown and compared with the threshold rounded to this


@dataclass(frozen=True)
class Taxon:
    """One class. ``ancestry`` is (rank, name) pairs, root first, without the class itself."""

    name: str
    taxon_id: int | None = None
    rank: str = ""
    common_name: str = ""
    ancestry: tuple[tuple[str, str], ...] = ()

    @property
    def known(self) -> bool:
        """Whether anything beyond the name is known (else files keep the plain-name format)."""
        return self.taxon_id is not None or bool(self.rank or self.common_name or self.ancestry)

    @property
    def url(self) -> str | None:
        return TAXON_URL.format(self.taxon_id) if self.taxon_id is not None else None

    def at(self, rank: str) -> str | None:
        """The name of this class's taxon at ``rank`` (its own name at its own rank), or None."""
        if rank == self.rank:
            return self.name
        return dict(self.ancestry).get(rank)

    def to_json(self) -> dict:
        data: dict = {"name": self.name}
        if self.taxon_id is not None:
            data["taxon_id"] = self.taxon_id
        if self.rank:
            data["rank"] = self.rank
        if self.common_name:
            data["common_name"] = self.common_name
        if self.ancestry:
            data["ancestry"] = dict(self.ancestry)
        return data

    def manifest_fields(self) -> dict:
        """The manifest's taxon columns; ``ancestry`` as a JSON object (rank -> name, root first)."""
        return {
            "taxon_id": "" if self.taxon_id is None else self.taxon_id,
            "rank": self.rank,
            "common_name": self.common_name,
            "ancestry": json.dumps(dict(self.ancestry), ensure_ascii=False) if self.ancestry else "",
        }


def from_json(entry: object, source: object) -> Taxon:
    """A class-names file's entry: a plain name (older files) or an object with a ``name``."""
    if isinstance(entry, str):
        return Taxon(entry)
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise DataError(f"{source}: expected class names (strings) or objects with a 'name', got {entry!r:.80}")
    name = entry["name"]
    try:
        return make(name, entry.get("taxon_id"), entry.get("rank") or "", entry.get("common_name") or "",
                    entry.get("ancestry") or {})
    except (TypeError, ValueError) as exc:
        raise DataError(f"{source}: class {name!r}: {exc}") from None


def make(name: str, taxon_id: object, rank: str, common_name: str, ancestry: Mapping[str, str]) -> Taxon:
    """A checked :class:`Taxon`: an integer id or none, string fields, white space folded."""
    if taxon_id is not None and taxon_id != "":
        if isinstance(taxon_id, bool) or not str(taxon_id).isdigit():
            raise ValueError(f"taxon_id {taxon_id!r} is not a positive integer")
        taxon_id = int(taxon_id)
    else:
        taxon_id = None
    if not isinstance(ancestry, Mapping):
        raise TypeError(f"ancestry must map ranks to names, got {ancestry!r:.80}")
    pairs = tuple((str(r), " ".join(str(n).split())) for r, n in ancestry.items() if str(n).strip())
    if not all(isinstance(v, str) for v in (rank, common_name)):
        raise TypeError("rank and common_name must be strings")
    return Taxon(name, taxon_id, rank, " ".join(common_name.split()), pairs)


def from_manifest(manifest, classes: Sequence[str]) -> list[Taxon]:
    """Each class's taxon from its first manifest row; a manifest without taxon columns gives names."""
    if not set(MANIFEST_COLUMNS) <= set(manifest.columns):
        return [Taxon(name) for name in classes]
    first = manifest.drop_duplicates("class").set_index("class")
    taxa = []
    for name in classes:
        row = first.loc[name]
        try:
            ancestry = json.loads(row["ancestry"]) if row["ancestry"] else {}
            taxa.append(make(name, row["taxon_id"], row["rank"], row["common_name"], ancestry))
        except (TypeError, ValueError) as exc:  # JSONDecodeError is a ValueError
            raise DataError(f"manifest: class {name!r} has an unreadable taxon ({exc})") from None
    return taxa


def from_category(category: Mapping, name: str) -> Taxon:
    """A competition category: iNat 2018+ give kingdom ... genus fields (2021 a ``common_name``); for
    2017's bare names the genus is the binomial's first word. Category ids are not iNaturalist taxon
    ids, so there is no id (nor link)."""
    ancestry = {rank: str(category[rank]) for rank in COMPETITION_RANKS if str(category.get(rank) or "").strip()}
    words = name.split()
    if "genus" not in ancestry and len(words) >= 2 and words[0][:1].isupper():
        ancestry["genus"] = words[0]
    return make(name, None, "species", str(category.get("common_name") or ""), ancestry)


def from_api(taxon: Mapping) -> Taxon:
    """An iNaturalist API taxon (``/v1/taxa/<id>``): its ``ancestors`` give the ancestry, root first."""
    ancestry = {
        str(a["rank"]): str(a["name"])
        for a in taxon.get("ancestors") or []
        if a.get("rank") in RANK_LEVELS and a.get("name")
    }
    return make(str(taxon["name"]), taxon.get("id"), str(taxon.get("rank") or ""),
                str(taxon.get("preferred_common_name") or ""), ancestry)


def markdown(taxon: Taxon) -> str:
    """``[*Catharus ustulatus*](https://www.inaturalist.org/taxa/12011) (Swainson's Thrush)``."""
    text = f"[*{taxon.name}*]({taxon.url})" if taxon.url else f"*{taxon.name}*"
    return f"{text} ({taxon.common_name})" if taxon.common_name else text


# --- scoring and rolling up ------------------------------------------------------------------


def rank_accuracies(labels: np.ndarray, probs: np.ndarray, taxa: Sequence[Taxon]) -> dict[str, float]:
    """``genus_accuracy`` and ``family_accuracy``: the share of images whose top-1 class is in the true
    class's genus (family); each only when every class's taxon at that rank is known."""
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] != len(taxa) or len(probs) != len(labels):
        raise ValueError(f"probs of shape {probs.shape} for {len(labels)} labels and {len(taxa)} classes")
    scores = {}
    for rank in SCORED_RANKS:
        names = [taxon.at(rank) for taxon in taxa]
        if not len(labels) or not all(names):
            continue
        group = np.asarray(names, dtype=object)
        scores[f"{rank}_accuracy"] = round(float(np.mean(group[probs.argmax(axis=1)] == group[labels])), 6)
    return scores


def rollup_ranks(taxa: Sequence[Taxon]) -> list[str]:
    """The ranks above the classes that some class's ancestry names, lowest first."""
    ranks = {rank for taxon in taxa for rank, _ in taxon.ancestry if rank in RANK_LEVELS}
    return sorted(ranks, key=lambda rank: (RANK_LEVELS[rank], rank))


def rollup(probs: np.ndarray, taxa: Sequence[Taxon], threshold: float) -> tuple[list[str], list[str], np.ndarray]:
    """(answer, rank, probability) per row: the top class where its probability reaches ``threshold``,
    else the lowest-ranked taxon whose classes' summed probability does (the most probable one at that
    rank), else ``None`` with the top class's probability. A class without that rank in its ancestry
    counts towards no taxon of it: the model's classes are all it knows."""
    probs = np.asarray(probs, dtype=np.float64)
    top = probs.argmax(axis=1)
    best = probs.max(axis=1).round(DIGITS)  # compared as shown, like predict's top-1
    answers: list = [taxa[c].name for c in top]
    ranks = [taxa[c].rank for c in top]
    chances = best.copy()
    pending = best < threshold
    for rank in rollup_ranks(taxa):
        if not pending.any():
            break
        groups = list(dict.fromkeys(taxon.at(rank) for taxon in taxa if taxon.at(rank)))
        members = np.array([[taxon.at(rank) == group for group in groups] for taxon in taxa], dtype=np.float64)
        sums = (probs @ members).round(DIGITS)
        chosen = sums.argmax(axis=1)
        summed = sums[np.arange(len(probs)), chosen]
        for i in np.flatnonzero(pending & (summed >= threshold)):
            answers[i], ranks[i], chances[i] = groups[chosen[i]], rank, summed[i]
        pending &= summed < threshold
    for i in np.flatnonzero(pending):
        answers[i], ranks[i] = None, ""
    return answers, ranks, chances
