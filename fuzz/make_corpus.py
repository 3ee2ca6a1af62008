#!/usr/bin/env python3
"""Writes the seed corpora in fuzz/corpus/<target>/ (committed; rerun after changing this file).

Seeds are small on purpose: a few valid inputs per target that reach deep into the parser, from which libFuzzer
mutates. Binary seeds (safetensors, GGUF) are built here byte by byte; text seeds come from the demo model and the
shared fixtures when they are present.
"""
import json
import os
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "fuzz", "corpus")
DEMO = os.path.join(ROOT, "models", "demo")
FIXTURES = os.path.join(ROOT, "..", "shared", "fixtures")


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def safetensors(tensors, metadata=None):
    """tensors: list of (name, dtype, shape, bytes)."""
    header, blobs, offset = {}, [], 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, blob in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


# GGUF value types.
U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)
FORMATS = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f", BOOL: "<B", U64: "<Q",
           I64: "<q", F64: "<d"}


def gguf_string(s):
    s = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(s)) + s


def gguf_value(t, v):
    if t == STRING:
        return gguf_string(v)
    if t == ARRAY:
        et, items = v
        return struct.pack("<IQ", et, len(items)) + b"".join(gguf_value(et, x) for x in items)
    return struct.pack(FORMATS[t], v)


