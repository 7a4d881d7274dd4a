"""bench/train_throughput.py's offline mode on a tiny model: the LLaVA-665K-like mix is seeded and shaped as stated,
and the recipe-faithful step (ours: padding-free batches + LM-head compaction; peer: TRL's padded collator and fused
head) gives the same losses on the same weights and batches."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
import train_throughput  # noqa: E402  (bench/ is not a package)

TINY_VISION = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=28, patch_size=14
)
TINY_TEXT = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=2,
    max_position_embeddings=8192,
)


def test_mix_is_seeded_and_has_every_kind(tmp_path):
    first = train_throughput.write_mix(tmp_path / "a", 60).read_text()
    assert first == train_throughput.write_mix(tmp_path / "b", 60).read_text()
    rows = train_throughput.read_rows(tmp_path / "a" / "mix.json", tmp_path / "a" / "images", 60)
    kinds = {row["id"].split("-")[0] for row in rows}
    assert kinds == set(train_throughput.MIX_SHARES)
    for row in rows:
        turns = len(row["messages"]) // 2
        kind = row["id"].split("-")[0]
        assert (len(row["images"]) == 0) == (kind == "text")
        assert turns == 1 if kind == "single" else 3 <= turns <= 6 if kind == "multi" else 1 <= turns <= 3


def test_recipe_step_ours_and_peer_losses_agree(tmp_path):
    from conftest import require

    require("trl")
    train_throughput.prepare(tmp_path, vision=TINY_VISION, text=TINY_TEXT, num_images=2)
    # The offline mode's twin folders: here the tiny model, converted as in the tiny mode.
    (tmp_path / "twin").symlink_to(tmp_path / "ours")
    (tmp_path / "twin_hf").symlink_to(tmp_path / "hf")
    train_throughput.write_mix(tmp_path, 8)
    spec = {"work": str(tmp_path), "device": "cpu", "steps": 2, "batch_size": 4, "dtype": "float32"}
    ours = train_throughput.train_side_recipe({**spec, "side": "ours_twin"})
    peer = train_throughput.train_side_recipe({**spec, "side": "peer"})
    assert ours["losses"] == pytest.approx(peer["losses"], abs=1e-4)
    assert ours["padding_fraction"] == 0.0 < peer["padding_fraction"]
    # The same real and supervised tokens on both sides: the rates differ by the time only.
    assert ours["tokens_per_s"] / peer["tokens_per_s"] == pytest.approx(
        ours["supervised_tokens_per_s"] / peer["supervised_tokens_per_s"]
    )
