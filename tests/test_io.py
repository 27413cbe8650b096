import json

import pytest

from histoxai.io import atomic_path, write_json


def test_write_json_replaces_atomically(tmp_path):
    path = tmp_path / "out" / "m.json"
    write_json(path, {"a": 1})
    write_json(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2}
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.json"]


def test_error_keeps_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "m.json"
    write_json(path, {"a": 1})
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("{half")
        raise RuntimeError("killed")
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_directories_are_replaced_whole(tmp_path):
    d = tmp_path / "store"
    for version in ("1", "2"):
        with atomic_path(d) as tmp:
            tmp.mkdir()
            (tmp / "v").write_text(version)
    assert (d / "v").read_text() == "2" and [p.name for p in tmp_path.iterdir()] == ["store"]
