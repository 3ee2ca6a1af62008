"""A small ERNIE-4.5 dense model in plain PyTorch (Debian's python3-torch 1.13), written from the architecture
as Hugging Face transformers' Ernie4_5ForCausalLM computes it:

    x = E[ids]
    per layer:  x += o_proj(attention(rope(q_proj(h)), rope(k_proj(h)), v_proj(h))),  h = rmsnorm(x) * w_in
                x += down_proj(silu(gate_proj(h2)) * up_proj(h2)),                     h2 = rmsnorm(x) * w_post
    logits = (rmsnorm(x) * w_final) @ E^T                                               (tied embeddings)

RoPE rotates interleaved pairs (x[2i], x[2i+1]) by pos * theta^(-2i/head_dim); attention is causal grouped-query
(query head h reads kv head h // (heads / kv_heads)), scaled by 1/sqrt(head_dim); no biases anywhere.
Parameter names are the checkpoint's tensor names (model.layers.N.self_attn.q_proj.weight, ...).
"""
import json
import math
import struct
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class Config:
    vocab_size: int = 6144
    hidden_size: int = 384
    intermediate_size: int = 1152
    num_hidden_layers: int = 4
    num_attention_heads: int = 6
    num_key_value_heads: int = 2
    head_dim: int = 64
    rms_norm_eps: float = 1e-5
    rope_theta: float = 500000.0
    max_position_embeddings: int = 512


class RMSNorm(nn.Module):
    def __init__(self, size, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x):
        # Always in float32, also under bf16 autocast, as transformers does.
        x32 = x.float()
        return self.weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps))


def rope_tables(config, positions):
    """cos and sin [T, head_dim/2], angles computed in float32 as transformers does."""
    half = torch.arange(0, config.head_dim, 2, dtype=torch.int64).float() / config.head_dim
    inv_freq = 1.0 / (config.rope_theta ** half)
    angle = positions.float()[:, None] * inv_freq[None, :]
    return angle.cos(), angle.sin()


def apply_rope(x, cos, sin):
    """x [B, heads, T, head_dim]: rotates the interleaved pairs (x[2i], x[2i+1])."""
    even, odd = x[..., 0::2].float(), x[..., 1::2].float()
    rotated = torch.stack((even * cos - odd * sin, odd * cos + even * sin), dim=-1)
    return rotated.flatten(-2).type_as(x)


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.q_proj = nn.Linear(c.hidden_size, c.num_attention_heads * c.head_dim, bias=False)
        self.k_proj = nn.Linear(c.hidden_size, c.num_key_value_heads * c.head_dim, bias=False)
        self.v_proj = nn.Linear(c.hidden_size, c.num_key_value_heads * c.head_dim, bias=False)
        self.o_proj = nn.Linear(c.num_attention_heads * c.head_dim, c.hidden_size, bias=False)

    def forward(self, h, cos, sin, mask):
        c = self.c
        B, T, _ = h.shape
        q = self.q_proj(h).view(B, T, c.num_attention_heads, c.head_dim).transpose(1, 2)
        k = self.k_proj(h).view(B, T, c.num_key_value_heads, c.head_dim).transpose(1, 2)
        v = self.v_proj(h).view(B, T, c.num_key_value_heads, c.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        group = c.num_attention_heads // c.num_key_value_heads
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        scores = (q @ k.transpose(-1, -2)).float() / math.sqrt(c.head_dim) + mask
        out = scores.softmax(-1).type_as(v) @ v
        return self.o_proj(out.transpose(1, 2).reshape(B, T, c.num_attention_heads * c.head_dim))


class MLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.gate_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=False)
        self.up_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=False)
        self.down_proj = nn.Linear(c.intermediate_size, c.hidden_size, bias=False)

    def forward(self, h):
        return self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h))


class DecoderLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.input_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.self_attn = Attention(c)
        self.post_attention_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.mlp = MLP(c)

    def forward(self, x, cos, sin, mask):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class Backbone(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed_tokens = nn.Embedding(c.vocab_size, c.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(c) for _ in range(c.num_hidden_layers))
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps)


