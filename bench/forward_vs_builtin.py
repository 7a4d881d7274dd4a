"""Training-step and generation speed of llava_hf vs transformers' built-in Llava, same weights, same inputs.

    python bench/forward_vs_builtin.py [--device cuda --dtype bfloat16 --attn sdpa]

Prints one JSON line: device, dtype, versions, and the time ratio ours / built-in (1.0 = parity) for a
forward+backward step and for greedy generation. Results go in bench/RESULTS.md with the machine they came from.
"""

import argparse
import json
import platform
import tempfile

import torch
import torch.utils.benchmark as benchmark
import transformers
from transformers import CLIPVisionConfig, LlamaConfig
from transformers import LlavaConfig as HFLlavaConfig
from transformers import LlavaForConditionalGeneration as HFLlava

from llava_hf import LlavaForConditionalGeneration
from llava_hf.convert import convert


def build(device: str, dtype: torch.dtype, attn: str):
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
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=8,
        vocab_size=32064,
        max_position_embeddings=2048,
    )
    torch.manual_seed(0)
    builtin = HFLlava(
        HFLlavaConfig(vision_config=vision, text_config=text, image_token_index=32000, image_seq_length=256)
    )
    with tempfile.TemporaryDirectory() as tmp:
        builtin.save_pretrained(f"{tmp}/hf")
        convert(f"{tmp}/hf", f"{tmp}/ours")
        ours = LlavaForConditionalGeneration.from_pretrained(f"{tmp}/ours", attn_implementation=attn, dtype=dtype)
    builtin = builtin.to(device=device, dtype=dtype)
    builtin.set_attn_implementation(attn)
    return ours.to(device), builtin


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--attn", default="sdpa")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--text-len", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    ours, builtin = build(args.device, dtype, args.attn)

    generator = torch.Generator().manual_seed(0)
    text = torch.randint(3, 32000, (args.batch_size, args.text_len), generator=generator)
    image = torch.full((args.batch_size, 256), 32000)
    input_ids = torch.cat([torch.ones(args.batch_size, 1, dtype=torch.long), image, text], 1).to(args.device)
    pixel_values = torch.randn(args.batch_size, 3, 224, 224, generator=generator).to(args.device, dtype)
    inputs = {"input_ids": input_ids, "pixel_values": pixel_values, "attention_mask": torch.ones_like(input_ids)}

    def step(model):
        model.zero_grad(set_to_none=True)
        model(**inputs, labels=input_ids).loss.backward()

    def generate(model):
        with torch.no_grad():
            model.generate(**inputs, max_new_tokens=16, do_sample=False, min_new_tokens=16)

    results = {}
    for name, fn in (("train_step", step), ("generate_16", generate)):
        fn(ours)  # warm-up
        fn(builtin)
        times: dict[str, list[float]] = {"ours": [], "builtin": []}
        # Interleave the two models over several rounds so that machine noise hits both alike; keep the best.
        for _ in range(args.rounds):
            for label, model in (("ours", ours), ("builtin", builtin)):
                timer = benchmark.Timer(stmt="fn(model)", globals={"fn": fn, "model": model})
                times[label].append(timer.blocked_autorange(min_run_time=1).median)
        ours_s, builtin_s = min(times["ours"]), min(times["builtin"])
        results[name] = {"ours_s": ours_s, "builtin_s": builtin_s, "ratio": ours_s / builtin_s}

    print(
        json.dumps(
            {
                "bench": "forward_vs_builtin",
                "device": args.device,
                "device_name": torch.cuda.get_device_name()
                if args.device == "cuda"
                else platform.processor() or platform.machine(),
                "dtype": args.dtype,
                "attn": args.attn,
                "batch_size": args.batch_size,
                "seq_len": int(input_ids.shape[1]),
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                **results,
            }
        )
    )


if __name__ == "__main__":
    main()
