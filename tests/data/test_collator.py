"""Assistant-only labels: exact by construction, loud on failure, truncation never through an image."""

import numpy as np
import pytest
import torch
from PIL import Image

from fixtures.tester import LlavaModelTester
from llava_hf import LlavaProcessor, get_chat_template
from llava_hf.data.collator import LabelError, LlavaDataCollator

ANSWERS = ["A red cup.", "No, it is empty.", "Yes, twice."]


def _image(seed=0):
    return Image.fromarray((np.random.default_rng(seed).random((10, 14, 3)) * 255).astype("uint8"))


def _conversation(image_after=False, turns=3):
    first = [{"type": "text", "text": "What is on the table?\n"}, {"type": "image", "text": None}]
    if not image_after:
        first = first[::-1]
    messages = []
    questions = ["", "Is it full?", "Did you check?"]
    for index in range(turns):
        content = first if index == 0 else [{"type": "text", "text": questions[index]}]
        messages += [
            {"role": "user", "content": content},
            {"role": "assistant", "content": [{"type": "text", "text": ANSWERS[index]}]},
        ]
    return {"id": f"conv-{turns}-{image_after}", "images": [_image()], "messages": messages}


def _supervised(batch, row, tokenizer):
    labels = batch["labels"][row]
    return tokenizer.decode(labels[labels != -100])


def _smollm2_processor(template="chatml"):
    pytest.importorskip("gguf")
    try:
        from llava_hf.backbones import load_smollm2
    except ImportError as error:  # pragma: no cover
        pytest.skip(str(error))
    try:
        _, tokenizer = load_smollm2()
    except ImportError as error:
        pytest.skip(f"SmolLM2 not installed: {error}")
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]}, replace_extra_special_tokens=False)
    tester = LlavaModelTester()
    return LlavaProcessor(
        image_processor=tester.get_processor().image_processor,
        tokenizer=tokenizer,
        chat_template=get_chat_template(
            template, default_system="You are a helpful AI assistant named SmolLM, trained by Hugging Face"
        ),
        image_seq_length=16,
    )


@pytest.mark.parametrize("image_after", [False, True])
@pytest.mark.parametrize("turns", [1, 3])
def test_tiny_tokenizer_vicuna_supervises_exactly_the_answers(image_after, turns):
    processor = LlavaModelTester(chat_template="vicuna_v1").get_processor()
    batch = LlavaDataCollator(processor)([_conversation(image_after, turns)])
    assert _supervised(batch, 0, processor.tokenizer) == "".join(a + "</s>" for a in ANSWERS[:turns])
    # Image tokens, system prompt and user turns are masked.
    image = batch["input_ids"][0] == processor.image_token_id
    assert image.sum() == 16 and (batch["labels"][0][image] == -100).all()


@pytest.mark.parametrize("turns", [1, 3])
def test_smollm2_tokenizer_chatml_supervises_exactly_the_answers(turns):
    processor = _smollm2_processor()
    batch = LlavaDataCollator(processor)([_conversation(False, turns)])
    assert _supervised(batch, 0, processor.tokenizer) == "".join(a + "<|im_end|>" for a in ANSWERS[:turns])


def test_smollm2_tokenizer_vicuna_template():
    processor = _smollm2_processor("vicuna_v1")
    batch = LlavaDataCollator(processor)([_conversation(False, 3)])
    # Byte-level BPE merges the space after "ASSISTANT:" into the answer's first token (" A"), exactly as Llama's
    # "▁A" in the original LLaVA: that token is supervised, so each decoded answer starts with its space.
    eos = processor.tokenizer.eos_token
    assert _supervised(batch, 0, processor.tokenizer) == "".join(f" {a}{eos}" for a in ANSWERS)


def test_plain_supervises_caption_and_newline():
    processor = LlavaModelTester(chat_template="plain").get_processor()
    sample = {
        "id": "cap",
        "images": [_image()],
        "messages": [
            {"role": "user", "content": [{"type": "image", "text": None}]},
            {"role": "assistant", "content": [{"type": "text", "text": "a red bus"}]},
        ],
    }
    batch = LlavaDataCollator(processor)([sample])
    assert _supervised(batch, 0, processor.tokenizer) == "a red bus\n"


