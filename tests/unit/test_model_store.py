"""The party's model store: user-named and numbered versions, "latest", and what a miss says."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedsuite.party.models import ModelExists, ModelNotFound, ModelStore


def test_numbered_and_named_versions_latest_is_the_last_saved(tmp_path: Path) -> None:
    store = ModelStore(tmp_path, "bank")
    assert store.save("job1", {"w": 1}) == "1"
    assert store.save("job1", {"w": 2}, "20260205") == "20260205"
    assert store.save("job1", {"w": 3}) == "3"  # the third save
    assert store.save("job1", {"w": 4}, "prod-1.2") == "prod-1.2"
    assert store.versions("job1") == ["1", "20260205", "3", "prod-1.2"]
    assert store.load("job1")[0] == "prod-1.2"
    assert store.load("job1", "latest") == ("prod-1.2", {"w": 4, "version": "prod-1.2", "sequence": 4})
    assert store.load("job1", "20260205")[1]["w"] == 2
    assert store.load("job1", "1")[1]["w"] == 1
    assert sorted(p.name for p in (tmp_path / "job1").iterdir()) == [
        "v1.json", "v20260205.json", "v3.json", "vprod-1.2.json"]


def test_an_automatic_number_skips_a_name_already_taken(tmp_path: Path) -> None:
    store = ModelStore(tmp_path, "bank")
    store.save("m", {}, "2")
    assert store.save("m", {}) == "3"
    assert store.versions("m") == ["2", "3"]


def test_versions_written_before_names_existed_still_load(tmp_path: Path) -> None:
    (tmp_path / "old").mkdir()
    for n in (1, 2, 10):
        (tmp_path / "old" / f"v{n}.json").write_text(f'{{"w": {n}}}')
    store = ModelStore(tmp_path, "bank")
    assert store.versions("old") == ["1", "2", "10"]
    assert store.load("old") == ("10", {"w": 10})
    assert store.save("old", {"w": 11}) == "11"


def test_missing_model_or_version_names_the_party_and_what_exists(tmp_path: Path) -> None:
    store = ModelStore(tmp_path, "bank")
    with pytest.raises(ModelNotFound) as caught:
        store.load("nope")
    assert caught.value.args[0].startswith("party bank has no model 'nope' (a model id is the training job's id")
    store.save("job1", {})
    store.save("job1", {}, "v2026")
    with pytest.raises(ModelNotFound) as caught:
        store.load("job1", "7")
    assert caught.value.args[0] == "party bank has no model 'job1' version '7'; versions: 1, v2026"


def test_a_named_version_is_never_overwritten_and_must_be_a_safe_name(tmp_path: Path) -> None:
    store = ModelStore(tmp_path, "bank")
    store.save("job1", {"w": 1}, "20260205")
    with pytest.raises(ModelExists, match="party bank already has model 'job1' version '20260205'"):
        store.check_new("job1", "20260205")
    with pytest.raises(ModelExists):
        store.save("job1", {"w": 2}, "20260205")
    assert store.load("job1")[1]["w"] == 1
    for bad in ("../x", "a/b", ".hidden", "x" * 65, "latest", "sp ace"):
        with pytest.raises(ValueError):
            store.save("job1", {}, bad)
    assert store.versions("job1") == ["20260205"]
