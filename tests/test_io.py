import json

import pytest

from histoxai.io import atomic_files, atomic_path, finish_interrupted, write_json


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


def _report(out, text):
    with atomic_files(out, ("a.txt", "sub", "gone.txt")) as tmp:
        (tmp / "a.txt").write_text(text)
        (tmp / "sub").mkdir()
        (tmp / "sub" / "b.txt").write_text(text)


def _killed_while_moving(out, text, moved):
    """What a run killed after its commit point leaves: a committed staging directory
    of which the first ``moved`` entries are already in place."""
    import shutil

    _report(out.parent / "next", text)
    tmp = out / ".incoming.x.tmp"
    shutil.copytree(out.parent / "next", tmp)
    (tmp / ".committed").write_text(json.dumps({"written": ["a.txt", "sub"], "stale": ["gone.txt"]}))
    for name in ["a.txt", "sub"][:moved]:
        if (out / name).is_dir():
            shutil.rmtree(out / name)
        (tmp / name).replace(out / name)


@pytest.mark.parametrize("moved", [0, 1, 2])
def test_a_committed_report_killed_while_moving_in_is_finished_by_the_next_run(tmp_path, moved):
    out = tmp_path / "report"
    _report(out, "old")
    (out / "gone.txt").write_text("stale")
    (out / ".gitignore").write_text("/a.txt\n")
    _killed_while_moving(out, "new", moved)
    assert finish_interrupted(out) == [out / ".incoming.x.tmp"]
    assert (out / "a.txt").read_text() == (out / "sub" / "b.txt").read_text() == "new"
    assert sorted(p.name for p in out.iterdir()) == [".gitignore", "a.txt", "sub"]


def test_an_uncommitted_staging_directory_is_deleted_and_the_report_kept(tmp_path):
    out = tmp_path / "report"
    _report(out, "old")
    (out / ".incoming.y.tmp" / "sub").mkdir(parents=True)
    (out / ".incoming.y.tmp" / "a.txt").write_text("half")
    (out / ".a.txt.z.tmp").mkdir()  # an atomic_path temporary
    assert len(finish_interrupted(out)) == 2
    assert (out / "a.txt").read_text() == (out / "sub" / "b.txt").read_text() == "old"
    assert sorted(p.name for p in out.iterdir()) == ["a.txt", "sub"]
