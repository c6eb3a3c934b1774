"""Activation extraction with the packaged MiniLM on a slice of the default corpus, and the soft
clustering stage on top of it (cache, resume, decoded exemplars)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from corpus_proximity.config import ActivationsConfig, SoftClusterConfig
from corpus_proximity.errors import InputError
from corpus_proximity.soft import extract as extract_activations
from corpus_proximity.soft import stage as soft_cluster
from corpus_proximity.soft.activations import FileSource, Whitening
from corpus_proximity.soft.analyzer import ClusterAnalyzer
from corpus_proximity.soft.stream import GB, rss_bytes
from corpus_proximity.text import chunking


@pytest.fixture
def act_cfg(small_default_cfg):
    return dataclasses.replace(
        small_default_cfg,
        activations=ActivationsConfig(max_chunks=8, max_seq_length=32, sequences_per_file=3, whiten=True,
                                      whiten_sample=150),
        # the budget covers the whole pytest process (torch and more already loaded): 1 GB above it
        soft_cluster=SoftClusterConfig(n_clusters=4, init_sample=100, max_points=100, n_epochs=2,
                                       lda_sample=200, n_exemplars=3, n_random_exemplars=2, context_window=4,
                                       memory_budget_gb=round(rss_bytes() / GB + 1.0, 2)))


def test_extraction_writes_whitened_chunk_files_and_is_cached(act_cfg, capsys):
    from transformers import AutoModel, AutoTokenizer

    sd = extract_activations.run_extraction(act_cfg)
    meta = sd.read_meta()
    assert meta["n_files"] == 3 and meta["n_sequences"] == 8 and meta["dim"] == 384 and meta["whitened"]
    src = FileSource.from_dir(sd.file("chunks"))
    chunks = [src.open(i) for i in range(len(src))]
    assert [c.n_seq for c in chunks] == [3, 3, 2] and all(c.seq_len == 32 for c in chunks)
    assert chunks[0].dtype == np.float16
    assert meta["n_positions"] == sum(int(c.attention_mask.sum()) for c in chunks)
    # the rows are the model's last hidden states, whitened with the stored transform
    table = chunking.read_chunks(chunking.stage_dir(act_cfg), ["chunk_id", "text"])
    pick = extract_activations.select_chunks(table.num_rows, 8, 0)
    ids = [table.column("chunk_id")[int(i)].as_py() for i in pick]
    assert [s for c in chunks for s in c.sequence_ids] == ids
    tok = AutoTokenizer.from_pretrained(meta["model_dir"])
    model = AutoModel.from_pretrained(meta["model_dir"]).eval()
    enc = tok([table.column("text")[int(pick[4])].as_py()], truncation=True, max_length=32, return_tensors="pt")
    import torch

    with torch.inference_mode():
        hs = model(**enc, output_hidden_states=True).hidden_states[-1][0].numpy()
    n = enc["input_ids"].shape[1]
    w = Whitening.load(sd.file("whitening.npz"))
    got = next(chunks[1].blocks(3))[1][1, :n].astype(np.float32)  # sequence 4 = file 1, row 1
    np.testing.assert_allclose(got, w.apply(hs), atol=0.05 * np.abs(got).max())
    np.testing.assert_array_equal(chunks[1].token_ids[1, :n], enc["input_ids"][0].numpy())
    assert not chunks[1].attention_mask[1, n:].any()
    # whitened: leading components (well estimated from 150 positions) have about unit variance
    x = np.concatenate([next(c.blocks(3))[1][c.attention_mask] for c in chunks]).astype(np.float64)
    assert 0.5 < x[:, :20].var(axis=0).mean() < 2
    # a rerun is a cache hit; a lost file (killed run) is recomputed alone
    capsys.readouterr()
    assert extract_activations.run_extraction(act_cfg).path == sd.path
    assert "activations: cache hit" in capsys.readouterr().err
    before = sd.file("chunks/chunk-00000.npz").stat().st_mtime_ns
    sd.file("chunks/chunk-00002.npz").unlink()
    sd.file("_SUCCESS").unlink()
    extract_activations.run_extraction(act_cfg)
    assert sd.file("chunks/chunk-00002.npz").is_file() and sd.complete
    assert sd.file("chunks/chunk-00000.npz").stat().st_mtime_ns == before


def test_soft_cluster_stage_on_real_activations(act_cfg, capsys):
    sd = soft_cluster.run_soft_clustering(act_cfg)
    an = ClusterAnalyzer(sd.path)
    assert len(an.clusters) == 4 and an.summary["dim"] == 384
    specials = set(extract_activations.stage_dir(act_cfg).read_meta()["special_token_ids"])
    ex = [e for c in an.clusters for e in c["exemplars"]["top"]]
    assert ex and all(e["context_ids"][e["focus"]] not in specials for e in ex)
    assert all(e["token"] and not e["token"].startswith("<") for e in ex)  # real word pieces
    assert all("#" in e["sequence_id"] or "/" in e["sequence_id"] for e in ex)
    assert len(list(sd.file("memberships").glob("chunk-*.npz"))) == 3
    # whitened activations: the vectors also come in the model's coordinates (d = 384 either way here)
    w = Whitening.load(extract_activations.stage_dir(act_cfg).file("whitening.npz"))
    iv, steer = an.arrays["intervention_vectors"], an.arrays["intervention_vectors_model"]
    have = np.linalg.norm(iv, axis=1) > 0
    assert have.any() and "whitened" in an.summary["space"]
    moved = w.apply(w.mean + steer[have]) - w.apply(w.mean)  # adding the model-space vector moves the whitened image along iv
    np.testing.assert_allclose(moved / np.linalg.norm(moved, axis=1, keepdims=True), iv[have], atol=1e-3)
    assert soft_cluster.run_soft_clustering(act_cfg).path == sd.path
    assert "soft clusters: cache hit" in capsys.readouterr().err
    # an interrupted run is never silently continued nor silently discarded
    other = dataclasses.replace(act_cfg, soft_cluster=dataclasses.replace(act_cfg.soft_cluster, n_clusters=3))
    osd = soft_cluster.stage_dir(other)
    osd.begin()
    (osd.path / "checkpoint.npz").write_bytes(b"")
    with pytest.raises(InputError, match="pass --resume to continue it or --fresh"):
        soft_cluster.run_soft_clustering(other)
    assert soft_cluster.run_soft_clustering(other, fresh=True).complete


def test_bad_layer_is_a_clear_error(act_cfg):
    cfg = dataclasses.replace(act_cfg, activations=dataclasses.replace(act_cfg.activations, layer=9))
    with pytest.raises(InputError, match=r"activations.layer=9: .* has hidden states 0..6"):
        extract_activations.run_extraction(cfg)
