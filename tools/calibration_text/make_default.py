#!/usr/bin/python3
"""Writes data/calibration/default.txt, the calibration text `ernie calibrate` is shown with: public-domain text from
Debian 12 packages, English and Chinese as the ERNIE models are.

  English: the King James Version (1611; its copyright long expired, says bible-kjv-text's copyright file), the
           chapters Genesis 1-12, Ruth, Psalms 1-23 and Proverbs 1-10, verse references removed, a paragraph per chapter.
  Chinese: the Tang and Song poems of fortunes-zh (tang300, song100; 7th-13th century), except those held out for
           the demo model's and its adapter's perplexity tests (models/demo/heldout.txt,
           models/demo-quatrain-lora/heldout.txt), so that calibrating on this text never sees the text that measures
           the result.

  sudo apt-get install bible-kjv fortunes-zh && tools/calibration_text/make_default.py
"""
import os
import re
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "data", "calibration", "default.txt")
BOOKS = [("Genesis", 12), ("Ruth", 4), ("Psalms", 23), ("Proverbs", 10)]
FORTUNES = "/usr/share/games/fortunes"


def chapter(book, number):
    # Printed as a "Book N" heading, then "  V text" per verse (a range past the chapter's end is cut there).
    text = subprocess.run(["bible", "-l10000", f"{book} {number}:1-200"], check=True, capture_output=True,
                          text=True).stdout
    verses = [m.group(1) for m in re.finditer(r"^\s+\d+ (.*\S)", text, re.M)]
    return " ".join(verses)


def fortunes(name):
    with open(os.path.join(FORTUNES, name + ".u8"), encoding="utf-8") as f:
        entries = re.split(r"\n%\n", "\n" + f.read())
    # The files colour titles and authors with ANSI escapes.
    return [re.sub(r"\x1b\[[0-9;]*m", "", e).strip("\n") for e in entries if e.strip()]


def held_out():
    texts = set()
    for path in ("models/demo/heldout.txt", "models/demo-quatrain-lora/heldout.txt"):
        with open(os.path.join(ROOT, path), encoding="utf-8") as f:
            for entry in re.split(r"\n%\n", "\n" + f.read()):
                texts.add(entry.strip("\n"))
    return texts


def main():
    english = [chapter(book, n) for book, count in BOOKS for n in range(1, count + 1)]
    skip = held_out()
    # Compared after the same clean-up as the demo corpus: lines stripped of trailing spaces.
    norm = lambda t: "\n".join(line.rstrip() for line in t.replace("\r", "").split("\n")).strip("\n")
    skip = {norm(t) for t in skip}
    chinese = [e for name in ("tang300", "song100") for e in fortunes(name) if norm(e) not in skip]
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    # Interleaved, so that a prefix of the file (ernie calibrate --tokens N) holds both languages.
    parts = []
    for i in range(max(len(english), len(chinese))):
        if i < len(english):
            parts.append(english[i])
        for e in chinese[2 * i:2 * i + 2]:
            parts.append(e)
    with open(OUT, "w", encoding="utf-8") as f:
        f.write("\n\n".join(parts) + "\n")
    print(f"{OUT}: {len(english)} chapters, {len(chinese)} poems ({len(skip)} held-out entries excluded), "
          f"{os.path.getsize(OUT)} bytes")


if __name__ == "__main__":
    main()
