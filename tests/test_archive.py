"""The archive source: both layouts, every archive format, sha256 checks and hostile members."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import stat
import tarfile
import tracemalloc
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from conftest import fetch, write_image
from helpers.fake_inaturalist import FakeInaturalist
from inat_classifier.atomic import RESERVE
from inat_classifier.errors import DataError, ParamsError
from inat_classifier.data.http import HttpSettings
from inat_classifier.data.manifest import COLUMNS, read_manifest
from inat_classifier.params import ArchiveSource, parse_params
from inat_classifier.data.sources.archive import inat_json_items
from inat_classifier.data.sources.unpack import extract

FAST = HttpSettings(timeout=(2.0, 2.0), backoff=0.01, trust_env=False, sleep=lambda seconds: None)
TAR_MODES = {".tar": "w", ".tar.gz": "w:gz", ".tar.bz2": "w:bz2", ".tar.xz": "w:xz"}


def folders_tree(root: Path) -> Path:
    """train/{Aves a,Mammalia b}/ and test/ likewise, with awkward formats and one broken file."""
    for split, count in (("train", 3), ("test", 2)):
        for c, cls in enumerate(("Catharus ustulatus", "Procyon lotor")):
            for i in range(count):
                write_image(root / split / cls / f"{i}.jpg", seed=c * 10 + i)
    write_image(root / "train" / "Procyon lotor" / "alpha.png", mode="RGBA", seed=7)
    write_image(root / "train" / "Procyon lotor" / "0.JPEG", mode="L", seed=8, fmt="JPEG")  # same stem as 0.jpg
    (root / "test" / "Procyon lotor" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    (root / "test" / "Procyon lotor" / ".DS_Store").write_bytes(b"junk")
    return root


def pack(tree: Path, archive: Path, prefix: str = "") -> Path:
    files = sorted(p for p in tree.rglob("*") if p.is_file())
    if archive.suffix == ".zip":
        with zipfile.ZipFile(archive, "w") as zf:
            for path in files:
                zf.write(path, prefix + path.relative_to(tree).as_posix())
    else:
        mode = next(m for suffix, m in TAR_MODES.items() if archive.name.endswith(suffix))
        with tarfile.open(archive, mode) as tar:
            for path in files:
                tar.add(path, prefix + path.relative_to(tree).as_posix())
    return archive


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def archive_params(url: str, sha256: str, **more) -> object:
    return parse_params({"download": {"source": "archive", "archive": {"url": url, "sha256": sha256, **more}}})


@pytest.mark.parametrize("suffix, prefix", [(".tar.gz", ""), (".zip", ""), (".tar", "mydata/"), (".tar.bz2", ""),
                                            (".tar.xz", "")])
def test_folders_layout_from_every_archive_format(tmp_path, suffix, prefix):
    archive = pack(folders_tree(tmp_path / "tree"), tmp_path / f"photos{suffix}", prefix)
    fetch(archive_params(str(archive), digest(archive)), tmp_path / "raw", cache_dir=tmp_path / "cache")
    manifest = read_manifest(tmp_path / "raw")
    assert list(manifest.columns) == COLUMNS and set(manifest.source) == {"archive"}
    counts = manifest.groupby(["split", "class"]).size().to_dict()
    assert counts == {("train", "Catharus ustulatus"): 3, ("train", "Procyon lotor"): 5,
                      ("test", "Catharus ustulatus"): 2, ("test", "Procyon lotor"): 2}
    names = set(manifest[(manifest.split == "train") & (manifest["class"] == "Procyon lotor")].path.map(
        lambda p: Path(p).name))
    assert names == {"0.jpg", "0.JPEG", "1.jpg", "2.jpg", "alpha.png.jpg"}
    for row in manifest.itertuples():
        with Image.open(row.path) as image:
            assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (int(row.width), int(row.height)))
        assert digest(Path(row.path)) == row.sha256
    skipped = json.loads((tmp_path / "raw" / "report.json").read_text())["skipped"]
    assert len(skipped) == 1 and "broken.jpg" in skipped[0]


def test_http_archive_is_cached_and_a_wrong_digest_is_refused(tmp_path):
    archive = pack(folders_tree(tmp_path / "tree"), tmp_path / "photos.zip")
    with FakeInaturalist() as fake:
        fake.static["/photos.zip"] = archive.read_bytes()
        url, cache = f"{fake.base_url}/photos.zip", tmp_path / "cache"
        wrong = "0" * 64
        with pytest.raises(DataError, match=f"download.archive.sha256: {url} has sha256 {digest(archive)}, not {wrong}"):
            fetch(archive_params(url, wrong), tmp_path / "raw", cache_dir=cache, http=FAST)
        assert not (tmp_path / "raw").exists() and not list(cache.glob("archive/*.d"))
        fetch(archive_params(url, digest(archive)), tmp_path / "raw", cache_dir=cache, http=FAST)
        fetch(archive_params(url, digest(archive)), tmp_path / "raw", cache_dir=cache, http=FAST)
        assert [entry["path"] for entry in fake.log] == ["/photos.zip"]  # fetched once, kept under its digest
        assert fake.log[0]["agent"].startswith("inat-classifier/")
    assert len(read_manifest(tmp_path / "raw")) == 12


def test_file_url_and_missing_file(tmp_path):
    archive = pack(folders_tree(tmp_path / "tree"), tmp_path / "photos.tar.gz")
    fetch(archive_params(archive.as_uri(), digest(archive)), tmp_path / "raw", cache_dir=tmp_path / "cache")
    assert len(read_manifest(tmp_path / "raw")) == 12
    with pytest.raises(DataError, match="download.archive.url: '.*nowhere.tar' is not a file"):
        fetch(archive_params(str(tmp_path / "nowhere.tar"), "a" * 64), tmp_path / "raw2", cache_dir=tmp_path / "c")


def hostile_tar(path: Path, kind: str) -> Path:
    with tarfile.open(path, "w") as tar:
        good = io.BytesIO()
        Image.new("RGB", (8, 8)).save(good, "JPEG")
        info = tarfile.TarInfo("train/a/ok.jpg")
        info.size = len(good.getvalue())
        tar.addfile(info, io.BytesIO(good.getvalue()))
        info = tarfile.TarInfo({"dotdot": "train/../../evil.jpg", "absolute": "/tmp/evil.jpg"}.get(kind, "train/a/x"))
        if kind in ("dotdot", "absolute"):
            info.size = 3
            tar.addfile(info, io.BytesIO(b"bad"))
            return path
        info.type = {"symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE, "fifo": tarfile.FIFOTYPE,
                     "device": tarfile.CHRTYPE}[kind]
        info.linkname = {"symlink": "../../../outside", "hardlink": "../outside"}.get(kind, "")
        tar.addfile(info)
    return path


@pytest.mark.parametrize(
    "kind, reason",
    [
        ("dotdot", "has an absolute path or '..'"),
        ("absolute", "has an absolute path or '..'"),
        ("symlink", "is a symbolic link \\(a photo archive needs none\\)"),
        ("hardlink", "is a hard link \\(a photo archive needs none\\)"),
        ("fifo", "is a device, FIFO or other special file"),
        ("device", "is a device, FIFO or other special file"),
    ],
)
def test_hostile_tar_members_refuse_the_whole_archive(tmp_path, kind, reason):
    archive = hostile_tar(tmp_path / "bad.tar", kind)
    with pytest.raises(DataError, match=f"bad.tar: refused, member '.*' {reason}") as caught:
        fetch(archive_params(str(archive), digest(archive)), tmp_path / "work" / "raw", cache_dir=tmp_path / "cache")
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "evil.jpg").exists() and not (tmp_path / "outside").exists()
    assert not list((tmp_path / "cache").rglob("ok.jpg"))  # nothing was extracted
    assert not (tmp_path / "work" / "raw").exists()


@pytest.mark.parametrize("member, link", [("../evil.jpg", None), ("train/a/link.jpg", "../../../../etc/passwd")])
def test_hostile_zip_members_refuse_the_whole_archive(tmp_path, member, link):
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("train/a/ok.jpg", b"x")
        info = zipfile.ZipInfo(member)
        if link:
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, link or b"bad")
    with pytest.raises(DataError, match="bad.zip: refused, member"):
        extract(archive, tmp_path / "out")
    assert not (tmp_path / "evil.jpg").exists() and not (tmp_path / "out").exists()


def link_tar(path: Path, links: list[tuple[str, str, bytes]]) -> Path:
    """A tar of (name, symlink target, or b"" for a file) members; ``hard:`` before a target makes a hard link."""
    with tarfile.open(path, "w") as tar:
        for name, link, body in links:
            info = tarfile.TarInfo(name)
            if link:
                info.type = tarfile.LNKTYPE if link.startswith("hard:") else tarfile.SYMTYPE
                info.linkname = link.removeprefix("hard:")
                tar.addfile(info)
            else:
                info.size = len(body)
                tar.addfile(info, io.BytesIO(body))
    return path


@pytest.mark.parametrize(
    "members",
    [
        # each link looks harmless to a lexical check; together they climb out (the CVE-2025-4517 family)
        [("s/y", "..", b""), ("s/y/y2", "..", b""), ("s/y/y2/f", "", b"escaped")],
        [("train/a/ok.jpg", "", b"x"), ("train/a/link.jpg", "ok.jpg", b"")],  # pointing inside: still a link
        [("train/a/ok.jpg", "", b"x"), ("train/a/copy.jpg", "hard:train/a/ok.jpg", b"")],
    ],
)
def test_every_link_member_refuses_the_archive_and_nothing_lands_outside(tmp_path, members):
    archive = link_tar(tmp_path / "links.tar", members)
    (tmp_path / "deep" / "er").mkdir(parents=True)
    with pytest.raises(DataError, match="links.tar: refused, member '.*' is a (symbolic|hard) link"):
        extract(archive, tmp_path / "deep" / "er" / "out")
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == ["deep", "deep/er", "links.tar"]


def test_extraction_never_relies_on_the_library_extractors(tmp_path, monkeypatch):
    """tarfile's filters are bypassable on Python 3.11.7: extraction must not go through them at all."""

    def forbidden(*args, **kwargs):
        raise AssertionError("tarfile/zipfile extraction was used")

    for cls, names in ((tarfile.TarFile, ("extract", "extractall", "_extract_member", "makelink")),
                       (zipfile.ZipFile, ("extract", "extractall", "_extract_member"))):
        for name in names:
            monkeypatch.setattr(cls, name, forbidden)
    tree = folders_tree(tmp_path / "tree")
    for suffix in (".tar.gz", ".zip"):
        out = tmp_path / f"out{suffix}"
        extract(pack(tree, tmp_path / f"photos{suffix}"), out)
        assert (out / "train" / "Procyon lotor" / "alpha.png").read_bytes() == (
            tree / "train" / "Procyon lotor" / "alpha.png").read_bytes()