def gguf(metadata, tensors, alignment=32):
    """metadata: list of (key, type, value); tensors: list of (name, ggml_type, ne, bytes)."""
    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(metadata))
    for key, t, v in metadata:
        out += gguf_string(key) + struct.pack("<I", t) + gguf_value(t, v)
    offset, blobs = 0, b""
    for name, ggml_type, ne, blob in tensors:
        out += gguf_string(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", d) for d in ne)
        out += struct.pack("<IQ", ggml_type, offset)
        pad = (-len(blob)) % alignment
        blobs += blob + b"\0" * pad
        offset += len(blob) + pad
    out += b"\0" * ((-len(out)) % alignment)
    return out + blobs


def main():
    # safetensors_fuzz
    f32 = struct.pack("<6f", 0.5, -1, 2, 0, 1e-3, 7)
    put("safetensors_fuzz", "two_tensors.safetensors",
        safetensors([("model.norm.weight", "F32", [2, 3], f32), ("b", "BF16", [2], b"\x80\x3f\x00\x40")]))
    put("safetensors_fuzz", "metadata.safetensors",
        safetensors([("x", "F16", [1, 2], b"\x00\x3c\x00\xc0")], metadata={"format": "pt"}))
    put("safetensors_fuzz", "empty_tensor.safetensors", safetensors([("e", "F32", [0, 4], b"")]))
    put("safetensors_fuzz", "no_tensors.safetensors", safetensors([]))

    # safetensors_index_fuzz: the directory holds a.safetensors (x, y) and b.safetensors (z).
    index = {"metadata": {"total_size": 36}, "weight_map": {"x": "a.safetensors", "y": "a.safetensors",
                                                            "z": "b.safetensors"}}
    put("safetensors_index_fuzz", "valid.json", json.dumps(index, indent=2))
    put("safetensors_index_fuzz", "one_shard.json", json.dumps({"weight_map": {"z": "b.safetensors"}}))
    put("safetensors_index_fuzz", "wrong_shard.json", json.dumps({"weight_map": {"x": "b.safetensors"}}))

    # gguf_fuzz: an ernie4_5 file with a tokenizer and sampling defaults, and a bare one.
    tokens = ["<unk>", "<s>", "</s>", "<0x41>", "\u2581", "a", "b", "\u2581a"]
    types = [2, 3, 3, 6, 1, 1, 1, 1]
    meta = [
        ("general.architecture", STRING, "ernie4_5"),
        ("general.alignment", U32, 32),
        ("ernie4_5.embedding_length", U32, 4),
        ("ernie4_5.feed_forward_length", U32, 8),
        ("ernie4_5.block_count", U32, 1),
        ("ernie4_5.attention.head_count", U32, 2),
        ("ernie4_5.attention.head_count_kv", U32, 1),
        ("ernie4_5.context_length", U32, 64),
        ("ernie4_5.attention.layer_norm_rms_epsilon", F32, 1e-5),
        ("ernie4_5.rope.freq_base", F32, 500000.0),
        ("tokenizer.ggml.model", STRING, "llama"),
        ("tokenizer.ggml.tokens", ARRAY, (STRING, tokens)),
        ("tokenizer.ggml.scores", ARRAY, (F32, [0.0, 0.0, 0.0, 0.0, -1.0, -2.0, -3.0, -1.5])),
        ("tokenizer.ggml.token_type", ARRAY, (I32, types)),
        ("tokenizer.ggml.bos_token_id", U32, 1),
        ("tokenizer.ggml.eos_token_id", U32, 2),
        ("tokenizer.ggml.add_bos_token", BOOL, 1),
        ("tokenizer.chat_template", STRING, "{% for m in messages %}{{ m.content }}{% endfor %}"),
        ("ernie.generation.do_sample", BOOL, 1),
        ("ernie.generation.temperature", F32, 0.8),
        ("ernie.generation.top_k", I32, 40),
        ("ernie.generation.eos_token_ids", ARRAY, (I32, [2])),
    ]
    q8_row = struct.pack("<e", 0.5) + bytes(range(32))
    tensors = [("token_embd.weight", 0, [4, 8], struct.pack("<32f", *range(32))),
               ("output_norm.weight", 0, [4], struct.pack("<4f", 1, 1, 1, 1)),
               ("blk.0.attn_q.weight", 8, [32, 2], q8_row * 2)]
    put("gguf_fuzz", "ernie.gguf", gguf(meta, tensors))
    put("gguf_fuzz", "scalars.gguf", gguf([("u8", U8, 1), ("i16", I16, -2), ("f64", F64, 0.25), ("i64", I64, -5),
                                           ("nested", ARRAY, (ARRAY, [(U16, [1, 2]), (BOOL, [0])]))],
                                          [("t", 30, [2], b"\x80\x3f\x00\x40")], alignment=32))

    # config_fuzz: mode byte, then the file.
    sources = [(0, "config.json"), (1, "generation_config.json"), (2, "tokenizer_config.json"),
               (3, "special_tokens_map.json")]
    dirs = [("demo", DEMO), ("tiny", os.path.join(FIXTURES, "tiny-ernie", "model")),
            ("bias", os.path.join(FIXTURES, "tiny-ernie-bias", "model"))]
    for mode, name in sources:
        for tag, d in dirs:
            path = os.path.join(d, name)
            if os.path.exists(path):
                put("config_fuzz", f"{mode}_{tag}_{name}", bytes([mode]) + read(path))
    put("config_fuzz", "4_added_tokens.json", b"\x04" + json.dumps({"<extra>": 6144}).encode())

    # tokenizer_fuzz: even first byte = text to encode, odd = 16-bit ids (0xFFxx escapes to a raw int32).
    put("tokenizer_fuzz", "text_ascii", b"\x00Hello world, this is a test.")
    put("tokenizer_fuzz", "text_specials", b"\x02<s>User: hi\n</s><unk><|end_of_sentence|>")
    put("tokenizer_fuzz", "text_unicode", "\x00\u4f60\u597d\uff0c\u4e16\u754c \U0001f600 caf\u00e9".encode())
    put("tokenizer_fuzz", "ids_mixed", b"\x01" + struct.pack("<6H", 1, 100, 2000, 5, 3, 2)
        + b"\x00\xff" + struct.pack("<i", -7) + b"\x00\xff" + struct.pack("<i", 2**31 - 1))

    # chat_template_fuzz: template NUL messages NUL flags.
    demo_template = json.loads(read(os.path.join(DEMO, "tokenizer_config.json")))["chat_template"]
    conversation = json.dumps([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                               {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Why?"}])
    put("chat_template_fuzz", "demo", demo_template + "\0" + conversation + "\0\x01")
    put("chat_template_fuzz", "raw_content", demo_template + "\0plain text content\0\x00")
    put("chat_template_fuzz", "features",
        "{% macro m(x, y=2) %}{{ x ~ y }}{% endmacro %}{% set ns = namespace(n=0) %}"
        "{% for msg in messages if msg.role != 'system' %}{% set ns.n = ns.n + 1 %}{{ loop.index }}:"
        "{{ m(msg.content | trim | upper) }}{% if loop.last %}!{% endif %}{% endfor %}"
        "{{ messages | length }}{{ messages[0] | tojson }}{{ 'a,b' .split(',') | join('-') }}"
        "{{ raise_exception('x') if ns.n > 9 else '' }}\0" + conversation)
    put("chat_template_fuzz", "filters",
        "{{ messages | map(attribute='role') | list | tojson(indent=2) }}{% for k, v in messages[0] | items %}"
        "{{ k }}={{ v | replace('e', 'E') }}{% endfor %}{{ (range(3) | list)[-1] }}{{ '%s' % 'x' }}"
        "{% generation %}{{ 10 // 3 }}{% endgeneration %}\0" + conversation)

    # request_fuzz: endpoint byte (0 completions, 1 chat, 2 predict; 0xF0+ tokenizer routes), predict: query NUL body.
    put("request_fuzz", "completion", b"\x00" + json.dumps(
        {"model": "demo", "prompt": "Once upon a time", "max_tokens": 16, "temperature": 0.7, "top_p": 0.9,
         "stop": ["\n", "The end"], "seed": 42, "stream": True, "stream_options": {"include_usage": True}}).encode())
    put("request_fuzz", "completion_ids", b"\x00" + json.dumps({"prompt": [1, 200, 300], "max_tokens": 4}).encode())
    put("request_fuzz", "chat", b"\x01" + json.dumps(
        {"model": "demo", "messages": [{"role": "system", "content": "Be brief."},
                                       {"role": "user", "content": "Hello"}],
         "max_completion_tokens": 8, "temperature": 0, "n": 1, "stop": "User:"}).encode())
    put("request_fuzz", "predict", b"\x02max_tokens=8&temperature=0.5\0" + json.dumps({"text": "Hi there"}).encode())
    put("request_fuzz", "predict_query", b"\x02text=hello&top_p=0.9&seed=3\0")
    # Structured output, logprobs, logit_bias, n: the grammar compilers and the matcher behind them.
    put("request_fuzz", "json_schema", b"\x01" + json.dumps(
        {"messages": [{"role": "user", "content": "Person?"}], "max_tokens": 40, "n": 2, "logprobs": True,
         "top_logprobs": 2, "logit_bias": {"5": -3},
         "response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": {
             "type": "object", "$defs": {"tag": {"enum": ["a", "b", None, 3]}},
             "properties": {"name": {"type": "string", "maxLength": 8},
                            "age": {"type": "integer", "minimum": -3, "maximum": 140},
                            "when": {"type": "string", "format": "date"},
                            "code": {"type": "string", "pattern": "^[A-Z]{2}\\d{2,3}(x|y)?$"},
                            "tags": {"type": "array", "items": {"$ref": "#/$defs/tag"}, "maxItems": 3},
                            "kind": {"anyOf": [{"type": "boolean"}, {"type": "null"}, {"const": "k"}]}},
             "required": ["name", "age"], "additionalProperties": False}}}}).encode())
    put("request_fuzz", "json_object", b"\x00" + json.dumps(
        {"prompt": "x", "max_tokens": 8, "logprobs": 3, "response_format": {"type": "json_object"}}).encode())
    put("request_fuzz", "gbnf", b"\x00" + json.dumps(
        {"prompt": "x", "max_tokens": 8, "grammar": "root ::= item (\",\" item){0,3}\nitem ::= [a-z\u4e00-\u9fff]+ | \"\\\"\" [0-9]{2}\n"}).encode())
    # Empty alternatives in a repetition: exponentially many paths to the same parse (once a timeout in CI).
    put("request_fuzz", "gbnf_nullable", b"\x00" + json.dumps(
        {"prompt": "x", "max_tokens": 8, "grammar": "root ::= item (\",\" " + "|" * 26 +
         "item){0,3}\nitem ::= [a-z\u4e00-\u9fff]+ | \"\\\"\" [0-9]{2}\n"}).encode())
    # The same with a class of more UTF-8 lead bytes: a fuzzer mutation that timed out while every alternative was laid
    # out (duplicate alternatives are now laid out once).
    put("request_fuzz", "gbnf_nullable_wide", b"\x00" + json.dumps(
        {"prompt": "x", "max_tokens": 8, "grammar": "root ::= item (\",\" " + "|" * 26 +
         "item){0,3}\nitem ::= [a-z\u3e00-\u9fff]+ | \"\\\"\" [0-9]{2}\n"}).encode())
    # 0xF0 and up: /tokenize (even) and /detokenize (odd).
    put("request_fuzz", "tokenize_pieces", b"\xf0" + json.dumps(
        {"content": "\u4f60\u597d <|end_of_sentence|> \U0001f600", "with_pieces": True, "add_special": True}).encode())
    put("request_fuzz", "detokenize_ids", b"\xf1" + json.dumps({"tokens": [1, 2, 100, 5000, 24, 254, 173]}).encode())

    # lora_adapter_fuzz: even first byte, adapter_config.json; odd, adapter_model.safetensors (for the demo model,
    # whose q_proj is [hidden, hidden]: num_attention_heads * head_dim = hidden_size).
    put("lora_adapter_fuzz", "config", b"\x00" + json.dumps(
        {"peft_type": "LORA", "r": 4, "lora_alpha": 16, "use_rslora": True, "target_modules": ".*\\.q_proj",
         "layers_to_transform": [0], "rank_pattern": {"layers.0.self_attn.q_proj": 2, "v_proj": 3},
         "alpha_pattern": {"q_proj": 8}, "bias": "none", "modules_to_save": None, "fan_in_fan_out": False}).encode())
    # The odd inputs' config: rank 2 on layer 0's q_proj.
    hidden = json.loads(read(os.path.join(DEMO, "config.json")))["hidden_size"]
    name = "base_model.model.model.layers.0.self_attn.q_proj"
    put("lora_adapter_fuzz", "weights", b"\x01" + safetensors([
        (name + ".lora_A.weight", "F32", [2, hidden], struct.pack("<f", 0.01) * (2 * hidden)),
        (name + ".lora_B.weight", "BF16", [hidden, 2], b"\x80\x3c" * (2 * hidden))]))

    # stop_strings_fuzz: count byte, stop strings NUL-terminated, seed byte, text.
    put("stop_strings_fuzz", "two_stops", b"\x02User:\0\n\n\0\x07Hello there.\nUser: more text")
    put("stop_strings_fuzz", "overlap", b"\x03abc\0bcd\0c\0\x03xxabcd")
    put("stop_strings_fuzz", "utf8", "\x01\u4e16\0\x05\u4f60\u597d\u4e16\u754c \u00e9\U0001f600".encode())
    put("stop_strings_fuzz", "none", b"\x00\x01no stop strings at all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
