"""The iNaturalist source against a local fake of the v1 API (tests/helpers/fake_inaturalist.py), offline.

One module-wide fake serves a small world built so that each rule shows: 205 track observations
fill the first page (so paging must go on), then photos in every awkward format, licences that
differ between an observation's photos, a host that is not allowed, and spare observations.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import requests
from PIL import Image

from helpers.fake_inaturalist import FakeInaturalist, Observation, Photo, Taxon, World
from conftest import fetch
from inat_classifier.errors import DataError, ParamsError
from inat_classifier.data.http import Client, HttpSettings, RateLimiter, retry_after
from inat_classifier.data.manifest import COLUMNS, read_manifest
from inat_classifier.params import parse_params
from inat_classifier.data.sources.inat_api import Taxon as ApiTaxon
from inat_classifier.data.sources.inaturalist import Candidate, PhotoCache, sized_url
from inat_classifier.data.taxonomy import Taxon as ClassTaxon
from inat_classifier.data.taxonomy import from_manifest

THRUSH, HERMIT, GENUS, SUBSPECIES, OLD_THRUSH, DUP1, DUP2 = 12011, 12015, 12010, 120111, 99001, 99002, 99003
ORDER, FAMILY = 7251, 12705
# Named photos of Catharus ustulatus observed in 2017, in observation-id order after the tracks.
GRAY, ARR_FIRST, PNG_ALPHA, TRUNCATED, CMYK, FOREIGN, ND, BY_SECOND, ROTATED, PALETTE, NOT_IMAGE, SPARE, SSP = (
    range(60001, 60014)
)
REDIRECT = 61000
FAST = HttpSettings(timeout=(2.0, 2.0), backoff=0.01, trust_env=False, sleep=lambda seconds: None)
CAPS = {"train": 5, "test": 2}


def build_world() -> World:
    thrushes = (1, 2, 3, ORDER, FAMILY, GENUS)  # ids as on iNaturalist
    taxa = [
        Taxon(1, "Animalia", rank="kingdom", common="Animals"),
        Taxon(2, "Chordata", rank="phylum", ancestor_ids=(1,), common="Chordates"),
        Taxon(3, "Aves", rank="class", ancestor_ids=(1, 2), common="Birds"),
        Taxon(ORDER, "Passeriformes", rank="order", ancestor_ids=(1, 2, 3), common="Perching Birds"),
        Taxon(FAMILY, "Turdidae", rank="family", ancestor_ids=(1, 2, 3, ORDER), common="Thrushes"),
        Taxon(GENUS, "Catharus", rank="genus", ancestor_ids=thrushes[:-1], common="Nightingale-Thrushes"),
        Taxon(THRUSH, "Catharus ustulatus", ancestor_ids=thrushes, common="Swainson's Thrush"),
        Taxon(HERMIT, "Catharus guttatus", ancestor_ids=thrushes, common="Hermit Thrush"),
        Taxon(SUBSPECIES, "Catharus ustulatus swainsoni", rank="subspecies", ancestor_ids=(*thrushes, THRUSH)),
        Taxon(OLD_THRUSH, "Catharus ustulatus", is_active=False, ancestor_ids=thrushes),
        Taxon(DUP1, "Duplicata nomen", iconic="Mammalia"),
        Taxon(DUP2, "Duplicata nomen", iconic="Mammalia"),
    ]
    observations: list[Observation] = []
    ids, photo_ids = itertools.count(1000), itertools.count(50000)

    def add(taxon: int, year: int, *photos: Photo, **kwargs) -> None:
        observations.append(Observation(next(ids), taxon, year, list(photos), **kwargs))

    for _ in range(205):  # tracks (evidence 26) fill the first page of 200
        add(THRUSH, 2017, Photo(next(photo_ids)), annotations=[(22, 26, 1)])
    add(THRUSH, 2017, Photo(next(photo_ids)), quality_grade="needs_id")
    add(THRUSH, 2017, Photo(GRAY, "cc0", "gray"))
    add(THRUSH, 2017, Photo(ARR_FIRST, None), Photo(PNG_ALPHA, "cc-by-nc", "png_alpha"))
    add(THRUSH, 2017, Photo(TRUNCATED, kind="truncated"))
    add(THRUSH, 2017, Photo(CMYK, "cc-by-sa", "cmyk"), annotations=[(22, 24, 2)])
    add(THRUSH, 2017, Photo(FOREIGN, host="http://photos.invalid"))
    add(THRUSH, 2017, Photo(next(photo_ids), None))  # all rights reserved only: the server drops it
    add(THRUSH, 2017, Photo(ND, "cc-by-nd"), Photo(BY_SECOND, "cc-by"))
    add(THRUSH, 2017, Photo(ROTATED, kind="rotated"), annotations=[(22, 26, -1)])  # voted down: no evidence
    add(THRUSH, 2017, Photo(PALETTE, kind="palette"))
    add(THRUSH, 2017, Photo(NOT_IMAGE, kind="not_image"))
    add(THRUSH, 2017, Photo(SPARE))
    add(SUBSPECIES, 2017, Photo(SSP))  # counts for its species
    add(THRUSH, 2017, Photo(next(photo_ids)), annotations=[(22, 24, 1), (22, 26, 1)])  # organism and track
    for _ in range(3):
        add(THRUSH, 2018, Photo(next(photo_ids)))
    add(THRUSH, 2018, Photo(next(photo_ids)), annotations=[(22, 25, 1)])  # scat
    add(THRUSH, 2018, Photo(next(photo_ids)), annotations=[(22, 24, 1)])
    for i in range(6):
        add(HERMIT, 2017, Photo(next(photo_ids)), annotations=[(22, 24, 1)] if i == 5 else [])
    add(HERMIT, 2018, Photo(REDIRECT, kind="redirect"))
    for i in range(3):
        add(HERMIT, 2018, Photo(next(photo_ids)), annotations=[(22, 24, 1)] if i == 2 else [])
    return World(taxa, observations)


@pytest.fixture(scope="module")
def fake():
    with FakeInaturalist(build_world()) as server:
        yield server


@pytest.fixture(autouse=True)
def no_faults_left(fake):
    yield
    fake.faults.clear()


def settings_dict(fake: FakeInaturalist, **overrides) -> dict:
    inat = {
        "taxa": ["Catharus ustulatus", HERMIT],
        "max_per_class": CAPS,
        "api_url": fake.api_url,
        "photo_hosts": ["127.0.0.1"],
        "concurrency": 3,
        **overrides,
    }
    return {"download": {"source": "inaturalist", "inaturalist": inat}}


def run(fake: FakeInaturalist, root: Path, http: HttpSettings = FAST, **overrides) -> pd.DataFrame:
    fetch(parse_params(settings_dict(fake, **overrides)), root / "raw", cache_dir=root / "cache", http=http)
    return read_manifest(root / "raw")


def comparable(root: Path) -> tuple[pd.DataFrame, list[str]]:
    """The manifest with paths relative to its folder, and the report's skipped list."""
    frame = read_manifest(root / "raw")
    frame["path"] = [Path(path).relative_to(root / "raw").as_posix() for path in frame["path"]]
    return frame, json.loads((root / "raw" / "report.json").read_text())["skipped"]


