"""Data-engine throughput against an OpenAI-compatible server with a fixed latency: requests/s vs the ideal.

    python bench/datagen_throughput.py [--latency 0.05] [--concurrency 1,8,32,128] [--clients ours,openai]

A local server in a SEPARATE process (so it never shares the client's event loop or interpreter) answers every
`POST /v1/chat/completions` `--latency` seconds after it arrives, with a valid chat.completion for the requested
type (a minimal asyncio HTTP/1.1 server, so that it adds as little as possible besides the latency). The client is the whole engine (`InstructionEngine`: few-shot prompts, requests,
parsing, validation, JSONL writes, accounting) over shapes-world contexts, at each concurrency level. With a fixed
latency L, the ideal is `concurrency / L` requests/s; the figure is measured / ideal (1.0 = no client overhead).

Clients: `ours` is the engine's `OpenAICompatibleBackend` (one shared aiohttp session); `aiohttp-raw` is bare aiohttp
POSTs of the same kind of request with no engine (the floor of this HTTP path on this machine); `openai` is the same
engine with a backend that calls `openai.AsyncOpenAI.chat.completions.create` (retries off), to show the client
library's per-request cost. By default the client runs on one core and the server on another (`--no-pin` to let
the OS place them). Prints one JSON line (device, versions, every figure); best of `--rounds` rounds per point.
"""

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

RESPONSES = {
    "conversation": "Question:\nWhat shapes are there?\n===\nAnswer:\nA circle and a square.\n===\n"
    "Question:\nWhat colour is the circle?\n===\nAnswer:\nIt is red.",
    "detail": "The picture shows a red circle on the left and a blue square on the right, on a light background.",
    "complex": "Question:\nWhich shape is larger?\n===\nAnswer:\nThe square, because its box is wider and taller.",
}


# -- the server (child process) --------------------------------------------------------------------------------------
class _LatencyServer(asyncio.Protocol):
    """Minimal HTTP/1.1 keep-alive server: each request (Content-Length body) is answered `latency` s later.

    Written on bare asyncio so that the server adds as little as possible besides its latency: an aiohttp web
    server in this role costs ~0.3 ms of CPU and a few ms of queueing per request on 2 cores, which would be
    counted against the client (measured: raw aiohttp requests reach 0.88 of the ideal at concurrency 32 against
    an aiohttp server, 0.92 against this one)."""

    latency = 0.05
    responses: dict[bytes, bytes] = {}  # a phrase of a type's system prompt -> the full HTTP response

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport, self.buffer = transport, b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].lower()
            start = head.find(b"content-length:")
            length = int(head[start + 15 :].split(b"\r\n", 1)[0]) if start >= 0 else 0
            if len(self.buffer) < end + 4 + length:
                return
            body, self.buffer = self.buffer[end + 4 : end + 4 + length], self.buffer[end + 4 + length :]
            # The type is found by a phrase of its system prompt (a bytes search), not by parsing the JSON.
            response = next((r for marker, r in self.responses.items() if marker in body), None)
            response = response or next(iter(self.responses.values()))
            asyncio.get_running_loop().call_later(self.latency, self._reply, response)

    def _reply(self, response: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(response)


def serve(latency: float) -> None:
    from llava_hf.datagen.prompts import load_prompts

    prompts = load_prompts()
    for kind, prompt in prompts.items():
        others = [p.system for k, p in prompts.items() if k != kind]
        sentence = next(s for s in prompt.system.split(". ") if all(s not in other for other in others))
        body = json.dumps(
            {
                "id": "chatcmpl-bench",
                "object": "chat.completion",
                "created": 0,
                "model": "bench",
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": RESPONSES[kind]}, "finish_reason": "stop"}
                ],
                "usage": {"prompt_tokens": 900, "completion_tokens": 40, "total_tokens": 940},
            }
        ).encode()
        head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        _LatencyServer.responses[json.dumps(sentence)[1:-1].encode()] = head.encode() + body
    _LatencyServer.latency = latency

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(_LatencyServer, "127.0.0.1", 0, backlog=4096)
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


# -- the clients -----------------------------------------------------------------------------------------------------
class OpenAIClientBackend:
    """The engine's backend interface over the `openai` package's async client (the comparison point)."""

    def __init__(self, base_url: str, max_connections: int):
        import httpx2 as httpx  # the HTTP library this openai release is built on
        from openai import AsyncOpenAI

        self.name = "bench"
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self.client = AsyncOpenAI(
            base_url=base_url, api_key="bench", max_retries=0, http_client=httpx.AsyncClient(limits=limits)
        )

    async def complete(self, messages):
        from llava_hf.datagen import Completion

        response = await self.client.chat.completions.create(
            model="bench", messages=messages, temperature=0.7, max_tokens=1024
        )
        choice = response.choices[0]
        return Completion(
            choice.message.content or "",
            choice.finish_reason,
            response.usage.prompt_tokens,
            response.usage.completion_tokens,
        )

    async def aclose(self) -> None:
        await self.client.close()


