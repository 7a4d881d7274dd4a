"""bench/gpu_check.py in its CPU-tiny mode: every section reported, the CPU-runnable ones pass with sane numbers, and a
failing check is reported as failed while the others still run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "gpu_check.py"
SECTIONS = ("environment", "prepare", "numerics", "sdpa_flash", "training", "training_fsdp", "throughput")
# What needs a GPU: FSDP (accelerate sets it up only on an accelerator). Training needs trl, datasets and ijson,
# which the train extra installs.
CPU_SECTIONS = ("environment", "prepare", "numerics", "sdpa_flash", "training", "throughput")


def _run(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    output = tmp_path / "gpu_check.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("OUT", None)
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--cpu-tiny", "--output", str(output), *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=ROOT,
    )
    assert output.is_file(), result.stdout[-3000:] + result.stderr[-3000:]
    return result, json.loads(output.read_text())


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    from conftest import require

    for module in ("trl", "datasets", "ijson"):  # the training section needs them (and skips without them)
        require(module, import_it=False)
    return _run(tmp_path_factory.mktemp("gpu_check"))


def test_every_section_reports_a_status(cpu_run):
    _, report = cpu_run
    assert set(report["sections"]) == set(SECTIONS)
    for name, section in report["sections"].items():
        assert section["status"] in ("ok", "failed", "skipped"), name
        if section["status"] != "ok":
            assert section["reason"], name


def test_cpu_sections_pass_and_gpu_only_ones_say_why(cpu_run):
    result, report = cpu_run
    sections = report["sections"]
    failed = {n: (s["reason"], s.get("error")) for n, s in sections.items() if s["status"] == "failed"}
    assert not failed, failed
    assert result.returncode == 0, result.stdout[-3000:]
    assert all(sections[name]["status"] == "ok" for name in CPU_SECTIONS)
    assert sections["training_fsdp"]["status"] == "skipped" and "CUDA" in sections["training_fsdp"]["reason"]
    implementations = sections["numerics"]["result"]["implementations"]
    for name in ("flex_attention", "flash_attention_2", "flash_attention_3", "flash_attention_4"):
        assert implementations[name] == {"status": "skipped", "reason": "no CUDA"}, name


def test_numbers_are_sane(cpu_run):
    _, report = cpu_run
    sections = report["sections"]
    numerics = sections["numerics"]["result"]
    # Same weights, same fp32 eager math: the two models agree.
    assert numerics["fp32_eager_ours_vs_builtin"]["max_abs_logit_diff"] <= 1e-4
    for model in ("ours", "builtin"):
        entry = numerics["implementations"]["sdpa"][model]
        assert entry["attn_implementation"] == {"language_model": "sdpa", "vision_tower": "sdpa"}
        assert entry["confident_positions"] > 0
        assert 0.0 <= entry["top1_agreement_confident"] <= 1.0 and 0.0 <= entry["top1_agreement_all"] <= 1.0
        assert entry["nonfinite_logits"] == 0
        assert all(d is None or 0 <= d < report["plan"]["new_tokens"] for d in entry["greedy_first_divergence"])

    sdpa = sections["sdpa_flash"]["result"]["cases"]
    assert set(sdpa) >= {"collator_batch", "right_padded_with_mask", "left_padded_with_mask", "unpadded_with_mask"}
    assert all(isinstance(case["flash_eligible"], bool) and case["default_kernels"] for case in sdpa.values())

    training = sections["training"]["result"]
    assert training["record"]["global_step"] == report["plan"]["train_steps"]
    assert training["record"]["precision"]["mixed_precision"] == "bf16"
    checkpoint = training["checkpoint"]
    assert checkpoint["reloaded_tensors"] > 0 and not checkpoint["problems"]

    throughput = sections["throughput"]["result"]
    for side in ("ours", "peer"):
        for variant in ("padded", "unpadded"):
            numbers = throughput[side]["variants"][variant]
            assert numbers["tokens_per_s"] > 0 and numbers["samples_per_s"] > 0 and numbers["peak_mib"] > 0
            assert 0 < numbers["mfu_vs_measured_bf16_matmul"] < 1
        assert throughput[side]["variants"]["unpadded"]["padding_fraction"] == 0.0


def test_a_failing_check_is_reported_and_the_others_still_run(tmp_path):
    result, report = _run(tmp_path, "--only", "numerics,sdpa_flash", "--inject-failure", "numerics")
    sections = report["sections"]
    assert result.returncode == 1
    numerics = sections["numerics"]
    assert numerics["status"] == "failed"
    assert "failure injected into numerics" in numerics["reason"] and "RuntimeError" in numerics["error"]
    # The check after it ran; the ones not selected say so.
    assert sections["prepare"]["status"] == "ok" and sections["sdpa_flash"]["status"] == "ok"
    assert sections["training"] == {"status": "skipped", "reason": "not selected (--only numerics,sdpa_flash)"}
    assert report["summary"]["failed"] == ["numerics"]
