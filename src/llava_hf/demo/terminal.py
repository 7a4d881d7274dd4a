"""`llava-hf chat MODEL --image X`: the demo's chat in a terminal, reading questions from standard input.

Commands: `/image PATH` adds an image to the next question, `/reset` starts a new conversation, `/quit` (or end of
input) stops. Answers stream to standard output as they are generated.
"""

from pathlib import Path
from typing import TextIO

from .chat import ChatModel, GenerationSettings, InputError, Limits, check_text, open_image

HELP = "Commands: /image PATH (add an image to the next question), /reset (new conversation), /quit."


def run_terminal_chat(
    chat: ChatModel,
    images: list[str | Path],
    settings: GenerationSettings,
    stdin: TextIO,
    stdout: TextIO,
    limits: Limits | None = None,
) -> int:
    """Chat until `/quit` or end of input; returns the number of questions answered. A bad input (a missing or
    oversized image, an over-long question) prints its message and the chat goes on."""
    limits = limits or Limits()
    settings.check(limits)
    interactive = stdin.isatty()
    if len(images) > limits.max_images:
        raise InputError(f"{len(images)} images given; the limit is {limits.max_images} per conversation.")
    pending = [open_image(path, limits) for path in images]  # fails before the chat starts, naming the image
    messages, conversation_images, answered = [], [], 0
    # Piped input cannot react to a failed /image: the questions after it are refused until an image is added or the
    # conversation reset, rather than answered about an image that is not there.
    failed_image: str | None = None
    stdout.write(f"llava-hf chat with {chat.name}; {len(pending)} image(s) attached. {HELP}\n")
    stdout.flush()
    while True:
        if interactive:
            stdout.write("you> ")
            stdout.flush()
        line = stdin.readline()
        if not line:
            break
        line = line.strip()
        if not line:
            continue
        try:
            if line in ("/quit", "/exit"):
                break
            if line == "/reset":
                messages, conversation_images, pending, failed_image = [], [], [], None
                stdout.write("(new conversation)\n")
                continue
            if line.startswith("/image"):
                path = line[len("/image") :].strip()
                if len(conversation_images) + len(pending) >= limits.max_images:
                    raise InputError(f"at most {limits.max_images} images per conversation; /reset to start over.")
                try:
                    pending.append(open_image(path, limits))
                except InputError:
                    failed_image = None if interactive else path
                    raise
                failed_image = None
                stdout.write(f"(image {Path(path).name} added to the next question)\n")
                continue
            if line.startswith("/"):
                raise InputError(f"unknown command {line.split()[0]!r}. {HELP}")
            question = check_text(line, limits)
            if failed_image is not None:
                raise InputError(
                    f"not answered: the image before it ({failed_image}) could not be opened; add it again with "
                    "/image PATH or start over with /reset."
                )
        except InputError as error:
            stdout.write(f"error: {error}\n")
            stdout.flush()
            continue
        content = [{"type": "image"} for _ in pending] + [{"type": "text", "text": question}]
        turn_images = conversation_images + pending
        stdout.write("assistant> ")
        stdout.flush()
        answer = ""
        for answer_so_far in chat.stream(messages + [{"role": "user", "content": content}], turn_images, settings):
            stdout.write(answer_so_far[len(answer) :])
            stdout.flush()
            answer = answer_so_far
        stdout.write("\n")
        stdout.flush()
        messages += [
            {"role": "user", "content": content},
            {"role": "assistant", "content": [{"type": "text", "text": answer}]},
        ]
        conversation_images, pending = turn_images, []
        answered += 1
    return answered
