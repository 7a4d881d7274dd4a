"""How answers are generated: the one `GenerationSettings` of batched evaluation (`llava_hf.eval.runner`), the demo,
the Space and `llava-hf chat` (`llava_hf.demo`, which starts from its own defaults, `DEMO_GENERATION`).

Nothing here imports the rest of the package, so any module can use it.
"""

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class GenerationSettings:
    """`model.generate`'s decoding settings, the seed of sampled runs and the batch size of batched inference.

    The field metadata's `help` is what `llava-hf`'s options of the same names say.
    """

    max_new_tokens: int = field(default=128, metadata={"min": 1, "help": "tokens generated at most per answer"})
    do_sample: bool = field(default=False, metadata={"help": "sample instead of greedy decoding"})
    temperature: float = field(default=0.2, metadata={"help": "sampling temperature (with --do-sample)"})
    top_p: float | None = field(
        default=None, metadata={"help": "nucleus sampling: the top-p probability mass kept (with --do-sample)"}
    )
    num_beams: int = field(default=1, metadata={"min": 1, "help": "beam search width (1: no beam search)"})
    seed: int = field(
        default=0, metadata={"help": "seed of sampled answers (each batch: seed + the index of its first question)"}
    )
    batch_size: int = field(default=8, metadata={"min": 1, "help": "questions per generate call"})

    def generate_kwargs(self) -> dict[str, Any]:
        """The keyword arguments for `model.generate`: temperature and top-p only when sampling."""
        kwargs: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens,
            "do_sample": self.do_sample,
            "num_beams": self.num_beams,
        }
        if self.do_sample:
            kwargs["temperature"] = self.temperature
            if self.top_p is not None:
                kwargs["top_p"] = self.top_p
        return kwargs

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def check(self, limits: Any) -> None:
        """Raise unless these settings are within the demo's `limits` (`llava_hf.demo.Limits.check_generation`, which
        raises an `InputError` saying which value and which limit)."""
        limits.check_generation(self)
