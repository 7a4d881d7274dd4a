"""The offline quickstart (`make quickstart`): the whole LLaVA recipe on real pretrained backbones, no Hub.

1. generate the synthetic shapes world;
2. stage 1 and stage 2 through `accelerate launch recipes/sft.py` (EfficientNet-Lite0 -> mlp2x_gelu -> SmolLM2);
3. held-out multiple-choice accuracy, and the blind baseline (grey images), with the evaluation runner;
4. print both and the wall time;
5. load the checkpoint with AutoModelForImageTextToText and answer a question about a new image.

    python recipes/quickstart.py [--num-images 1200 --stage1-steps N --stage2-steps N]

Steps, batch sizes and learning rates are the recipes' (recipes/offline/stage{1,2}.yaml); the options override them.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(command: list[str]) -> None:
    print("$ " + " ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=ROOT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", default="outputs/quickstart")
    parser.add_argument("--num-images", type=int, default=1200)
    parser.add_argument("--test-fraction", type=float, default=0.07)
    parser.add_argument("--stage1-steps", type=int, help="default: max_steps of recipes/offline/stage1.yaml")
    parser.add_argument("--stage2-steps", type=int, help="default: max_steps of recipes/offline/stage2.yaml")
    args = parser.parse_args()

    start = time.perf_counter()
    out = Path(args.output_dir)
    shapes, stage1, stage2 = out / "shapes", out / "stage1", out / "stage2"
    bin_dir = Path(sys.executable).parent
    import torch

    # The recipes train under bf16 autocast; on a machine without CUDA, TrainingArguments must be told to use the CPU.
    launch_config, device = (
        ("single_gpu.yaml", []) if torch.cuda.is_available() else ("cpu.yaml", ["--use_cpu", "true"])
    )
    accelerate = [str(bin_dir / "accelerate"), "launch", "--config_file", f"recipes/accelerate/{launch_config}"]

    run(
        [str(bin_dir / "llava-hf"), "data", "shapes", str(shapes), "--num-images", str(args.num_images), "--seed", "0"]
        + ["--test-fraction", str(args.test_fraction)]
    )
    common = ["--image_root", str(shapes / "images"), "--vision_feature_cache", str(out / "features")] + device
    run(
        accelerate
        + ["recipes/sft.py", "--config", "recipes/offline/stage1.yaml", "--train_files", str(shapes / "stage1.json")]
        + common
        + ["--output_dir", str(stage1)]
        + (["--max_steps", str(args.stage1_steps)] if args.stage1_steps else [])
    )
    run(
        accelerate
        + ["recipes/sft.py", "--config", "recipes/offline/stage2.yaml", "--model_name_or_path", str(stage1)]
        + ["--train_files", str(shapes / "mcq_train.json"), str(shapes / "mcq_context.json")]
        + common
        + ["--output_dir", str(stage2)]
        + (["--max_steps", str(args.stage2_steps)] if args.stage2_steps else [])
    )
    run(
        [str(bin_dir / "llava-hf"), "eval", "shapes", "--model", str(stage2), "--world", str(shapes)]
        # Weights in bf16 (training ran its matmuls in bf16 under autocast): 1.7x faster than float32 on a CPU with
        # AVX512-BF16; results.json records the dtype.
        + ["--output-dir", str(out / "eval"), "--batch-size", "32", "--dtype", "bfloat16"]
    )
    metrics = json.loads((out / "eval" / "results.json").read_text())["metrics"]
    minutes = (time.perf_counter() - start) / 60

    # The trained checkpoint, through the Auto classes, on an image it has never seen.
    from transformers import AutoModelForImageTextToText, AutoProcessor

    import llava_hf  # noqa: F401
    from llava_hf.data.scienceqa import format_cqm
    from llava_hf.data.shapes import MCQ_MAX_NEW_TOKENS, MCQ_PROMPT, generate_scene, questions, render

    model = AutoModelForImageTextToText.from_pretrained(stage2).eval()
    processor = AutoProcessor.from_pretrained(stage2)
    scene = generate_scene(seed=12345, index=0)
    question = questions(scene)[0]
    text = format_cqm(question["question"], "", question["choices"], has_image=False) + MCQ_PROMPT
    messages = [
        {"role": "user", "content": [{"type": "image", "image": render(scene)}, {"type": "text", "text": text}]}
    ]
    inputs = processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    generated = model.generate(**inputs, max_new_tokens=MCQ_MAX_NEW_TOKENS, do_sample=False)
    answer = processor.decode(generated[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)

    print("\n" + "=" * 72)
    print(
        f"held-out accuracy: {metrics['accuracy']:.1f}% on {metrics['count']} questions (per kind: {_fmt(metrics['by_kind'])})"
    )
    print(
        f"blind baseline (grey images): {metrics['blind_accuracy']:.1f}%  -> the image is worth {metrics['gap']:+.1f} points"
    )
    print(f"chance (mean of 1 / number of options): {metrics['chance']:.1f}%")
    # What stage 2 ran on, as its training record states it (device name, threads / processes).
    machine = json.loads((stage2 / "llava_hf_training.json").read_text())["hardware"]["device_name"]
    print(f"wall time: {minutes:.1f} min on {machine}")
    print(
        f"new image: {question['question']} -> {answer!r} (truth: {chr(65 + question['answer'])}. {question['choices'][question['answer']]})"
    )
    print(f"checkpoint: {stage2.resolve()} (AutoModelForImageTextToText / pipeline('image-text-to-text'))")
    summary = {
        "accuracy": metrics["accuracy"],
        "blind_accuracy": metrics["blind_accuracy"],
        "chance": metrics["chance"],
        "minutes": round(minutes, 1),
        "by_kind": metrics["by_kind"],
        "questions": metrics["count"],
        "machine": machine,
        "args": vars(args),
    }
    (out / "quickstart.json").write_text(json.dumps(summary, indent=1))


def _fmt(by_kind: dict) -> str:
    return ", ".join(f"{k} {v:.0f}%" for k, v in by_kind.items())


if __name__ == "__main__":
    main()
