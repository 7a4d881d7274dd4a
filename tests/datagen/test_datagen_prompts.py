"""Requests: system prompt, few-shot examples as alternating turns in a seeded order, then the query."""

import random

import pytest

from llava_hf.datagen.prompts import KINDS, canonical_kind, load_prompt_set, load_prompts, request_rng


def test_each_type_has_a_system_prompt_and_a_few_examples_in_the_right_context_layout():
    prompts = load_prompts()
    assert set(prompts) == set(KINDS)
    for kind, prompt_set in prompts.items():
        assert prompt_set.system and 2 <= len(prompt_set.examples) <= 3
        for example in prompt_set.examples:
            # Conversation examples are captions only; detail and complex examples carry boxes after a blank line.
            assert ("\n\n" in example.context) == prompt_set.uses_boxes, (kind, example.context)


def test_messages_alternate_examples_then_the_query():
    prompt_set = load_prompt_set("detail")
    messages = prompt_set.messages("A cat on a mat.\n\ncat: [0.1, 0.2, 0.3, 0.4]", random.Random(0))
    assert messages[0] == {"role": "system", "content": prompt_set.system}
    roles = [m["role"] for m in messages[1:]]
    assert roles == ["user", "assistant"] * len(prompt_set.examples) + ["user"]
    assert messages[-1]["content"] == "A cat on a mat.\n\ncat: [0.1, 0.2, 0.3, 0.4]"
    pairs = {(messages[i]["content"], messages[i + 1]["content"]) for i in range(1, len(messages) - 1, 2)}
    assert pairs == {(e.context, e.response) for e in prompt_set.examples}  # each example once, kept together


def test_few_shot_order_depends_only_on_seed_and_key():
    prompt_set = load_prompt_set("conversation")

    def order(seed, image_id, sample):
        messages = prompt_set.messages("q", request_rng(seed, image_id, "conversation", sample, "shots"))
        return tuple(m["content"] for m in messages[1::2])

    assert order(0, "img1", 0) == order(0, "img1", 0)
    orders = {order(seed, image_id, 0) for seed in range(5) for image_id in ("a", "b", "c", "d")}
    assert len(orders) > 1  # shuffled, not fixed


def test_your_own_prompts_load_from_a_folder_in_the_original_layout(tmp_path):
    folder = tmp_path / "conversation"
    folder.mkdir()
    (folder / "system_message.txt").write_text("Be brief.\n")
    (folder / "000_caps.txt").write_text("A dog.")
    (folder / "000_conv.txt").write_text("Question:\nWhat animal?\n===\nAnswer:\nA dog.")
    (tmp_path / "complex_reasoning").mkdir()
    (tmp_path / "complex_reasoning" / "system.txt").write_text("Reason.")
    prompts = load_prompts(["conv", "detail", "complex_reasoning"], tmp_path)
    assert prompts["conversation"].system == "Be brief." and len(prompts["conversation"].examples) == 1
    assert prompts["complex"].system == "Reason." and prompts["complex"].examples == ()
    assert prompts["detail"].source == "built-in"  # not in the folder: ours
    (folder / "001_conv.txt").write_text("Question:\nA?\n===\nAnswer:\nB.")
    with pytest.raises(FileNotFoundError, match="001_conv.txt"):
        load_prompt_set("conversation", tmp_path)
    (folder / "001_conv.txt").unlink()
    (folder / "system_message.txt").unlink()
    with pytest.raises(FileNotFoundError, match="system.txt"):
        load_prompt_set("conversation", tmp_path)


def test_unknown_type_lists_the_choices():
    assert canonical_kind("detail_description") == "detail"
    with pytest.raises(ValueError, match="conversation, detail, complex"):
        canonical_kind("summary")
