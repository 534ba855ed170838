"""The DL3DV-140 split (hash lists) and benchmark evaluation-index generation."""

from __future__ import annotations

import json

import pytest

from scenetok.cli import main as scenetok_main
from scenetok.data.index import read_evaluation_index
from scenetok_plugin_dl3dv.benchmark import read_hash_list, write_benchmark_index, write_hash_list
from scenetok_plugin_dl3dv.dataset import DL3DVDataset
from scenetok_plugin_dl3dv.testing import synthetic_hash, write_synthetic_dl3dv

# ---- hash lists --------------------------------------------------------------------------------------


def test_read_hash_list_text(tmp_path, hashes):
    path = tmp_path / "dl3dv140.txt"
    path.write_text(f"# DL3DV-140\n{hashes[2]}\n\n  {hashes[0]}  # comment\n{hashes[2]}\n")
    assert read_hash_list(path) == [hashes[2], hashes[0]]


def test_read_hash_list_from_an_evaluation_index(tmp_path, hashes):
    path = tmp_path / "dl3dv_c16_34.json"
    path.write_text(json.dumps({f"{hashes[1]}_1": {"context": [0], "target": [1]},
                                hashes[0]: {"context": [0], "target": [1]}}))
    assert read_hash_list(path) == [hashes[1], hashes[0]]


@pytest.mark.parametrize(
    ("text", "message"),
    [("not-a-hash\n", "line 1"), ("# only comments\n\n", "empty"), (f"{synthetic_hash(0).upper()}\n", "line 1")],
)
def test_read_hash_list_rejects_bad_files(tmp_path, text, message):
    path = tmp_path / "list.txt"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        read_hash_list(path)


def test_hash_list_round_trip_and_missing_file(tmp_path, hashes):
    assert read_hash_list(write_hash_list(hashes, tmp_path / "out" / "list.txt")) == hashes
    with pytest.raises(FileNotFoundError):
        read_hash_list(tmp_path / "absent.txt")


# ---- the split ---------------------------------------------------------------------------------------


def test_benchmark_list_defines_the_split(tmp_path, hashes):
    write_synthetic_dl3dv(tmp_path / "dl3dv", hashes, layout="subsets", folders=())
    listed = write_hash_list([hashes[3], hashes[1], synthetic_hash(1000)], tmp_path / "dl3dv140.txt")

    def scenes(split):
        config = DL3DVDataset.Config(root=str(tmp_path / "dl3dv"), split=split, benchmark=str(listed))
        return DL3DVDataset(config)

    train, test = scenes("train"), scenes("test")
    assert train.scenes() == [hashes[0], hashes[2], hashes[4]]
    assert test.scenes() == [hashes[1], hashes[3]] == scenes("validation").scenes()
    assert not set(train.scenes()) & set(test.scenes())
    # a listed scene that is not on disk is recorded (the benchmark is incomplete), in test only
    assert [record["scene"] for record in test.skipped] == [synthetic_hash(1000)]
    assert train.skipped == []


def test_split_with_nothing_left_fails_clearly(tmp_path, hashes):
    write_synthetic_dl3dv(tmp_path / "dl3dv", hashes[:2], folders=())
    listed = write_hash_list(hashes[:2], tmp_path / "dl3dv140.txt")
    with pytest.raises(FileNotFoundError, match="every scene found is listed"):
        DL3DVDataset(DL3DVDataset.Config(root=str(tmp_path / "dl3dv"), benchmark=str(listed)))
    other = write_hash_list(hashes[2:], tmp_path / "other.txt")
    with pytest.raises(FileNotFoundError, match="none of the listed scenes"):
        DL3DVDataset(DL3DVDataset.Config(root=str(tmp_path / "dl3dv"), split="test", benchmark=str(other)))


# ---- evaluation index --------------------------------------------------------------------------------


