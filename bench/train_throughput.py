"""Stage-2 training throughput: llava_hf + its collator vs transformers' built-in Llava + TRL's default VLM collator.

    python bench/train_throughput.py [--steps 8 --batch-size 4]                  # CPU, fp32
    python bench/train_throughput.py --device cuda --dtype bfloat16 --steps 30   # GPU variant: adds MFU

Same weights (converted with `llava-hf convert`), same data (shapes-world instruction rows, 224-px images -> 256
image tokens), same optimizer and steps; each side runs in a fresh subprocess so peak memory is its own. Prints one
JSON line: tokens/s (non-padding tokens), peak memory and the ratios ours / peer.

MFU counts the model FLOPs of the path that trains: 6 x parameters x tokens for the trained parts (LM and projector)
and 2 x parameters x tokens for the frozen vision tower, which runs forward only; embedding lookups and the attention
scores themselves are not counted. `bench/gpu_check.py` imports `prepare`, `run_side`, `read_rows` and `unpad`.
"""

import argparse
import json
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
    from tester import tiny_tokenizer

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
        tokens = samples = positions = 0
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
                samples += int(batch["input_ids"].shape[0])
                positions += batch["input_ids"].numel()
                flops += model_flops(counts, step_tokens, image_tokens, images * tower_length)
        if cuda:
            peak = torch.cuda.max_memory_allocated() / 2**20
        else:  # the process's peak RSS so far (it only grows: later variants include earlier ones)
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        results[variant] = {
            "tokens_per_s": tokens / elapsed,
            "samples_per_s": samples / elapsed,
            "step_s": elapsed / (steps - 1),
            "model_flops_per_s": flops / elapsed,
            "padding_fraction": 1 - tokens / positions,
            "mean_tokens_per_sample": tokens / samples,
            "peak_mib": peak,
            "loss": float(loss.detach()),
        }
    return {
        "collator": collator_name,
        "params": counts["total"],
        "parameters": counts,
        "gradient_checkpointing": bool(spec.get("gradient_checkpointing")),
        "peak_memory": "torch.cuda.max_memory_allocated" if cuda else "process peak RSS",
        "variants": results,
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
) -> dict:
    """`train_side` for `side` ("ours" or "peer") in a fresh process, so that its peak memory is its own."""
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
    }
    command = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    out = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"{side} side failed (exit {out.returncode}):\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # one side's run, as started by run_side
    args = parser.parse_args()
    if args.child:
        print(json.dumps(train_side(json.loads(args.child))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        prepare(work)
        sides = [
            run_side(side, work, args.steps, args.batch_size, args.device, args.dtype) for side in ("ours", "peer")
        ]
    ours, peer = ({"params": s["params"], **s["variants"]["padded"]} for s in sides)
    result = {
        "bench": "train_throughput",
        "device": args.device,
        "machine": platform.processor() or platform.machine(),
        "dtype": args.dtype,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "ours": ours,
        "peer_builtin_llava_trl_collator": peer,
        "tokens_per_s_ratio": round(ours["tokens_per_s"] / peer["tokens_per_s"], 3),
        "peak_memory_ratio": round(ours["peak_mib"] / peer["peak_mib"], 3),
    }
    if args.device == "cuda":
        import torch

        name = torch.cuda.get_device_name()
        peak_flops = spec_bf16_flops(name)
        result["device_name"] = name
        if peak_flops:
            result["mfu_ours"] = ours["model_flops_per_s"] / peak_flops
            result["mfu_peer"] = peer["model_flops_per_s"] / peak_flops
    print(json.dumps(result))


if __name__ == "__main__":
    main()