def assert_same_dataset(root: Path, expected: Path) -> None:
    (frame, skipped), (expected_frame, expected_skipped) = comparable(root), comparable(expected)
    pd.testing.assert_frame_equal(frame, expected_frame)
    assert skipped == expected_skipped


def ids(frame: pd.DataFrame, split: str, cls: str) -> list[int]:
    return sorted(int(i) for i in frame[(frame.split == split) & (frame["class"] == cls)]["photo_id"])


@pytest.fixture(scope="module")
def baseline(fake, tmp_path_factory):
    """An undisturbed download with the test defaults; its request log entries."""
    root = tmp_path_factory.mktemp("baseline")
    since = len(fake.log)
    run(fake, root)
    return root, fake.log[since:]


def test_downloads_the_expected_balanced_licensed_dataset(baseline):
    root, _ = baseline
    manifest = read_manifest(root / "raw")
    assert list(manifest.columns) == COLUMNS
    counts = manifest.groupby(["split", "class"]).size().to_dict()
    assert counts == {(s, c): CAPS[s] for s in CAPS for c in ("Catharus ustulatus", "Catharus guttatus")}
    # Tracks, needs_id, all-rights-reserved and broken photos are passed over, in id order.
    assert ids(manifest, "train", "Catharus ustulatus") == [GRAY, PNG_ALPHA, CMYK, ND, ROTATED]
    assert set(manifest.source) == {"inaturalist"}
    assert all("/medium." in url for url in manifest.url)
    assert manifest.attribution.str.startswith("(c) observer").all()
    assert set(manifest.license) <= {"cc0", "cc-by", "cc-by-nc", "cc-by-sa", "cc-by-nd"}
    assert set(manifest.observation_id[manifest.split == "train"]).isdisjoint(manifest.observation_id[manifest.split == "test"])
    assert manifest.photo_id.is_unique


