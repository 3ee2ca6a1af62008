#!/usr/bin/python3
"""Trains a LoRA adapter on the demo model so that it writes five-character quatrains, and saves it in PEFT's
format with its training log.

    finetune.py --work WORK_DIR --base models/demo --out models/demo-quatrain-lora

WORK_DIR holds data.py's output. The base weights are read from the bf16 checkpoint as float32 and stay frozen;
only the adapter (lora.py) trains, in float32 (no autocast: at this size a bf16 product saves little, and float32
keeps training and the references in one precision). CPU only, one thread, everything random from --seed.
"""
import argparse
import json
import math
import os
import platform
import re
import shutil
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

import lora

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "train_demo"))
from model import curve_point, optimizer_step, sequence_nll  # noqa: E402
from spm import Encoder, read_fortunes  # noqa: E402

BOS, EOS, CLS, SEP = 1, 2, 3, 4  # <s>, </s>, <|begin_of_sentence|>, <|end_of_sentence|>
NEWLINE = [None]  # the id of the byte piece <0x0A>, set from the tokenizer

# What a user asks for in the chat turns. The first two are the base model's own poem requests (train.py's
# CHAT_PROMPTS), so that with the adapter `ernie chat` answers them with a quatrain too; "{title}" names the poem
# asked for. The answer is the quatrain's four verses alone, without the title and author lines: the base model's
# chat answers recite whole entries, and a header is where its answers most often go astray.
CHAT_PROMPTS = ["背一首唐诗。", "写一首诗。", "写一首五言绝句。", "背一首五言绝句。", "以《{title}》为题写一首五言绝句。"]
EVAL_CHAT_PROMPT = "写一首五言绝句。"
QUATRAIN_BODY = re.compile(r"[\u4e00-\u9fff]{5}[，。？！；][\u4e00-\u9fff]{5}[，。？！；]\n"
                           r"[\u4e00-\u9fff]{5}[，。？！；][\u4e00-\u9fff]{5}[。？！]")


def chat_doc(encode, prompt, answer_ids):
    """One turn in ERNIE's chat template, tokenized as train.py does: <|begin_of_sentence|>User: ...\\n
    Assistant: answer<|end_of_sentence|>. Returns (ids, trained): the loss is taken on the answer and its
    <|end_of_sentence|> only, since the adapter is to change what the model answers, not to learn the requests."""
    ask = [CLS] + encode("User: " + prompt) + [encode.newline] + encode("Assistant: ")
    return ask + answer_ids + [SEP], [0] * len(ask) + [1] * (len(answer_ids) + 1)


def remix(rows, count, rng):
    """`count` made-up quatrains: two couplet lines of two different training poems under the header of a third.
    They carry the form with content no training poem continues, so they teach the form without adding to what
    the adapter can memorise of the real poems (a few hundred, which it otherwise learns by heart)."""
    out = []
    for _ in range(count):
        a, b, c = (rows[int(i)] for i in rng.choice(len(rows), 3, replace=False))
        lines = [a["ids_lines"][int(rng.integers(2))], b["ids_lines"][int(rng.integers(2))]]
        body = lines[0] + [NEWLINE[0]] + lines[1]
        out.append({"title": c["title"], "ids": c["ids_header"] + body, "ids_body": body})
    return out


def build_epoch(rows, replay, encode, rng, args):
    """One epoch of (ids, trained) documents, shuffled: every training quatrain (and args.remix as many remixed
    ones) once as a document <s> text </s> (the form the demo model saw its poems in) and once as the answer of a
    chat turn with a random request; plus args.replay as many entries of the base model's own training text as
    documents, which keeps the adapter from overwriting what the model does with prose (English above all).
    A document's first token is never a target (nothing predicts where a document starts)."""
    docs = []
    for row in rows + remix(rows, int(args.remix * len(rows)), rng):
        docs.append(([BOS] + row["ids"] + [EOS], [0] + [1] * (len(row["ids"]) + 1)))
        prompt = CHAT_PROMPTS[int(rng.integers(len(CHAT_PROMPTS)))].format(title=row["title"])
        docs.append(chat_doc(encode, prompt, row["ids_body"]))
    if replay:
        for i in rng.choice(len(replay), min(len(replay), int(args.replay * len(rows))), replace=False):
            docs.append(([BOS] + replay[int(i)] + [EOS], [0] + [1] * (len(replay[int(i)]) + 1)))
    return [docs[int(j)] for j in rng.permutation(len(docs))]


