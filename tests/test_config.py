import dataclasses

import pytest

from corpus_proximity.config import ClusteringConfig, ExperimentConfig, apply_overrides, load_config, to_dict
from corpus_proximity.errors import InputError


def test_typed_overrides_nested():
    cfg = apply_overrides(ExperimentConfig(), ["clustering.max_depth=4", "clustering.base_pct=0.02",
                                               "corpus.path=/x.jsonl", "corpus.max_docs=none",
                                               "chunking.strategy=paragraphs",
                                               "corpus.default_stdlib_packages=json,email"])
    assert cfg.clustering.max_depth == 4 and isinstance(cfg.clustering.max_depth, int)
    assert cfg.clustering.base_pct == 0.02
    assert cfg.corpus.path == "/x.jsonl" and cfg.corpus.max_docs is None
    assert cfg.chunking.strategy == "paragraphs"
    assert cfg.corpus.default_stdlib_packages == ("json", "email")


@pytest.mark.parametrize("item, needle", [
    ("clustering.max_dept=4", "unknown field 'max_dept'"),
    ("clustering.max_depth=four", "expected an integer"),
    ("chunking.strategy=words", "must be one of"),
    ("clustering=3", "is a section"),
    ("clustering.max_depth", "expected section.field=value"),
    ("clustering.max_depth=0", "clustering.max_depth"),
])
def test_bad_overrides_name_the_field(item, needle):
    with pytest.raises(InputError, match=needle):
        apply_overrides(ExperimentConfig(), [item])


def test_post_init_rejects_impossible_values():
    with pytest.raises(InputError, match="clustering.hdbscan_min_samples"):
        ClusteringConfig(hdbscan_min_samples=0)
    with pytest.raises(InputError, match="clustering.decay"):
        ClusteringConfig(decay=1.5)
    with pytest.raises(InputError, match="clustering.umap_n_epochs"):
        ClusteringConfig(umap_n_epochs=0)
    assert apply_overrides(ExperimentConfig(), ["clustering.umap_n_epochs=None"]).clustering.umap_n_epochs is None


def test_configs_load_and_are_frozen():
    for name in ("configs/clustering_01_tiny.py", "configs/clustering_02_full.py"):
        cfg = load_config(name)
        assert isinstance(cfg, ExperimentConfig)
        with pytest.raises(dataclasses.FrozenInstanceError):
            cfg.name = "x"
        assert to_dict(cfg)["clustering"]["hdbscan_min_samples"] == 10


def test_missing_config_file(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_config(tmp_path / "nope.py")
    bad = tmp_path / "bad.py"
    bad.write_text("x = 1\n")
    with pytest.raises(InputError, match="must define `config"):
        load_config(bad)