def test_the_manifest_keeps_each_species_id_rank_common_name_and_ancestry(baseline):
    root, log = baseline
    hermit, thrush = from_manifest(read_manifest(root / "raw"), ["Catharus guttatus", "Catharus ustulatus"])
    lineage = (("kingdom", "Animalia"), ("phylum", "Chordata"), ("class", "Aves"), ("order", "Passeriformes"),
               ("family", "Turdidae"), ("genus", "Catharus"))
    assert thrush == ClassTaxon("Catharus ustulatus", THRUSH, "species", "Swainson's Thrush", lineage)
    assert hermit == ClassTaxon("Catharus guttatus", HERMIT, "species", "Hermit Thrush", lineage)
    # the search answers lack ancestors: the species named is asked for by id, the one listed by id once
    by_id = sorted(e["path"] for e in log if e["kind"] == "api" and e["path"].startswith("/v1/taxa/"))
    assert by_id == [f"/v1/taxa/{THRUSH}", f"/v1/taxa/{HERMIT}"]


def test_every_stored_photo_decodes_as_upright_rgb_jpeg(baseline):
    root, _ = baseline
    manifest = read_manifest(root / "raw")
    for row in manifest.itertuples():
        with Image.open(row.path) as image:
            assert (image.format, image.mode) == ("JPEG", "RGB")
            assert image.size == (int(row.width), int(row.height))
    rotated = manifest[manifest.photo_id == str(ROTATED)].iloc[0]
    assert (int(rotated.width), int(rotated.height)) == (48, 64)  # EXIF orientation 6 applied


def test_broken_and_foreign_photos_are_reported_not_fatal(baseline):
    root, log = baseline
    skipped = json.loads((root / "raw" / "report.json").read_text())["skipped"]
    assert any(f"photo {TRUNCATED} " in s and "not a readable image" in s for s in skipped)
    assert any(f"photo {FOREIGN} " in s and "photo_hosts" in s for s in skipped)
    assert any(f"photo {REDIRECT} " in s and "elsewhere.invalid" in s for s in skipped)
    assert not any("photos.invalid" in str(entry["path"]) for entry in log)


