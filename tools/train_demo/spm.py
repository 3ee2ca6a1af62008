"""Text <-> ids with Debian's sentencepiece command-line tools (spm_encode, spm_decode, spm_export_vocab)."""
import subprocess


def _run(args, text):
    return subprocess.run(args, input=text, capture_output=True, text=True, check=True).stdout


class Encoder:
    """Text -> ids as the engine's tokenizer produces them: sentencepiece line by line, each '\\n' as its byte piece
    <0x0A> (no piece spans a newline, since spm_train saw one line at a time). ERNIE's special tokens are
    user-defined pieces of the model, so spm_encode already turns "<|begin_of_sentence|>" into its id."""

    def __init__(self, model):
        self.model = model
        pieces = [line.split("\t")[0] for line in _run(["spm_export_vocab", f"--model={model}"], "").splitlines()]
        self.vocab_size = len(pieces)
        self.newline = pieces.index("<0x0A>")
        self.cache = {}

    def prepare(self, texts):
        """Encodes the lines of many texts in one spm_encode call."""
        lines = sorted({line for t in texts for line in t.split("\n") if line and line not in self.cache})
        if lines:
            out = _run(["spm_encode", f"--model={self.model}", "--output_format=id"], "\n".join(lines) + "\n")
            for line, ids in zip(lines, out.split("\n")):
                self.cache[line] = [int(t) for t in ids.split()]

    def __call__(self, text):
        self.prepare([text])
        ids = []
        for i, line in enumerate(text.split("\n")):
            if i:
                ids.append(self.newline)
            if line:
                ids += self.cache[line]
        return ids

    def decode(self, ids):
        return _run(["spm_decode", f"--model={self.model}", "--input_format=id"], " ".join(map(str, ids)) + "\n")[:-1]


def read_fortunes(path):
    """Entries of a fortune-format file (separated by lines holding only '%')."""
    with open(path, encoding="utf-8") as f:
        return f.read().rstrip("\n").split("\n%\n")
