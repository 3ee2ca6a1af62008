#!/usr/bin/env python3
"""Mixed steps under load: how much a new long prompt slows the streams already decoding beside it.

    bench/mixed_steps.py URL [--streams 7] [--gen 128] [--prompt-tokens 512] [--reps 3]

Against a running `ernie serve` at URL (http://HOST:PORT). Each rep runs `--streams` greedy streams of `--gen`
tokens (`/v1/completions`, `ignore_eos`) twice: alone, and with one request of `--prompt-tokens` random token ids
arriving once every stream has produced a quarter of its tokens. Reports, per case, the streams' time per output
token (mean gap after the first token, median over streams and reps) and the longest single gap, and the ratio of
the loaded to the quiet TPOT. Standard library only.
"""
import argparse
import http.client
import json
import random
import statistics
import threading
import time
import urllib.parse


def stream(url, prompt, gen, arrivals):
    """One streaming completion; appends each token's arrival time (seconds, monotonic) to arrivals."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=600)
    body = json.dumps({"prompt": prompt, "max_tokens": gen, "temperature": 0, "ignore_eos": True, "stream": True})
    conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
    response = conn.getresponse()
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status}: {response.read()[:200]!r}")
    for raw in response:
        line = raw.decode().strip()
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        event = json.loads(line[6:])
        if event.get("choices") and event["choices"][0].get("text") is not None:
            arrivals.append(time.monotonic())
    conn.close()


def one_case(url, args, with_prompt, rng):
    arrivals = [[] for _ in range(args.streams)]
    threads = [threading.Thread(target=stream, args=(url, f"Stream {i}: the river", args.gen, arrivals[i]))
               for i in range(args.streams)]
    for t in threads:
        t.start()
    if with_prompt:
        while min(len(a) for a in arrivals) < args.gen // 4:
            time.sleep(0.005)
        ids = [rng.randrange(3, 6000) for _ in range(args.prompt_tokens)]
        newcomer = threading.Thread(target=stream, args=(url, ids, 1, []))
        newcomer.start()
        newcomer.join()
    for t in threads:
        t.join()
    tpots, gaps = [], []
    for a in arrivals:
        steps = [b - a_ for a_, b in zip(a, a[1:])]
        tpots.append(statistics.mean(steps))
        gaps.append(max(steps))
    return tpots, max(gaps)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("url")
    parser.add_argument("--streams", type=int, default=7)
    parser.add_argument("--gen", type=int, default=128)
    parser.add_argument("--prompt-tokens", type=int, default=512)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    rng = random.Random(1)
    quiet, loaded, quiet_gap, loaded_gap = [], [], [], []
    for _ in range(args.reps):  # alternating, so that the machine's drift hits both cases
        tpots, gap = one_case(args.url, args, False, rng)
        quiet += tpots
        quiet_gap.append(gap)
        tpots, gap = one_case(args.url, args, True, rng)
        loaded += tpots
        loaded_gap.append(gap)
    q, l = statistics.median(quiet), statistics.median(loaded)
    print(f"{args.streams} streams of {args.gen} tokens; medians over streams and {args.reps} reps")
    print(f"{'case':34} {'TPOT ms':>9} {'longest gap ms':>15}")
    print(f"{'alone':34} {1e3 * q:9.1f} {1e3 * statistics.median(quiet_gap):15.1f}")
    print(f"{'a ' + str(args.prompt_tokens) + '-token prompt arrives':34} {1e3 * l:9.1f} "
          f"{1e3 * statistics.median(loaded_gap):15.1f}")
    print(f"TPOT ratio (with / without): {l / q:.2f}x")


if __name__ == "__main__":
    main()
