"""Stage-2 training throughput: llava_hf + its collator vs transformers' built-in Llava + TRL's default VLM collator.

    python bench/train_throughput.py [--steps 8 --batch-size 4]                  # CPU, fp32
    python bench/train_throughput.py --device cuda --dtype bfloat16 --steps 30   # GPU variant: adds MFU

Same weights (converted with `llava-hf convert`), same data (shapes-world instruction rows, 224-px images -> 256
image tokens), same optimizer and steps; each side runs in a fresh subprocess so peak memory is its own. Prints one
JSON line: tokens/s (non-padding tokens), peak memory and the ratios ours / peer.
"""

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
import torch
side, work, steps, batch_size, device, dtype = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], getattr(torch, sys.argv[6])
from llava_hf.data import load_llava_dataset
dataset, _ = load_llava_dataset(f"{work}/world/instruct.json", image_root=f"{work}/world/images")
rows = [dataset[i] for i in range(steps * batch_size)]
if side == "ours":
    from llava_hf import LlavaForConditionalGeneration, LlavaProcessor
    from llava_hf.data import LlavaDataCollator
    model = LlavaForConditionalGeneration.from_pretrained(f"{work}/ours", dtype=dtype, attn_implementation="sdpa")
    collator = LlavaDataCollator(LlavaProcessor.from_pretrained(f"{work}/ours"))
    examples = [{"id": r["id"], "images": r["images"], "messages": r["messages"]} for r in rows]
else:
    from transformers import LlavaForConditionalGeneration, LlavaProcessor
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling
    model = LlavaForConditionalGeneration.from_pretrained(f"{work}/hf", dtype=dtype, attn_implementation="sdpa")
    collator = DataCollatorForVisionLanguageModeling(processor=LlavaProcessor.from_pretrained(f"{work}/hf"), assistant_only_loss=True)
    def trl_messages(messages):
        return [{"role": m["role"], "content": [{"type": "image"} if p["type"] == "image" else {"type": "text", "text": p["text"]} for p in m["content"]]} for m in messages]
    examples = [{"images": r["images"], "messages": trl_messages(r["messages"])} for r in rows]
model.to(device).train()
for p in model.model.vision_tower.parameters():
    p.requires_grad_(False)
optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
tokens, elapsed = 0, 0.0
for step in range(steps):
    batch = collator(examples[step * batch_size:(step + 1) * batch_size])
    batch = {k: v.to(device) for k, v in batch.items()}
    if "pixel_values" in batch:
        batch["pixel_values"] = batch["pixel_values"].to(dtype)
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    loss = model(**batch).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if device == "cuda":
        torch.cuda.synchronize()
    if step > 0:  # step 0 warms up
        elapsed += time.perf_counter() - start
        tokens += int(batch["attention_mask"].sum())
params = sum(p.numel() for p in model.parameters())
peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"tokens_per_s": tokens / elapsed, "peak_mib": peak, "params": params, "loss": float(loss)}))
"""


def prepare(work: Path) -> None:
    import torch
    from transformers import CLIPImageProcessor, CLIPVisionConfig, LlamaConfig
    from transformers import LlavaConfig as HFLlavaConfig
    from transformers import LlavaForConditionalGeneration as HFLlava
    from transformers import LlavaProcessor as HFLlavaProcessor

    from llava_hf import get_chat_template
    from llava_hf.convert import convert
    from llava_hf.data.shapes import build_shapes_world

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from tester import tiny_tokenizer

    build_shapes_world(work / "world", num_images=64, seed=0, progress=False)
    tokenizer = tiny_tokenizer()
    vision = CLIPVisionConfig(
        hidden_size=256,
        intermediate_size=1024,
        num_hidden_layers=4,
        num_attention_heads=4,
        image_size=224,
        patch_size=14,
    )
    text = LlamaConfig(
        hidden_size=512,
        intermediate_size=1408,
        num_hidden_layers=6,
        num_attention_heads=8,
        num_key_value_heads=8,
        vocab_size=len(tokenizer),
        max_position_embeddings=4096,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    HFLlava(
        HFLlavaConfig(
            vision_config=vision,
            text_config=text,
            image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
            image_seq_length=256,
        )
    ).save_pretrained(work / "hf")
    HFLlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}),
        tokenizer=tokenizer,
        patch_size=14,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=get_chat_template("vicuna_v1"),
    ).save_pretrained(work / "hf")
    convert(work / "hf", work / "ours")


def run(side: str, work: Path, args: argparse.Namespace) -> dict:
    command = [
        sys.executable,
        "-c",
        CHILD,
        side,
        str(work),
        str(args.steps),
        str(args.batch_size),
        args.device,
        args.dtype,
    ]
    out = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        prepare(work)
        ours, peer = run("ours", work, args), run("peer", work, args)
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

        # MFU: 6 * params * tokens/s over the card's dense bf16 peak (H100 SXM 989 TFLOPS, H200 the same).
        peak_flops = 989e12 if any(n in torch.cuda.get_device_name() for n in ("H100", "H200")) else None
        result["device_name"] = torch.cuda.get_device_name()
        if peak_flops:
            result["mfu_ours"] = 6 * ours["params"] * ours["tokens_per_s"] / peak_flops
            result["mfu_peer"] = 6 * peer["params"] * peer["tokens_per_s"] / peak_flops
    print(json.dumps(result))


if __name__ == "__main__":
    main()