def test_too_many_members_and_not_an_archive(tmp_path):
    archive = pack(folders_tree(tmp_path / "tree"), tmp_path / "photos.tar")
    with pytest.raises(DataError, match="refused, more than 10 members \\(the cap\\)"):
        extract(archive, tmp_path / "out", max_members=10)
    with pytest.raises(DataError, match="refused, members unpack to more than the cap of 100 bytes"):
        extract(archive, tmp_path / "out", max_bytes=100)
    (tmp_path / "plain.txt").write_text("hello")
    with pytest.raises(DataError, match="plain.txt: not a tar .* or zip archive"):
        extract(tmp_path / "plain.txt", tmp_path / "out")


def inat_tree(root: Path, obfuscate: bool = False) -> Path:
    """The iNat 2017 competition layout: JSON beside train_val_images/<supercategory>/<name>/."""
    categories = [
        {"id": 0, "name": "Catharus ustulatus", "supercategory": "Aves"},
        {"id": 1, "name": "Procyon lotor", "supercategory": "Mammalia"},
        {"id": 2, "name": "Quercus alba", "supercategory": "Plantae"},
    ]
    licenses = [{"id": 1, "name": "Attribution-NonCommercial License", "url": "http://creativecommons.org/licenses/by-nc/4.0/"},
                {"id": 2, "name": "Public Domain Dedication", "url": "http://creativecommons.org/publicdomain/zero/1.0/"}]
    image_id = 100
    for split, per_class in (("train2017", 3), ("val2017", 2)):
        images, annotations = [], []
        for category in categories:
            for _ in range(per_class):
                image_id += 1
                name = f"train_val_images/{category['supercategory']}/{category['name']}/{image_id}.jpg"
                write_image(root / name, seed=image_id)
                images.append({"id": image_id, "width": 40, "height": 30, "file_name": name,
                               "license": 1 + image_id % 2, "rights_holder": "Ann Observer"})
                annotations.append({"id": image_id, "image_id": image_id, "category_id": category["id"]})
        images.append({"id": 999 + per_class, "file_name": "train_val_images/Aves/Catharus ustulatus/gone.jpg",
                       "license": 1, "width": 1, "height": 1})
        annotations.append({"id": 1, "image_id": 999 + per_class, "category_id": 0})
        shown = [{**c, "name": f"{c['id']:05d}"} for c in categories] if obfuscate else categories
        data = {"info": {}, "images": images, "annotations": annotations, "categories": shown, "licenses": licenses}
        (root / f"{split}.json").write_text(json.dumps(data))
    if obfuscate:
        (root / "categories.json").write_text(json.dumps(categories))
    return root


