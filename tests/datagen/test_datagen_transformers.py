"""The in-process backend: a tiny random Llama with the tiny character tokenizer, driven by the same engine."""

import json
import random

import pytest
import torch
from transformers import LlamaForCausalLM

from conftest import single_thread
from fixtures.tester import tiny_llama_config, tiny_tokenizer
from llava_hf.datagen import EngineSettings, TransformersBackend, generate_instructions, shapes_contexts
from llava_hf.datagen.prompts import KINDS, FewShotExample, PromptSet
from llava_hf.datagen.store import RECORDS, REJECTED

CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


one_thread = pytest.fixture(scope="module", autouse=True)(single_thread)


@pytest.fixture(scope="module")
def model_and_tokenizer():
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    config = tiny_llama_config(tokenizer, max_position_embeddings=8192)
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval(), tokenizer


# Short prompts keep the character-level prompts (and the test) small; the built-in ones are thousands of characters.
PROMPTS = {
    kind: PromptSet(kind, "Describe.", (FewShotExample("A dog.", "Question:\nWhat?\n===\nAnswer:\nA dog."),))
    for kind in KINDS
}


def settings(**overrides) -> EngineSettings:
    return EngineSettings(**({"concurrency": 4, "progress": False} | overrides))


def test_hitting_max_new_tokens_is_truncated_and_rejected(tmp_path, model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    backend = TransformersBackend(
        model, tokenizer, max_new_tokens=5, batch_size=4, generate_kwargs={"suppress_tokens": [tokenizer.eos_token_id]}
    )
    report = generate_instructions(list(shapes_contexts(seed=0, num_images=2)), backend, tmp_path, settings(), PROMPTS)
    rejected = [json.loads(line) for line in (tmp_path / REJECTED).read_text().splitlines()]
    assert report.rejected == {"truncated": 6} and report.done == 0 and len(rejected) == 6
    assert all(r["finish_reason"] == "length" and r["usage"]["completion_tokens"] == 5 for r in rejected)
    assert report.completion_tokens == 30
    # Prompt tokens are the templated prompt's length, without padding.
    messages = PROMPTS["detail"].messages("A cat.", random.Random(0))
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    single = backend.generate([messages])[0]
    assert single.prompt_tokens == len(tokenizer(prompt, add_special_tokens=False)["input_ids"])


def test_an_end_token_gives_stop_and_an_accepted_record(tmp_path, model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    letter, eos = tokenizer.convert_tokens_to_ids("a"), tokenizer.eos_token_id
    # Bias the tiny model to say "a" then stop: a deterministic one-word description.
    backend = TransformersBackend(
        model,
        tokenizer,
        max_new_tokens=8,
        batch_size=2,
        generate_kwargs={"sequence_bias": {(letter,): 50.0, (letter, eos): 100.0}},
        name="tiny",
    )
    report = generate_instructions(
        list(shapes_contexts(seed=1, num_images=3)), backend, tmp_path, settings(kinds=("detail",)), PROMPTS
    )
    records = [json.loads(line) for line in (tmp_path / RECORDS).read_text().splitlines()]
    assert report.done == 3 and len(records) == 3
    for record in records:
        assert record["conversations"][1] == {"from": "gpt", "value": "a"}
        assert record["finish_reason"] == "stop" and record["usage"]["completion_tokens"] == 2
        assert record["model"] == "tiny"


def test_batched_greedy_equals_one_at_a_time(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    backend = TransformersBackend(model, tokenizer, max_new_tokens=6, batch_size=8)
    conversations = [
        [{"role": "system", "content": "Describe."}, {"role": "user", "content": text}]
        for text in ("A red circle.", "Two squares on a light background, side by side.", "Dog")
    ]
    batched = backend.generate(conversations)
    alone = [backend.generate([conversation])[0] for conversation in conversations]
    assert [c.text for c in batched] == [c.text for c in alone]
    assert [c.prompt_tokens for c in batched] == [c.prompt_tokens for c in alone]


def test_a_tokenizer_without_chat_template_is_refused(model_and_tokenizer):
    model, _ = model_and_tokenizer
    with pytest.raises(ValueError, match="chat template"):
        TransformersBackend(model, tiny_tokenizer())


def test_cli_runs_a_local_model_folder(tmp_path, model_and_tokenizer, capsys):
    from llava_hf.cli import main

    model, tokenizer = model_and_tokenizer
    model.save_pretrained(tmp_path / "lm")
    tokenizer.save_pretrained(tmp_path / "lm")
    prompts = tmp_path / "prompts" / "detail"
    prompts.mkdir(parents=True)
    (prompts / "system.txt").write_text("Describe.")
    caps = tmp_path / "caps.jsonl"
    caps.write_text(json.dumps({"id": "1", "image": "1.jpg", "captions": ["A cat."], "instances": []}) + "\n")
    code = main(
        [
            "generate-instructions",
            "--annotations",
            str(caps),
            "--types",
            "detail",
            "--prompts",
            str(tmp_path / "prompts"),
            "--backend",
            "transformers",
            "--model",
            str(tmp_path / "lm"),
            "--max-tokens",
            "3",
            "--temperature",
            "0",
            "--device",
            "cpu",
            "--out",
            str(tmp_path / "out"),
            "--no-progress",
        ]
    )
    assert code == 0, capsys.readouterr()
    rows = [
        json.loads(line) for name in (RECORDS, REJECTED) for line in (tmp_path / "out" / name).read_text().splitlines()
    ]
    assert len(rows) == 1 and rows[0]["model"] == str(tmp_path / "lm") and rows[0]["usage"]["completion_tokens"] <= 3