def test_batch_padding_is_masked_and_text_only_rows_mix():
    processor = LlavaModelTester().get_processor()
    text_only = {
        "id": "t",
        "images": [],
        "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}],
    }
    batch = LlavaDataCollator(processor, pad_to_multiple_of=8)([_conversation(False, 3), text_only])
    assert batch["input_ids"].shape[1] % 8 == 0
    assert batch["pixel_values"].shape[0] == 1
    padding = batch["attention_mask"] == 0
    assert padding[1].any() and (batch["labels"][padding] == -100).all()
    assert _supervised(batch, 1, processor.tokenizer) == "Hello.</s>"
    out = LlavaModelTester().get_model()(**batch)
    assert torch.isfinite(out.loss)


def test_unlocatable_answers_are_an_error_naming_the_sample():
    processor = LlavaModelTester().get_processor()
    processor.chat_template = processor.chat_template.replace("{%- generation -%}", "").replace(
        "{%- endgeneration -%}", ""
    )
    with pytest.raises(LabelError, match=r"sample 'conv-3-False': 3 assistant answer\(s\) but 0 supervised span"):
        LlavaDataCollator(processor)([_conversation(False, 3)])


def test_image_count_mismatch_names_the_sample():
    processor = LlavaModelTester().get_processor()
    sample = _conversation()
    sample["images"] = []
    with pytest.raises(LabelError, match=r"sample 'conv-3-False': messages have 1 image part\(s\) but 'images' has 0"):
        LlavaDataCollator(processor)([sample])


def _long_two_image_sample():
    image_part = {"type": "image", "text": None}
    return {
        "id": "two-images",
        "images": [_image(1), _image(2)],
        "messages": [
            {"role": "user", "content": [image_part, {"type": "text", "text": "first"}]},
            {"role": "assistant", "content": "one"},
            {"role": "user", "content": [image_part, {"type": "text", "text": "second"}]},
            {"role": "assistant", "content": "two"},
        ],
    }


def test_truncation_never_cuts_through_image_tokens():
    processor = LlavaModelTester().get_processor()
    full = LlavaDataCollator(processor)([_long_two_image_sample()])
    ids = full["input_ids"][0].tolist()
    second_image = [i for i, t in enumerate(ids) if t == processor.image_token_id][16]
    collator = LlavaDataCollator(processor, max_length=second_image + 5)  # would cut inside the second image
    batch = collator([_long_two_image_sample()])
    assert batch["input_ids"].shape[1] == second_image  # moved back to the image's start
    assert (batch["input_ids"][0] == processor.image_token_id).sum() == 16
    assert batch["pixel_values"].shape[0] == 1  # the dropped image's pixels go too
    assert _supervised(batch, 0, processor.tokenizer) == "one</s>"
    assert collator.stats["truncated"] == 1
    LlavaModelTester().get_model()(**batch)  # and the model accepts it: counts agree


def test_skip_policy_counts_skips():
    processor = LlavaModelTester().get_processor()
    collator = LlavaDataCollator(processor, max_length=200, truncation="skip")
    short = {
        "id": "s",
        "images": [],
        "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo."}],
    }
    batch = collator([_long_two_image_sample(), short, _long_two_image_sample()])
    assert batch["input_ids"].shape[0] == 1
    assert collator.stats["skipped: longer than max_length"] == 2 and collator.stats["samples"] == 3
    assert "skipped: longer than max_length: 2" in collator.report()


def test_stats_in_batch_carries_each_batch_own_counts():
    # Dataloader workers count in their own copy of `stats`; the batch is what reaches the main process.
    from llava_hf.data.collator import BATCH_STATS_KEY, STAT_KEYS

    processor = LlavaModelTester().get_processor()
    collator = LlavaDataCollator(processor, max_length=200, truncation="skip", stats_in_batch=True)
    short = {
        "id": "s",
        "images": [],
        "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo."}],
    }
    first = collator([_long_two_image_sample(), short, _long_two_image_sample()])
    second = collator([short])
    counts = [dict(zip(STAT_KEYS, batch[BATCH_STATS_KEY].tolist())) for batch in (first, second)]
    assert counts[0] == {
        "samples": 3,
        "truncated": 0,
        "skipped: longer than max_length": 2,
        "skipped: no answer left after truncation": 0,
    }
    assert counts[1]["samples"] == 1 and sum(counts[1].values()) == 1  # this batch's counts, not the running total
    assert BATCH_STATS_KEY not in LlavaDataCollator(processor)([short])  # opt-in: a plain forward never sees it