@pytest.mark.parametrize("obfuscate", [False, True])
def test_inat_json_layout_keeps_the_chosen_supercategories(tmp_path, obfuscate):
    archive = pack(inat_tree(tmp_path / "tree", obfuscate), tmp_path / "inat.tar.gz")
    params = archive_params(str(archive), digest(archive), layout="inat_json",
                            categories_json="categories.json" if obfuscate else "")
    fetch(params, tmp_path / "raw", cache_dir=tmp_path / "cache")
    manifest = read_manifest(tmp_path / "raw")
    counts = manifest.groupby(["split", "class"]).size().to_dict()
    assert counts == {("train", "Catharus ustulatus"): 3, ("train", "Procyon lotor"): 3,
                      ("test", "Catharus ustulatus"): 2, ("test", "Procyon lotor"): 2}
    assert set(manifest.license) == {"cc-by-nc", "cc0"}
    assert set(manifest.attribution) == {"(c) Ann Observer"} and manifest.photo_id.is_unique
    skipped = json.loads((tmp_path / "raw" / "report.json").read_text())["skipped"]
    assert len(skipped) == 2 and all("gone.jpg: file not found" in s for s in skipped)


def test_inat_json_errors_name_the_param(tmp_path):
    archive = pack(inat_tree(tmp_path / "tree"), tmp_path / "inat.zip")
    with pytest.raises(DataError, match="download.archive.test_json: 'test2018.json' is not in the archive"):
        fetch(archive_params(str(archive), digest(archive), layout="inat_json", test_json="test2018.json"),
                 tmp_path / "raw", cache_dir=tmp_path / "cache")
    with pytest.raises(DataError, match="download.archive.supercategories: no labelled images of Fungi"):
        fetch(archive_params(str(archive), digest(archive), layout="inat_json", supercategories=["Fungi"]),
                 tmp_path / "raw", cache_dir=tmp_path / "cache")