def test_requests_page_by_id_name_the_tool_and_ask_for_the_configured_size(baseline):
    _, log = baseline
    pages = [e["query"] for e in log if e["kind"] == "api" and e["path"] == "/v1/observations"]
    assert all(q["order_by"] == "id" and q["per_page"] == "200" and "page" not in q for q in pages)
    thrush_2017 = [q for q in pages if q["taxon_id"] == str(THRUSH) and q["year"] == "2017"]
    assert len(thrush_2017) == 2 and "id_above" in thrush_2017[1]  # beyond the first page
    assert all(e["agent"].startswith("inat-classifier/") for e in log)
    assert {e["size"] for e in log if e["kind"] == "photo"} == {"medium"}


def test_a_second_run_fetches_nothing(fake, baseline):
    root, _ = baseline
    before, _ = comparable(root)
    since = len(fake.log)
    run(fake, root)
    assert fake.log[since:] == []
    pd.testing.assert_frame_equal(comparable(root)[0], before)


def test_licences_are_checked_per_photo(fake, tmp_path):
    manifest = run(fake, tmp_path, licenses=["cc0", "cc-by"])
    assert set(manifest.license) == {"cc0", "cc-by"}
    # The observation with a cc-by-nd and a cc-by photo gives its cc-by one.
    assert ids(manifest, "train", "Catharus ustulatus") == [GRAY, BY_SECOND, ROTATED, PALETTE, SPARE]


@pytest.mark.parametrize(
    "evidence, expected",
    [
        ("organism", None),  # only the observation annotated Organism without other evidence
        ("any", "tracks"),  # the first five observations are tracks
    ],
)
def test_evidence_filter(fake, tmp_path, evidence, expected):
    since = len(fake.log)
    manifest = run(fake, tmp_path, evidence=evidence, max_per_class={"train": 5, "test": 1})
    thrush = ids(manifest, "train", "Catharus ustulatus")
    pages = [e["query"] for e in fake.api_requests(since) if e["path"] == "/v1/observations"]
    if evidence == "organism":
        assert thrush == [CMYK]
        assert all(q["term_id"] == "22" and q["term_value_id"] == "24" for q in pages)
    else:
        assert thrush == list(range(50000, 50005))
        assert all("term_id" not in q for q in pages)


def test_the_same_year_for_both_splits_never_shares_an_observation(fake, tmp_path):
    manifest = run(fake, tmp_path, train_year=2017, test_year=2017, photos_per_observation=2)
    train, test = (set(manifest.observation_id[manifest.split == s]) for s in ("train", "test"))
    assert train and test and train.isdisjoint(test)
    assert {str(ND), str(BY_SECOND)} <= set(manifest.photo_id[manifest.split == "train"])  # both photos


def test_a_short_class_is_kept_and_an_empty_one_stops(fake, tmp_path, capsys):
    manifest = run(fake, tmp_path / "a", max_per_class={"train": 20, "test": 1})
    assert ids(manifest, "train", "Catharus ustulatus") == [GRAY, PNG_ALPHA, CMYK, ND, ROTATED, PALETTE, SPARE, SSP]
    assert "only 8 of 20" in capsys.readouterr().err
    with pytest.raises(DataError, match="no usable photo of Catharus ustulatus .* observed in 2019"):
        run(fake, tmp_path / "b", test_year=2019)
    assert not (tmp_path / "b" / "raw").exists()


@pytest.mark.parametrize(
    "taxon, message",
    [
        ("Catharus", "'Catharus' is not the name of an active species .* \\(found Catharus \\(genus, active\\)\\)"),
        ("Catharus nonexistens", "'Catharus nonexistens' is not the name of an active species"),
        ("Duplicata nomen", f"'Duplicata nomen' matches 2 active species \\(ids {DUP1}, {DUP2}\\)"),
        (424242, "taxon id 424242 does not exist"),
        (OLD_THRUSH, f"taxon id {OLD_THRUSH} is Catharus ustulatus \\(species, inactive\\)"),
        (GENUS, f"taxon id {GENUS} is Catharus \\(genus\\), not an active species"),
    ],
)
def test_taxa_that_are_not_exactly_one_species_stop_with_one_line(fake, tmp_path, taxon, message):
    with pytest.raises(DataError, match="download.inaturalist.taxa: " + message) as caught:
        run(fake, tmp_path, taxa=["Catharus ustulatus", taxon])
    assert "\n" not in str(caught.value)