class ErnieForCausalLM(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.config = c
        self.model = Backbone(c)

    def init_weights(self, generator):
        """GPT-2 style: N(0, 0.02), the projections into the residual stream scaled down by sqrt(2 * layers)."""
        residual_std = 0.02 / math.sqrt(2 * self.config.num_hidden_layers)
        for name, p in self.named_parameters():
            if name.endswith("layernorm.weight") or name == "model.norm.weight":
                continue
            std = residual_std if name.endswith(("o_proj.weight", "down_proj.weight")) else 0.02
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=generator) * std)

    def forward(self, ids):
        """ids [B, T] at positions 0..T-1 -> logits [B, T, vocab] in float32."""
        T = ids.shape[1]
        cos, sin = rope_tables(self.config, torch.arange(T))
        mask = torch.full((T, T), float("-inf")).triu(1)
        x = self.model.embed_tokens(ids)
        for layer in self.model.layers:
            x = layer(x, cos, sin, mask)
        h = self.model.norm(x)
        return (h @ self.model.embed_tokens.weight.t().type_as(h)).float()


@torch.no_grad()
def sequence_nll(model, docs):
    """Summed negative log-likelihood (nats) of every token but the first of each document, and how many tokens
    that is. Runs in float32 (no autocast)."""
    total, count = 0.0, 0
    for doc in docs:
        ids = torch.tensor([doc])
        logits = model(ids[:, :-1])
        total += F.cross_entropy(logits[0], ids[0, 1:], reduction="sum").item()
        count += len(doc) - 1
    return total, count


# ---- Hugging Face files ------------------------------------------------------------------------------------------


def hf_config(c):
    return {
        "architectures": ["Ernie4_5ForCausalLM"],
        "bos_token_id": 1,
        "eos_token_id": 2,
        "head_dim": c.head_dim,
        "hidden_act": "silu",
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "max_position_embeddings": c.max_position_embeddings,
        "model_type": "ernie4_5",
        "num_attention_heads": c.num_attention_heads,
        "num_hidden_layers": c.num_hidden_layers,
        "num_key_value_heads": c.num_key_value_heads,
        "pad_token_id": 0,
        "rms_norm_eps": c.rms_norm_eps,
        "rope_theta": c.rope_theta,
        "tie_word_embeddings": True,
        "torch_dtype": "bfloat16",
        "use_bias": False,
        "use_cache": True,
        "vocab_size": c.vocab_size,
    }


def config_from_hf(d):
    """The Config of a config.json written by hf_config."""
    return Config(**{k: d[k] for k in Config.__dataclass_fields__})


def _tensor_bytes(tensor, dtype):
    """A tensor's little-endian row-major bytes as BF16 or F32."""
    if dtype == "BF16":
        return tensor.detach().to(torch.bfloat16).contiguous().view(torch.int16).numpy().astype("<i2").tobytes()
    assert dtype == "F32", dtype
    return tensor.detach().float().contiguous().numpy().astype("<f4").tobytes()


def save_safetensors(path, tensors, dtype="BF16"):
    """Writes {name: tensor} as BF16 (or F32) safetensors: 8-byte header length, JSON header, then the row-major
    data. tools/finetune_lora writes its F32 adapters with it."""
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        data = _tensor_bytes(tensors[name], dtype)
        header[name] = {"dtype": dtype, "shape": list(tensors[name].shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data block starts 8-byte aligned, as the reference writer does
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for blob in blobs:
            f.write(blob)


def load_safetensors(path):
    """Reads a BF16 or F32 safetensors file back as float32 tensors (exactly: bf16 -> f32 is lossless)."""
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] in ("BF16", "F32"), info
        begin, end = info["data_offsets"]
        raw = bytearray(blob[base + begin : base + end])
        if info["dtype"] == "BF16":
            values = torch.frombuffer(raw, dtype=torch.int16).view(torch.bfloat16).float()
        else:
            values = torch.frombuffer(raw, dtype=torch.float32).clone()
        out[name] = values.reshape(info["shape"])
    return out


def optimizer_step(opt, params, loss):
    """One update of train.py and tools/finetune_lora: backward, gradients clipped to norm 1.0, step. Returns the
    loss as a number."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    return loss.item()


def curve_point(step, epoch, recent, lr, start):
    """The loss-curve entry after 0-based `step`: the mean of the `recent` training losses, the learning rate and
    the seconds since `start`."""
    return {"step": step + 1, "epoch": epoch, "train_loss": round(sum(recent) / len(recent), 4),
            "lr": round(lr, 6), "elapsed_s": round(time.time() - start, 1)}
