"""One command that checks llava_hf's CUDA paths on one GPU: numerics, sdpa's flash kernel, training, throughput.

    # one H100 / H200: about 4-5 minutes, at most 330 s of checks (--time-limit)
    timeout 360 python bench/gpu_check.py              # -> bench/gpu_check.json, or $OUT/gpu_check.json if OUT is set

    # the same checks at toy size on the CPU (under a minute on 2 cores; tests/bench/test_gpu_check.py runs it)
    python bench/gpu_check.py --cpu-tiny --output /tmp/gpu_check.json

Writes one JSON file (and the subprocesses' output beside it, `.log`) with a section per check, each `ok`, `failed`
or `skipped`, with the reason and, for a failure, the exception; a failing check never stops the others, and the
file is rewritten after every section. Exit code 1 when any section failed.

- `environment`: versions, the device, which FlashAttention packages import (flash-attn 2 `flash_attn`, 3
  `flash_attn_interface`, 4 `flash_attn.cute`) and what `attn_implementation="auto"` picks; a measured bf16 matmul rate.
- `prepare`: a random transformers Llava (GPU: a CLIP ViT-L/14-336-shaped tower, 24 layers, hidden 1024, 576 image
  tokens, and a Llama with Qwen2.5-0.5B's shape, 0.63B parameters with its untied head) saved with its processor
  and converted with `llava-hf convert`, and the shapes world. Its LM head is scaled so that next-token
  distributions are peaked, as a trained model's are (a random head gives near-uniform ones: no confident top-1).
- `numerics`: bf16 forward and greedy generation against fp32 eager, for llava_hf and transformers' built-in Llava
  with the same weights, with sdpa, flex_attention and each FlashAttention that imports: top-1 agreement where the
  fp32 top-1 probability is over 0.5, logit differences, and the first step where greedy outputs diverge.
- `sdpa_flash`: whether sdpa can run its flash kernel on llava_hf's batches (right- and left-padded with a mask,
  unpadded), forced with `sdpa_kernel(SDPBackend.FLASH_ATTENTION)`, and which kernel it picks by itself.
- `throughput`: tokens/s, samples/s, peak memory and MFU of stage-2 training steps (bench/train_throughput.py),
  llava_hf + its collator vs the built-in Llava + TRL's VLM collator (plain padded batches without trl, said so),
  padded batches vs unpadded ones. MFU: model FLOPs (6 N T trained, 2 N T for the frozen tower) over the measured
  bf16 matmul rate and over the card's spec figure (`--peak-flops`; default: the datasheet figure of a listed card, `train_throughput.SPEC_BF16_FLOPS`).
- `training` / `training_fsdp`: `recipes/sft.py` stage 2 for a few steps (bf16, gradient checkpointing, the real
  collator) through `accelerate launch`, one process, then FSDP with one process; the saved checkpoint must reload
  through `AutoModelForImageTextToText` with every tensor non-empty and finite. Needs trl, datasets and ijson.

Random weights only, built from configs: nothing is downloaded. Without llava_hf installed, the source tree's `src/`
is used.
"""

import argparse
import importlib
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_throughput  # noqa: E402  (bench/ is not a package)

# Training (the recipe on a GPU, the check's point) before throughput; if the time runs short, the FSDP run goes.
SECTIONS = ("environment", "prepare", "numerics", "sdpa_flash", "training", "throughput", "training_fsdp")
# A section starts only with at least this share of its time cap left: squeezed into less, it would fail on the
# clock instead of on what it checks. It is skipped for time instead, and the exit code says so (2).
MIN_SHARE_OF_CAP = 1 / 3
NEEDS_PREPARE = {"numerics", "sdpa_flash", "training", "training_fsdp", "throughput"}
# flex_attention last: it compiles its kernels, the slowest step, and a section that runs out of time keeps the rest.
IMPLEMENTATIONS = ("sdpa", "flash_attention_2", "flash_attention_3", "flash_attention_4", "flex_attention")
# The module each FlashAttention version is imported as (flash-attn-4 ships inside the `flash_attn` namespace).
FLASH_MODULES = {
    "flash_attention_2": "flash_attn",
    "flash_attention_3": "flash_attn_interface",
    "flash_attention_4": "flash_attn.cute",
}
CONFIDENT = 0.5  # "confident" positions: the fp32 reference gives its top-1 token more than this probability
FLEX_START_S = 45  # flex_attention starts only with this much of the section's time left (its kernels compile)
DISTRIBUTIONS = (
    "torch",
    "transformers",
    "accelerate",
    "peft",
    "timm",
    "trl",
    "datasets",
    "ijson",
    "pyarrow",
    "safetensors",
    "tokenizers",
    "huggingface-hub",
    "triton",
    "flash-attn",
    "flash-attn-3",
    "flash-attn-4",
    "llava-hf",
)

# A CLIP ViT-L/14 at 336 px (LLaVA-1.5's tower) and a Llama with Qwen2.5-0.5B's shape (untied head).
GPU_VISION = dict(
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=24,
    num_attention_heads=16,
    image_size=336,
    patch_size=14,
    projection_dim=768,
)
GPU_TEXT = dict(
    hidden_size=896,
    intermediate_size=4864,
    num_hidden_layers=24,
    num_attention_heads=14,
    num_key_value_heads=2,
    vocab_size=151936,
    max_position_embeddings=4096,
    rms_norm_eps=1e-6,
    tie_word_embeddings=False,
)
# tests/fixtures/tester.py's tiny CLIP (8 px, 16 image tokens) and tiny Llama; positions for the shapes world's
# long rows.
TINY_VISION = dict(
    hidden_size=32,
    intermediate_size=37,
    num_hidden_layers=2,
    num_attention_heads=4,
    image_size=8,
    patch_size=2,
    projection_dim=32,
)
TINY_TEXT = dict(
    hidden_size=32,
    intermediate_size=37,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=1024,
    tie_word_embeddings=False,
)


class Skip(Exception):
    """The check cannot run here; the message says why."""


class CheckFailed(Exception):
    """The check ran and found a problem; the message says what."""


class Terminated(BaseException):
    """SIGTERM (an outer `timeout`): stop, end what this script started, keep what was measured. Not an Exception,
    so that no check's error handling takes it for a failure of its own."""


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated(f"stopped by signal {signum} (an outer time limit?)")


