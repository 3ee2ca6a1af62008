#!/usr/bin/python3
"""Writes the reference outputs the C++ tests compare the engine with, from a checkpoint folder alone:

    reference.py models/demo      -> models/demo/reference/golden.json

The weights are read back from model.safetensors (bf16) and the forward pass runs in float32, so the references
belong to exactly the weights that ship. Ids come from spm_encode on the folder's tokenizer.model.
"""
import json
import math
import os
import sys

import numpy as np
import torch

from model import ErnieForCausalLM, config_from_hf, load_safetensors, sequence_nll
from spm import Encoder, read_fortunes

# Plain text as `ernie run --prompt` encodes it (no <s>: tokenizer_config.json says add_bos_token false), document
# starts (<s> first, as in training), and the chat template's rendering of a user turn.
PROMPTS = [
    ("english", "The meaning of life is", False),
    ("english_bos", "A fool", True),
    ("poem", "《春晓》\n作者：孟浩然\n", False),
    ("chinese_bos", "天下", True),
    ("chat", "<|begin_of_sentence|>User: Tell me a fortune.\nAssistant: ", False),
]
BOS, EOS = 1, 2
GREEDY_TOKENS = 32
PROBE_IDS = 64  # logits at every position are kept for this many ids, spread evenly over the vocabulary


def f32(values):
    """The shortest decimal text that reads back as the same float32."""
    return [float(np.format_float_positional(np.float32(v), unique=True, trim="-")) for v in values]


@torch.no_grad()
def write_golden(model, config, encode, heldout_file, out_dir, about, prompts=PROMPTS):
    """Writes out_dir/reference/golden.json: for each (name, text, add_bos) of `prompts`, the float32 logits of
    `model` (last position in full, every position at the probe ids) and its greedy continuation; and the
    perplexity of heldout_file (fortune format) scored as <s> entry </s>. tools/finetune_lora uses it with an
    adapted model."""
    probe = [i * (config.vocab_size // PROBE_IDS) for i in range(PROBE_IDS)]
    out = []
    for name, text, add_bos in prompts:
        ids = [BOS] * add_bos + encode(text)
        logits = model(torch.tensor([ids]))[0]
        seq, margins = list(ids), []
        for _ in range(GREEDY_TOKENS):  # no KV cache: every step recomputes the whole sequence
            step = model(torch.tensor([seq]))[0, -1]
            top2 = torch.topk(step, 2).values
            margins.append(float(top2[0] - top2[1]))
            seq.append(int(step.argmax()))
        new_ids = seq[len(ids):]
        out.append({
            "name": name, "text": text, "add_bos": add_bos, "ids": ids,
            "last_logits": f32(logits[-1].tolist()),
            "probe_logits": [f32(row[probe].tolist()) for row in logits],
            "greedy_new_ids": new_ids,
            "greedy_min_top1_top2_margin": round(min(margins), 5),
            "greedy_text": encode.decode(new_ids),
        })
        print(f"{name}: {text!r} -> {out[-1]['greedy_text']!r} (smallest top-2 margin {min(margins):.4f})")

    heldout = read_fortunes(heldout_file)
    nll, count = sequence_nll(model, [[BOS] + encode(t) + [EOS] for t in heldout])
    golden = {
        "about": about,
        "vocab_size": config.vocab_size,
        "probe_ids": probe,
        "prompts": out,
        "heldout": {
            "file": os.path.basename(heldout_file),
            "scoring": "each entry as <s> text </s>; every token after <s> is predicted",
            "entries": len(heldout),
            "predicted_tokens": count,
            "nll_nats": nll,
            "perplexity": math.exp(nll / count),
        },
    }
    print(json.dumps(golden["heldout"]))
    os.makedirs(os.path.join(out_dir, "reference"), exist_ok=True)
    with open(os.path.join(out_dir, "reference", "golden.json"), "w", encoding="utf-8") as f:
        json.dump(golden, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")


def main(folder):
    torch.set_num_threads(2)
    with open(os.path.join(folder, "config.json")) as f:
        config = config_from_hf(json.load(f))
    model = ErnieForCausalLM(config)
    model.load_state_dict(load_safetensors(os.path.join(folder, "model.safetensors")))
    model.eval()
    encode = Encoder(os.path.join(folder, "tokenizer.model"))
    write_golden(model, config, encode, os.path.join(folder, "heldout.txt"), folder,
                 "tools/train_demo/reference.py: float32 PyTorch forward on the bf16 weights of model.safetensors")


if __name__ == "__main__":
    main(sys.argv[1])