def test_faults_change_nothing_and_no_photo_is_completed_twice(fake, baseline, tmp_path):
    fake.faults.update(
        {
            "api": ["429", "ok", "500", "stall", "ok", "drop", "slow"],
            f"photo:{GRAY}": ["500", "500"],
            f"photo:{CMYK}": ["drop", "drop"],  # dropped mid-body twice, then resumed by Range
            f"photo:{ND}": ["429"],
            f"photo:{PNG_ALPHA}": ["stall"],
            f"photo:{ROTATED}": ["slow"],
        }
    )
    sleeps: list[float] = []
    since = len(fake.log)
    run(fake, tmp_path, http=replace(FAST, sleep=sleeps.append))
    log = fake.log[since:]
    assert_same_dataset(tmp_path, baseline[0])
    assert sleeps.count(1.0) >= 2  # Retry-After: 1 of both 429s was honoured
    completed = [e["photo_id"] for e in log if e["kind"] == "photo" and e["complete"]]
    assert len(completed) == len(set(completed))
    assert [e["status"] for e in log if e["kind"] == "api"][:3] == [429, 200, 500]
    assert len([e for e in log if e.get("photo_id") == PNG_ALPHA]) == 2  # stalled once, then answered
    resumed = [e for e in log if e.get("photo_id") == CMYK and e["status"] == 206]
    assert resumed and all(e["start"] > 0 for e in resumed)


def test_failing_for_good_names_the_url_and_a_rerun_resumes(fake, baseline, tmp_path):
    fake.faults[f"photo:{CMYK}"] = ["500"] * 3
    with pytest.raises(DataError, match=f"/photos/{CMYK}/medium.JPG: gave up after 3 tries; last: HTTP 500") as caught:
        run(fake, tmp_path, http=replace(FAST, max_tries=3))
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "raw").exists()
    since = len(fake.log)
    run(fake, tmp_path)
    assert GRAY not in {e["photo_id"] for e in fake.photo_requests(since)}  # finished before the failure
    assert_same_dataset(tmp_path, baseline[0])


KILLABLE = """
import json, sys
from pathlib import Path
from inat_classifier.data.http import HttpSettings
from inat_classifier.params import parse_params
from inat_classifier.data.sources import download
settings = HttpSettings(timeout=(2.0, 30.0), backoff=0.01, trust_env=False, sleep=lambda s: None)
params = parse_params(json.loads(sys.argv[1]))
download(params.download, params.data.max_pixels, Path(sys.argv[2]), cache_dir=Path(sys.argv[3]), http=settings)
"""


def test_a_killed_download_resumes_without_fetching_finished_photos_again(fake, baseline, tmp_path):
    """SIGKILL while a photo is half-received; the rerun resumes it and refetches nothing finished."""
    fake.release.clear()
    fake.faults[f"photo:{ND}"] = ["hang"]  # sends half, then waits
    raw, cache = tmp_path / "raw", tmp_path / "cache"
    with open(tmp_path / "stderr.txt", "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-c", KILLABLE, json.dumps(settings_dict(fake)), str(raw), str(cache)], stderr=stderr
        )
    photos = cache / "inaturalist" / "photos" / "medium"
    part = photos / f"{ND}.part"
    try:
        deadline = time.monotonic() + 30
        while not (part.is_file() and part.stat().st_size) and time.monotonic() < deadline:
            assert process.poll() is None, (tmp_path / "stderr.txt").read_text()
            time.sleep(0.02)
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        fake.release.set()
    finished = {int(p.stem) for p in photos.iterdir() if p.suffix in (".jpg", ".bad") and p.stem.isdigit()}
    half = part.stat().st_size
    assert {GRAY, PNG_ALPHA, TRUNCATED, CMYK} <= finished and half > 0
    assert not raw.exists()

    since = len(fake.log)
    run(fake, tmp_path)
    again = fake.photo_requests(since)
    assert not {e["photo_id"] for e in again} & finished
    assert [(e["range"], e["status"]) for e in again if e["photo_id"] == ND] == [(f"bytes={half}-", 206)]
    assert_same_dataset(tmp_path, baseline[0])


