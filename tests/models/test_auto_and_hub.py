"""Auto classes, remote code in a process that cannot import llava_hf, and pipeline("image-text-to-text")."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForImageTextToText,
    AutoModelForMultimodalLM,
    AutoProcessor,
    pipeline,
)

import llava_hf
from fixtures.tester import LlavaModelTester
from llava_hf import LlavaConfig, LlavaForConditionalGeneration, LlavaModel, LlavaProcessor


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return LlavaModelTester().save(tmp_path_factory.mktemp("ckpt"))


def test_register_is_idempotent():
    llava_hf.register()
    llava_hf.register()
    assert AutoConfig.for_model("llava_hf").__class__ is LlavaConfig


def test_auto_classes_resolve_to_llava_hf(checkpoint):
    assert type(AutoConfig.from_pretrained(checkpoint)) is LlavaConfig
    assert type(AutoModelForImageTextToText.from_pretrained(checkpoint)) is LlavaForConditionalGeneration
    assert type(AutoModelForMultimodalLM.from_pretrained(checkpoint)) is LlavaForConditionalGeneration
    assert type(AutoModel.from_pretrained(checkpoint)) is LlavaModel
    assert type(AutoProcessor.from_pretrained(checkpoint)) is LlavaProcessor


def test_saved_folder_carries_code_and_auto_map(checkpoint):
    for name in ("configuration_llava.py", "modeling_llava.py", "processing_llava.py", "chat_template.jinja"):
        assert (checkpoint / name).is_file(), name
    auto_map = json.loads((checkpoint / "config.json").read_text())["auto_map"]
    assert auto_map["AutoModelForImageTextToText"] == "modeling_llava.LlavaForConditionalGeneration"
    assert "AutoModelForVision2Seq" not in auto_map  # removed in transformers 5, which the remote code needs
    assert json.loads((checkpoint / "processor_config.json").read_text())["auto_map"]["AutoProcessor"] == (
        "processing_llava.LlavaHfProcessor"
    )


REMOTE_SCRIPT = textwrap.dedent(
    """
    import importlib.abc, json, sys
    class BlockLlavaHf(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == "llava_hf" or name.startswith("llava_hf."):
                raise ImportError("llava_hf is blocked in this process")
    sys.meta_path.insert(0, BlockLlavaHf())
    import numpy as np, torch
    from PIL import Image
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor, pipeline
    path = sys.argv[1]
    config = AutoConfig.from_pretrained(path, trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(path, trust_remote_code=True)
    model = AutoModelForImageTextToText.from_pretrained(path, trust_remote_code=True).eval()
    image = Image.fromarray((np.random.default_rng(0).random((10, 14, 3)) * 255).astype("uint8"))
    inputs = processor(images=[image], text="<image>\\nWhat is it?", return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits
    pipe = pipeline("image-text-to-text", model=path, trust_remote_code=True)
    messages = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "Hi"}]}]
    answer = pipe(text=messages, max_new_tokens=3, generate_kwargs={"do_sample": False}, return_full_text=False)
    assert "llava_hf" not in sys.modules and sys.modules.get("timm") is None
    print(json.dumps({
        "config": type(config).__module__, "model": type(model).__module__, "processor": type(processor).__module__,
        "pipeline_model": type(pipe.model).__module__, "logits_sum": float(logits.sum()),
        "answer": answer[0]["generated_text"],
    }))
    """
)


def test_remote_code_loads_without_llava_hf(checkpoint, tmp_path):
    script = tmp_path / "remote.py"
    script.write_text(REMOTE_SCRIPT)
    # A CLIP-based checkpoint must not need timm: shadow it with a package that fails to import.
    (tmp_path / "shadow" / "timm").mkdir(parents=True)
    (tmp_path / "shadow" / "timm" / "__init__.py").write_text("raise ImportError('timm is not installed here')\n")
    result = subprocess.run(
        [sys.executable, str(script), str(checkpoint)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={
            "HF_HUB_OFFLINE": "1",
            "HF_HOME": str(tmp_path / "hf_home"),
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": str(tmp_path / "shadow"),
        },
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    for key in ("config", "model", "processor", "pipeline_model"):
        assert report[key].startswith("transformers_modules."), report
    # Same weights, same inputs: the remote-code model computes what the installed package does.
    model = LlavaForConditionalGeneration.from_pretrained(checkpoint).eval()
    processor = LlavaProcessor.from_pretrained(checkpoint)
    image = Image.fromarray((np.random.default_rng(0).random((10, 14, 3)) * 255).astype("uint8"))
    with torch.no_grad():
        logits = model(**processor(images=[image], text="<image>\nWhat is it?", return_tensors="pt")).logits
    assert abs(float(logits.sum()) - report["logits_sum"]) < 1e-3


def test_pipeline_with_the_installed_package(checkpoint):
    pipe = pipeline("image-text-to-text", model=str(checkpoint))
    assert type(pipe.model) is LlavaForConditionalGeneration
    image = Image.fromarray((np.random.default_rng(1).random((12, 12, 3)) * 255).astype("uint8"))
    messages = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "Hi"}]}]
    out = pipe(text=messages, max_new_tokens=4, generate_kwargs={"do_sample": False}, return_full_text=False)
    # The pipeline's answer is what generate gives on the processor's inputs.
    processor = pipe.processor
    inputs = processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    ids = pipe.model.generate(**inputs, max_new_tokens=4, do_sample=False)[0, inputs["input_ids"].shape[1] :]
    assert out[0]["generated_text"] == processor.decode(ids, skip_special_tokens=True)
