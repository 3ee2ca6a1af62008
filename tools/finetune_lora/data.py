#!/usr/bin/python3
"""Builds the quatrain data set from fortunes-zh and sets aside the held-out quatrains.

    data.py OUT_DIR [BASE_HELDOUT]

A five-character quatrain (五言绝句) is four verses of five characters. In tang300/song100 a poem is an entry
"《title》\\n作者：author\\n" (song100: "题目:《title》\\n作者:author") followed by body lines, each one couplet
"xxxxx，xxxxx。". Poems whose every verse has five characters are cut into quatrains of two consecutive body lines
(a 4-verse poem is one quatrain, an 8-verse 五律 two, and so on; an odd last line is dropped). Each quatrain keeps
its poem's header, so it reads exactly like the entries the demo model was trained on.

The split is by poem, so that no half of a held-out poem is trained on:
  - the 5-character poems of the demo model's own heldout.txt (BASE_HELDOUT), which neither the base model nor the
    adapter has seen; they make a small "never seen" subset;
  - then further poems in the order of the SHA-256 of their text until HELDOUT_QUATRAINS quatrains are held out.
As in corpus.py, a held-out quatrain with a body line that also occurs in a training quatrain is dropped.

Writes into OUT_DIR: train.jsonl ({"title", "header", "text", "poem_sha256", "source"} per quatrain),
heldout.txt (fortune format), heldout.jsonl (the same entries with their subset) and stats.json.
"""
import hashlib
import json
import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "train_demo"))
from corpus import read_entries  # noqa: E402  (the same cleaning of ANSI colours and whitespace)

SOURCES = ["tang300", "song100"]
COUPLET = re.compile(r"[\u4e00-\u9fff]{5}[，。？！；][\u4e00-\u9fff]{5}[，。？！；]")
HELDOUT_QUATRAINS = 32


def poems():
    """(source, header lines, body lines) of every distinct 5-character poem, in file order."""
    seen = set()
    for source in SOURCES:
        for text in read_entries(source):
            lines = text.split("\n")
            if len(lines) < 4 or text in seen or "作者" not in lines[1]:
                continue
            seen.add(text)
            body = lines[2:]
            if all(COUPLET.fullmatch(line) for line in body):
                yield source, lines[:2], body


def quatrains(header, body):
    return ["\n".join(header + body[i : i + 2]) for i in range(0, len(body) - 1, 2)]


def title_of(header):
    m = re.search("《(.+?)》", header[0])
    return m.group(1) if m else header[0]


def main(out_dir, base_heldout=None):
    base_seen_never = set()
    if base_heldout:
        with open(base_heldout, encoding="utf-8") as f:
            base_seen_never = {e.strip("\n") for e in f.read().split("\n%\n")}

    items = []  # per poem: (sha, source, header, [quatrain texts], never seen by the base)
    for source, header, body in poems():
        text = "\n".join(header + body)
        sha = hashlib.sha256(text.encode()).hexdigest()
        items.append((sha, source, header, quatrains(header, body), text in base_seen_never))

    held = [it for it in items if it[4]]
    count = sum(len(it[3]) for it in held)
    for it in sorted((it for it in items if not it[4]), key=lambda it: it[0]):
        if count >= HELDOUT_QUATRAINS:
            break
        held.append(it)
        count += len(it[3])
    held_shas = {it[0] for it in held}
    train = [it for it in items if it[0] not in held_shas]

    train_rows = [{"source": s, "title": title_of(h), "header": "\n".join(h), "text": q, "poem_sha256": sha}
                  for sha, s, h, qs, _ in train for q in qs]
    train_lines = {line for row in train_rows for line in row["text"].split("\n")[2:]}
    held_rows, dropped = [], 0
    for sha, s, h, qs, never in held:
        for q in qs:
            if any(line in train_lines for line in q.split("\n")[2:]):
                dropped += 1
                continue
            held_rows.append({"source": s, "title": title_of(h), "text": q, "poem_sha256": sha,
                              "subset": "unseen_by_base" if never else "hash"})

    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "train.jsonl"), "w", encoding="utf-8") as f:
        for row in train_rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    with open(os.path.join(out_dir, "heldout.jsonl"), "w", encoding="utf-8") as f:
        for row in held_rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    with open(os.path.join(out_dir, "heldout.txt"), "w", encoding="utf-8") as f:
        f.write("\n%\n".join(row["text"] for row in held_rows) + "\n")

    stats = {
        "five_character_poems": len(items),
        "train_poems": len(train), "train_quatrains": len(train_rows),
        "train_whole_quatrain_poems": sum(1 for it in train if len(it[3]) == 1 and len(it[3][0].split("\n")) == 4),
        "heldout_poems": len(held), "heldout_quatrains": len(held_rows),
        "heldout_unseen_by_base": sum(1 for r in held_rows if r["subset"] == "unseen_by_base"),
        "heldout_dropped_for_shared_line": dropped,
        "train_chars": sum(len(r["text"]) for r in train_rows),
        "heldout_chars": sum(len(r["text"]) for r in held_rows),
        "by_source": {s: sum(1 for r in train_rows if r["source"] == s) for s in SOURCES},
    }
    with open(os.path.join(out_dir, "stats.json"), "w") as f:
        json.dump(stats, f, indent=1)
    print(json.dumps(stats, ensure_ascii=False))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)
