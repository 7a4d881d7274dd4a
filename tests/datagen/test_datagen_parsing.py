"""Raw responses -> LLaVA conversations: the paper's raw format, `<image>` placement, and every rejection reason."""

import random
import re

import pytest

from fixtures.external import external
from llava_hf.data import llava_record_to_row
from llava_hf.datagen.parsing import (
    EMPTY_RESPONSE,
    EMPTY_TURN,
    FILTERED,
    PLACEHOLDER,
    REFUSAL,
    TRUNCATED,
    UNBALANCED,
    WRONG_TURN_COUNT,
    ResponseRejected,
    parse_qa_blocks,
    parse_response,
)
from llava_hf.datagen.prompts import DETAIL_INSTRUCTIONS, KINDS, load_prompts

KIND_OF_FOLDER = {"conversation": "conversation", "complex_reasoning": "complex", "detail_description": "detail"}


def _count_blocks(text: str) -> tuple[int, int]:
    """Questions and answers counted independently of the parser: lines that are exactly the label."""
    return len(re.findall(r"^Question:$", text, re.M)), len(re.findall(r"^Answer:$", text, re.M))


@pytest.mark.parametrize("folder", sorted(KIND_OF_FOLDER))
def test_the_papers_raw_responses_parse_into_the_right_number_of_turns(folder):
    files = sorted(external("datagen-examples", folder).glob("*_conv.txt"))
    assert files
    for path in files:
        text = path.read_text()
        conversations = parse_response(KIND_OF_FOLDER[folder], text, "stop", random.Random(0))
        questions, answers = _count_blocks(text)
        expected_turns = 1 if folder == "detail_description" else questions
        if folder != "detail_description":
            assert questions == answers > 0
        assert len(conversations) == 2 * expected_turns, path
        assert [t["from"] for t in conversations] == ["human", "gpt"] * expected_turns
        if folder == "detail_description":
            assert conversations[1]["value"] == text.strip()
        else:  # the last answer is the file's last block, word for word
            assert conversations[-1]["value"] == text.split("Answer:\n")[-1].strip()
        # What the engine writes is a valid LLaVA record.
        llava_record_to_row({"id": path.stem, "image": "x.jpg", "conversations": conversations})


def test_our_few_shot_examples_parse_as_their_type():
    prompts = load_prompts()
    assert sorted(prompts) == sorted(KINDS)
    for kind, prompt_set in prompts.items():
        assert prompt_set.examples, kind
        for example in prompt_set.examples:
            conversations = parse_response(kind, example.response, "stop", random.Random(0))
            questions, answers = _count_blocks(example.response)
            if kind == "detail":  # one turn: a drawn instruction, the description word for word
                assert (questions, answers) == (0, 0)
                assert len(conversations) == 2 and conversations[1]["value"] == example.response.strip()
            else:  # complex reasoning: exactly one pair; a conversation: every pair, in order
                assert questions == answers > 0 and (kind != "complex" or questions == 1), example.response
                assert len(conversations) == 2 * questions
                assert conversations[-1]["value"] == example.response.split("Answer:\n")[-1].strip()
            assert [t["from"] for t in conversations] == ["human", "gpt"] * (len(conversations) // 2)
            assert [t["value"].count("<image>") for t in conversations] == [1] + [0] * (len(conversations) - 1)
            llava_record_to_row({"id": kind, "image": "x.jpg", "conversations": conversations})


def test_image_goes_first_or_last_in_the_first_human_turn_only_seeded():
    text = "Question:\nWhat is it?\n===\nAnswer:\nA cat.\n===\nQuestion:\nWhat colour?\n===\nAnswer:\nGrey."
    placements = []
    for seed in range(40):
        conversations = parse_response("conversation", text, "stop", random.Random(seed))
        first = conversations[0]["value"]
        assert first in ("<image>\nWhat is it?", "What is it?\n<image>")
        assert all("<image>" not in turn["value"] for turn in conversations[1:])
        placements.append(first.startswith("<image>"))
        assert conversations == parse_response("conversation", text, "stop", random.Random(seed))
    assert 5 < sum(placements) < 35  # both positions occur


def test_detail_instruction_is_drawn_from_our_list():
    drawn = {
        parse_response("detail", "A calm lake at dawn.", "stop", random.Random(seed))[0]["value"]
        .replace("<image>", "")
        .strip()
        for seed in range(60)
    }
    assert drawn <= set(DETAIL_INSTRUCTIONS) and len(drawn) > 3


def test_label_on_the_same_line_and_missing_separators_are_read():
    turns = parse_qa_blocks("Question: How many dogs?\nAnswer: Two.\n\nQuestion: Colour?\nAnswer:\nBrown\nand white.")
    assert [(t.question, t.answer) for t in turns] == [("How many dogs?", "Two."), ("Colour?", "Brown\nand white.")]


@pytest.mark.parametrize(
    "kind, text, finish_reason, reason",
    [
        ("conversation", "Question:\nWhat?\n===\nAnswer:\nA cat", "length", TRUNCATED),
        ("detail", "A long description that was cut", "length", TRUNCATED),
        ("detail", "A description", "content_filter", FILTERED),
        ("detail", "   \n", "stop", EMPTY_RESPONSE),
        ("conversation", None, "stop", EMPTY_RESPONSE),
        (
            "conversation",
            "Question:\nWhat?\n===\nAnswer:\n\n===\nQuestion:\nWhy?\n===\nAnswer:\nNo.",
            "stop",
            EMPTY_TURN,
        ),
        ("conversation", "Question:\nWhat?\n===\nQuestion:\nWhy?\n===\nAnswer:\nNo.", "stop", UNBALANCED),
        ("conversation", "Question:\nWhat?\n===\nAnswer:\nA cat.\n===\nQuestion:\nWhy?", "stop", UNBALANCED),
        ("conversation", "Answer:\nA cat.\n===\nQuestion:\nWhat?", "stop", UNBALANCED),
        ("conversation", "Here are some questions.\nQuestion:\nWhat?\n===\nAnswer:\nA cat.", "stop", UNBALANCED),
        ("conversation", "The image shows a cat.", "stop", UNBALANCED),
        ("complex", "Question:\nA?\n===\nAnswer:\nB.\n===\nQuestion:\nC?\n===\nAnswer:\nD.", "stop", WRONG_TURN_COUNT),
        ("detail", "I'm sorry, but I cannot describe images.", "stop", REFUSAL),
        ("detail", "I\u2019m sorry, I can\u2019t do that.", "stop", REFUSAL),
        ("conversation", "Question:\nWhat?\n===\nAnswer:\nAs an AI language model, I have no eyes.", "stop", REFUSAL),
        ("complex", "Question:\nWhy?\n===\nAnswer:\nI cannot assist with that request.", "stop", REFUSAL),
        ("detail", "A cat sits next to <image> a dog.", "stop", PLACEHOLDER),
    ],
)
def test_bad_responses_are_rejected_with_their_reason(kind, text, finish_reason, reason):
    with pytest.raises(ResponseRejected) as caught:
        parse_response(kind, text, finish_reason, random.Random(0))
    assert caught.value.reason == reason


def test_uncertain_answers_are_not_mistaken_for_refusals():
    text = (
        "Question:\nWhat brand is the car?\n===\nAnswer:\nI cannot tell the brand from the picture.\n===\n"
        "Question:\nAre there other people?\n===\nAnswer:\nI can't see any other people in the image."
    )
    assert len(parse_response("conversation", text, "stop", random.Random(0))) == 4