def pad_batch(docs):
    """Right-padded [B, T] ids and targets (-100: not trained, or padding). Each document is its own sequence
    from position 0, as at inference: packed windows would start documents mid-way and let one attend to another,
    and the model could not tell a chat answer (ends in <|end_of_sentence|>) from a document (ends in </s>)."""
    T = max(len(ids) for ids, _ in docs)
    ids = torch.zeros(len(docs), T, dtype=torch.int64)
    targets = torch.full((len(docs), T - 1), -100, dtype=torch.int64)
    for b, (d, m) in enumerate(docs):
        ids[b, : len(d)] = torch.tensor(d)
        t = torch.tensor(d[1:])
        targets[b, : len(d) - 1] = t.masked_fill(torch.tensor(m[1:]) == 0, -100)
    return ids[:, :-1], targets


def lr_at(step, args):
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


@torch.no_grad()
def greedy(model, ids, max_new, stop=(EOS, SEP)):
    """Greedy continuation (no KV cache: each step recomputes the sequence), up to a stop token (not returned)."""
    seq = list(ids)
    for _ in range(max_new):
        nxt = int(model(torch.tensor([seq]))[0, -1].argmax())
        if nxt in stop:
            break
        seq.append(nxt)
    return seq[len(ids):]


@torch.no_grad()
def sample(model, ids, n, max_new, generator, temperature=0.8, top_p=0.8, stop=(EOS, SEP)):
    """n samples of one prompt, drawn together as one batch, with the settings of models/demo's
    generation_config.json (temperature 0.8, top-p 0.8). A sequence that has stopped keeps being computed (the
    batch stays rectangular) but its further tokens are discarded."""
    seq = torch.tensor([ids] * n)
    done = torch.zeros(n, dtype=torch.bool)
    out = [[] for _ in range(n)]
    for _ in range(max_new):
        probs = (model(seq)[:, -1] / temperature).softmax(-1)
        p, order = probs.sort(dim=-1, descending=True)
        p = p * ((p.cumsum(-1) - p) < top_p)  # the smallest prefix whose mass reaches top_p
        nxt = order.gather(1, torch.multinomial(p / p.sum(-1, keepdim=True), 1, generator=generator))[:, 0]
        for i in range(n):
            if not done[i]:
                done[i] = int(nxt[i]) in stop
                if not done[i]:
                    out[i].append(int(nxt[i]))
        if bool(done.all()):
            break
        seq = torch.cat([seq, nxt[:, None]], 1)
    return out


def verse_lengths(body):
    """Characters per verse of a generated body: the runs of text between the punctuation marks of its lines."""
    return [len(v) for line in body.split("\n") for v in re.split("[，。？！；,.?!;]", line) if v.strip()]


