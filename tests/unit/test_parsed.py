"""A topology file's parsed data kept beside the state (spec/parsed.py): taken back only for the
very text it was made from, only from a safe directory, never for a file that failed its checks."""

from __future__ import annotations

import json
import os

import pytest

from vnet import spec
from vnet.errors import SpecError
from vnet.spec import parsed, validate

TEXT = """name: lab
networks:
  lan0: {mode: nat, subnet: 192.168.223.0/24, uplink: eth0}
endpoints:
  c1: {kind: netns, network: lan0, address: 192.168.223.10/24}
"""


@pytest.fixture
def setup(tmp_path, monkeypatch):
    root = tmp_path / "state" / "@target"
    path = tmp_path / "lab.yaml"
    path.write_text(TEXT)
    calls = []
    real = validate.parse_yaml

    def counted(text):
        calls.append(text)
        return real(text)
    monkeypatch.setattr(validate, "parse_yaml", counted)
    return root, path, calls


def _entries(root):
    d = root / parsed.DIR
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


def test_an_unchanged_file_is_not_parsed_again(setup):
    root, path, calls = setup
    first = spec.load(path, keep=root)
    assert len(calls) == 1 and len(_entries(root)) == 1
    assert oct((root / parsed.DIR).stat().st_mode & 0o777) == "0o700"
    again = spec.load(path, keep=root)
    assert again == first and len(calls) == 1  # taken from the entry
    assert spec.load(path) == first and len(calls) == 2  # without `keep`, parsed as ever


def test_a_changed_file_is_parsed_and_its_new_content_used(setup):
    root, path, calls = setup
    spec.load(path, keep=root)
    path.write_text(TEXT.replace("name: lab", "name: lab2"))
    assert spec.load(path, keep=root).name == "lab2" and len(calls) == 2
    assert spec.load(path, keep=root).name == "lab2" and len(calls) == 2


def test_an_entry_made_from_other_text_is_not_used(setup):
    root, path, calls = setup
    spec.load(path, keep=root)
    (entry,) = (root / parsed.DIR).iterdir()
    kept = json.loads(entry.read_text())
    kept["data"]["name"] = "forged"  # the same text, other data: only a writer of the state could
    kept["text"] = TEXT + "# edited\n"  # and an entry for other text is not taken
    entry.write_text(json.dumps(kept))
    assert spec.load(path, keep=root).name == "lab" and len(calls) == 2


def test_a_file_that_fails_its_checks_leaves_nothing(setup, tmp_path):
    root, path, calls = setup
    path.write_text(TEXT.replace("mode: nat", "mode: natt"))
    with pytest.raises(SpecError):
        spec.load(path, keep=root)
    assert not (tmp_path / "state").exists()  # no change at all: not even the state root


def test_a_broken_or_unsafe_entry_is_ignored(setup):
    root, path, calls = setup
    spec.load(path, keep=root)
    (entry,) = (root / parsed.DIR).iterdir()
    entry.write_text("{not json")
    assert spec.load(path, keep=root).name == "lab" and len(calls) == 2  # parsed, and kept anew
    assert spec.load(path, keep=root).name == "lab" and len(calls) == 2
    os.chmod(root / parsed.DIR, 0o777)  # others could have written it: not read, not written
    assert spec.load(path, keep=root).name == "lab" and len(calls) == 3
    assert spec.load(path, keep=root).name == "lab" and len(calls) == 4


def test_data_json_would_not_give_back_is_not_kept(tmp_path):
    root = tmp_path / "root"
    parsed.keep(root, "/x.yaml", "1: a\n", {1: "a"})  # a number as a key comes back as text
    parsed.keep(root, "/y.yaml", "x: .nan\n", {"x": float("nan")})
    assert not (root / parsed.DIR).exists() or _entries(root) == []
    parsed.keep(root, "/z.yaml", "x: 1\n", {"x": 1})
    assert parsed.read(root, "/z.yaml", "x: 1\n") == {"x": 1}
    assert parsed.read(root, "/z.yaml", "x: 2\n") is parsed.MISSING
    assert parsed.read(root, "/w.yaml", "x: 1\n") is parsed.MISSING


def test_forget_drops_the_entries_of_one_topology_only(setup, tmp_path):
    root, path, calls = setup
    other = tmp_path / "other.yaml"
    other.write_text(TEXT.replace("name: lab", "name: other"))
    copy = tmp_path / "copy.yaml"
    copy.write_text(TEXT)  # a second file that declares the same topology
    for p in (path, other, copy):
        spec.load(p, keep=root)
    assert len(_entries(root)) == 3
    parsed.forget(root, "lab")
    assert len(_entries(root)) == 1
    assert spec.load(other, keep=root).name == "other" and len(calls) == 3  # still kept
    parsed.forget(root, "gone")  # nothing of that name: nothing changes
    assert len(_entries(root)) == 1
    parsed.forget(tmp_path / "nowhere", "lab")  # no folder at all: no error
