"""The HTTP client's guards against hostile URLs and servers, with local servers on 127.0.0.1 only."""

from __future__ import annotations

import json
import shutil
import time
from collections import namedtuple
from dataclasses import replace

import pytest

from helpers.fake_inaturalist import FakeInaturalist, Observation, Photo, Taxon, World
from conftest import fetch
from inat_classifier.atomic import RESERVE
from inat_classifier.errors import DataError
from inat_classifier.data.http import Client, HttpError, HttpSettings
from inat_classifier.params import parse_params
from inat_classifier.data.sources.inaturalist import photo_origins

FAST = HttpSettings(timeout=(2.0, 2.0), backoff=0.01, trust_env=False, sleep=lambda seconds: None)
HOSTILE = 70001
DiskUsage = namedtuple("DiskUsage", "total used free")


def two_species_world() -> World:
    taxa = [Taxon(1, "Aa aa"), Taxon(2, "Bb bb")]
    observations = [
        Observation(10, 1, 2017, [Photo(HOSTILE)]),
        Observation(11, 1, 2017, [Photo(70002)]),
        Observation(12, 1, 2018, [Photo(70003)]),
        Observation(13, 2, 2017, [Photo(70004)]),
        Observation(14, 2, 2018, [Photo(70005)]),
    ]
    return World(taxa, observations)


def inat_params(fake: FakeInaturalist) -> object:
    inat = {"taxa": [1, 2], "max_per_class": {"train": 1, "test": 1}, "api_url": fake.api_url,
            "photo_hosts": ["127.0.0.1"], "concurrency": 1}
    return parse_params({"download": {"source": "inaturalist", "inaturalist": inat}})


def test_a_photo_url_that_urllib3_reads_as_another_host_is_refused_end_to_end(tmp_path):
    """urlsplit sees 127.0.0.1 in ``http://localhost:P\\@127.0.0.1:Q/``; requests would connect to localhost:P."""
    with FakeInaturalist(two_species_world()) as fake, FakeInaturalist() as evil:
        fake.world.photo(HOSTILE).host = f"http://localhost:{evil.server.server_address[1]}\\@{fake.base_url[7:]}"
        fetch(inat_params(fake), tmp_path / "raw", cache_dir=tmp_path / "cache", http=FAST)
    assert evil.log == []
    skipped = json.loads((tmp_path / "raw" / "report.json").read_text())["skipped"]
    assert len(skipped) == 1 and f"photo {HOSTILE} " in skipped[0] and "refused" in skipped[0]


def test_every_redirect_hop_is_checked_as_urllib3_reads_it():
    with FakeInaturalist() as fake, FakeInaturalist() as evil:
        fake.redirects["/hop"] = f"http://localhost:{evil.server.server_address[1]}\\@{fake.base_url[7:]}/x.jpg"
        with Client([fake.base_url], FAST) as client, pytest.raises(HttpError, match="refused") as caught:
            client.get_json(f"{fake.base_url}/hop")
    assert evil.log == [] and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "http://static.inaturalist.org/photos/1/medium.jpg",  # not https
        "https://static.inaturalist.org:8443/photos/1/medium.jpg",  # another port
        "https://evil.example\\@static.inaturalist.org/p.jpg",
        "https://static.inaturalist.org/photos/1/me dium.jpg",
        "https://static.inaturalist.org/photos/1/medium.jpg\n",
        "https://static.inaturalist.org/photos/\x00/medium.jpg",
        "https://user@static.inaturalist.org/photos/1/medium.jpg",
        "ftp://static.inaturalist.org/photos/1/medium.jpg",
    ],
)
def test_photo_urls_must_be_plain_https_on_an_allowed_host(url):
    config = parse_params({}).download.inaturalist  # the real API: https
    with Client([config.api_url, *photo_origins(config)]) as client:
        assert client.allowed("https://static.inaturalist.org/photos/1/medium.jpg?1545")
        assert client.allowed("https://STATIC.inaturalist.org:443/photos/1/medium.jpg")
        assert not client.allowed(url)
        with pytest.raises(HttpError, match="refused"):
            client.check(url)


def test_plain_http_is_only_for_a_local_api():
    assert parse_params({"download": {"inaturalist": {"api_url": "http://127.0.0.1:8000/v1"}}})
    with pytest.raises(Exception, match="plain http is only for a local test server"):
        parse_params({"download": {"inaturalist": {"api_url": "http://api.inaturalist.org/v1"}}})


def test_every_download_has_an_overall_deadline(tmp_path):
    """A server sending a byte every 50 ms never trips the read timeout; the deadline stops it."""
    with FakeInaturalist() as fake:
        fake.static["/slow.jpg"] = b"x" * 200  # 10 s at this pace
        fake.faults["static:/slow.jpg"] = ["trickle"]
        start = time.monotonic()
        with Client([fake.base_url], replace(FAST, deadline=0.5)) as client:
            with pytest.raises(HttpError, match="not done within the 0.5 s deadline") as caught:
                client.fetch(f"{fake.base_url}/slow.jpg", tmp_path / "slow.part")
    assert time.monotonic() - start < 3 and caught.value.transient


def test_photo_and_json_bodies_are_capped(tmp_path):
    with FakeInaturalist(two_species_world()) as fake, Client([fake.base_url], FAST) as client:
        fake.static["/big.jpg"] = b"x" * 5000
        with pytest.raises(HttpError, match="larger than the cap of 1000 bytes") as caught:
            client.fetch(f"{fake.base_url}/big.jpg", tmp_path / "big.part", max_bytes=1000)
        assert caught.value.permanent and not (tmp_path / "big.part").exists()  # its declared size was enough
        with pytest.raises(HttpError, match="larger than the cap of 100 bytes"):
            client.get_json(f"{fake.api_url}/observations", {"taxon_id": 1}, max_bytes=100)
        assert client.get_json(f"{fake.api_url}/observations", {"taxon_id": 1})["total_results"] == 3


def test_a_body_that_would_not_fit_on_the_disk_is_not_fetched(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda path: DiskUsage(1 << 40, 1 << 40, RESERVE + 4000))
    with FakeInaturalist() as fake, Client([fake.base_url], FAST) as client:
        fake.static["/big.tar"] = b"x" * 5000
        with pytest.raises(DataError, match="big.tar: needs 5,000 bytes but .* has"):
            client.fetch(f"{fake.base_url}/big.tar", tmp_path / "big.part")
    assert not (tmp_path / "big.part").exists()


def test_the_user_agent_names_the_project_and_a_configurable_contact(monkeypatch):
    monkeypatch.setenv("INAT_CLASSIFIER_CONTACT", "ann@example.org\r\nX-Injected: 1")
    with FakeInaturalist() as fake:
        fake.static["/x"] = b"{}"
        with Client([fake.base_url], HttpSettings(trust_env=False)) as client:
            client.get_json(f"{fake.base_url}/x")
    agent = fake.log[0]["agent"]
    assert agent.startswith("inat-classifier/") and "<placeholder>" not in agent
    assert agent.endswith("(iNaturalist photo classifier pipeline; contact: ann@example.org X-Injected: 1)")
    monkeypatch.delenv("INAT_CLASSIFIER_CONTACT")
    assert "contact" not in HttpSettings().user_agent