@dataclass
class Plan:
    """What to check and at which size (the GPU run and the CPU-tiny run differ only here)."""

    mode: str
    device: str
    vision: dict
    text: dict
    num_images: int
    logit_std: float
    text_lengths: list[int]  # text tokens of the numerics batch's sequences (one image each, left-padded)
    new_tokens: int
    min_agreement: float
    train_steps: int
    train_batch_size: int
    throughput_steps: int
    throughput_batch_size: int
    throughput_dtype: str
    throughput_data: str
    peak_flops: float | None
    caps: dict[str, float]  # the most seconds each section may take
    inject_failure: str | None = None


def make_plan(args: argparse.Namespace) -> Plan:
    if args.tiny:
        return Plan(
            mode="cpu-tiny" if args.device == "cpu" else f"{args.device}-tiny",
            device=args.device,
            vision=TINY_VISION,
            text=TINY_TEXT,
            num_images=8,
            logit_std=8.0,
            text_lengths=[24, 16],
            new_tokens=8,
            min_agreement=args.min_agreement,
            train_steps=2,
            train_batch_size=2,
            throughput_steps=3,
            throughput_batch_size=2,
            throughput_dtype="float32" if args.device == "cpu" else "bfloat16",
            throughput_data="mcq_train.json",
            peak_flops=args.peak_flops,
            caps=dict.fromkeys(SECTIONS, 240.0),
            inject_failure=args.inject_failure,
        )
    return Plan(
        mode="gpu" if args.device == "cuda" else args.device,
        device=args.device,
        vision=GPU_VISION,
        text=GPU_TEXT,
        num_images=64,
        logit_std=8.0,
        text_lengths=[96, 64],
        new_tokens=32,
        min_agreement=args.min_agreement,
        train_steps=4,
        train_batch_size=4,
        throughput_steps=10,
        throughput_batch_size=8,
        throughput_dtype="bfloat16",
        throughput_data="mcq_train.json",  # ~320 text tokens a sample (+576 image tokens)
        peak_flops=args.peak_flops,  # None: the datasheet figure of the card found (train_throughput.spec_bf16_flops)
        caps={
            "environment": 60,
            "prepare": 120,
            "numerics": 150,
            "sdpa_flash": 60,
            "training": 120,
            "training_fsdp": 120,
            "throughput": 150,
        },
        inject_failure=args.inject_failure,
    )


@dataclass
class Context:
    """What a section's check gets: the plan, the work folder, the log, the time left, and its result to fill in
    (`save()` writes it out so far, so a section killed at its time limit still reports what it measured)."""

    plan: Plan
    work: Path
    log: Path
    deadline: float
    shared: dict = field(default_factory=dict)  # results of earlier in-process sections (the matmul rate)
    result: dict = field(default_factory=dict)
    save: Callable[[], None] = lambda: None

    def remaining(self) -> float:
        return self.deadline - time.monotonic()


