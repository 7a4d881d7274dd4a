"""Tiny random llava_hf models shared by every test: CLIP vision (hidden 32) + Llama (2 layers), 8-px images."""

import string
from pathlib import Path

import torch
from transformers import CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlamaTokenizer

from llava_hf import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor, get_chat_template

VOCAB_SIZE = 160


def tiny_tokenizer() -> LlamaTokenizer:
    """A character-level Llama tokenizer (Metaspace, `▁` prefix) with `<image>` and `<pad>` added."""
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "▁": 3}
    for char in string.ascii_letters + string.digits + ".,:;?!'\"()-_/\n":
        vocab.setdefault(char, len(vocab))
    for char in string.ascii_lowercase:  # word-initial pieces, so "▁" merges like a real SentencePiece vocab
        vocab.setdefault("▁" + char, len(vocab))
    tokenizer = LlamaTokenizer(vocab=vocab, merges=[])
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"], "pad_token": "<pad>"})
    assert len(tokenizer) <= VOCAB_SIZE, len(tokenizer)
    return tokenizer


def tiny_llama_config(tokenizer: LlamaTokenizer, max_position_embeddings: int = 512) -> LlamaConfig:
    """The tiny Llama (hidden 32, 2 layers, GQA 4/2) over `tiny_tokenizer`'s vocabulary."""
    return LlamaConfig(
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=VOCAB_SIZE,
        max_position_embeddings=max_position_embeddings,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=tokenizer.pad_token_id,
    )


class LlavaModelTester:
    def __init__(
        self,
        projector_type: str = "mlp2x_gelu",
        vision_feature_select_strategy: str = "default",
        vision_feature_layer: int | list[int] = -2,
        image_aspect_ratio: str = "square",
        chat_template: str = "vicuna_v1",
    ):
        self.tokenizer = tiny_tokenizer()
        self.projector_type = projector_type
        self.vision_feature_select_strategy = vision_feature_select_strategy
        self.vision_feature_layer = vision_feature_layer
        self.image_aspect_ratio = image_aspect_ratio
        self.chat_template = chat_template
        self.image_size = 8
        self.patch_size = 2

    def get_config(self) -> LlavaConfig:
        return LlavaConfig(
            vision_config=CLIPVisionConfig(
                hidden_size=32,
                intermediate_size=37,
                num_hidden_layers=2,
                num_attention_heads=4,
                image_size=self.image_size,
                patch_size=self.patch_size,
                projection_dim=32,
            ),
            text_config=tiny_llama_config(self.tokenizer),
            image_token_id=self.tokenizer.convert_tokens_to_ids("<image>"),
            projector_type=self.projector_type,
            vision_feature_select_strategy=self.vision_feature_select_strategy,
            vision_feature_layer=self.vision_feature_layer,
            image_aspect_ratio=self.image_aspect_ratio,
        )

    def get_model(self, seed: int = 0, **kwargs) -> LlavaForConditionalGeneration:
        torch.manual_seed(seed)
        model = LlavaForConditionalGeneration._from_config(self.get_config(), **kwargs).eval()
        model.generation_config.pad_token_id = self.tokenizer.pad_token_id
        model.generation_config.eos_token_id = self.tokenizer.eos_token_id
        return model

    def get_processor(self) -> LlavaProcessor:
        config = self.get_config()
        image_processor = CLIPImageProcessor(
            size={"shortest_edge": self.image_size},
            crop_size={"height": self.image_size, "width": self.image_size},
        )
        return LlavaProcessor(
            image_processor=image_processor,
            tokenizer=self.tokenizer,
            chat_template=get_chat_template(self.chat_template),
            image_seq_length=config.image_seq_length,
            image_aspect_ratio=self.image_aspect_ratio,
        )

    def save(self, path: Path, seed: int = 0) -> Path:
        self.get_model(seed).save_pretrained(path)
        self.get_processor().save_pretrained(path)
        return path

    def prepare_inputs(self, batch_size: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
        """`input_ids` with one image each: BOS, 16 `<image>` tokens, then random text."""
        generator = torch.Generator().manual_seed(seed)
        config = self.get_config()
        text = torch.randint(4, 60, (batch_size, 5), generator=generator)
        image = torch.full((batch_size, config.image_seq_length), config.image_token_id)
        input_ids = torch.cat([torch.ones(batch_size, 1, dtype=torch.long), image, text], dim=1)
        pixel_values = torch.randn(batch_size, 3, self.image_size, self.image_size, generator=generator)
        return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "pixel_values": pixel_values}
