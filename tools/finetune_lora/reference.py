#!/usr/bin/python3
"""Writes the reference outputs of an adapter, which the C++ tests compare `--lora` with:

    reference.py models/demo models/demo-quatrain-lora   -> models/demo-quatrain-lora/reference/golden.json

The base weights are read from the bf16 checkpoint as float32, the adapter from its float32 safetensors, and the
adapted forward pass (lora.py, unmerged: W x + scale * B (A x)) runs in float32. The file has the layout of
models/demo/reference/golden.json (tools/train_demo/reference.py), with two more prompts that ask for a quatrain;
its held-out perplexity is that of the adapter's held-out quatrains (ADAPTER/heldout.txt).
"""
import json
import os
import sys

import torch

import lora

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "train_demo"))
from model import config_from_hf  # noqa: E402
from reference import PROMPTS, write_golden  # noqa: E402
from spm import Encoder  # noqa: E402

QUATRAIN_PROMPTS = [
    ("quatrain_header", "《秋夜》\n作者：王维\n", True),
    ("chat_quatrain", "<|begin_of_sentence|>User: 写一首五言绝句。\nAssistant: ", False),
]


@torch.no_grad()
def main(base, adapter):
    torch.set_num_threads(2)
    with open(os.path.join(base, "config.json")) as f:
        config = config_from_hf(json.load(f))
    model = lora.load_adapted(base, adapter)
    encode = Encoder(os.path.join(base, "tokenizer.model"))
    write_golden(model, config, encode, os.path.join(adapter, "heldout.txt"), adapter,
                 "tools/finetune_lora/reference.py: float32 PyTorch forward on the bf16 base weights of "
                 f"{os.path.basename(os.path.normpath(base))} with this adapter, unmerged",
                 PROMPTS + QUATRAIN_PROMPTS)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