def test_the_fake_api_clamps_per_page_and_refuses_deep_pages(fake):
    session = requests.Session()
    session.trust_env = False
    answer = session.get(f"{fake.api_url}/observations", params={"taxon_id": THRUSH, "per_page": 500}).json()
    assert answer["per_page"] == 200 and len(answer["results"]) == 200 and answer["total_results"] > 200
    deep = session.get(f"{fake.api_url}/observations", params={"page": 51, "per_page": 200})
    assert deep.status_code == 403 and "id_above" in deep.json()["error"]
    photo = answer["results"][0]["photos"][0]
    assert photo["url"].endswith("/square.jpg") and "preferred_common_name" in answer["results"][0]["taxon"]
    session.close()


def test_photo_urls_change_only_the_size_word():
    url = "https://inaturalist-open-data.s3.amazonaws.com/photos/123/square.JPG"
    assert sized_url(url, "large") == "https://inaturalist-open-data.s3.amazonaws.com/photos/123/large.JPG"
    assert sized_url("https://static.inaturalist.org/photos/9/square.jpeg?1545", "medium").endswith("9/medium.jpeg?1545")
    assert sized_url("https://example.org/square/photo.jpg", "medium") is None


def test_rate_limiter_spaces_requests_and_retry_after_is_honoured():
    now = [0.0]
    settings = HttpSettings(clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    limiter = RateLimiter(60, settings)
    for _ in range(5):
        limiter.wait()
    assert now[0] == pytest.approx(4.0)
    limiter.defer(30)
    limiter.wait()
    assert now[0] == pytest.approx(34.0)
    assert retry_after("7", 300) == 7.0 and retry_after("9999", 300) == 300.0
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 300) == 0.0 and retry_after("soon", 300) is None


@pytest.mark.parametrize(
    "inat, message",
    [
        ({"licenses": ["cc-by", "public"]}, "download.inaturalist.licenses.1: Input should be 'cc0', 'cc-by'"),
        ({"taxa": ["Catharus ustulatus", "catharus  ustulatus"]}, "download.inaturalist.taxa: 'catharus ustulatus' is listed twice"),
        ({"taxa": ["Catharus ustulatus"]}, "download.inaturalist.taxa: List should have at least 2 items"),
        ({"requests_per_minute": 120}, "download.inaturalist.requests_per_minute: Input should be less than or equal to 60"),
        ({"photo_hosts": ["https://x.org"]}, "download.inaturalist.photo_hosts: 'https://x.org' is not a bare host name"),
        ({"api_url": "ftp://x"}, "download.inaturalist.api_url: 'ftp://x' is not an http(s) URL"),
        ({"evidence": "paw"}, "download.inaturalist.evidence: Input should be 'not_other', 'organism' or 'any'"),
    ],
)
def test_bad_inaturalist_params_give_one_line(inat, message):
    with pytest.raises(ParamsError) as caught:
        parse_params({"download": {"inaturalist": inat}})
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_taxon_ids_may_be_numbers_or_digit_strings():
    params = parse_params({"download": {"inaturalist": {"taxa": ["12011", " Catharus   guttatus "]}}})
    assert params.download.inaturalist.taxa == [12011, "Catharus guttatus"]