@pytest.fixture
def benchmark_root(tmp_path, hashes):
    """Four 40-frame scenes in the benchmark download layout, three of them listed."""
    write_synthetic_dl3dv(tmp_path / "benchmark", hashes[:4], layout="nerfstudio", num_frames=40,
                          folders=("images_8",))
    listed = write_hash_list(hashes[1:4], tmp_path / "dl3dv140.txt")
    return tmp_path / "benchmark", listed


def benchmark_dataset(root, listed, **fields):
    return DL3DVDataset(DL3DVDataset.Config(root=str(root), split="test", benchmark=str(listed),
                                            resolution="images_8", image_size=[16, 16], **fields))


def test_write_benchmark_index_paper_protocol(tmp_path, hashes, benchmark_root):
    root, listed = benchmark_root
    dataset = benchmark_dataset(root, listed)
    path = write_benchmark_index(dataset, tmp_path / "dl3dv_c16_32.json")
    again = write_benchmark_index(benchmark_dataset(root, listed), tmp_path / "again.json")
    assert path.read_text() == again.read_text()
    entries = read_evaluation_index(path)
    assert [entry.scene for entry in entries] == hashes[1:4]
    for entry in entries:
        assert len(entry.context) == 16 and list(entry.context) == sorted(set(entry.context))
        assert len(entry.target) == 32 and list(entry.target) == list(range(entry.target[0], entry.target[0] + 32))
        assert entry.target[0] <= entry.context[0] and entry.context[-1] <= entry.target[-1]
    # the dataset follows the index it wrote
    evaluation = benchmark_dataset(root, listed, index=str(path), context_views=16, target_views=32)
    sample = evaluation[1]
    assert sample["scene"] == entries[1].scene
    assert sample["context"]["indices"].tolist() == list(entries[1].context)
    assert sample["target"]["images"].shape == (32, 3, 16, 16)
    # other seeds give other selections
    other = read_evaluation_index(write_benchmark_index(dataset, tmp_path / "seed1.json", seed=1))
    assert [e.target for e in other] != [e.target for e in entries]


def test_write_benchmark_index_refuses_the_training_split(tmp_path, benchmark_root):
    root, listed = benchmark_root
    train = DL3DVDataset(DL3DVDataset.Config(root=str(root), benchmark=str(listed), resolution="images_8"))
    with pytest.raises(ValueError, match="split='test'"):
        write_benchmark_index(train, tmp_path / "index.json")


def test_scenetok_dl3dv_commands(tmp_path, hashes, benchmark_root, capsys):
    root, listed = benchmark_root
    out = tmp_path / "dl3dv_c16_34.json"
    code = scenetok_main(["dl3dv", "index", "--root", str(root), "--benchmark", str(listed), "--out", str(out),
                          "--target-views", "34", "--resolution", "images_8"])
    assert code == 0
    entries = read_evaluation_index(out)
    assert [e.scene for e in entries] == hashes[1:4] and all(len(e.target) == 34 for e in entries)
    assert f"{out}: 3 scenes" in capsys.readouterr().out
    # the hash list of an index
    assert scenetok_main(["dl3dv", "split", "--from", str(out), "--out", str(tmp_path / "list.txt")]) == 0
    assert read_hash_list(tmp_path / "list.txt") == hashes[1:4]


def test_many_missing_benchmark_scenes_are_one_warning(tmp_path, hashes, caplog):
    import logging

    write_synthetic_dl3dv(tmp_path / "dl3dv", hashes, layout="subsets", folders=())
    absent = [synthetic_hash(2000 + i) for i in range(50)]
    listed = write_hash_list([hashes[1], *absent], tmp_path / "dl3dv140.txt")
    with caplog.at_level(logging.WARNING):
        test = DL3DVDataset(DL3DVDataset.Config(root=str(tmp_path / "dl3dv"), split="test", benchmark=str(listed)))
    assert len(test.skipped) == 50
    about_scenes = [r.getMessage() for r in caplog.records if any(h in r.getMessage() for h in absent)]
    assert len(about_scenes) == 1 and "50 of 51 benchmark scenes are not under" in about_scenes[0]
