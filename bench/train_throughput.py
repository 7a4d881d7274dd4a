"""Stage-2 training throughput: llava_hf + its collator vs transformers' built-in Llava + TRL's default VLM collator.

    python bench/train_throughput.py [--steps 8 --batch-size 4]                  # CPU, fp32
    python bench/train_throughput.py --device cuda --dtype bfloat16 --steps 30   # GPU variant: adds MFU
    python bench/train_throughput.py --config offline --steps 5 --batch-size 8 --dtype bfloat16

`--config tiny` (the default): a random small model. Same weights (converted with `llava-hf convert`), same data
(shapes-world instruction rows, 224-px images -> 256 image tokens), same optimizer and steps; each side runs in a
fresh subprocess so peak memory is its own, and calls `model(**batch).loss` on padded batches.

`--config offline`: the offline default (EfficientNet-Lite0 -> mlp2x_gelu -> SmolLM2-135M-Instruct, 3x3 pooled image
features: 9 tokens per image) on a synthetic mix shaped like LLaVA-665K (`write_mix`), each side run as its trainer
would: float32 master weights under bf16 autocast (`--dtype bfloat16`), AdamW over the LM and projector with TRL's
fused LM head (`add_fused_lm_head`, as SFTTrainer adds it) and the loss of `SFTTrainer.compute_loss` (summed -log p
over the supervised count), gradients clipped at 1.0 (the Trainer's default). Ours: `LlavaDataCollator(padding_free=
True)` and `LlavaSFTTrainer`'s LM-head compaction (`_compact_fused_lm_head`). Peer: TRL's padded collator and TRL's
head as is. transformers' Llava cannot hold the offline default (timm tower, pooled features: `llava-hf convert --to
hf-llava` refuses both), so the peer runs its closest convertible twin: the same LM, projector and image processor
behind a one-layer CLIP ViT of the same width and token count (9 patches of 74 px, ~the tower's FLOPs), converted
with `llava-hf convert --to hf-llava`. A third process, `ours_twin`, trains our side on that twin: its per-step losses
must equal the peer's (same weights, same batches). The loop reproduces the trainer's step rather than running
`SFTTrainer.train()`, so the timed region is forward + backward + optimizer alone, batch for batch identical on every
side (collation is not timed).

Prints a table and one JSON line: tokens/s (non-padding tokens, and supervised ones), peak memory and the ratios
ours / peer.

MFU counts the model FLOPs of the path that trains: 6 x parameters x tokens for the trained parts (LM and projector)
and 2 x parameters x tokens for the frozen vision tower, which runs forward only; embedding lookups and the attention
scores themselves are not counted. `bench/gpu_check.py` imports `prepare`, `run_side`, `read_rows` and `unpad`.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# The benchmark's default model: a small ViT at 224 px (256 image tokens) and a 6-layer Llama.
SMALL_VISION = dict(
    hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4, image_size=224, patch_size=14
)
SMALL_TEXT = dict(
    hidden_size=512,
    intermediate_size=1408,
    num_hidden_layers=6,
    num_attention_heads=8,
    num_key_value_heads=8,
    max_position_embeddings=4096,
)
VARIANTS = ("padded", "unpadded")
# Peak dense bf16 rate of the cards MFU is quoted against (datasheets), matched in order on the device name.
SPEC_BF16_FLOPS = (("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("A100", 312e12))


def spec_bf16_flops(device_name: str) -> float | None:
    """The datasheet's dense bf16 FLOP/s of a card by its name, or None for a card not listed."""
    return next((flops for card, flops in SPEC_BF16_FLOPS if card in device_name), None)


