"""LoRA for the demo model (tools/train_demo/model.py), written from the LoRA paper's formula and the layout that
Hugging Face PEFT uses, since PEFT is not packaged for Debian 12:

    y = W x + (lora_alpha / r) * B (A x)        A [r, in], B [out, r]; W frozen

A starts as PEFT initialises it (kaiming-uniform with a = sqrt(5), the default of nn.Linear) and B as zeros, so
the adapted model starts out identical to the base. The adapter stays unmerged: W is never modified, which is also
how the engine applies a PEFT adapter at run time.

Files are PEFT's: adapter_model.safetensors (float32, keys base_model.model.<module>.lora_{A,B}.weight) and
adapter_config.json (the keys PEFT 0.13's LoraConfig.save_pretrained writes, sorted, indent 2).
"""
import json
import math
import os
import sys

import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "train_demo"))
from model import ErnieForCausalLM, config_from_hf, load_safetensors, save_safetensors  # noqa: E402

# All seven projections of a decoder layer. model.py names its modules as Hugging Face's Ernie4_5ForCausalLM does
# (model.layers.N.self_attn.q_proj, model.layers.N.mlp.gate_proj, ...), so a module's name is its PEFT key as is.
TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
PEFT_PREFIX = "base_model.model."  # PeftModelForCausalLM.base_model (LoraModel) .model (the transformers model)


class LoRALinear(nn.Module):
    """A frozen nn.Linear plus a trainable low-rank update. Keeps the wrapped layer as `base` so that the base
    weight is the very tensor loaded from the checkpoint."""

    def __init__(self, base, r, alpha, dropout, generator=None):
        super().__init__()
        self.base = base
        base.weight.requires_grad_(False)
        self.r, self.alpha, self.scaling = r, alpha, alpha / r
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r))
        # PEFT: nn.init.kaiming_uniform_(A, a=sqrt(5)). With fan_in = in_features that is U(-b, b) with
        # b = gain * sqrt(3 / fan_in), gain = sqrt(2 / (1 + a^2)) = sqrt(1/3): b = 1 / sqrt(in_features).
        # Drawn here by hand from a dedicated generator so that the draw depends on --seed alone.
        bound = math.sqrt(2.0 / (1 + 5.0)) * math.sqrt(3.0 / base.in_features)
        with torch.no_grad():
            self.lora_A.copy_(torch.rand(self.lora_A.shape, generator=generator) * 2 * bound - bound)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x):
        # Unmerged, as PEFT's Linear.forward: the base product, then the update added on top (dropout only on the
        # adapter's input, so the base path is never perturbed).
        return self.base(x) + (self.dropout(x) @ self.lora_A.t() @ self.lora_B.t()) * self.scaling


def lora_modules(model):
    """(module name, LoRALinear) of an adapted model, in a fixed order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, LoRALinear)]


def inject(model, r, alpha, dropout, seed):
    """Replaces every targeted nn.Linear by a LoRALinear around it and freezes everything else."""
    for p in model.parameters():
        p.requires_grad_(False)
    generator = torch.Generator().manual_seed(seed)
    for layer in model.model.layers:
        for parent in (layer.self_attn, layer.mlp):
            for name in TARGET_MODULES:
                if hasattr(parent, name):
                    setattr(parent, name, LoRALinear(getattr(parent, name), r, alpha, dropout, generator))
    return model


def load_base(folder):
    """The checkpoint of `folder` as a float32 model: bf16 -> float32 is exact, so these master weights are
    exactly the shipped ones."""
    with open(os.path.join(folder, "config.json")) as f:
        config = config_from_hf(json.load(f))
    model = ErnieForCausalLM(config)
    model.load_state_dict(load_safetensors(os.path.join(folder, "model.safetensors")))
    return model


# ---- PEFT's files ------------------------------------------------------------------------------------------------


def adapter_tensors(model):
    """{PEFT key: float32 tensor} of an adapted model."""
    out = {}
    for name, m in lora_modules(model):
        out[f"{PEFT_PREFIX}{name}.lora_A.weight"] = m.lora_A.detach().float().contiguous()
        out[f"{PEFT_PREFIX}{name}.lora_B.weight"] = m.lora_B.detach().float().contiguous()
    return out


def peft_config(r, alpha, dropout, base_model):
    """adapter_config.json as PEFT 0.13 writes it for a LoraConfig(r, lora_alpha, lora_dropout, target_modules,
    task_type=CAUSAL_LM) with every other field at its default, in inference mode (as save_pretrained sets it)."""
    return {
        "alpha_pattern": {},
        "auto_mapping": None,
        "base_model_name_or_path": base_model,
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "init_lora_weights": True,
        "layer_replication": None,
        "layers_pattern": None,
        "layers_to_transform": None,
        "loftq_config": {},
        "lora_alpha": alpha,
        "lora_dropout": dropout,
        "megatron_config": None,
        "megatron_core": "megatron.core",
        "modules_to_save": None,
        "peft_type": "LORA",
        "r": r,
        "rank_pattern": {},
        "revision": None,
        "target_modules": sorted(TARGET_MODULES),  # PEFT stores a set and writes it as a list
        "task_type": "CAUSAL_LM",
        "use_dora": False,
        "use_rslora": False,
    }


def save_adapter(folder, model, r, alpha, dropout, base_model):
    os.makedirs(folder, exist_ok=True)
    save_safetensors(os.path.join(folder, "adapter_model.safetensors"), adapter_tensors(model), dtype="F32")
    with open(os.path.join(folder, "adapter_config.json"), "w") as f:
        json.dump(peft_config(r, alpha, dropout, base_model), f, indent=2, sort_keys=True)
        f.write("\n")


def load_adapted(base_folder, adapter_folder):
    """The base checkpoint with the adapter of `adapter_folder` applied, unmerged, in eval mode. Reads the rank,
    alpha and targets from adapter_config.json and insists that every tensor finds its module and vice versa."""
    with open(os.path.join(adapter_folder, "adapter_config.json")) as f:
        cfg = json.load(f)
    model = inject(load_base(base_folder), cfg["r"], cfg["lora_alpha"], 0.0, seed=0)
    tensors = load_safetensors(os.path.join(adapter_folder, "adapter_model.safetensors"))
    expected = adapter_tensors(model)
    assert set(tensors) == set(expected), sorted(set(tensors) ^ set(expected))
    with torch.no_grad():
        for name, m in lora_modules(model):
            for part in ("A", "B"):
                t = tensors[f"{PEFT_PREFIX}{name}.lora_{part}.weight"]
                getattr(m, f"lora_{part}").copy_(t)
    return model.eval()
