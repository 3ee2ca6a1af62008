#!/usr/bin/python3
"""Builds the demo model's text corpus from the fortune files Debian ships, and sets aside held-out entries.

Sources (Debian 12 packages): `fortunes` + `fortunes-min` (English fortune cookies, quotations and jokes) and
`fortunes-zh` (tang300: 300 Tang poems, song100: 100 Song poems, chinese: proverbs, classical prose and quotations).
A fortune file is a list of entries separated by lines holding only '%'.

Writes into OUT_DIR:
  train.jsonl   one training entry per line: {"source": ..., "text": ...}
  spm_input.txt every line of every training entry, once (the input of spm_train)
  heldout.txt   held-out entries in fortune format (never trained on, not even by the tokenizer)
  stats.json    entry and character counts per source
"""
import hashlib
import json
import os
import re
import sys

FORTUNE_DIR = "/usr/share/games/fortunes"
# Every English file of `fortunes` and `fortunes-min` except ascii-art, which is pictures, not text.
ENGLISH = ("art computers cookie debian definitions disclaimer drugs education ethnic food fortunes goedel humorists "
           "kids knghtbrd law linux linuxcookie literature love magic medicine men-women miscellaneous news "
           "paradoxum people perl pets platitudes politics pratchett riddles science songs-poems sports startrek "
           "tao translate-me wisdom work zippy").split()
POEMS = ["tang300", "song100"]
CHINESE = ["chinese"]

# Held-out budget per group, in UTF-8 bytes, and the longest entry admitted to it (short entries make many samples).
HELDOUT_BYTES = {"english": 3000, "poems": 2000, "chinese": 2500}
HELDOUT_MAX_ENTRY = 400

ANSI = re.compile(r"\x1b\[[0-9;]*m")
OVERSTRIKE = re.compile(r".\x08")  # nroff-style bold/underline: char, backspace, char


def clean(entry):
    text = OVERSTRIKE.sub("", ANSI.sub("", entry))
    text = text.replace("\r", "").replace("\xa0", " ").expandtabs(8)
    lines = [line.rstrip() for line in text.split("\n")]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines)


def read_entries(name):
    path = os.path.join(FORTUNE_DIR, name + ".u8")
    if not os.path.exists(path):
        path = os.path.join(FORTUNE_DIR, name)
    with open(path, encoding="utf-8") as f:
        raw = f.read()
    return [clean(e) for e in re.split(r"\n%\n", "\n" + raw)]


def usable(text, group):
    if not text.strip():
        return False
    # The `chinese` collection also holds a few chapters of Debian manuals with box-drawn tables: not prose.
    if group == "chinese" and (re.search("[\u2500-\u257f]", text) or len(text) > 1500):
        return False
    return len(text) <= 3000


def main(out_dir):
    groups = {"english": ENGLISH, "poems": POEMS, "chinese": CHINESE}
    seen = set()
    entries = []  # (group, source, text), in file order, duplicates dropped
    for group, names in groups.items():
        for name in names:
            for text in read_entries(name):
                if usable(text, group) and text not in seen:
                    seen.add(text)
                    entries.append((group, name, text))

    # Held-out candidates in an order fixed by content hashes, so the split is the same on every machine.
    def digest(e):
        return hashlib.sha256(e[2].encode()).hexdigest()

    heldout_ids = set()
    for group in groups:
        budget = HELDOUT_BYTES[group]
        for i in sorted((i for i, e in enumerate(entries) if e[0] == group), key=lambda i: digest(entries[i])):
            size = len(entries[i][2].encode())
            if size <= HELDOUT_MAX_ENTRY and size <= budget:
                heldout_ids.add(i)
                budget -= size
    train = [e for i, e in enumerate(entries) if i not in heldout_ids]
    # "Never trained on" holds line by line: a held-out entry whose text line (of 8+ characters) also occurs in a
    # training entry, as quotations shared between collections do, is dropped from the held-out set.
    train_lines = {line.strip() for e in train for line in e[2].split("\n")}
    heldout = []
    for i in sorted(heldout_ids):
        lines = [line.strip() for line in entries[i][2].split("\n")]
        if not any(len(line) >= 8 and line in train_lines for line in lines):
            heldout.append(entries[i])

    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "train.jsonl"), "w", encoding="utf-8") as f:
        for group, source, text in train:
            f.write(json.dumps({"group": group, "source": source, "text": text}, ensure_ascii=False) + "\n")
    spm_lines = []
    seen_lines = set()
    for _, _, text in train:
        for line in text.split("\n"):
            if line and line not in seen_lines:
                seen_lines.add(line)
                spm_lines.append(line)
    with open(os.path.join(out_dir, "spm_input.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(spm_lines) + "\n")
    with open(os.path.join(out_dir, "heldout.txt"), "w", encoding="utf-8") as f:
        f.write("\n%\n".join(text for _, _, text in heldout) + "\n")

    stats = {}
    for name, items in (("train", train), ("heldout", heldout)):
        for group in groups:
            chosen = [t for g, _, t in items if g == group]
            stats[f"{name}_{group}"] = {"entries": len(chosen), "chars": sum(map(len, chosen)),
                                        "bytes": sum(len(t.encode()) for t in chosen)}
    with open(os.path.join(out_dir, "stats.json"), "w") as f:
        json.dump(stats, f, indent=1)
    print(json.dumps(stats))


if __name__ == "__main__":
    main(sys.argv[1])
