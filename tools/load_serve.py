"""A bounded load test of `serve`: a bundle served on loopback (uvicorn in a thread of this process), CLIENTS
concurrent `openai` clients asking REQUESTS questions in all; reports requests served, errors and latency
percentiles as JSON.

    python -m tools.load_serve --bundle dist/tiny-onnx --clients 8 --requests 64 --max-tokens 16

Every answer is checked against the same question asked alone first (temperature 0): a mix-up between
concurrent requests counts as an error.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import openai

from exporter.commands.chat import open_session
from runtimes.serve import Background, Model, ServeLimits, Server, build_app


def question(index: int) -> str:
    return f"What is {17 + 7 * index} + {5 + 3 * index}?"


def load_test(bundle: str, clients: int, requests: int, max_tokens: int) -> dict:
    backend, tokenizer, generation_config = open_session(None, bundle, None)
    server = Server(Model(backend, tokenizer, generation_config, "load"), ServeLimits(queue_size=clients))
    background = Background(build_app(server))
    client = openai.OpenAI(base_url=background.url, api_key="unused", max_retries=0, timeout=600)
    distinct = min(requests, 16)

    def ask(index: int) -> tuple[str, float]:
        start = time.perf_counter()
        answer = client.chat.completions.create(model="load", temperature=0, max_tokens=max_tokens,
                                                messages=[{"role": "user", "content": question(index % distinct)}],
                                                extra_body={"thinking_budget": max_tokens})
        return answer.choices[0].message.content, time.perf_counter() - start

    try:
        alone = [ask(i)[0] for i in range(distinct)]
        latencies, errors, failures = [], 0, []

        def one(index: int):
            try:
                return index, *ask(index)
            except openai.OpenAIError as exc:
                return index, None, repr(exc)

        start = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            for index, content, extra in pool.map(one, range(requests)):
                if content is None or content != alone[index % distinct]:
                    errors += 1
                    failures.append(extra if content is None else f"request {index}: another answer")
                else:
                    latencies.append(extra)
        wall = time.perf_counter() - start
    finally:
        background.stop()
    ms = np.asarray(latencies) * 1000
    percentiles = {f"p{p}": round(float(np.percentile(ms, p)), 1) for p in (50, 90, 99)} if len(ms) else {}
    return {"bundle": bundle, "clients": clients, "requests": requests, "max_tokens": max_tokens,
            "served": len(latencies), "errors": errors, "first_errors": failures[:5], "wall_s": round(wall, 2),
            "requests_per_s": round(len(latencies) / wall, 2) if wall else 0.0,
            "latency_ms": {**percentiles, "max": round(float(ms.max()), 1) if len(ms) else None}}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tools.load_serve", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", required=True)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--requests", type=int, default=64)
    p.add_argument("--max-tokens", type=int, default=16)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    report = load_test(args.bundle, args.clients, args.requests, args.max_tokens)
    print(json.dumps(report, indent=2))
    return 0 if report["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