def prepare(
    work: Path,
    vision: dict | None = None,
    text: dict | None = None,
    num_images: int = 64,
    device: str = "cpu",
    save_dtype: str | None = None,
    logit_std: float | None = None,
) -> dict[str, Any]:
    """Write `work/world` (the shapes world), `work/hf` (a random transformers Llava with its processor) and
    `work/ours` (the same weights converted with `llava-hf convert`). Returns what was built.

    `vision` / `text`: CLIPVisionConfig / LlamaConfig fields (default: the small benchmark model). `device`: where
    the random weights are initialised (a GPU is much faster for large models). `save_dtype`: the dtype the weights
    are stored in (default float32). `logit_std`: scale `lm_head` so that the logits' standard deviation is about
    this; a random LM head gives near-uniform next-token distributions, a trained model's are peaked.
    """
    import torch
    from transformers import CLIPImageProcessor, CLIPVisionConfig, LlamaConfig
    from transformers import LlavaConfig as HFLlavaConfig
    from transformers import LlavaForConditionalGeneration as HFLlava
    from transformers import LlavaProcessor as HFLlavaProcessor

    from llava_hf import get_chat_template
    from llava_hf.convert import convert
    from llava_hf.data.shapes import build_shapes_world

    sys.path.insert(0, str(ROOT / "tests"))
    from fixtures.tester import tiny_tokenizer

    build_shapes_world(work / "world", num_images=num_images, seed=0, progress=False)
    tokenizer = tiny_tokenizer()
    vision_config = CLIPVisionConfig(**(vision or SMALL_VISION))
    text_fields = {"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id, **(text or SMALL_TEXT)}
    text_config = LlamaConfig(**text_fields)
    image_size, patch_size = vision_config.image_size, vision_config.patch_size
    image_seq_length = (image_size // patch_size) ** 2  # CLS dropped ("default")
    torch.manual_seed(0)
    with torch.device(device):
        model = HFLlava(
            HFLlavaConfig(
                vision_config=vision_config,
                text_config=text_config,
                image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
                image_seq_length=image_seq_length,
            )
        )
    if logit_std is not None:
        head = model.lm_head.weight
        with torch.no_grad():
            # The final RMSNorm gives hidden states of RMS 1, so each logit's std is the row std x sqrt(hidden).
            head.mul_(logit_std / (head.float().std() * text_config.hidden_size**0.5))
    if save_dtype is not None:
        model.to(getattr(torch, save_dtype))
    model.save_pretrained(work / "hf")
    del model
    HFLlavaProcessor(
        image_processor=CLIPImageProcessor(
            size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
        ),
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=get_chat_template("vicuna_v1"),
    ).save_pretrained(work / "hf")
    convert(work / "hf", work / "ours")
    return {
        "image_size": image_size,
        "image_seq_length": image_seq_length,
        "vocab_size": text_config.vocab_size,
        "image_token_id": tokenizer.convert_tokens_to_ids("<image>"),
        "pad_token_id": tokenizer.pad_token_id,
        "tokenizer_size": len(tokenizer),
    }


# The offline mode's synthetic mix, shaped like LLaVA-665K: mostly single-turn VQA, some multi-turn conversations
# about one image, some text-only conversations (ShareGPT's share) with long answers. Shares of the rows.
MIX_SHARES = {"single": 0.7, "multi": 0.2, "text": 0.1}
SHORT_ANSWER = "\nAnswer the question using a single word or phrase."  # LLaVA-1.5's VQAv2 / GQA prompt


def _image_turns(scene) -> list[tuple[str, str]]:
    """Every (question, answer) a shapes-world scene offers, in LLaVA-1.5's formats: short VQA, multiple choice,
    conversation, detailed description, complex reasoning."""
    from llava_hf.data.shapes import LETTERS, complex_reasoning, conversation, detailed_description, questions

    turns = list(conversation(scene))
    for q in questions(scene):
        turns.append((q["question"] + SHORT_ANSWER, q["choices"][q["answer"]]))
        options = "\n".join(f"{LETTERS[i]}. {choice}" for i, choice in enumerate(q["choices"]))
        letter_prompt = "\nAnswer with the option's letter from the given choices directly."
        turns.append((f"{q['question']}\n{options}{letter_prompt}", LETTERS[q["answer"]]))
    turns += [("Describe the image in detail.", detailed_description(scene)), complex_reasoning(scene)]
    return turns


def write_mix(work: Path, count: int, seed: int = 0) -> Path:
    """`work/mix.json` (LLaVA records) and `work/images/`: `count` rows in `MIX_SHARES`' proportions, from
    shapes-world scenes (seeded, so every process and run sees the same rows). Multi-turn rows have 3-6 turns about
    one image; text-only rows have 1-3 turns whose answers describe 2-5 scenes in prose (long, as ShareGPT's)."""
    import random

    from llava_hf.data.shapes import detailed_description, generate_scene, render

    rng = random.Random(seed)
    (work / "images").mkdir(parents=True, exist_ok=True)
    # Exact shares, shuffled: a few dozen rows drawn at random would stray far from them.
    kinds = [kind for kind, share in MIX_SHARES.items() for _ in range(round(share * count))]
    kinds = (kinds + ["single"] * count)[:count]
    rng.shuffle(kinds)
    records = []
    for index, kind in enumerate(kinds):
        scene = generate_scene(seed, index)
        if kind == "text":
            turns = []
            for _ in range(rng.randint(1, 3)):
                others = [generate_scene(seed + 1, rng.randrange(10**6)) for _ in range(rng.randint(2, 5))]
                answer = " ".join(f"Picture {n + 1}. {detailed_description(s)}" for n, s in enumerate(others))
                turns.append((f"Write {len(others)} short picture descriptions of coloured shapes.", answer))
        else:
            pool = _image_turns(scene)
            turns = rng.sample(pool, 1 if kind == "single" else min(rng.randint(3, 6), len(pool)))
            turns[0] = (f"<image>\n{turns[0][0]}", turns[0][1])
            render(scene).save(work / "images" / f"{index}.png")
        conversations = [{"from": f, "value": v} for q, a in turns for f, v in (("human", q), ("gpt", a))]
        record = {"id": f"{kind}-{index}", "conversations": conversations}
        records.append(record if kind == "text" else {**record, "image": f"{index}.png"})
    (work / "mix.json").write_text(json.dumps(records))
    return work / "mix.json"


def prepare_offline(work: Path, rows: int) -> dict[str, Any]:
    """Write `work/offline` (the offline default, 3x3 pooled features, as stage 1 builds it), `work/twin` (the same
    LM, projector and processor behind a CLIP tower transformers' Llava can run), `work/twin_hf` (the twin converted
    with `llava-hf convert --to hf-llava`) and the mix (`write_mix`). Returns the mix's length distribution."""
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModel

    from llava_hf import build_llava_from_pretrained, load_offline_default
    from llava_hf.backbones import load_smollm2
    from llava_hf.convert import convert
    from llava_hf.data import LlavaDataCollator

    model, processor = load_offline_default(vision_feature_pool_size=3, attn_implementation="sdpa")
    model.save_pretrained(work / "offline")
    processor.save_pretrained(work / "offline")
    # EfficientNet-Lite0's 1280-wide features at 9 tokens per image; one ViT layer of that width on 9 patches of
    # 74 px costs ~0.4 GMAC per image, as the EfficientNet does at 224 px.
    width = model.model.multi_modal_projector.linear_1.in_features
    torch.manual_seed(0)
    tower = CLIPVisionModel(
        CLIPVisionConfig(
            hidden_size=width,
            intermediate_size=4 * width,
            num_hidden_layers=1,
            num_attention_heads=16,
            image_size=224,
            patch_size=74,
        )
    )
    lm, tokenizer = load_smollm2()
    twin, twin_processor = build_llava_from_pretrained(
        tower,
        lm,
        tokenizer=tokenizer,
        image_processor=processor.image_processor,
        vision_feature_layer=-1,
        chat_template="chatml",
        attn_implementation="sdpa",
        seed=0,
    )
    # Everything but the tower is the offline default's (the resized embeddings' new rows are drawn at random).
    shared = {k: v for k, v in model.state_dict().items() if ".vision_tower." not in f".{k}"}
    missing, unexpected = twin.load_state_dict(shared, strict=False)
    assert not unexpected and all(".vision_tower." in f".{k}" for k in missing), (missing, unexpected)
    twin.save_pretrained(work / "twin")
    twin_processor.save_pretrained(work / "twin")
    convert(work / "twin", work / "twin_hf", to="hf-llava")

    rows_used = read_rows(write_mix(work, rows), work / "images", rows)
    encode = LlavaDataCollator(processor).encode
    encoded = [encode(row) for row in rows_used]
    return mix_distribution(rows_used, encoded, processor.image_seq_length)


def mix_distribution(rows: list[dict], encoded: list[dict], image_tokens: int) -> dict[str, Any]:
    """Tokens per row (mean, p50, p90; all and supervised) and the share of each kind of row."""
    import statistics

    def summary(values: list[int]) -> dict[str, float]:
        ordered = sorted(values)
        return {
            "mean": round(statistics.fmean(ordered), 1),
            "p50": ordered[len(ordered) // 2],
            "p90": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))],
        }

    kinds = [row["id"].split("-")[0] for row in rows]
    return {
        "rows": len(rows),
        "share": {kind: round(kinds.count(kind) / len(rows), 3) for kind in MIX_SHARES},
        "turns_mean": round(statistics.fmean(len(row["messages"]) / 2 for row in rows), 2),
        "image_tokens_per_image": image_tokens,
        "tokens": summary([len(e["input_ids"]) for e in encoded]),
        "supervised_tokens": summary([sum(label != -100 for label in e["labels"]) for e in encoded]),
    }


