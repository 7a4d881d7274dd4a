"""Cost of back-propagating through the frozen vision tower: a stage-1 step (projector trains) with activation
checkpointing, the tower with an autograd graph (as earlier llava_hf versions ran it) against without one (now).

    python bench/frozen_tower.py [--device cuda --dtype bfloat16] [--batch-size 2] [--layers 12]

Activation checkpointing calls `enable_input_require_grads`, which hooks every sub-model's input embeddings, the
tower's patch embedding included; a tower that runs with grad enabled then records its whole forward for a backward
that only produces gradients nobody uses. The "graph" variant restores that behaviour by running the tower's forward
outside `torch.no_grad`.

Prints one JSON line: device, dtype, versions, and per variant the bytes saved for backward (a `saved_tensors_hooks`
count, deduplicated by storage), the peak memory of one step (CPU: RSS growth in a fresh process; CUDA:
`max_memory_allocated`), the floating-point operations of one step (`FlopCounterMode`) and the step time
(`torch.utils.benchmark` median, best of interleaved rounds).
"""

import argparse
import json
import platform
import resource
import subprocess
import sys

import torch
import torch.utils.benchmark as benchmark
import transformers
from torch.utils.flop_counter import FlopCounterMode
from transformers import CLIPVisionConfig, LlamaConfig

from llava_hf import LlavaConfig, LlavaForConditionalGeneration
from llava_hf.modeling_llava import LlavaModel

VARIANTS = ("graph", "no_grad")  # before / after


def tower_with_graph(self, pixel_values):
    """`LlavaModel.get_image_features` as it was: the tower runs in whatever grad mode the caller is in."""
    selected = self._vision_features(pixel_values.to(dtype=self.vision_tower.dtype))
    return self.multi_modal_projector(selected)


def build(args) -> tuple[LlavaForConditionalGeneration, dict[str, torch.Tensor]]:
    vision = CLIPVisionConfig(  # CLIP ViT-B/16 at 224 px: 196 image tokens
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=args.layers,
        num_attention_heads=12,
        image_size=224,
        patch_size=16,
    )
    text = LlamaConfig(
        hidden_size=512,
        intermediate_size=1408,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=8,
        vocab_size=32064,
        max_position_embeddings=1024,
    )
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=32000, projector_type="mlp2x_gelu")
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration._from_config(config, attn_implementation="sdpa", dtype=args.dtype)
    model = model.to(args.device)
    for name, parameter in model.named_parameters():  # stage 1
        parameter.requires_grad_("multi_modal_projector" in name)
    model.activation_checkpointing_enable()  # as the Trainer's `gradient_checkpointing=True` does
    model.train()

    generator = torch.Generator().manual_seed(0)
    n_image = config.image_seq_length
    text_ids = torch.randint(3, 32000, (args.batch_size, args.text_len), generator=generator)
    image_ids = torch.full((args.batch_size, n_image), config.image_token_id)
    input_ids = torch.cat([torch.ones(args.batch_size, 1, dtype=torch.long), image_ids, text_ids], 1)
    labels = input_ids.clone()
    labels[:, : 1 + n_image] = -100
    pixel_values = torch.randn(args.batch_size, 3, 224, 224, generator=generator)
    inputs = {
        "input_ids": input_ids.to(args.device),
        "attention_mask": torch.ones_like(input_ids).to(args.device),
        "pixel_values": pixel_values.to(args.device, args.dtype),
        "labels": labels.to(args.device),
    }
    return model, inputs


def step(model, inputs) -> None:
    model.zero_grad(set_to_none=True)
    model(**inputs).loss.backward()


def use_variant(variant: str) -> None:
    if variant == "graph":
        LlavaModel.get_image_features = tower_with_graph


def saved_for_backward(model, inputs) -> int:
    """Bytes of the tensors autograd keeps for the backward of one forward (each storage counted once)."""
    storages: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = model(**inputs).loss
    loss.backward()
    model.zero_grad(set_to_none=True)
    return sum(storages.values())


def step_flops(model, inputs) -> int:
    """Floating-point operations of one forward + backward (`FlopCounterMode`: matmuls, convolutions, attention)."""
    with FlopCounterMode(display=False) as counter:
        step(model, inputs)
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def peak_memory(args, variant: str) -> int:
    """Peak memory of one step above what the built model holds. CPU: RSS growth, in a fresh process."""
    if args.device == "cuda":
        use_variant(variant)
        model, inputs = build(args)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        step(model, inputs)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    command = [sys.executable, __file__, "--rss-of", variant, "--batch-size", str(args.batch_size)]
    command += [
        "--layers",
        str(args.layers),
        "--text-len",
        str(args.text_len),
        "--dtype",
        str(args.dtype).removeprefix("torch."),
    ]
    return int(subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip())


def rss_of(args, variant: str) -> None:
    use_variant(variant)
    model, inputs = build(args)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    step(model, inputs)
    print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)  # Linux: KiB


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--layers", type=int, default=12, help="vision tower depth (ViT-B/16 has 12)")
    parser.add_argument("--text-len", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--min-run-time", type=float, default=10.0)
    parser.add_argument("--rss-of", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.dtype = getattr(torch, args.dtype)
    if args.rss_of:
        rss_of(args, args.rss_of)
        return

    original = LlavaModel.get_image_features
    results = {variant: {"peak_memory_mib": peak_memory(args, variant) / 2**20} for variant in VARIANTS}
    models = {}
    for variant in VARIANTS:
        LlavaModel.get_image_features = original
        use_variant(variant)
        model, inputs = build(args)
        results[variant]["saved_for_backward_mib"] = saved_for_backward(model, inputs) / 2**20
        results[variant]["step_gflop"] = step_flops(model, inputs) / 1e9
        models[variant] = (model, inputs, LlavaModel.get_image_features)
    LlavaModel.get_image_features = original

    # Interleave the variants over several rounds so that machine noise hits both alike; keep the best median.
    times: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    for _ in range(args.rounds):
        for variant, (model, inputs, get_image_features) in models.items():
            LlavaModel.get_image_features = get_image_features
            step(model, inputs)  # warm-up
            timer = benchmark.Timer(
                stmt="step(model, inputs)", globals={"step": step, "model": model, "inputs": inputs}
            )
            times[variant].append(timer.blocked_autorange(min_run_time=args.min_run_time).median)
    LlavaModel.get_image_features = original
    for variant in VARIANTS:
        results[variant]["step_s"] = min(times[variant])

    before, after = results["graph"], results["no_grad"]
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else cpu_name()
    print(
        json.dumps(
            {
                "bench": "frozen_tower",
                "device": args.device,
                "device_name": device_name,
                "threads": torch.get_num_threads(),
                "dtype": str(args.dtype).removeprefix("torch."),
                "batch_size": args.batch_size,
                "tower_layers": args.layers,
                "seq_len": int(inputs["input_ids"].shape[1]),
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "before_graph": before,
                "after_no_grad": after,
                "saved_for_backward_ratio": after["saved_for_backward_mib"] / before["saved_for_backward_mib"],
                "peak_memory_ratio": after["peak_memory_mib"] / before["peak_memory_mib"],
                "step_flop_ratio": after["step_gflop"] / before["step_gflop"],
                "step_time_ratio": after["step_s"] / before["step_s"],
            }
        )
    )


if __name__ == "__main__":
    main()