def raw_rate(base_url: str, concurrency: int, requests: int) -> float:
    """Requests/s of bare aiohttp POSTs of a typical engine request (no engine): the floor of this HTTP path."""
    import random

    import aiohttp

    from llava_hf.datagen import shapes_contexts
    from llava_hf.datagen.prompts import load_prompt_set

    context = next(shapes_contexts(seed=0, num_images=1))
    messages = load_prompt_set("detail").messages(context.render(), random.Random(0))
    body = json.dumps({"model": "bench", "temperature": 0.7, "max_tokens": 1024, "messages": messages}).encode()
    url = base_url + "/chat/completions"

    async def run() -> float:
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
            remaining = iter(range(requests))

            async def worker() -> None:
                for _ in remaining:
                    async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
                        json.loads(await r.read())

            start = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return requests / (time.perf_counter() - start)

    return asyncio.run(run())


def measure(client: str, base_url: str, concurrency: int, requests: int) -> float:
    """Requests/s of one engine run of `requests` keys at `concurrency` (a fresh output folder)."""
    from llava_hf.datagen import EngineSettings, InstructionEngine, OpenAICompatibleBackend, shapes_contexts

    if client == "aiohttp-raw":
        return raw_rate(base_url, concurrency, requests)
    contexts = list(shapes_contexts(seed=0, num_images=-(-requests // 3)))
    if client == "ours":
        backend = OpenAICompatibleBackend(
            "bench", base_url=base_url, api_key_env="BENCH_NO_KEY", timeout=60, max_connections=concurrency
        )
    else:
        backend = OpenAIClientBackend(base_url, concurrency)
    settings = EngineSettings(concurrency=concurrency, max_retries=0, progress=False)
    with tempfile.TemporaryDirectory() as out:
        report = asyncio.run(InstructionEngine(backend, out, settings).run(contexts))
    handled = report.done + report.rejected_total + report.failed_total
    if report.done != handled:
        raise RuntimeError(f"bench run was not clean: {report.render()}")
    return handled / report.elapsed_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--concurrency", default="1,8,32,128")
    parser.add_argument("--clients", default="ours,aiohttp-raw,openai")
    parser.add_argument("--seconds", type=float, default=2.5, help="ideal duration of each run (sets its size)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--pin", action=argparse.BooleanOptionalAction, default=True, help="client and server on separate cores"
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.latency)
        return

    import logging

    logging.disable(logging.WARNING)  # the missing-key warning, once per run
    server_command = [sys.executable, __file__, "--serve", "--latency", str(args.latency)]
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    pinned = args.pin and len(cpus) >= 2
    if pinned:
        # The client on one core, the server on another: they never compete for a core's time slices.
        os.sched_setaffinity(0, {cpus[0]})
        server_command = ["taskset", "-c", str(cpus[1]), *server_command]
    server = subprocess.Popen(server_command, stdout=subprocess.PIPE, text=True)
    try:
        base_url = f"http://127.0.0.1:{int(server.stdout.readline())}/v1"
        levels = [int(c) for c in args.concurrency.split(",")]
        clients = args.clients.split(",")
        measure(clients[0], base_url, 8, 64)  # warm-up: imports, first connections
        best: dict[str, dict[int, float]] = {client: {} for client in clients}
        for _ in range(args.rounds):
            for concurrency in levels:
                ideal = concurrency / args.latency
                requests = max(60, int(ideal * args.seconds))
                for client in clients:  # interleaved, so drifts in machine load hit both alike
                    rate = measure(client, base_url, concurrency, requests)
                    best[client][concurrency] = max(best[client].get(concurrency, 0.0), rate)
    finally:
        server.terminate()
        server.wait()

    import aiohttp
    import openai

    results = {
        client: {
            str(c): {
                "requests_per_s": round(rate, 1),
                "ideal": round(c / args.latency, 1),
                "ratio": round(rate * args.latency / c, 3),
            }
            for c, rate in rates.items()
        }
        for client, rates in best.items()
    }
    print(
        json.dumps(
            {
                "bench": "datagen_throughput",
                "device": f"cpu x{os.cpu_count()} ({platform.processor() or platform.machine()})",
                "python": platform.python_version(),
                "aiohttp": aiohttp.__version__,
                "openai": openai.__version__,
                "latency_s": args.latency,
                "rounds": args.rounds,
                "pinned": pinned,
                "date": time.strftime("%Y-%m-%d"),
                "results": results,
            }
        )
    )


if __name__ == "__main__":
    main()