def model_flops(counts: dict[str, int], lm_tokens: int, image_tokens: int, tower_tokens: int) -> float:
    """Model FLOPs of one training step: 6 N T for the trained parts (LM over every non-padding token, projector over
    the image tokens), 2 N T for the frozen vision tower (forward only, over its own tokens). `counts`: from
    `count_parameters`. Recomputation under gradient checkpointing is not counted (model FLOPs, not hardware FLOPs)."""
    return (
        6 * counts["lm_trainable"] * lm_tokens
        + 6 * counts["projector_trainable"] * image_tokens
        + 2 * counts["tower_frozen"] * tower_tokens
    )


def count_parameters(model) -> dict[str, int]:
    """Parameters that do matrix work, by part: embedding tables are lookups and are left out (as in 6 N T)."""
    from torch import nn

    def matmul_parameters(module: nn.Module, trainable: bool) -> int:
        lookups = {id(p) for m in module.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
        return sum(p.numel() for p in module.parameters() if id(p) not in lookups and p.requires_grad == trainable)

    body = model.model
    lm = nn.ModuleList([body.language_model, model.lm_head])
    return {
        "total": sum(p.numel() for p in model.parameters()),
        "lm_trainable": matmul_parameters(lm, True),
        "projector_trainable": matmul_parameters(body.multi_modal_projector, True),
        "tower_frozen": matmul_parameters(body.vision_tower, False),
    }


def read_rows(records_path: Path, image_root: Path, count: int) -> list[dict]:
    """`count` conversational rows (`id`, `images` as PIL images, `messages`) from a LLaVA JSON file, cycling through
    it if it has fewer. Read with llava_hf's record converter, without the `datasets` package."""
    from llava_hf.data import llava_record_to_row, load_image

    records = json.loads(records_path.read_text())
    rows = []
    for index in range(count):
        row = llava_record_to_row(records[index % len(records)], where=f"{records_path.name} record {index}")
        images = [load_image(image_root / name, f"{row['id']} image") for name in row["image_files"]]
        rows.append({"id": row["id"], "images": images, "messages": row["messages"]})
    return rows


def unpad(batch: dict) -> dict:
    """The batch cut to its shortest sample: each row keeps its first `min_len` real tokens (whichever side the
    padding was on), so there is no padding left and the attention mask is all ones."""
    import torch

    mask = batch["attention_mask"].bool()
    length = int(mask.sum(1).min())
    # Positions of each row's real tokens, in order; keep the first `length` of them.
    order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)[:, :length]
    # Every per-token tensor (input_ids, attention_mask, labels, token type ids, ...) is cut the same way.
    return {
        key: torch.gather(value, 1, order) if isinstance(value, torch.Tensor) and value.shape == mask.shape else value
        for key, value in batch.items()
    }


