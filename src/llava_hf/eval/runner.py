"""Batched, resumable inference: a question set in, an answers JSONL in the original LLaVA layout out.

Each answer line: `{"question_id", "prompt", "text", "answer_id", "model_id", "metadata": {generation settings}}`.
Prompts come from the checkpoint's own chat template (the processor's); batches are left-padded. A rerun appends
only the questions whose ids are not in the file yet, so a killed run resumes where it stopped.
"""

import json
import logging
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..data.collator import clean_message
from ..data.images import blank_like, load_image
from ..data.llava_format import image_path, iter_llava_file, split_at_images
from ..data.scienceqa import LETTER_PROMPT
from ..generation import GenerationSettings
from ..utils import iter_jsonl, repair_torn_tail, rows_by_id

logger = logging.getLogger(__name__)

SCIENCEQA_SUFFIX = LETTER_PROMPT  # LLaVA-1.5's ScienceQA instruction, appended to each question


@dataclass
class Question:
    question_id: str
    parts: list[dict[str, Any]]  # typed content of the user turn: {"type": "image"} / {"type": "text", "text"}
    images: list[Any] = field(default_factory=list)  # paths or PIL images, in the order of the image parts
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def prompt(self) -> str:
        return "".join(p["text"] if p["type"] == "text" else "<image>" for p in self.parts)


def load_questions(source: str | Path | Iterable[dict], image_root: str | Path | None = None) -> list[Question]:
    """Questions from a LLaVA JSON/JSONL file, records, or a dataset from `load_llava_dataset`: the first human turn
    is asked and the first gpt turn kept as `metadata["answer"]`; LLaVA-Bench rows (`question_id`, `image`, `text`,
    `category`) work too. For a dataset, pass `image_root` (images are read from its `image_files`)."""
    if isinstance(source, (str, Path)):
        root = Path(image_root) if image_root is not None else Path(source).parent
        records: Iterable[dict] = (record for _, record in iter_llava_file(source))
    else:
        root = Path(image_root) if image_root is not None else Path(".")
        records = source
    questions = []
    for number, record in enumerate(records, start=1):
        images = record.get("image")
        images = [] if images is None else [images] if isinstance(images, str) else list(images)
        where = f"question {record.get('question_id', record.get('id'))!r} (record {number})"
        paths = [image_path(root, name, f"{where} image {i}") for i, name in enumerate(images)]
        if "messages" in record:  # a row of llava_hf.data.load_llava_dataset (TRL's conversational layout)
            user = next(m for m in record["messages"] if m["role"] == "user")
            answer = next((m for m in record["messages"] if m["role"] == "assistant"), None)
            parts = clean_message(user)["content"]
            files = record.get("image_files") or []
            extra = json.loads(record.get("metadata") or "{}")
            if answer is not None:
                extra["answer"] = "".join(p.get("text") or "" for p in answer["content"])
            files = [image_path(root, name, f"{where} image {i}") for i, name in enumerate(files)]
            questions.append(Question(str(record["id"]), parts, files, extra))
            continue
        if "conversations" in record:
            human = record["conversations"][0]["value"]
            parts = split_at_images(human)
            extra = {k: v for k, v in record.items() if k not in ("id", "image", "conversations")}
            if len(record["conversations"]) > 1:
                extra["answer"] = record["conversations"][1]["value"]
            questions.append(Question(str(record["id"]), parts, paths, extra))
        else:  # LLaVA-Bench question rows: the image goes before the question, as in the original's eval prompts
            parts = [{"type": "image"} for _ in paths] + [{"type": "text", "text": record["text"]}]
            extra = {k: v for k, v in record.items() if k not in ("question_id", "image", "text")}
            questions.append(Question(str(record["question_id"]), parts, paths, extra))
    ids = [q.question_id for q in questions]
    if len(set(ids)) != len(ids):
        duplicates = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise ValueError(f"question ids must be unique; repeated: {duplicates}")
    return questions


def answered_ids(answers_file: str | Path) -> set[str]:
    """The question ids answered in `answers_file`. An incomplete last line (a kill mid-write) is skipped: that
    question is answered again."""
    path = Path(answers_file)
    if not path.is_file():
        return set()
    return {str(row["question_id"]) for _, row in iter_jsonl(path, skip_torn_tail=True)}


@torch.no_grad()
def run_inference(
    model: Any,
    processor: Any,
    questions: list[Question],
    answers_file: str | Path,
    settings: GenerationSettings | None = None,
    model_id: str | None = None,
    prompt_suffix: str = "",
    blank_images: bool = False,
    progress: bool = True,
) -> Path:
    """Answer `questions` into `answers_file` (appending; ids already there are skipped).

    `prompt_suffix` is appended to each question's text (LLaVA-1.5's ScienceQA prompt: `SCIENCEQA_SUFFIX`).
    `blank_images=True` replaces every image by a grey one of the same size: the blind baseline.
    """
    from tqdm.auto import tqdm

    settings = settings or GenerationSettings()
    model_id = model_id or Path(str(getattr(model, "name_or_path", "") or "model")).name
    answers_file = Path(answers_file)
    answers_file.parent.mkdir(parents=True, exist_ok=True)
    done = answered_ids(answers_file)
    todo = [q for q in questions if q.question_id not in done]
    if done:
        logger.info("%s: %d answered already, %d to go", answers_file, len(questions) - len(todo), len(todo))
    repair_torn_tail(answers_file)  # the next answer starts on a fresh line
    model.eval()
    metadata = {**asdict(settings), "prompt_suffix": prompt_suffix, "blank_images": blank_images}
    with (
        answers_file.open("a", encoding="utf-8") as out,
        tqdm(total=len(todo), desc="answering", disable=not progress) as bar,
    ):
        for start in range(0, len(todo), settings.batch_size):
            batch = todo[start : start + settings.batch_size]
            prompts, images = [], []
            for question in batch:
                parts = [dict(p) for p in question.parts]
                if prompt_suffix:
                    parts.append({"type": "text", "text": prompt_suffix})
                messages = [{"role": "user", "content": parts}]
                prompts.append(processor.apply_chat_template(messages, add_generation_prompt=True))
                for index, image in enumerate(question.images):
                    loaded = load_image(image, f"question {question.question_id!r} image {index}")
                    images.append(blank_like(loaded) if blank_images else loaded)
            inputs = processor(
                images=images or None, text=prompts, padding=True, padding_side="left", return_tensors="pt"
            ).to(model.device)
            if "pixel_values" in inputs:
                inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
            if settings.do_sample:
                torch.manual_seed(settings.seed + start)
            generated = model.generate(**inputs, **settings.generate_kwargs())
            texts = processor.batch_decode(generated[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
            for question, text in zip(batch, texts):
                row = {
                    "question_id": question.question_id,
                    "prompt": question.prompt + prompt_suffix,
                    "text": text.strip(),
                    "answer_id": uuid.uuid4().hex,
                    "model_id": model_id,
                    "metadata": metadata,
                }
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
            out.flush()
            bar.update(len(batch))
    return answers_file


def read_answers(answers_file: str | Path) -> dict[str, dict]:
    """Question id -> answer row of an answers JSONL (an id on two lines raises, naming both)."""
    return rows_by_id(answers_file)
