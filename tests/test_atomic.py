import pytest

from inat_classifier.atomic import atomic_dir, atomic_path, write_json


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out.json"
    write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == '{\n  "a": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_atomic_path_keeps_the_extension_and_readable_permissions(tmp_path):
    with atomic_path(tmp_path / "model.keras") as tmp:
        assert tmp.suffix == ".keras"
        tmp.write_text("x")
    assert oct((tmp_path / "model.keras").stat().st_mode & 0o777) == "0o644"


def test_atomic_dir_replaces_whole_directory_only_on_success(tmp_path):
    target = tmp_path / "raw"
    with atomic_dir(target) as tmp:
        (tmp / "one").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "two").write_text("2")
            raise RuntimeError("interrupted")
    assert sorted(p.name for p in target.iterdir()) == ["one"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]