def _per_token_loss_and_grads(model, batch):
    model.zero_grad()
    out = model(**batch)
    out.loss.backward()
    return out.loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_padding_free_loss_and_gradients_equal_the_padded_batch(attn_implementation):
    # Multi-image, multi-turn, single-turn and text-only samples in one batch; train mode (no KV cache), float32.
    processor = LlavaModelTester().get_processor()
    text_only = {
        "id": "t",
        "images": [],
        "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there."}],
    }
    samples = [_conversation(False, 3), text_only, _long_two_image_sample(), _conversation(True, 1)]
    padded = LlavaDataCollator(processor)(samples)
    packed = LlavaDataCollator(processor, padding_free=True, pad_to_multiple_of=8)(samples)
    assert packed["input_ids"].shape[0] == 1 and "attention_mask" not in packed
    assert packed["input_ids"].shape[1] % 8 == 0
    assert packed["input_ids"].shape[1] < padded["input_ids"].numel()  # the padding is gone
    torch.testing.assert_close(packed["pixel_values"], padded["pixel_values"])  # sample order
    assert (packed["labels"] != -100).sum() == (padded["labels"][:, 1:] != -100).sum()
    starts = (packed["position_ids"][0] == 0).nonzero().flatten().tolist()
    assert (packed["labels"][0, starts] == -100).all()  # nothing is trained across a boundary
    assert packed["cu_seq_lens_q"].tolist() == starts + [packed["input_ids"].shape[1]]

    model = LlavaModelTester().get_model(attn_implementation=attn_implementation).train()  # no cache: masks per sample
    loss, grads = _per_token_loss_and_grads(model, padded)
    packed_loss, packed_grads = _per_token_loss_and_grads(model, packed)
    torch.testing.assert_close(packed_loss, loss, rtol=1e-5, atol=0)
    with torch.no_grad():  # a plain forward in eval mode masks each sample too (no cache is built for it)
        torch.testing.assert_close(model.eval()(**packed).loss, model(**padded).loss, rtol=1e-5, atol=0)
    model.train()
    assert packed_grads.keys() == grads.keys() and grads
    # Relative in norm per tensor; the floor covers tensors whose gradient is rounding noise (~1e-12).
    floor = 1e-8 * max(grad.norm().item() for grad in grads.values())
    for name, grad in grads.items():
        assert (packed_grads[name] - grad).norm() <= 1e-5 * grad.norm() + floor, name


def test_padding_free_follows_the_truncation_policy_per_sample():
    processor = LlavaModelTester().get_processor()
    short = {
        "id": "s",
        "images": [],
        "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo."}],
    }
    skip = LlavaDataCollator(processor, max_length=200, truncation="skip", padding_free=True)
    batch = skip([_long_two_image_sample(), short])
    assert batch["position_ids"][0].tolist() == list(range(batch["input_ids"].shape[1]))  # only the short sample
    assert "pixel_values" not in batch and skip.stats["skipped: longer than max_length"] == 1

    full = LlavaDataCollator(processor)([_long_two_image_sample()])["input_ids"][0].tolist()
    second_image = [i for i, t in enumerate(full) if t == processor.image_token_id][16]
    cut = LlavaDataCollator(processor, max_length=second_image + 5, padding_free=True)
    batch = cut([_long_two_image_sample(), short])
    lengths = torch.diff(batch["cu_seq_lens_q"]).tolist()
    assert lengths[0] == second_image and batch["pixel_values"].shape[0] == 1 and cut.stats["truncated"] == 1


@pytest.mark.parametrize("kwargs", [{"max_length": 0}, {"max_length": -5}, {"pad_to_multiple_of": 0}])
def test_non_positive_lengths_are_refused_at_construction(kwargs):
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=f"{name} must be a positive number"):
        LlavaDataCollator(LlavaModelTester().get_processor(), **kwargs)