@pytest.mark.parametrize(
    "archive, message",
    [
        ({"url": "x.tar"}, "download: archive.sha256 is required when source is archive"),
        ({"sha256": "a" * 64}, "download: archive.url is required when source is archive"),
        ({"url": "x.tar", "sha256": "abc"}, "download.archive.sha256: must be the 64 hex digits"),
        ({"url": "ftp://host/x.tar", "sha256": "a" * 64}, "download.archive.url: 'ftp://host/x.tar': only http://"),
        ({"url": "x.tar", "sha256": "a" * 64, "layout": "coco"}, "download.archive.layout: Input should be 'folders'"),
    ],
)
def test_bad_archive_params_give_one_line(archive, message):
    with pytest.raises(ParamsError) as caught:
        parse_params({"download": {"source": "archive", "archive": archive}})
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_the_full_competition_json_is_streamed_in_bounded_memory(tmp_path):
    """Memory follows the images kept (here one in a hundred), not the file's size."""
    count = 50_000
    categories = [{"id": 0, "name": "Vulpes vulpes", "supercategory": "Mammalia"},
                  {"id": 1, "name": "Quercus robur", "supercategory": "Plantae"}]
    images = ",".join(f'{{"id": {i}, "file_name": "train_val_images/x/{i}.jpg", "width": 800, "height": 600, '
                      f'"license": 1, "rights_holder": "Observer number {i}"}}' for i in range(count))
    annotations = ",".join(f'{{"id": {i}, "image_id": {i}, "category_id": {int(i % 100 != 0)}}}' for i in range(count))
    text = (f'{{"info": {{}}, "images": [{images}], "annotations": [{annotations}], '
            f'"categories": {json.dumps(categories)}, "licenses": [{{"id": 1, "url": "http://creativecommons.org/licenses/by/4.0/"}}]}}')
    for name in ("train.json", "test.json"):
        (tmp_path / name).write_text(text)
    size = len(text)
    config = ArchiveSource(url="x", sha256="0" * 64, layout="inat_json", train_json="train.json", test_json="test.json")
    tracemalloc.start()
    items, skipped = inat_json_items(tmp_path, config)
    streamed = tracemalloc.get_traced_memory()[1]
    tracemalloc.reset_peak()
    json.loads((tmp_path / "train.json").read_text())
    loaded = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(items) == 2 * count // 100 and not skipped  # every hundredth image is a mammal
    assert {item.cls for item in items} == {"Vulpes vulpes"} and items[0].license == "cc-by"
    assert streamed < size / 4 and loaded > 2 * size, (streamed, size, loaded)


