#!/usr/bin/python3
"""Trains the demo model on the corpus of corpus.py with the tokenizer of spm_train, and writes the Hugging Face
checkpoint folder with its training log.

    train.py --work WORK_DIR --out models/demo

WORK_DIR holds corpus.py's output and spm_train's tok.model (train.sh runs corpus.py, spm_train, this script and
reference.py). Everything random comes from --seed; CPU only (torch.set_num_threads(2)), in float32
throughout: torch's bf16 products are fast only where the CPU has AVX-512 BF16 (on an AVX2 machine they run several
times slower than float32), and float32 gives the same model on every x86 CPU.
"""
import argparse
import json
import math
import os
import platform
import shutil
import time

import numpy as np
import torch
import torch.nn.functional as F

from model import Config, ErnieForCausalLM, curve_point, hf_config, optimizer_step, save_safetensors, sequence_nll
from spm import Encoder, read_fortunes

BOS, EOS, CLS, SEP = 1, 2, 3, 4  # <s>, </s>, <|begin_of_sentence|>, <|end_of_sentence|>

# Chat turns teach the model the ERNIE chat template, so that `ernie chat` answers in kind: the user asks for an
# entry of some collection, the assistant recites one.
CHAT_PROMPTS = {
    "english": ["Tell me a fortune.", "Say something wise.", "Tell me something funny.", "Give me a quote."],
    "tang300": ["背一首唐诗。", "写一首诗。"],
    "song100": ["背一首宋诗。", "写一首诗。"],
    "chinese": ["说一句名言。", "讲一句古话。"],
}
POEM_WEIGHT = 4  # poems are 2 % of the text; repeating them makes the style stick
CHAT_FRACTION = 0.25


def build_epoch(entries, encode, rng):
    """One epoch of documents, shuffled, as one token stream: every entry as <s> text </s> (poems POEM_WEIGHT
    times), plus chat conversations of 1-3 turns in the ERNIE template over a random quarter of the entries."""
    docs = []
    for e in entries:
        docs += [[BOS] + e["ids"] + [EOS]] * (POEM_WEIGHT if e["group"] == "poems" else 1)
    chosen = [entries[i] for i in rng.permutation(len(entries))[: int(CHAT_FRACTION * len(entries))]]
    i = 0
    while i < len(chosen):
        turns = chosen[i : i + int(rng.integers(1, 4))]
        i += len(turns)
        doc = [CLS]
        for e in turns:
            prompts = CHAT_PROMPTS["english" if e["group"] == "english" else e["source"]]
            doc += encode("User: " + prompts[int(rng.integers(len(prompts)))]) + [encode.newline]
            doc += encode("Assistant: ") + e["ids"] + [SEP]
        docs.append(doc)
    order = rng.permutation(len(docs))
    return np.concatenate([np.asarray(docs[j], dtype=np.int64) for j in order])


def lr_at(step, args):
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(args, config, entries, encode, heldout_docs):
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    model = ErnieForCausalLM(config)
    model.init_weights(torch.Generator().manual_seed(args.seed))
    decay = [p for n, p in model.named_parameters() if p.dim() == 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() != 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.95))

    window = args.seq_len + 1
    chunks, epoch, epoch_tokens = np.empty((0, window), dtype=np.int64), 0, []
    curve, recent, start, cpu_start = [], [], time.time(), time.process_time()
    for step in range(args.steps):
        if len(chunks) < args.batch:
            stream = build_epoch(entries, encode, rng)
            epoch_tokens.append(len(stream))
            epoch += 1
            usable = len(stream) // window * window
            fresh = stream[:usable].reshape(-1, window)
            chunks = np.concatenate([chunks, fresh[rng.permutation(len(fresh))]])
        batch = torch.from_numpy(chunks[: args.batch])
        chunks = chunks[args.batch :]
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args)
        logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, config.vocab_size), batch[:, 1:].reshape(-1))
        recent.append(optimizer_step(opt, model.parameters(), loss))

        last = step + 1 == args.steps
        if (step + 1) % args.log_every == 0 or last:
            point = curve_point(step, epoch, recent, lr_at(step, args), start)
            recent = []
            if (step + 1) % args.eval_every == 0 or last:
                model.eval()
                nll, count = sequence_nll(model, heldout_docs)
                model.train()
                point["heldout_loss"] = round(nll / count, 4)
            curve.append(point)
            print(json.dumps(point), flush=True)
    return model, curve, epoch_tokens, time.time() - start, time.process_time() - cpu_start


