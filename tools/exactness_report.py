#!/usr/bin/env python3
"""Exactness report: `ernie logits` and greedy `ernie run` against transformers' references in shared/fixtures.

Usage (from the repository root, after scripts/build.sh): tools/exactness_report.py [FIXTURES_DIR]
Prints, per fixture checkpoint and prompt, the last-position logits' relative error ‖ours − ref‖ / ‖ref‖, the max
absolute error, and whether 32 greedy tokens are identical. Standard library only.
"""
import json
import math
import os
import struct
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "..", "shared", "fixtures")
ERNIE = os.path.join(ROOT, "build", "ernie")
CHECKPOINTS = [("tiny-ernie", "model"), ("tiny-ernie", "model-fp32"), ("tiny-ernie-bias", "model")]


def read_f32(path):
    data = open(path, "rb").read()
    return struct.unpack(f"<{len(data) // 4}f", data)


def main():
    worst_rel = worst_abs = 0.0
    all_greedy_equal = True
    with tempfile.TemporaryDirectory() as tmp:
        out_file = os.path.join(tmp, "logits.f32")
        for fixture, checkpoint in CHECKPOINTS:
            model = os.path.join(FIXTURES, fixture, checkpoint)
            golden = json.load(open(os.path.join(FIXTURES, fixture, "ref", "golden.json")))
            for prompt in golden["prompts"]:
                ids = ",".join(map(str, prompt["ids"]))
                subprocess.run([ERNIE, "logits", "--model", model, "--ids", ids, "--out", out_file],
                               check=True, capture_output=True)
                ours = read_f32(out_file)
                ref = read_f32(os.path.join(FIXTURES, fixture, prompt["last_logits_file"]))
                rel = math.sqrt(sum((a - b) ** 2 for a, b in zip(ours, ref))) / math.sqrt(sum(b * b for b in ref))
                max_abs = max(abs(a - b) for a, b in zip(ours, ref))
                run = subprocess.run([ERNIE, "run", "--model", model, "--ids", ids, "--max-tokens", "32",
                                      "--temperature", "0", "--ignore-eos", "--print-ids"],
                                     check=True, capture_output=True, text=True)
                greedy_equal = json.loads(run.stdout) == prompt["greedy"]["new_ids"]
                worst_rel, worst_abs = max(worst_rel, rel), max(worst_abs, max_abs)
                all_greedy_equal &= greedy_equal
                print(f"{fixture}/{checkpoint:10s} {prompt['name']:15s} tokens {prompt['n_tokens']:4d}  "
                      f"rel {rel:.2e}  max abs {max_abs:.2e}  greedy 32: {'identical' if greedy_equal else 'DIFFERENT'}")
    print(f"worst relative error {worst_rel:.2e}, worst max abs {worst_abs:.2e}, "
          f"greedy {'all identical' if all_greedy_equal else 'SOME DIFFER'}")
    return 0 if all_greedy_equal and worst_rel <= 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
