"""The offline quickstart (`make quickstart`): build the offline default llava_hf and run it on a real photo.

EfficientNet-Lite0 (ImageNet) -> fresh mlp2x_gelu projector -> SmolLM2-135M-Instruct, all from PyPI, no Hub.
Stage 1 / stage 2 training through `accelerate launch recipes/sft.py` comes with the training issue.
"""

import argparse
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output-dir", default="outputs/offline-default")
    args = parser.parse_args()

    from PIL import Image
    from skimage import data
    from transformers import pipeline

    import llava_hf

    model, processor = llava_hf.load_offline_default(seed=0)
    model.save_pretrained(args.output_dir)
    processor.save_pretrained(args.output_dir)
    print(f"saved the stage-1 starting point to {Path(args.output_dir).resolve()}")
    print(f"  vision: {model.config.vision_config.architecture}, {model.config.image_seq_length} image tokens")
    print(f"  projector: {model.config.projector_type} (untrained), LM: {model.config.text_config.model_type}")

    pipe = pipeline("image-text-to-text", model=args.output_dir)
    cat = Image.fromarray(data.chelsea())
    messages = [
        {"role": "user", "content": [{"type": "image", "image": cat}, {"type": "text", "text": "What is this?"}]}
    ]
    answer = pipe(text=messages, max_new_tokens=24, generate_kwargs={"do_sample": False}, return_full_text=False)
    print(f"untrained answer on a cat photo: {answer[0]['generated_text']!r}")
    print("stage 1 + stage 2 training (accelerate launch recipes/sft.py): coming with the training issue")


if __name__ == "__main__":
    main()