def say(message: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- helpers --------------------------------------------------------------------------------------------------------
def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _import_problem(module: str) -> str | None:
    """None when `module` imports, else why not (the exception, one line)."""
    try:
        importlib.import_module(module)
        return None
    except Exception as error:  # an installed package can fail with anything (missing .so, CUDA mismatch)
        return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"


def _first_lines(text: object, count: int = 3) -> str:
    return " | ".join(line.strip() for line in str(text).strip().splitlines()[:count])


def _tail(path: Path, start: int, chars: int = 3000) -> str:
    with open(path, errors="replace") as file:
        file.seek(start)
        return file.read()[-chars:]


def _last_error(output: str) -> str:
    """The last exception line of a subprocess's output, passing over the launcher's own report that its child
    failed; else the last line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [
        line
        for line in lines
        if re.match(r"^[\w.]*(Error|Exception)\b", line) and not line.startswith("subprocess.CalledProcessError")
    ]
    return (errors or lines or [""])[-1][:500]


def _run_logged(command: list[str], log: Path, timeout: float, env: dict | None = None) -> tuple[int | None, str]:
    """Run `command` with its output appended to `log` (progress lines echoed); `(exit code or None if it ran out of
    time, its output's tail)`. The command gets its own process group, so that a time-out ends what it started too."""
    with open(log, "a") as out:
        out.write(f"\n===== {' '.join(command)}\n")
        out.flush()
        start = out.tell()
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            env=env,
            cwd=ROOT,
            start_new_session=True,
        )

        def pump() -> None:  # also shown on the console: this script's progress and the trainer's logs
            for line in process.stdout:
                out.write(line)
                if line.startswith("[gpu_check "):
                    print(line, end="", flush=True)
                elif (at := line.find("{'loss'")) >= 0:  # after a progress bar, on the same line
                    print("  " + line[at:], end="", flush=True)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        code: int | None = None
        try:
            code = process.wait(timeout=max(timeout, 1))
        except subprocess.TimeoutExpired:
            pass
        finally:  # out of time, or this script stopped: its own session would outlive it
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        reader.join(timeout=10)
        out.flush()
    return code, _tail(log, start)


def _environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {**os.environ, **(extra or {})}


def _set_fp32_reference_precision() -> None:
    """fp32 means fp32: no TF32 in matmuls or convolutions (the patch embedding) for the reference.

    Through the flags every torch version has: torch >= 2.9 keeps its per-operator settings in step with them, while
    setting only the cuDNN convolution's new one leaves cuDNN's flags disagreeing, and reading them then raises."""
    import torch

    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False


def attention_unavailable(implementation: str, device: str) -> str | None:
    """Why `implementation` cannot run on `device` (None: it can)."""
    import torch

    if implementation in ("eager", "sdpa"):
        return None
    if device != "cuda" or not torch.cuda.is_available():
        return "no CUDA"
    if implementation == "flex_attention":
        problem = _import_problem("torch.nn.attention.flex_attention")
        return f"torch.nn.attention.flex_attention does not import ({problem})" if problem else None
    from llava_hf.modeling_llava import _FLASH_ATTENTION_KERNELS

    kernel = _FLASH_ATTENTION_KERNELS[implementation]
    module = FLASH_MODULES[implementation]
    problem = _import_problem(module)
    if problem:
        return f"{module} does not import ({problem}); install {kernel.install}"
    if not kernel.is_available():
        return f"{module} imports, but transformers does not offer {implementation} (distribution name or version)"
    major, minor = torch.cuda.get_device_capability()
    if major < kernel.min_capability or (kernel.max_capability is not None and major > kernel.max_capability):
        return f"no kernels for compute capability {major}.{minor}"
    return None


def _attn_argument(model: str, implementation: str) -> str | dict:
    """The `attn_implementation` each model loads with. llava_hf gets FlashAttention by name (it routes the kernel to
    the LM and keeps sdpa for the tower); the built-in Llava gets the same split spelled out. flex_attention too runs
    in the LM only, on both (the tower would add kernels to compile and nothing to learn: it has no mask)."""
    if implementation in ("eager", "sdpa"):
        return implementation
    if model == "ours" and implementation in FLASH_MODULES:
        return implementation
    return {"": implementation, "text_config": implementation, "vision_config": "sdpa"}


def _load(model: str, work: Path, implementation: str, dtype: Any):
    if model == "ours":
        from llava_hf import LlavaForConditionalGeneration
    else:
        from transformers import LlavaForConditionalGeneration
    folder = work / ("ours" if model == "ours" else "hf")
    return LlavaForConditionalGeneration.from_pretrained(
        folder, dtype=dtype, attn_implementation=_attn_argument(model, implementation)
    )


def _attention_in_use(model) -> dict[str, str | None]:
    """What the LM and the tower of either model run (llava_hf's own report for llava_hf)."""
    from llava_hf.modeling_llava import describe_attn_implementation

    described = describe_attn_implementation(model)
    if "language_model" in described:
        return described
    body = model.model
    return {
        "language_model": body.language_model.config._attn_implementation,
        "vision_tower": body.vision_tower.config._attn_implementation,
    }


def _batch(info: dict, text_lengths: list[int], padding_side: str, seed: int = 0) -> dict:
    """One image per sequence: BOS, the image's tokens, random text of `text_lengths[i]` tokens; padded on
    `padding_side` with an attention mask. Text ids avoid the special tokens."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    specials = {info["image_token_id"], info["pad_token_id"]}  # and 0-3: <unk>, <s>, </s>, "▁"
    allowed = torch.tensor([i for i in range(4, info["vocab_size"]) if i not in specials])
    sequences = []
    for length in text_lengths:
        text = allowed[torch.randint(len(allowed), (length,), generator=generator)]
        image = torch.full((info["image_seq_length"],), info["image_token_id"])
        sequences.append(torch.cat([torch.tensor([1]), image, text]))
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), info["pad_token_id"])
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        span = slice(width - len(sequence), width) if padding_side == "left" else slice(0, len(sequence))
        input_ids[row, span] = sequence
        attention_mask[row, span] = 1
    size = info["image_size"]
    pixel_values = torch.randn(len(sequences), 3, size, size, generator=generator)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "pixel_values": pixel_values}


def _to(batch: dict, device: str, dtype: Any) -> dict:
    return {k: v.to(device, dtype) if k == "pixel_values" else v.to(device) for k, v in batch.items()}


def _first_divergence(a, b) -> list[int | None]:
    """Per row, the first generated step where `a` and `b` differ (None: identical)."""
    out = []
    for row_a, row_b in zip(a.tolist(), b.tolist()):
        out.append(next((i for i, (x, y) in enumerate(zip(row_a, row_b)) if x != y), None))
    return out


def _compare(reference, logits, valid) -> dict:
    """Top-1 agreement and logit differences of `logits` against `reference` at the `valid` (non-padding)
    positions; "confident" positions are those where the reference's top-1 probability exceeds CONFIDENT."""
    reference, logits = reference[valid].float(), logits[valid].float()
    top_p, top_i = reference.softmax(-1).max(-1)
    confident = top_p > CONFIDENT
    agree = logits.argmax(-1) == top_i
    difference = (logits - reference).abs()
    return {
        "positions": int(valid.sum()),
        "confident_positions": int(confident.sum()),
        "top1_agreement_confident": float(agree[confident].float().mean()) if confident.any() else None,
        "top1_agreement_all": float(agree.float().mean()),
        "max_abs_logit_diff": float(difference.max()),
        "mean_abs_logit_diff": float(difference.mean()),
        "nonfinite_logits": int((~logits.isfinite()).sum()),
    }


# -- sections -------------------------------------------------------------------------------------------------------
def check_environment(ctx: Context) -> None:
    """Versions, the device, FlashAttention packages, llava_hf's import and `auto` choice, a bf16 matmul rate."""
    import torch

    result = ctx.result
    versions = {name: _version(name) for name in DISTRIBUTIONS}
    versions["python"] = platform.python_version()
    versions["torch_cuda"] = torch.version.cuda
    result["versions"] = versions
    problems = []
    cuda = ctx.plan.device == "cuda"
    if cuda and not torch.cuda.is_available():
        problems.append("no CUDA device visible to torch; on a machine without one use --cpu-tiny")
        cuda = False
    if cuda:
        properties = torch.cuda.get_device_properties(0)
        result["device"] = {
            "name": properties.name,
            "capability": list(torch.cuda.get_device_capability()),
            "memory_gib": round(properties.total_memory / 2**30, 1),
            "multiprocessors": properties.multi_processor_count,
        }
    else:
        result["device"] = {"name": platform.processor() or platform.machine(), "threads": torch.get_num_threads()}

    # llava_hf: importable, new enough transformers (pyproject's floor), and what "auto" resolves to here.
    floor = re.search(r'"transformers>=([0-9.]+)"', (ROOT / "pyproject.toml").read_text())
    installed = versions["transformers"]
    if floor and installed:
        from packaging.version import Version

        if Version(installed) < Version(floor.group(1)):
            problems.append(
                f"transformers {installed} is older than llava_hf needs (>={floor.group(1)}, pyproject.toml); carry "
                "the wheel (bench/README.md)"
            )
    problem = _import_problem("llava_hf")
    result["llava_hf_import"] = problem or "ok"
    if problem:
        problems.append(f"import llava_hf failed: {problem}")
    else:
        import llava_hf

        result["llava_hf_from"] = str(Path(llava_hf.__file__).parent)
        try:
            result["auto_attn_implementation"] = llava_hf.resolve_attn_implementation("auto")
        except Exception as error:
            problems.append(f'resolve_attn_implementation("auto") failed: {error}')

    flash = {}
    for implementation, module in FLASH_MODULES.items():
        entry: dict[str, Any] = {"module": module, "import_error": _import_problem(module)}
        entry["importable"] = entry["import_error"] is None
        if not problem:  # llava_hf's table: transformers' availability check, the GPUs it has kernels for
            from llava_hf.modeling_llava import _FLASH_ATTENTION_KERNELS

            kernel = _FLASH_ATTENTION_KERNELS[implementation]
            newest = f"-{kernel.max_capability}.x" if kernel.max_capability is not None else ".x or newer"
            entry["needs"] = f"{kernel.install}, compute capability {kernel.min_capability}{newest}"
            entry["transformers_available"] = bool(kernel.is_available())
            entry["runs_here"] = attention_unavailable(implementation, ctx.plan.device) or "yes"
        flash[implementation] = entry
    result["flash_attention"] = flash
    result["flex_attention_importable"] = _import_problem("torch.nn.attention.flex_attention") is None

    # A large bf16 matmul: the rate MFU is also quoted against (what this card reaches, not the datasheet). The
    # median of single products, so that a pause of the process on a shared CPU does not count.
    size, repeats = (8192, 10) if cuda else (512, 9)
    device = "cuda" if cuda else "cpu"
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    times = []
    for index in range(3 + repeats):  # 3 warm-ups
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        if cuda:
            torch.cuda.synchronize()
        if index >= 3:
            times.append(time.perf_counter() - start)
    rate = 2 * size**3 / sorted(times)[len(times) // 2]
    result["bf16_matmul"] = {"size": size, "repeats": repeats, "flops_per_s": rate}
    ctx.shared["bf16_matmul_flops"] = rate
    del a, b
    if problems:
        raise CheckFailed("; ".join(problems))


def check_prepare(ctx: Context) -> None:
    """The random checkpoints (transformers' layout and llava_hf's, converted) and the shapes world."""
    import torch

    if ctx.plan.device == "cuda" and not torch.cuda.is_available():
        raise CheckFailed("no CUDA device; on a machine without one use --cpu-tiny")
    say(f"prepare: building the random checkpoint ({ctx.plan.mode} sizes) and the shapes world")
    info = train_throughput.prepare(
        ctx.work,
        vision=ctx.plan.vision,
        text=ctx.plan.text,
        num_images=ctx.plan.num_images,
        device=ctx.plan.device,
        save_dtype="bfloat16",  # bf16 weights: the fp32 reference and the bf16 runs start from the same numbers
        logit_std=ctx.plan.logit_std,
    )
    if ctx.plan.device == "cuda":
        torch.cuda.empty_cache()
    from safetensors import safe_open

    parameters = 0
    for file in (ctx.work / "ours").glob("*.safetensors"):
        with safe_open(file, "pt") as handle:
            parameters += sum(math.prod(handle.get_slice(key).get_shape()) for key in handle.keys())  # noqa: SIM118
    info["parameters"] = parameters
    info["vision"], info["text"] = ctx.plan.vision, ctx.plan.text
    (ctx.work / "build.json").write_text(json.dumps(info))
    ctx.result.update(info)


def check_numerics(ctx: Context) -> None:
    """bf16 vs fp32 eager, for llava_hf and the built-in Llava, with each attention implementation that runs here."""
    import torch

    plan, work, result = ctx.plan, ctx.work, ctx.result
    info = json.loads((work / "build.json").read_text())
    device = plan.device
    batch = _batch(info, plan.text_lengths, "left")  # left-padded, as batched generation needs
    valid = batch["attention_mask"].bool().to(device)
    result["inputs"] = {
        "sequences": len(plan.text_lengths),
        "text_tokens": plan.text_lengths,
        "image_tokens": info["image_seq_length"],
        "padding": "left, with attention mask",
        "new_tokens": plan.new_tokens,
        "confident_if_fp32_top1_prob_over": CONFIDENT,
    }

    def run(model_name: str, implementation: str, dtype) -> tuple[Any, Any, Any]:
        model = _load(model_name, work, implementation, dtype).to(device).eval()
        inputs = _to(batch, device, dtype)
        with torch.no_grad():
            logits = model(**inputs).logits.float()
            generated = model.generate(
                **inputs,
                max_new_tokens=plan.new_tokens,
                min_new_tokens=plan.new_tokens,
                do_sample=False,
                pad_token_id=info["pad_token_id"],
            )[:, inputs["input_ids"].shape[1] :]
        attention = _attention_in_use(model)
        del model
        if device == "cuda":
            torch.cuda.empty_cache()
        return logits, generated, attention

    say("numerics: fp32 eager references (llava_hf and the built-in Llava)")
    _set_fp32_reference_precision()
    references = {name: run(name, "eager", torch.float32) for name in ("ours", "builtin")}
    (ours_logits, ours_tokens, _), (builtin_logits, builtin_tokens, _) = references["ours"], references["builtin"]
    parity = _compare(ours_logits, builtin_logits, valid)
    parity["greedy_first_divergence"] = _first_divergence(ours_tokens, builtin_tokens)
    result["fp32_eager_ours_vs_builtin"] = parity
    problems = []
    if not parity["max_abs_logit_diff"] <= 1e-2:  # same weights, same math: only summation order may differ
        problems.append(f"fp32 eager: llava_hf and the built-in Llava differ by {parity['max_abs_logit_diff']:.3g}")
    ctx.save()

    implementations: dict[str, Any] = {}
    result["implementations"] = implementations
    for implementation in IMPLEMENTATIONS:
        reason = attention_unavailable(implementation, device)
        if not reason and implementation == "flex_attention" and ctx.remaining() < FLEX_START_S:
            reason = (
                f"not started: {ctx.remaining():.0f} s of the section's time left, compiling its kernels takes longer"
            )
        if reason:
            implementations[implementation] = {"status": "skipped", "reason": reason}
            continue
        entries: dict[str, Any] = {}
        implementations[implementation] = entries
        outputs = {}
        for name in ("ours", "builtin"):
            say(f"numerics: {implementation}, {name}, bf16")
            try:
                logits, tokens, attention = run(name, implementation, torch.bfloat16)
            except Exception as error:
                entries[name] = {
                    "status": "failed",
                    "error": f"{type(error).__name__}: {_first_lines(error)}",
                    "traceback": traceback.format_exc()[-2000:],
                }
                problems.append(f"{implementation} / {name}: {type(error).__name__}: {_first_lines(error, 1)}")
                ctx.save()
                continue
            reference_logits, reference_tokens, _ = references[name]
            entry = {"status": "ok", "attn_implementation": attention, **_compare(reference_logits, logits, valid)}
            entry["greedy_first_divergence"] = _first_divergence(reference_tokens, tokens)
            agreement = entry["top1_agreement_confident"]
            if entry["nonfinite_logits"]:
                entry["status"] = "failed"
                problems.append(f"{implementation} / {name}: {entry['nonfinite_logits']} non-finite logits")
            elif agreement is not None and agreement < plan.min_agreement:
                entry["status"] = "failed"
                problems.append(
                    f"{implementation} / {name}: top-1 agreement at confident positions {agreement:.3f} < "
                    f"{plan.min_agreement}"
                )
            entries[name] = entry
            outputs[name] = (logits, tokens)
            ctx.save()
        if len(outputs) == 2:  # the two models under the same kernel: how far apart are they?
            same = _compare(outputs["ours"][0], outputs["builtin"][0], valid)
            same["greedy_first_divergence"] = _first_divergence(outputs["ours"][1], outputs["builtin"][1])
            entries["ours_vs_builtin"] = same
            ctx.save()
    if problems:
        raise CheckFailed("; ".join(problems))


def check_sdpa_flash(ctx: Context) -> None:
    """Can sdpa run its flash kernel on our batches? Forced with sdpa_kernel(FLASH_ATTENTION): eligible or not (and
    torch's reason); unforced: the sdpa kernels torch picks, counted from the profiler."""
    import warnings

    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.profiler import ProfilerActivity, profile

    plan, result = ctx.plan, ctx.result
    info = json.loads((ctx.work / "build.json").read_text())
    device = plan.device
    model = _load("ours", ctx.work, "sdpa", torch.bfloat16).to(device).eval()
    lengths = plan.text_lengths
    unpadded = _batch(info, [lengths[0]] * len(lengths), "right")
    # Two shapes-world samples through the training collator (right-padded), then cut to the shorter one.
    from llava_hf import LlavaProcessor
    from llava_hf.data import LlavaDataCollator

    world = ctx.work / "world"
    rows = train_throughput.read_rows(world / plan.throughput_data, world / "images", 2)
    collated = LlavaDataCollator(LlavaProcessor.from_pretrained(ctx.work / "ours"))(rows)
    collated = {k: collated[k] for k in ("input_ids", "attention_mask", "pixel_values")}
    cases = {
        "collator_batch": collated,
        "collator_batch_unpadded": train_throughput.unpad(collated),
        "right_padded_with_mask": _batch(info, lengths, "right"),  # as the collator pads
        "left_padded_with_mask": _batch(info, lengths, "left"),  # as batched generation pads
        "unpadded_with_mask": unpadded,  # an all-ones mask
        "unpadded_without_mask": {k: v for k, v in unpadded.items() if k != "attention_mask"},
    }
    result["device"] = device
    result["layers"] = {
        "language_model": plan.text["num_hidden_layers"],
        "vision_tower": plan.vision["num_hidden_layers"],
    }

    def attempt(call: Callable[[], Any]) -> dict:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                with torch.no_grad(), sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                    call()
                return {"flash_eligible": True}
            except RuntimeError as error:  # "No available kernel": the warnings say why
                reasons = sorted({str(w.message) for w in caught if "flash" in str(w.message).lower()})
                return {"flash_eligible": False, "error": _first_lines(error, 1), "why": reasons[:4]}

    def kernels(call: Callable[[], Any]) -> dict[str, int]:
        with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as profiler:
            call()
        # The kernels under the public `aten::scaled_dot_product_attention` (which is left out).
        return {
            event.key: event.count
            for event in profiler.key_averages()
            if event.key.startswith("aten::_") and "attention" in event.key
        }

    pixel_values = unpadded["pixel_values"].to(device, torch.bfloat16)
    tower_entry = attempt(lambda: model.model.vision_tower(pixel_values))
    tower_entry["default_kernels"] = kernels(lambda: model.model.vision_tower(pixel_values))
    result["cases"] = {"vision_tower_only": tower_entry}
    for name, batch in cases.items():
        inputs = _to(batch, device, torch.bfloat16)
        entry = attempt(lambda inputs=inputs: model(**inputs))
        entry["default_kernels"] = kernels(lambda inputs=inputs: model(**inputs))
        result["cases"][name] = entry
        ctx.save()
    eligible = {name: entry["flash_eligible"] for name, entry in result["cases"].items()}
    result["flash_eligible"] = eligible
    if device == "cuda":
        # What transformers' sdpa path should give: no mask (all ones is dropped for is_causal) -> flash; a padding
        # mask -> not flash (memory-efficient instead).
        result["as_expected"] = (
            eligible["unpadded_with_mask"]
            and eligible["unpadded_without_mask"]
            and eligible["collator_batch_unpadded"]
            and eligible["vision_tower_only"]
            and not eligible["right_padded_with_mask"]
        )


def _recipe(ctx: Context, output_dir: Path) -> Path:
    import yaml

    recipe = {
        "stage": "2",
        "model_name_or_path": str(ctx.work / "ours"),
        "chat_template": "vicuna_v1",
        "attn_implementation": "auto",  # on CUDA the first FlashAttention that runs, else sdpa: the record says
        "train_files": [str(ctx.work / "world" / "instruct.json")],
        "image_root": str(ctx.work / "world" / "images"),
        "output_dir": str(output_dir),
        "max_steps": ctx.plan.train_steps,
        "per_device_train_batch_size": ctx.plan.train_batch_size,
        "learning_rate": 1.0e-4,
        "lr_scheduler_type": "constant",
        "weight_decay": 0.0,
        "max_length": 2048,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "bf16": True,
        "gradient_checkpointing": True,
        "dataloader_num_workers": 0,
        "seed": 0,
        "grounding_samples": 0,
    }
    if ctx.plan.device == "cpu":
        recipe["use_cpu"] = True  # bf16 on a CPU needs it
    path = output_dir.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(recipe))
    return path


def _launch_command(ctx: Context, recipe: Path, fsdp: bool) -> tuple[list[str], dict[str, str]]:
    """`accelerate launch ... recipes/sft.py --config RECIPE` (as `python -m`, so no script needs to be on PATH)."""
    launch = [sys.executable, "-m", "accelerate.commands.launch"]
    env = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if ctx.plan.device == "cuda":
        config = ROOT / "recipes" / "accelerate" / ("fsdp.yaml" if fsdp else "single_gpu.yaml")
        launch += ["--config_file", str(config), "--num_processes", "1", "--num_machines", "1"]
    else:  # as tests/train/test_training.py launches it on the CPU
        launch += ["--num_processes", "1", "--num_machines", "1", "--mixed_precision", "bf16"]
        launch += ["--dynamo_backend", "no", "--cpu"]
        env["ACCELERATE_USE_CPU"] = "true"
    return launch + [str(ROOT / "recipes" / "sft.py"), "--config", str(recipe)], env


def _check_checkpoint(folder: Path, start: Path) -> dict:
    """Every tensor of the saved checkpoint non-empty and finite, in the files and reloaded through the Auto class;
    the LM and projector moved from `start`, the frozen tower did not."""
    import torch
    from safetensors import safe_open
    from transformers import AutoModelForImageTextToText

    import llava_hf  # noqa: F401  (registers llava_hf with the Auto classes)

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise CheckFailed(f"{folder}: no safetensors file was saved")
    saved: dict[str, Any] = {}
    for file in files:
        with safe_open(file, "pt") as handle:
            for key in handle.keys():  # noqa: SIM118  (safe_open handles are not iterable)
                saved[key] = handle.get_tensor(key)
    starting: dict[str, Any] = {}
    for file in sorted(start.glob("*.safetensors")):
        with safe_open(file, "pt") as handle:
            for key in handle.keys():  # noqa: SIM118
                starting[key] = handle.get_tensor(key)

    def bad(state: dict) -> tuple[list[str], list[str]]:
        empty = [k for k, t in state.items() if t.numel() == 0]
        nonfinite = [k for k, t in state.items() if t.is_floating_point() and t.numel() and not t.isfinite().all()]
        return empty, nonfinite

    file_empty, file_nonfinite = bad(saved)
    model = AutoModelForImageTextToText.from_pretrained(folder)
    loaded = model.state_dict()
    load_empty, load_nonfinite = bad(loaded)

    def moved(part: str) -> bool:
        keys = [k for k in starting if part in k and k in saved]
        return any(not torch.equal(starting[k].float(), saved[k].float()) for k in keys)

    check = {
        "files": [f.name for f in files],
        "tensors_in_files": len(saved),
        "dtypes_in_files": sorted({str(t.dtype).removeprefix("torch.") for t in saved.values()}),
        "empty_in_files": file_empty[:10],
        "nonfinite_in_files": file_nonfinite[:10],
        "reloaded_class": type(model).__name__,
        "reloaded_tensors": len(loaded),
        "empty_after_reload": load_empty[:10],
        "nonfinite_after_reload": load_nonfinite[:10],
        "language_model_moved": moved("language_model.layers"),
        "projector_moved": moved("multi_modal_projector"),
        "vision_tower_unchanged": not moved("vision_tower"),
    }
    problems = [
        f"{name}: {check[name]}"
        for name in ("empty_in_files", "nonfinite_in_files", "empty_after_reload", "nonfinite_after_reload")
        if check[name]
    ]
    problems += [
        name for name in ("language_model_moved", "projector_moved", "vision_tower_unchanged") if not check[name]
    ]
    check["problems"] = problems
    return check


def _train(ctx: Context, fsdp: bool) -> None:
    """recipes/sft.py stage 2 through accelerate launch, then the saved checkpoint's checks."""
    if fsdp and ctx.plan.device != "cuda":
        raise Skip(
            "FSDP needs a CUDA device: on a CPU accelerate sets up DDP over gloo and ignores the FSDP plugin "
            "(tests/train/test_training.py runs FSDP2 on the CPU through a patched accelerate instead)"
        )
    missing = {module: problem for module in ("trl", "datasets", "ijson") if (problem := _import_problem(module))}
    if missing:
        raise Skip(
            "recipes/sft.py needs "
            + ", ".join(f"{module} ({problem})" for module, problem in missing.items())
            + "; carry their wheels (bench/README.md)"
        )
    name = "training_fsdp" if fsdp else "training"
    output_dir = ctx.work / name
    command, env = _launch_command(ctx, _recipe(ctx, output_dir), fsdp)
    ctx.result["command"] = " ".join(command)
    say(f"{name}: accelerate launch recipes/sft.py, stage 2, {ctx.plan.train_steps} steps")
    start = time.perf_counter()
    budget = ctx.remaining() - 15  # 15 s for the checks after it
    code, tail = _run_logged(command, ctx.log, budget, env=_environment(env))
    ctx.result["launch_s"] = round(time.perf_counter() - start, 1)
    if code is None:
        ctx.result["output_tail"] = tail
        raise CheckFailed(f"accelerate launch recipes/sft.py ran out of its {budget:.0f} s budget (output in the log)")
    if code != 0:
        ctx.result["output_tail"] = tail
        raise CheckFailed(f"accelerate launch recipes/sft.py exited with code {code}: {_last_error(tail)}")
    record = json.loads((output_dir / "llava_hf_training.json").read_text())
    losses = [entry["loss"] for entry in record.get("log_history", []) if "loss" in entry]
    ctx.result["record"] = {
        "losses": losses,
        **{
            key: record.get(key)
            for key in ("global_step", "train_runtime_s", "attn_implementation", "precision", "hardware")
        },
    }
    ctx.save()
    say(f"{name}: checking the saved checkpoint")
    check = _check_checkpoint(output_dir, ctx.work / "ours")
    ctx.result["checkpoint"] = check
    problems = list(check["problems"])
    if record.get("global_step") != ctx.plan.train_steps:
        problems.append(f"global_step {record.get('global_step')} != max_steps {ctx.plan.train_steps}")
    if not losses or not all(math.isfinite(loss) for loss in losses):
        problems.append(f"training losses {losses}")
    distributed = (record.get("hardware") or {}).get("distributed_type")
    if fsdp and distributed != "FSDP":
        problems.append(f"distributed_type {distributed}, not FSDP")
    if problems:
        raise CheckFailed("; ".join(problems))


def check_training(ctx: Context) -> None:
    _train(ctx, fsdp=False)


def check_training_fsdp(ctx: Context) -> None:
    _train(ctx, fsdp=True)


def check_throughput(ctx: Context) -> None:
    """Stage-2 steps, llava_hf vs the built-in Llava, padded vs unpadded batches (bench/train_throughput.py)."""
    plan, result = ctx.plan, ctx.result
    trl_problem = _import_problem("trl")
    result["setup"] = {
        "steps": plan.throughput_steps,
        "batch_size": plan.throughput_batch_size,
        "dtype": plan.throughput_dtype,
        "data": f"shapes world {plan.throughput_data}",
        "attn_implementation": "sdpa",
        "optimizer": "AdamW over the LM and projector (vision tower frozen), weights in the dtype above",
        "unpadded": "each batch cut to its shortest sample: no padding, attention mask all ones",
        "peer": "transformers' built-in Llava + "
        + (
            "TRL's DataCollatorForVisionLanguageModeling"
            if trl_problem is None
            else f"plain padded batches (trl does not import: {trl_problem}), so no TRL collator is compared"
        ),
    }
    spec = plan.peak_flops
    if spec is None and plan.device == "cuda":
        import torch

        spec = train_throughput.spec_bf16_flops(torch.cuda.get_device_name())
    peaks = {"spec": spec, "measured_bf16_matmul": ctx.shared.get("bf16_matmul_flops")}
    result["peak_flops"] = peaks
    problems = []
    sides = {}
    for side in ("ours", "peer"):
        say(
            f"throughput: {side} ({plan.throughput_steps} steps x batch {plan.throughput_batch_size}, padded and unpadded)"
        )
        try:
            sides[side] = train_throughput.run_side(
                side,
                ctx.work,
                plan.throughput_steps,
                plan.throughput_batch_size,
                plan.device,
                plan.throughput_dtype,
                variants=train_throughput.VARIANTS,
                data=plan.throughput_data,
                require_trl=False,
                timeout=max(ctx.remaining(), 1),
            )
        except Exception as error:
            result[side] = {"status": "failed", "error": f"{type(error).__name__}: {str(error)[-3000:]}"}
            problems.append(f"{side}: {type(error).__name__}: {_first_lines(error, 1)}")
            continue
        for variant in sides[side]["variants"].values():
            for name, peak in peaks.items():
                variant[f"mfu_vs_{name}"] = variant["model_flops_per_s"] / peak if peak else None
            if not variant["tokens_per_s"] > 0:
                problems.append(f"{side}: tokens/s {variant['tokens_per_s']}")
        result[side] = sides[side]
        ctx.save()
    if len(sides) == 2:
        result["ours_over_peer_tokens_per_s"] = {
            v: sides["ours"]["variants"][v]["tokens_per_s"] / sides["peer"]["variants"][v]["tokens_per_s"]
            for v in train_throughput.VARIANTS
        }
    result["unpadded_over_padded_tokens_per_s"] = {
        side: s["variants"]["unpadded"]["tokens_per_s"] / s["variants"]["padded"]["tokens_per_s"]
        for side, s in sides.items()
    }
    if problems:
        raise CheckFailed("; ".join(problems))


# Each section: its check, and whether it runs in its own process (model code that could crash the CUDA context or
# hang compiling runs isolated, with a hard time limit; the others start their own subprocesses).
CHECKS: dict[str, tuple[Callable[[Context], None], bool]] = {
    "environment": (check_environment, False),
    "prepare": (check_prepare, False),
    "numerics": (check_numerics, True),
    "sdpa_flash": (check_sdpa_flash, True),
    "training": (check_training, False),
    "training_fsdp": (check_training_fsdp, False),
    "throughput": (check_throughput, False),
}


def run_check(name: str, ctx: Context) -> dict:
    """Run one section's check in this process: its outcome, never an exception."""
    start = time.perf_counter()
    status, reason, error = "ok", None, None
    try:
        if ctx.plan.inject_failure == name:
            raise RuntimeError(f"failure injected into {name} with --inject-failure")
        CHECKS[name][0](ctx)
    except Skip as skip:
        status, reason = "skipped", str(skip)
    except CheckFailed as failure:
        status, reason = "failed", str(failure)
    except Exception as exception:
        status, reason = "failed", f"{type(exception).__name__}: {_first_lines(exception)}"
        error = traceback.format_exc()[-6000:]
    seconds = round(time.perf_counter() - start, 1)
    return {"status": status, "reason": reason, "error": error, "seconds": seconds, "result": ctx.result}


def run_isolated(name: str, ctx: Context, timeout: float) -> dict:
    """Run one section's check in a child process with a hard time limit; a child that dies or runs out of time is
    reported as failed, with what it had saved and its output's tail."""
    result_path = ctx.work / f"result-{name}.json"
    result_path.unlink(missing_ok=True)
    command = [sys.executable, str(Path(__file__).resolve()), "--child", name, "--work", str(ctx.work)]
    command += ["--child-seconds", f"{timeout:.0f}"]
    start = time.perf_counter()
    code, tail = _run_logged(command, ctx.log, timeout, env=_environment())
    outcome = json.loads(result_path.read_text()) if result_path.is_file() else None
    if code is None or outcome is None or outcome.get("status") == "running":
        partial = (outcome or {}).get("result", {})
        why = f"ran out of time after {timeout:.0f} s" if code is None else f"exited with code {code} without a result"
        outcome = {"status": "failed", "reason": f"{name} {why}", "error": tail, "result": partial}
    outcome["seconds"] = round(time.perf_counter() - start, 1)
    return outcome


def child_main(name: str, work: Path, seconds: float) -> None:
    plan = Plan(**json.loads((work / "plan.json").read_text()))
    result_path = work / f"result-{name}.json"
    # Its output already goes to the parent's log. The parent kills it at its time limit; knowing the limit, the
    # check can leave out a step that would not finish in time (and keep what it measured).
    ctx = Context(plan=plan, work=work, log=Path(os.devnull), deadline=time.monotonic() + seconds - 5)
    ctx.save = lambda: result_path.write_text(json.dumps({"status": "running", "result": ctx.result}, default=str))
    outcome = run_check(name, ctx)
    result_path.write_text(json.dumps(outcome, default=str))


def default_output() -> Path:
    out = os.environ.get("OUT")
    return Path(out) / "gpu_check.json" if out else ROOT / "bench" / "gpu_check.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example (one H200): timeout 360 python bench/gpu_check.py --output /tmp/gpu_check.json",
    )
    parser.add_argument("--cpu-tiny", action="store_true", help="= --device cpu --tiny (what the test suite runs)")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny models and few steps instead of realistic sizes")
    parser.add_argument("--output", type=Path, default=None, help="JSON file (default: $OUT/ or bench/gpu_check.json)")
    parser.add_argument(
        "--time-limit",
        type=float,
        default=None,
        help="seconds for the whole run (default: 330 on a GPU, 300 with --tiny)",
    )
    parser.add_argument(
        "--peak-flops",
        type=float,
        default=None,
        help="the card's dense bf16 FLOP/s for MFU (default: the datasheet figure of a listed card)",
    )
    parser.add_argument(
        "--min-agreement", type=float, default=0.9, help="least top-1 agreement at confident positions"
    )
    parser.add_argument("--only", default=None, help=f"comma-separated sections to run (of {', '.join(SECTIONS)})")
    parser.add_argument("--work", type=Path, default=None, help="keep the checkpoints and outputs here")
    parser.add_argument(
        "--inject-failure",
        choices=SECTIONS,
        default=None,
        help="make SECTION raise, to see a failing check reported while the others run (the test suite does)",
    )
    parser.add_argument("--child", choices=SECTIONS, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-seconds", type=float, default=600.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.cpu_tiny:
        args.device, args.tiny = "cpu", True
    return args


def main(argv: list[str] | None = None) -> int:
    # No check may reach the Hub; one thread per process on CPUs (tiny models on shared cores run faster so).
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if importlib.util.find_spec("llava_hf") is None:  # not installed: the source tree, for this process and children
        source = str(ROOT / "src")
        sys.path.insert(0, source)
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [source, os.environ.get("PYTHONPATH")]))
    args = parse_args(argv)
    if args.child:
        child_main(args.child, args.work, args.child_seconds)
        return 0
    if args.device == "cpu":
        os.environ.setdefault("OMP_NUM_THREADS", "1")
    plan = make_plan(args)
    only = set(SECTIONS) if args.only is None else {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = only - set(SECTIONS)
    if unknown:
        raise SystemExit(f"--only: unknown sections {sorted(unknown)}; choose from {list(SECTIONS)}")
    wanted = {"environment"} | only | ({"prepare"} if only & NEEDS_PREPARE else set())
    output = (args.output or default_output()).resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    log = output.with_suffix(".log")
    log.write_text("")
    time_limit = args.time_limit or (330.0 if args.device == "cuda" and not args.tiny else 300.0)
    started = time.monotonic()
    deadline = started + time_limit
    report: dict[str, Any] = {
        "bench": "gpu_check",
        "mode": plan.mode,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "time_limit_s": time_limit,
        "plan": asdict(plan),
        "sections": {},
    }
    temporary = None if args.work else tempfile.TemporaryDirectory(prefix="gpu_check-")
    work = (args.work or Path(temporary.name)).resolve()
    work.mkdir(parents=True, exist_ok=True)
    (work / "plan.json").write_text(json.dumps(asdict(plan)))
    shared: dict[str, Any] = {}
    signal.signal(signal.SIGTERM, _terminate)
    say(f"{plan.mode}: sections {', '.join(s for s in SECTIONS if s in wanted)}; results -> {output}")
    stopped = None
    try:
        for name in SECTIONS:
            remaining = deadline - time.monotonic()
            if stopped:
                outcome = {"status": "skipped", "reason": f"not run: {stopped}"}
            elif name not in wanted:
                outcome = {"status": "skipped", "reason": f"not selected (--only {args.only})"}
            elif name in NEEDS_PREPARE and report["sections"]["prepare"]["status"] != "ok":
                outcome = {"status": "skipped", "reason": "needs the prepare section, which did not succeed"}
            elif remaining < max(10, MIN_SHARE_OF_CAP * plan.caps[name]):
                needs = max(10, MIN_SHARE_OF_CAP * plan.caps[name])
                outcome = {
                    "status": "skipped",
                    "reason": f"time limit: {remaining:.0f} s of {time_limit:.0f} s left, the section needs {needs:.0f}",
                }
            else:
                say(f"{name}: running ({remaining:.0f} s left)")
                ctx_deadline = time.monotonic() + min(plan.caps[name], remaining)
                ctx = Context(plan=plan, work=work, log=log, deadline=ctx_deadline, shared=shared)
                try:
                    outcome = run_isolated(name, ctx, ctx.remaining()) if CHECKS[name][1] else run_check(name, ctx)
                except Terminated as stop:
                    stopped = str(stop)
                    outcome = {"status": "failed", "reason": stopped, "result": ctx.result}
            report["sections"][name] = outcome
            took = f" in {outcome['seconds']} s" if "seconds" in outcome else ""
            say(f"{name}: {outcome['status']}{took}" + (f" ({outcome['reason']})" if outcome.get("reason") else ""))
            report["wall_s"] = round(time.monotonic() - started, 1)
            output.write_text(json.dumps(report, indent=1, default=str))
    finally:
        if temporary is not None:
            temporary.cleanup()
    statuses = {name: outcome["status"] for name, outcome in report["sections"].items()}
    report["summary"] = {s: [n for n, v in statuses.items() if v == s] for s in ("ok", "failed", "skipped")}
    report["summary"]["skipped_for_time"] = [
        n for n, o in report["sections"].items() if o["status"] == "skipped" and o["reason"].startswith("time limit")
    ]
    output.write_text(json.dumps(report, indent=1, default=str))
    say(f"done in {report['wall_s']} s: " + ", ".join(f"{n} {v}" for n, v in statuses.items()))
    say(f"wrote {output} and {log}")
    # 1: a check failed; 2: none failed but one never ran for lack of time (not a pass).
    return 1 if report["summary"]["failed"] else 2 if report["summary"]["skipped_for_time"] else 0


if __name__ == "__main__":
    sys.exit(main())
