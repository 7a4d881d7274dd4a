"""The paper's data engine: a text-only LLM writes instruction data from each image's captions and boxes.

- `context`: the symbolic context from COCO-style annotations, caps_boxes files or the shapes world;
- `prompts`: system prompts and few-shot examples per type (conversation, detail, complex), swappable from files;
- `backend`, `openai_compatible`, `transformers_backend`: any OpenAI-compatible endpoint, or an in-process model;
- `parsing`: raw responses -> LLaVA conversations, or a rejection with its reason;
- `store`, `engine`: async, retried, resumable generation into append-only JSONL;
- `output`: LLaVA JSON and `datasets.Dataset`.

    from llava_hf.datagen import EngineSettings, OpenAICompatibleBackend, generate_instructions, load_contexts

    contexts = load_contexts("annotations/instances_train2017.json", "annotations/captions_train2017.json")
    backend = OpenAICompatibleBackend("Qwen/Qwen2.5-72B-Instruct", base_url="http://localhost:8000/v1")
    report = generate_instructions(contexts, backend, "out/instruct", EngineSettings(concurrency=64))
    print(report.render())
"""

from .backend import BackendUnusable, ChatBackend, CircuitBreaker, Completion, RequestFailed, TransientError
from .context import ImageContext, load_caps_boxes, load_coco, load_contexts, shapes_contexts
from .engine import EngineSettings, InstructionEngine, RunReport, generate_instructions
from .openai_compatible import OpenAICompatibleBackend
from .output import iter_records, load_instruction_dataset, write_llava_instruct
from .parsing import ResponseRejected, parse_qa_blocks, parse_response
from .prompts import KINDS, PromptSet, load_prompt_set, load_prompts
from .transformers_backend import TransformersBackend

__all__ = [
    "KINDS",
    "BackendUnusable",
    "ChatBackend",
    "CircuitBreaker",
    "Completion",
    "EngineSettings",
    "ImageContext",
    "InstructionEngine",
    "OpenAICompatibleBackend",
    "PromptSet",
    "RequestFailed",
    "ResponseRejected",
    "RunReport",
    "TransformersBackend",
    "TransientError",
    "generate_instructions",
    "iter_records",
    "load_caps_boxes",
    "load_coco",
    "load_contexts",
    "load_instruction_dataset",
    "load_prompt_set",
    "load_prompts",
    "parse_qa_blocks",
    "parse_response",
    "shapes_contexts",
    "write_llava_instruct",
]