def form_report(model, encode, heldout_rows, samples, seed):
    """How often the model writes the quatrain form, in two settings: the body after each held-out poem's header
    (greedy, and `samples` // 4 samples per header), and `samples` sampled answers to the chat request
    EVAL_CHAT_PROMPT. A body counts as a quatrain when it is exactly two couplet lines of five-character verses and
    then stops (QUATRAIN_BODY); `five_char_verses` is the share of all generated verses that have five characters."""
    headers = sorted({"\n".join(r["text"].split("\n")[:2]) + "\n" for r in heldout_rows})
    generator = torch.Generator().manual_seed(seed)
    greedy_bodies, sampled_bodies = [], []
    for h in headers:
        ids = [BOS] + encode(h)
        greedy_bodies.append(encode.decode(greedy(model, ids, 40)))
        sampled_bodies += [encode.decode(t) for t in sample(model, ids, samples // 4, 40, generator)]
    prompt = encode(f"<|begin_of_sentence|>User: {EVAL_CHAT_PROMPT}\nAssistant: ")
    chat = [encode.decode(t) for t in sample(model, prompt, samples, 40, generator)]

    def rate(bodies):
        lengths = [n for b in bodies for n in verse_lengths(b)]
        return {"n": len(bodies), "quatrains": sum(QUATRAIN_BODY.fullmatch(b) is not None for b in bodies),
                "five_char_verses": round(sum(n == 5 for n in lengths) / max(1, len(lengths)), 3)}

    return {"greedy_after_header": rate(greedy_bodies), "sampled_after_header": rate(sampled_bodies),
            "sampled_chat": rate(chat), "examples": {"greedy_after_header": greedy_bodies[0], "chat": chat[:2]}}


@torch.no_grad()
def loss_breakdown(model, encode, docs):
    """Held-out loss (nats per token) split by what the token is: the header (title and author lines), the
    verses' characters, and the form (punctuation, the body's line break, </s>). The form is what the adapter is
    for; the characters are what a few hundred poems cannot teach a 4.7M model."""
    form_ids = {encode(p)[0] for p in "，。？！；"} | {encode.newline, EOS}
    sums, counts = {"header": 0.0, "verse": 0.0, "form": 0.0}, {"header": 0, "verse": 0, "form": 0}
    model.eval()
    for doc in docs:
        logp = model(torch.tensor([doc[:-1]]))[0].log_softmax(-1)
        newlines = 0
        for i, t in enumerate(doc[1:]):
            kind = "header" if newlines < 2 else "form" if t in form_ids else "verse"
            newlines += t == encode.newline
            sums[kind] -= float(logp[i, t])
            counts[kind] += 1
    return {k: {"nll_per_token": round(sums[k] / counts[k], 4), "tokens": counts[k]} for k in sums}


@torch.no_grad()
def masked_nll(model, docs):
    """sequence_nll over (ids, trained) pairs: only the tokens marked trained count."""
    total, count = 0.0, 0
    for ids, trained in docs:
        logp = model(torch.tensor([ids[:-1]]))[0].log_softmax(-1)
        for i, (t, m) in enumerate(zip(ids[1:], trained[1:])):
            if m:
                total -= float(logp[i, t])
                count += 1
    return total, count


def perplexities(model, docs):
    model.eval()
    nll, count = masked_nll(model, docs) if isinstance(docs[0], tuple) else sequence_nll(model, docs)
    return {"nll_per_token": round(nll / count, 4), "perplexity": round(math.exp(nll / count), 3), "tokens": count}


def train(args, model, rows, replay, encode, heldout_docs, heldout_rows):
    torch.manual_seed(args.seed)  # the adapter dropout's masks
    rng = np.random.default_rng(args.seed)
    params = [p for _, m in lora.lora_modules(model) for p in (m.lora_A, m.lora_B)]
    # No weight decay: it would pull the adapter towards zero, i.e. towards the base model, which is not the prior
    # one wants for a style adapter trained on a few hundred examples.
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.999), weight_decay=0.0)

    queue, epoch, epoch_sizes = [], 0, []
    curve, recent, start, cpu_start = [], [], time.time(), time.process_time()
    for step in range(args.steps):
        if len(queue) < args.batch:
            fresh = build_epoch(rows, replay, encode, rng, args)
            epoch += 1
            epoch_sizes.append({"documents": len(fresh), "tokens": sum(len(d) for d, _ in fresh),
                                "trained_tokens": sum(sum(m) for _, m in fresh)})
            queue += fresh
        ids, targets = pad_batch(queue[: args.batch])
        queue = queue[args.batch :]
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args)
        model.train()
        logits = model(ids)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)
        recent.append(optimizer_step(opt, params, loss))

        last = step + 1 == args.steps
        if (step + 1) % args.log_every == 0 or last:
            point = curve_point(step, epoch, recent, lr_at(step, args), start)
            recent = []
            if (step + 1) % args.eval_every == 0 or last:
                point["heldout_loss"] = perplexities(model, heldout_docs)["nll_per_token"]
                if args.form_every and ((step + 1) % args.form_every == 0 or last):
                    form = form_report(model, encode, heldout_rows, args.form_samples, args.seed)
                    for k in ("greedy_after_header", "sampled_after_header", "sampled_chat"):
                        point[k] = f'{form[k]["quatrains"]}/{form[k]["n"]}, {form[k]["five_char_verses"]}'
            curve.append(point)
            print(json.dumps(point), flush=True)
    return curve, epoch_sizes, time.time() - start, time.process_time() - cpu_start


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", required=True)
    p.add_argument("--base", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--base-name", default="models/demo", help="base_model_name_or_path in adapter_config.json")
    p.add_argument("--seed", type=int, default=4245)
    p.add_argument("--r", type=int, default=8)
    p.add_argument("--alpha", type=int, default=16)
    p.add_argument("--dropout", type=float, default=0.05)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=24, help="documents per step")
    p.add_argument("--replay", type=float, default=2.0, help="replayed base-corpus entries per real quatrain")
    p.add_argument("--replay-max-tokens", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--remix", type=float, default=1.0, help="remixed quatrains per real one, each epoch")
    p.add_argument("--form-samples", type=int, default=32)
    p.add_argument("--form-every", type=int, default=100, help="0: the form report only before and after")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    wall_start = time.time()

    with open(os.path.join(args.work, "train.jsonl"), encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    with open(os.path.join(args.work, "heldout.jsonl"), encoding="utf-8") as f:
        heldout_rows = [json.loads(line) for line in f]
    with open(os.path.join(args.work, "stats.json")) as f:
        data_stats = json.load(f)
    base_heldout = read_fortunes(os.path.join(args.base, "heldout.txt"))
    encode = Encoder(os.path.join(args.base, "tokenizer.model"))
    encode.prepare([r["text"] for r in rows + heldout_rows] + base_heldout)
    NEWLINE[0] = encode.newline
    for row in rows:
        row["ids"] = encode(row["text"])
        lines = row["text"].split("\n")
        row["ids_header"] = encode("\n".join(lines[:2]) + "\n")
        row["ids_lines"] = [encode(line) for line in lines[2:]]
        row["ids_body"] = row["ids_lines"][0] + [encode.newline] + row["ids_lines"][1]
        assert row["ids"] == row["ids_header"] + row["ids_body"]
    replay = []
    if args.replay > 0:
        # The base model's training entries (tools/train_demo/corpus.py, run by finetune.sh into WORK/base): its
        # prose, not its poems, and only short entries, so that batches of whole documents stay small.
        with open(os.path.join(args.work, "base", "train.jsonl"), encoding="utf-8") as f:
            prose = [e["text"] for e in map(json.loads, f) if e["group"] != "poems" and len(e["text"]) <= 160]
        encode.prepare(prose)
        replay = [ids for ids in map(encode, prose) if len(ids) <= args.replay_max_tokens]
    heldout_docs = [[BOS] + encode(r["text"]) + [EOS] for r in heldout_rows]
    unseen_docs = [d for d, r in zip(heldout_docs, heldout_rows) if r["subset"] == "unseen_by_base"]
    general_docs = [[BOS] + encode(t) + [EOS] for t in base_heldout]
    heldout_chat_docs = [chat_doc(encode, EVAL_CHAT_PROMPT, encode("\n".join(r["text"].split("\n")[2:])))
                         for r in heldout_rows]

    model = lora.inject(lora.load_base(args.base), args.r, args.alpha, args.dropout, args.seed)

    def evaluate():  # B = 0, so before training this is the base model exactly
        return {"quatrains": perplexities(model, heldout_docs),
                "quatrains_unseen_by_base": perplexities(model, unseen_docs),
                "quatrains_as_chat_answers": perplexities(model, heldout_chat_docs),
                "base_heldout_general": perplexities(model, general_docs),
                "quatrains_by_token_kind": loss_breakdown(model, encode, heldout_docs)}

    before = evaluate()
    form_before = form_report(model.eval(), encode, heldout_rows, args.form_samples, args.seed)
    print(json.dumps({"before": before, "form": form_before}, ensure_ascii=False), flush=True)

    curve, epoch_sizes, seconds, cpu_seconds = train(args, model, rows, replay, encode, heldout_docs, heldout_rows)
    model.eval()
    after = evaluate()
    form_after = form_report(model, encode, heldout_rows, args.form_samples, args.seed)
    print(json.dumps({"after": after, "form": form_after}, ensure_ascii=False), flush=True)

    lora.save_adapter(args.out, model, args.r, args.alpha, args.dropout, args.base_name)
    shutil.copyfile(os.path.join(args.work, "heldout.txt"), os.path.join(args.out, "heldout.txt"))
    log = {
        "seed": args.seed,
        "args": {k: v for k, v in vars(args).items() if k not in ("work", "base", "out")},  # no machine paths
        "base_model": args.base_name,
        "trainable_parameters": sum(m.lora_A.numel() + m.lora_B.numel() for _, m in lora.lora_modules(model)),
        "data": data_stats,
        "chat_prompts": CHAT_PROMPTS,
        "replay_entries_available": len(replay),
        "epoch": epoch_sizes[0],
        "epochs_started": len(epoch_sizes),
        "train_seconds": round(seconds, 1),
        "train_cpu_seconds": round(cpu_seconds, 1),
        "heldout_before": before,
        "heldout_after": after,
        "form_before": form_before,
        "form_after": form_after,
        "curve": curve,
        "versions": {"torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version()},
        "threads": torch.get_num_threads(),
        "script_seconds": round(time.time() - wall_start, 1),
    }
    with open(os.path.join(args.out, "training_log.json"), "w") as f:
        json.dump(log, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(json.dumps({k: log[k] for k in ("trainable_parameters", "epoch", "epochs_started", "train_seconds")}))


if __name__ == "__main__":
    main()
