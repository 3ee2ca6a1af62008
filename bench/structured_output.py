#!/usr/bin/env python3
"""Cost of constrained decoding: time per output token with and without a JSON Schema, at batch 1 and batch 8.

Usage: bench/structured_output.py URL [--requests N] [--tokens N]
Against a running `ernie serve` (e.g. the random 0.3B shapes). Each request streams a completion of up to --tokens
tokens; its time per output token (TPOT) is (end - first token) / (tokens - 1). Three workloads, each run with 1 and
with 8 clients at once: no constraint (ignore_eos, so it runs to --tokens), a schema whose one free string lets the
mask cache hit on every step, and one whose string has a maxLength, so every position is a new grammar state and
a fresh mask; plain sampling (temperature only) mostly skips the mask, so the last runs that schema with top_p,
which needs it at every step. Prints the median TPOT of each and the ratio to the unconstrained run at the same
batch size.
"""
import argparse
import json
import statistics
import threading
import time
import urllib.request

FREE = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
BOUNDED = {"type": "object", "properties": {"text": {"type": "string", "minLength": 400, "maxLength": 400}},
           "required": ["text"]}


def one(url, body):
    request = urllib.request.Request(url + "/v1/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    start = time.perf_counter()
    first, tokens = None, 0
    with urllib.request.urlopen(request, timeout=600) as response:
        for line in response:
            line = line.strip()
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if "usage" in chunk and chunk["usage"]:
                tokens = chunk["usage"]["completion_tokens"]
            if first is None and chunk.get("choices"):
                first = time.perf_counter()
    end = time.perf_counter()
    return (end - first) / max(tokens - 1, 1), tokens


def run(url, clients, requests, body):
    results, lock = [], threading.Lock()
    todo = list(range(requests))

    def client():
        while True:
            with lock:
                if not todo:
                    return
                seed = todo.pop()
            r = one(url, dict(body, seed=seed))
            with lock:
                results.append(r)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return statistics.median(r[0] for r in results), statistics.median(r[1] for r in results)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=64)
    a = parser.parse_args()
    base = {"prompt": "Write JSON:", "max_tokens": a.tokens, "temperature": 1.0, "stream": True,
            "stream_options": {"include_usage": True}}
    workloads = [("none", dict(base, ignore_eos=True)),
                 ("schema, free string", dict(base, response_format={"type": "json_schema", "json_schema": {"schema": FREE}})),
                 ("schema, maxLength string", dict(base, response_format={"type": "json_schema", "json_schema": {"schema": BOUNDED}})),
                 # top_p looks at the whole distribution, so every step needs the full mask.
                 ("maxLength string, top_p", dict(base, top_p=0.95, response_format={"type": "json_schema", "json_schema": {"schema": BOUNDED}}))]
    print(f"{'batch':>5}  {'constraint':<26} {'TPOT ms':>8} {'tokens':>6} {'vs none':>8}")
    for clients in (1, 8):
        reference = None
        for name, body in workloads:
            tpot, tokens = run(a.url, clients, max(a.requests, clients), body)
            reference = reference or tpot
            print(f"{clients:>5}  {name:<26} {tpot * 1000:>8.2f} {tokens:>6.0f} {tpot / reference:>8.3f}", flush=True)


if __name__ == "__main__":
    main()