def test_damaged_cache_entries_count_as_missing(fake, baseline, tmp_path):
    """A power cut leaves zero-length or half files under complete names; a rerun fetches just those again."""
    shutil.copytree(baseline[0] / "cache", tmp_path / "cache")
    photos = tmp_path / "cache" / "inaturalist" / "photos" / "medium"
    (photos / f"{GRAY}.jpg").write_bytes(b"")
    half = photos / f"{CMYK}.jpg"
    half.write_bytes(half.read_bytes()[: half.stat().st_size // 2])
    (photos / f"{TRUNCATED}.bad").write_bytes(b"")
    answer = sorted((tmp_path / "cache" / "inaturalist" / "api").iterdir())[0]
    answer.write_text(answer.read_text()[:100])
    since = len(fake.log)
    run(fake, tmp_path)
    assert {e["photo_id"] for e in fake.photo_requests(since)} == {GRAY, CMYK, TRUNCATED}
    assert len(fake.api_requests(since)) == 1
    assert_same_dataset(tmp_path, baseline[0])
    assert (photos / f"{TRUNCATED}.bad").read_text().startswith("not a readable image")


def cache_for(fake: FakeInaturalist, folder: Path, max_pixels: int = 50_000_000) -> PhotoCache:
    return PhotoCache(folder, Client([fake.base_url], FAST), RateLimiter(6000, FAST), max_pixels)


def candidate(fake: FakeInaturalist, photo_id: int) -> Candidate:
    photo = fake.world.photo(photo_id).json(fake.base_url)
    return Candidate(ApiTaxon(THRUSH, "Catharus ustulatus"), "train", 1, photo, sized_url(photo["url"], "medium"))


def test_only_permanent_http_failures_are_remembered(fake, tmp_path):
    for photo_id, fault, remembered in ((SPARE, "403", False), (BY_SECOND, "404", True)):
        fake.faults[f"photo:{photo_id}"] = [fault]
        first = cache_for(fake, tmp_path).get(candidate(fake, photo_id))
        assert isinstance(first, str) and f"HTTP {fault}" in first
        assert (tmp_path / f"{photo_id}.bad").exists() == remembered
        again = cache_for(fake, tmp_path).get(candidate(fake, photo_id))
        assert again == (first if remembered else (64, 48))  # a rerun tries a 403 again, not a 404


def test_a_photo_over_max_pixels_is_not_marked_bad_nor_downloaded_again(fake, tmp_path):
    refused = cache_for(fake, tmp_path, max_pixels=100).get(candidate(fake, SPARE))
    assert "exceeds the 100-pixel cap" in refused and not (tmp_path / f"{SPARE}.bad").exists()
    since = len(fake.log)
    assert cache_for(fake, tmp_path).get(candidate(fake, SPARE)) == (64, 48)
    assert [e["status"] for e in fake.photo_requests(since)] == [416]  # only asked whether more was left


@pytest.mark.parametrize(
    "taxa, message",
    [
        (["Catharus ustulatus", THRUSH], f"'Catharus ustulatus' and {THRUSH} are the same taxon, Catharus ustulatus"),
        ([DUP1, DUP2], f"{DUP1} and {DUP2} are two taxa named Duplicata nomen"),
    ],
)
def test_a_species_listed_twice_stops_before_any_photo(fake, tmp_path, taxa, message):
    since = len(fake.log)
    with pytest.raises(DataError, match="download.inaturalist.taxa: " + message):
        run(fake, tmp_path, taxa=taxa)
    assert fake.photo_requests(since) == []


def test_a_damaged_partial_download_is_fetched_afresh_not_marked_bad(fake, tmp_path):
    """After a power cut a .part may hold zeros; resuming after them gives an undecodable photo."""
    (tmp_path / f"{SPARE}.part").write_bytes(b"\0" * 100)
    since = len(fake.log)
    assert cache_for(fake, tmp_path).get(candidate(fake, SPARE)) == (64, 48)
    assert [e["range"] for e in fake.photo_requests(since)] == ["bytes=100-", None]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{SPARE}.jpg"]