def unigram_perplexity(entries, heldout_docs, vocab_size):
    """Perplexity of the context-free baseline: training-token frequencies (add-one smoothed) on held-out."""
    counts = np.ones(vocab_size)
    for e in entries:
        np.add.at(counts, e["ids"] + [EOS], 1)
    logp = np.log(counts / counts.sum())
    targets = np.concatenate([doc[1:] for doc in heldout_docs])
    return float(np.exp(-logp[targets].mean()))


def write_checkpoint(out, config, model, work):
    os.makedirs(out, exist_ok=True)
    save_safetensors(os.path.join(out, "model.safetensors"), model.state_dict())
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(hf_config(config), f, indent=2)
        f.write("\n")
    generation = {"bos_token_id": BOS, "eos_token_id": EOS, "pad_token_id": 0, "do_sample": True, "top_p": 0.8,
                  "temperature": 0.8, "repetition_penalty": 1.0, "max_new_tokens": 128}
    with open(os.path.join(out, "generation_config.json"), "w") as f:
        json.dump(generation, f, indent=2)
        f.write("\n")
    shutil.copyfile(os.path.join(work, "tok.model"), os.path.join(out, "tokenizer.model"))
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        shutil.copyfile(os.path.join(here, name), os.path.join(out, name))
    shutil.copyfile(os.path.join(work, "heldout.txt"), os.path.join(out, "heldout.txt"))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=4242)
    p.add_argument("--steps", type=int, default=1800)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    with open(os.path.join(args.work, "train.jsonl"), encoding="utf-8") as f:
        entries = [json.loads(line) for line in f]
    with open(os.path.join(args.work, "stats.json")) as f:
        data_stats = json.load(f)
    heldout = read_fortunes(os.path.join(args.work, "heldout.txt"))
    encode = Encoder(os.path.join(args.work, "tok.model"))
    encode.prepare([e["text"] for e in entries] + heldout)
    for e in entries:
        e["ids"] = encode(e["text"])
    heldout_docs = [[BOS] + encode(t) + [EOS] for t in heldout]
    config = Config(vocab_size=encode.vocab_size, max_position_embeddings=args.seq_len)

    model, curve, epoch_tokens, seconds, cpu_seconds = train(args, config, entries, encode, heldout_docs)
    write_checkpoint(args.out, config, model, args.work)

    log = {
        "seed": args.seed,
        "args": {k: v for k, v in vars(args).items() if k not in ("work", "out")},  # no machine paths
        "config": hf_config(config),
        "parameters": sum(p.numel() for p in model.parameters()),
        "data": data_stats,
        "train_tokens_per_epoch": epoch_tokens[0],
        "epochs_started": len(epoch_tokens),
        "tokens_seen": args.steps * args.batch * args.seq_len,
        "train_seconds": round(seconds, 1),
        "train_cpu_seconds": round(cpu_seconds, 1),  # all threads; wall time also counts waiting for the CPU
        # The context-free baseline the held-out perplexity test compares with.
        "heldout_unigram_perplexity": unigram_perplexity(entries, heldout_docs, config.vocab_size),
        "curve": curve,
        "versions": {"torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version()},
        "threads": torch.get_num_threads(),
    }
    with open(os.path.join(args.out, "training_log.json"), "w") as f:
        json.dump(log, f, indent=1)
        f.write("\n")
    summary = ("parameters", "train_tokens_per_epoch", "tokens_seen", "train_seconds", "train_cpu_seconds",
               "heldout_unigram_perplexity")
    print(json.dumps({k: log[k] for k in summary}))


if __name__ == "__main__":
    main()
