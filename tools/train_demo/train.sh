#!/usr/bin/env bash
# Rebuilds models/demo from nothing but Debian packages: corpus (corpus.py) -> SentencePiece tokenizer (spm_train)
# -> model training and reference outputs (train.py). Extra arguments go to train.py (e.g. --steps 50 for a quick
# try). WORK=dir keeps the intermediate files there (default: a fresh temporary directory); OUT=dir writes the
# checkpoint elsewhere than models/demo.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${OUT:-$here/../../models/demo}
work=${WORK:-$(mktemp -d)}
mkdir -p "$work" "$out"
out=$(cd "$out" && pwd)

/usr/bin/python3 "$here/corpus.py" "$work"

# An ERNIE-style BPE vocabulary: ids 0-2 <unk> <s> </s>, 3-13 ERNIE's special tokens (as in tokenizer_config.json),
# 14-269 the 256 byte pieces (byte fallback, so any text encodes), then merges. No normalization, no dummy prefix,
# spaces kept as they are, as ERNIE's tokenizer does. Run inside $work so that the paths recorded in the model
# (input, model_prefix) are the same on every machine.
specials='<|begin_of_sentence|>,<|end_of_sentence|>,<mask:0>,<mask:1>,<mask:2>,<mask:3>,<mask:4>,<mask:5>,<mask:6>'
specials+=',<mask:7>,<|IMAGE_PLACEHOLDER|>'
(cd "$work" && spm_train --input=spm_input.txt --model_prefix=tok --model_type=bpe --vocab_size=6144 \
  --character_coverage=0.998 --byte_fallback=true --split_digits=true --normalization_rule_name=identity \
  --add_dummy_prefix=false --remove_extra_whitespaces=false --allow_whitespace_only_pieces=true \
  --unk_id=0 --bos_id=1 --eos_id=2 --pad_id=-1 --user_defined_symbols="$specials" \
  --input_sentence_size=0 --max_sentence_length=8192 --num_threads=2 >spm_train.log 2>&1)

# The float32 products (evaluation, references) go through OpenBLAS: as many threads as torch uses.
export OPENBLAS_NUM_THREADS=2
/usr/bin/python3 "$here/train.py" --work "$work" --out "$out" "$@"
/usr/bin/python3 "$here/reference.py" "$out"
echo "train.sh: done in $SECONDS s (work files in $work)"