class PlainPaddedCollator:
    """The built-in Llava's batches without TRL: its processor's chat template and padding, labels on every
    non-padding, non-image token (no assistant-only masking)."""

    def __init__(self, processor):
        self.processor = processor

    def __call__(self, examples: list[dict]) -> dict:
        texts = [self.processor.apply_chat_template(e["messages"], tokenize=False) for e in examples]
        images = [image for e in examples for image in e["images"]]
        batch = self.processor(text=texts, images=images or None, padding=True, return_tensors="pt")
        labels = batch["input_ids"].clone()
        labels[batch["attention_mask"] == 0] = -100
        labels[batch["input_ids"] == self.processor.tokenizer.convert_tokens_to_ids("<image>")] = -100
        return {**batch, "labels": labels}


def _trl_messages(messages: list[dict]) -> list[dict]:
    return [
        {
            "role": m["role"],
            "content": [
                {"type": "image"} if p["type"] == "image" else {"type": "text", "text": p["text"]}
                for p in m["content"]
            ],
        }
        for m in messages
    ]


def train_side(spec: dict) -> dict:
    """One side's training steps (run in its own process by `run_side`): returns tokens/s, samples/s, peak memory,
    loss and model FLOPs/s for each variant in `spec["variants"]`."""
    if spec.get("config") == "offline":
        return train_side_recipe(spec)
    import resource
    import time

    import torch

    work, device, dtype = Path(spec["work"]), spec["device"], getattr(torch, spec["dtype"])
    steps, batch_size = spec["steps"], spec["batch_size"]
    rows = read_rows(work / "world" / spec["data"], work / "world" / "images", steps * batch_size)
    if spec["side"] == "ours":
        from llava_hf import LlavaForConditionalGeneration, LlavaProcessor
        from llava_hf.data import LlavaDataCollator

        model = LlavaForConditionalGeneration.from_pretrained(work / "ours", dtype=dtype, attn_implementation="sdpa")
        collator = LlavaDataCollator(LlavaProcessor.from_pretrained(work / "ours"))
        collator_name = "llava_hf LlavaDataCollator"
        examples = rows
    else:
        from transformers import LlavaForConditionalGeneration, LlavaProcessor

        model = LlavaForConditionalGeneration.from_pretrained(work / "hf", dtype=dtype, attn_implementation="sdpa")
        processor = LlavaProcessor.from_pretrained(work / "hf")
        try:
            from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

            collator = DataCollatorForVisionLanguageModeling(processor=processor, assistant_only_loss=True)
            collator_name = "trl DataCollatorForVisionLanguageModeling(assistant_only_loss=True)"
        except Exception as error:  # trl missing, or a trl that no longer has this collator
            if spec.get("require_trl", True):
                raise
            collator = PlainPaddedCollator(processor)
            collator_name = f"plain padded batches, every token labelled (trl not importable: {error})"
        examples = [{"images": r["images"], "messages": _trl_messages(r["messages"])} for r in rows]
    model.to(device).train()
    for p in model.model.vision_tower.parameters():
        p.requires_grad_(False)
    if spec.get("gradient_checkpointing"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    counts = count_parameters(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    vision = model.config.vision_config
    tower_length = (vision.image_size // vision.patch_size) ** 2 + 1  # patches + CLS
    image_token_id = model.config.image_token_id
    cuda = device.startswith("cuda")

    results = {}
    for variant in spec.get("variants", ["padded"]):
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        tokens = supervised = samples = positions = 0
        flops, elapsed, loss = 0.0, 0.0, float("nan")
        for step in range(steps):
            batch = collator(examples[step * batch_size : (step + 1) * batch_size])
            batch = unpad(batch) if variant == "unpadded" else batch
            batch = {k: v.to(device) for k, v in batch.items() if isinstance(v, torch.Tensor)}
            if "pixel_values" in batch:
                batch["pixel_values"] = batch["pixel_values"].to(dtype)
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            loss = model(**batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if cuda:
                torch.cuda.synchronize()
            if step > 0:  # step 0 warms up
                elapsed += time.perf_counter() - start
                step_tokens = int(batch["attention_mask"].sum())
                images = int(batch["pixel_values"].shape[0]) if "pixel_values" in batch else 0
                image_tokens = int((batch["input_ids"] == image_token_id).sum())
                tokens += step_tokens
                supervised += int((batch["labels"][:, 1:] != -100).sum())  # the positions the loss scores
                samples += int(batch["input_ids"].shape[0])
                positions += batch["input_ids"].numel()
                flops += model_flops(counts, step_tokens, image_tokens, images * tower_length)
        if cuda:
            peak = torch.cuda.max_memory_allocated() / 2**20
        else:  # the process's peak RSS so far (it only grows: later variants include earlier ones)
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        results[variant] = {
            "tokens_per_s": tokens / elapsed,
            "supervised_tokens_per_s": supervised / elapsed,
            "samples_per_s": samples / elapsed,
            "step_s": elapsed / (steps - 1),
            "model_flops_per_s": flops / elapsed,
            "padding_fraction": 1 - tokens / positions,
            "mean_tokens_per_sample": tokens / samples,
            "peak_mib": peak,
            "loss": float(loss.detach()),
            "load_average": os.getloadavg()[0],
        }
    return {
        "collator": collator_name,
        "params": counts["total"],
        "parameters": counts,
        "gradient_checkpointing": bool(spec.get("gradient_checkpointing")),
        "peak_memory": "torch.cuda.max_memory_allocated" if cuda else "process peak RSS",
        "variants": results,
    }


def train_side_recipe(spec: dict) -> dict:
    """One side of `--config offline` (run in its own process by `run_side`): `spec["side"]` is "ours" (the offline
    default), "ours_twin" (llava_hf on the convertible twin) or "peer" (transformers' Llava on the twin). Each step is
    the trainer's: fused LM head, SFTTrainer's loss, backward, clipping, AdamW; returns the per-step losses too."""
    import resource
    import time
    from contextlib import nullcontext

    import torch
    from trl.trainer.utils import add_fused_lm_head

    from llava_hf.training import _compact_fused_lm_head, set_trainable

    work, device, side = Path(spec["work"]), spec["device"], spec["side"]
    steps, batch_size = spec["steps"], spec["batch_size"]
    rows = read_rows(work / "mix.json", work / "images", steps * batch_size)
    if side == "peer":
        from transformers import LlavaForConditionalGeneration, LlavaProcessor
        from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

        path, head = work / "twin_hf", nullcontext
        model = LlavaForConditionalGeneration.from_pretrained(path, dtype=torch.float32, attn_implementation="sdpa")
        processor = LlavaProcessor.from_pretrained(path)
        collator = DataCollatorForVisionLanguageModeling(processor=processor, assistant_only_loss=True)
        examples = [{"images": r["images"], "messages": _trl_messages(r["messages"])} for r in rows]
    else:
        from llava_hf import LlavaForConditionalGeneration, LlavaProcessor
        from llava_hf.data import LlavaDataCollator

        # LlavaSFTTrainer.compute_loss enters the compaction around every loss computation.
        path, head = work / ("offline" if side == "ours" else "twin"), _compact_fused_lm_head
        model = LlavaForConditionalGeneration.from_pretrained(path, dtype=torch.float32, attn_implementation="sdpa")
        collator = LlavaDataCollator(LlavaProcessor.from_pretrained(path), padding_free=True)
        examples = rows
    # float32 master weights (the recipes' `dtype: auto`), autocast to bf16 as the Trainer's `bf16: true` does.
    if spec["dtype"] == "bfloat16":
        autocast = lambda: torch.autocast(device.split(":")[0], dtype=torch.bfloat16)  # noqa: E731
    else:
        autocast = nullcontext
    model.to(device).train()
    set_trainable(model, "2")  # LM + projector; the tower stays frozen (and in eval mode)
    # What SFTTrainer.__init__ adds: per-token log-probs from the hidden states, no (batch, length, vocab) logits.
    add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-5)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    losses, tokens, supervised, positions, samples, elapsed = [], 0, 0, 0, 0, 0.0
    for step in range(steps):
        batch = collator(examples[step * batch_size : (step + 1) * batch_size])
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        with autocast(), head():
            outputs = model(**batch, use_cache=False, fused_lm_head=True)
            loss = -outputs.log_probs.sum() / outputs.label_mask.sum().clamp(min=1)  # SFTTrainer.compute_loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        losses.append(float(loss.detach()))
        if step > 0:  # step 0 warms up
            elapsed += time.perf_counter() - start
            mask = batch.get("attention_mask")
            tokens += int(mask.sum()) if mask is not None else batch["input_ids"].numel()  # packed: no padding
            supervised += int(outputs.label_mask.sum())
            positions += batch["input_ids"].numel()
            samples += len(batch["cu_seq_lens_q"]) - 1 if "cu_seq_lens_q" in batch else batch["input_ids"].shape[0]
    if cuda:
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "model": f"{type(model).__module__}.{type(model).__name__} ({path.name})",
        "collator": type(collator).__name__ + (" (padding_free)" if side != "peer" else " (padded)"),
        "lm_head": "TRL fused head + llava_hf compaction" if side != "peer" else "TRL fused head",
        "params": sum(p.numel() for p in model.parameters()),
        "tokens_per_s": tokens / elapsed,
        "supervised_tokens_per_s": supervised / elapsed,
        "samples_per_s": samples / elapsed,
        "step_s": elapsed / (steps - 1),
        "padding_fraction": 1 - tokens / positions,
        "peak_mib": peak,
        "loss": losses[-1],
        "losses": losses,
        # This process keeps ~threads cores busy; more in the 1-minute load means another job shared the CPU.
        "load_average": os.getloadavg()[0],
    }


def run_side(
    side: str,
    work: Path,
    steps: int,
    batch_size: int,
    device: str,
    dtype: str,
    variants: tuple[str, ...] = ("padded",),
    data: str = "instruct.json",
    gradient_checkpointing: bool = False,
    require_trl: bool = True,
    timeout: float | None = None,
    config: str = "tiny",
) -> dict:
    """`train_side` for `side` ("ours" or "peer"; also "ours_twin" with `config="offline"`) in a fresh process, so
    that its peak memory is its own."""
    spec = {
        "side": side,
        "work": str(work),
        "steps": steps,
        "batch_size": batch_size,
        "device": device,
        "dtype": dtype,
        "variants": list(variants),
        "data": data,
        "gradient_checkpointing": gradient_checkpointing,
        "require_trl": require_trl,
        "config": config,
    }
    command = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    out = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"{side} side failed (exit {out.returncode}):\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def print_table(sides: dict[str, dict], mix: dict | None = None) -> None:
    """The sides' numbers (and the mix's distribution) as Markdown tables, for reading and for bench/RESULTS.md."""
    if mix:
        tokens, supervised, share = mix["tokens"], mix["supervised_tokens"], mix["share"]
        print(
            f"mix: {mix['rows']} rows; single-turn {share['single']:.0%}, multi-turn {share['multi']:.0%}, "
            f"text-only {share['text']:.0%}; {mix['turns_mean']} turns per row; "
            f"{mix['image_tokens_per_image']} tokens per image"
        )
        print("| tokens per row | mean | p50 | p90 |\n|---|---|---|---|")
        for name, values in (("all", tokens), ("supervised", supervised)):
            print(f"| {name} | {values['mean']} | {values['p50']} | {values['p90']} |")
        print()
    print("| side | tokens/s | supervised tokens/s | s/step | padding | peak MiB | loss (last step) | load (1 min) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, side in sides.items():
        print(
            f"| {name} | {side['tokens_per_s']:.1f} | {side['supervised_tokens_per_s']:.1f} | {side['step_s']:.2f} "
            f"| {side['padding_fraction']:.1%} | {side['peak_mib']:,.0f} | {side['loss']:.4f} | "
            f"{side['load_average']:.1f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", choices=("tiny", "offline"), default="tiny")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # one side's run, as started by run_side
    args = parser.parse_args()
    if args.child:
        print(json.dumps(train_side(json.loads(args.child))))
        return
    mix = None
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.config == "offline":
            mix = prepare_offline(work, args.steps * args.batch_size)
            names = ("ours", "ours_twin", "peer")
        else:
            prepare(work)
            names = ("ours", "peer")
        runs = {
            name: run_side(name, work, args.steps, args.batch_size, args.device, args.dtype, config=args.config)
            for name in names
        }
    if args.config == "offline":
        sides = runs
    else:
        sides = {name: {"params": run["params"], **run["variants"]["padded"]} for name, run in runs.items()}
    ours, peer = sides["ours"], sides["peer"]
    result = {
        "bench": "train_throughput",
        "config": args.config,
        "device": args.device,
        "machine": platform.processor() or platform.machine(),
        "dtype": args.dtype,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "ours": ours,
        "peer_builtin_llava_trl_collator": peer,
        "tokens_per_s_ratio": round(ours["tokens_per_s"] / peer["tokens_per_s"], 3),
        "peak_memory_ratio": round(ours["peak_mib"] / peer["peak_mib"], 3),
        "loss_difference": ours["loss"] - peer["loss"],
    }
    if mix is not None:
        twin = sides["ours_twin"]
        result.update(
            mix=mix,
            ours_twin=twin,
            twin_tokens_per_s_ratio=round(twin["tokens_per_s"] / peer["tokens_per_s"], 3),
            twin_peak_memory_ratio=round(twin["peak_mib"] / peer["peak_mib"], 3),
            # Same weights, same batches: the twin's losses are the peer's, step by step (up to bf16 rounding).
            loss_difference=max(abs(a - b) for a, b in zip(twin["losses"], peer["losses"])),
        )
    if args.device == "cuda":
        import torch

        name = torch.cuda.get_device_name()
        peak_flops = spec_bf16_flops(name)
        result["device_name"] = name
        if peak_flops and "model_flops_per_s" in ours:
            result["mfu_ours"] = ours["model_flops_per_s"] / peak_flops
            result["mfu_peer"] = peer["model_flops_per_s"] / peak_flops
    print_table(sides, mix)
    if mix is not None:
        for name in ("ours_twin", "peer"):
            print(f"losses per step, {name}: {' '.join(f'{loss:.4f}' for loss in sides[name]['losses'])}")
    print(
        f"tokens/s ours / peer: {result['tokens_per_s_ratio']}; peak memory: {result['peak_memory_ratio']}; "
        f"largest loss difference{' (twin vs peer, per step)' if mix else ''}: {result['loss_difference']:.2e}"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