def test_a_damaged_cached_archive_is_fetched_again(tmp_path):
    archive = pack(folders_tree(tmp_path / "tree"), tmp_path / "photos.zip")
    with FakeInaturalist() as fake:
        fake.static["/photos.zip"] = archive.read_bytes()
        url, cache = f"{fake.base_url}/photos.zip", tmp_path / "cache"
        fetch(archive_params(url, digest(archive)), tmp_path / "raw", cache_dir=cache, http=FAST)
        stored = cache / "archive" / digest(archive)
        stored.write_bytes(b"\0" * stored.stat().st_size)  # a power cut's zeros under the right name
        shutil.rmtree(cache / "archive" / f"{digest(archive)}.d")
        fetch(archive_params(url, digest(archive)), tmp_path / "raw", cache_dir=cache, http=FAST)
        assert [entry["path"] for entry in fake.log] == ["/photos.zip"] * 2
    assert digest(stored) == digest(archive) and len(read_manifest(tmp_path / "raw")) == 12


def test_members_are_read_lazily_and_the_count_cap_stops_early(tmp_path, monkeypatch):
    archive = tmp_path / "many.tar"
    with tarfile.open(archive, "w") as tar:
        for i in range(500):
            info = tarfile.TarInfo(f"train/a/{i}.jpg")
            tar.addfile(info, io.BytesIO(b""))
    parsed = []
    original = tarfile.TarInfo.fromtarfile.__func__
    monkeypatch.setattr(tarfile.TarInfo, "fromtarfile", classmethod(lambda cls, tar: parsed.append(1) or original(cls, tar)))
    with pytest.raises(DataError, match="more than 10 members"):
        extract(archive, tmp_path / "out", max_members=10)
    assert len(parsed) < 30  # not all 500 headers before counting


def test_a_zip_link_body_is_never_read(tmp_path):
    """A 64 MiB symlink body compresses to about 64 KB; reading it whole took memory before any cap."""
    archive = tmp_path / "link.zip"
    info = zipfile.ZipInfo("train/a/link.jpg")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(info, b"a" * (64 << 20))
    tracemalloc.start()
    with pytest.raises(DataError, match="link.zip: refused, member 'train/a/link.jpg' is a symbolic link"):
        extract(archive, tmp_path / "out")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert archive.stat().st_size < 1 << 20 and peak < 4 << 20, peak


@pytest.mark.parametrize("suffix", [".zip", ".tar"])
def test_an_archive_that_would_not_fit_on_the_disk_is_refused(tmp_path, monkeypatch, suffix):
    archive = pack(folders_tree(tmp_path / "tree"), tmp_path / f"photos{suffix}")
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=RESERVE + 1000))
    with pytest.raises(DataError, match="needs [0-9,]+ bytes but .* has 268,436,456 free"):
        extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()
