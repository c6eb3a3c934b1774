import numpy as np

from corpus_proximity.cache import StageDir, atomic_save_npy, atomic_write_json, stage_key
from corpus_proximity.config import EmbeddingConfig, semantic_dict


def test_key_is_deterministic_and_sensitive():
    a = stage_key("embed", 1, {"model": "m", "x": [1, 2]}, {"chunks": "k"})
    assert a == stage_key("embed", 1, {"x": [1, 2], "model": "m"}, {"chunks": "k"})
    assert a != stage_key("embed", 2, {"model": "m", "x": [1, 2]}, {"chunks": "k"})
    assert a != stage_key("embed", 1, {"model": "m2", "x": [1, 2]}, {"chunks": "k"})
    assert a != stage_key("embed", 1, {"model": "m", "x": [1, 2]}, {"chunks": "k2"})


def test_non_semantic_fields_left_out_of_key():
    a = semantic_dict(EmbeddingConfig(batch_size=8, device="cpu", shard_size=10))
    b = semantic_dict(EmbeddingConfig(batch_size=64, device=None, shard_size=999))
    assert a == b
    assert semantic_dict(EmbeddingConfig(model="x")) != b


def test_success_marker_written_last(tmp_path):
    sd = StageDir.for_key(tmp_path, "s", "ab" * 32)
    assert sd.path.name == "s-" + ("ab" * 32)[:12]
    sd.begin()
    atomic_write_json(sd.file("a.json"), {"x": 1})
    assert not sd.complete  # artifacts without the marker are never a result
    sd.finish({"c": 1}, {"up": "k"})
    assert sd.complete and sd.read_meta()["upstream"] == {"up": "k"}
    assert "numpy" in sd.read_meta()["versions"]
    assert sd.begin() is False and sd.complete  # a finished result is reused, not claimed again
    assert sd.begin(redo=True) is True  # recomputing on purpose invalidates first
    assert not sd.complete
    assert sd.read_meta()["artifacts"]["a.json"]["size"] == (sd.path / "a.json").stat().st_size


def test_atomic_writes_leave_no_temp_files(tmp_path):
    atomic_save_npy(tmp_path / "a.npy", np.ones((3, 2), np.float32))
    atomic_write_json(tmp_path / "b.json", [1])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy", "b.json"]


def test_atomic_writes_get_ordinary_file_modes(tmp_path):
    import os

    import numpy as np

    from corpus_proximity.cache import atomic_save_npy, atomic_write_json

    mask = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "a.json", {"x": 1})
        atomic_save_npy(tmp_path / "a.npy", np.zeros(3))
    finally:
        os.umask(mask)
    for name in ("a.json", "a.npy"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644  # not mkstemp's 0o600
