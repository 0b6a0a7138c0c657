"""A Llama/Qwen2 forward pass in numpy (float64), written from transformers' modeling_llama.py and
modeling_rope_utils.py, as an independent reference for converted models: the rope variants
(default, linear, llama3, yarn; either spelling of the config key) are computed as transformers
computes them, not as llama.cpp does.

stdin: {"dir": <checkpoint>, "prompts": [[ids...], ...]}; stdout: {"logprobs": [[...vocab], ...]},
the log-softmax of the position after each prompt. Checked against the fixtures' transformers
logits by test/intake/rope.test.ts before it is trusted for anything else.
"""
import json
import math
import struct
import sys

import numpy as np


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        a, b = t["data_offsets"]
        raw = data[a:b]
        if t["dtype"] == "F32":
            v = np.frombuffer(raw, dtype="<f4")
        elif t["dtype"] == "F16":
            v = np.frombuffer(raw, dtype="<f2")
        elif t["dtype"] == "BF16":
            v = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            raise SystemExit(f"dtype {t['dtype']} not handled")
        out[name] = v.astype(np.float64).reshape(t["shape"])
    return out


def inv_freq_and_scale(c, head_dim):
    """transformers' rope init functions: the inverse frequencies and the attention scaling."""
    p = c.get("rope_parameters") or c.get("rope_scaling") or {}
    base = p.get("rope_theta", c.get("rope_theta", 10000.0))
    kind = p.get("rope_type", p.get("type", "default"))
    dim = head_dim
    inv = 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
    if kind == "default":
        return inv, 1.0
    factor = p["factor"]
    if kind == "linear":
        return inv / factor, 1.0
    if kind == "llama3":
        low, high = p.get("low_freq_factor", 1.0), p.get("high_freq_factor", 4.0)
        orig = p.get("original_max_position_embeddings", 8192)
        wavelen = 2 * math.pi / inv
        out = np.where(wavelen > orig / low, inv / factor, inv)
        smooth = (orig / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * out / factor + smooth * out
        medium = ~(wavelen < orig / high) & ~(wavelen > orig / low)
        return np.where(medium, smoothed, out), 1.0
    if kind == "yarn":
        orig = p.get("original_max_position_embeddings") or c["max_position_embeddings"]
        mscale = 1.0 if factor <= 1 else 0.1 * math.log(factor) + 1.0
        attention = p.get("attention_factor") or mscale
        beta_fast, beta_slow = p.get("beta_fast") or 32, p.get("beta_slow") or 1

        def corr_dim(rot):
            return (dim * math.log(orig / (rot * 2 * math.pi))) / (2 * math.log(base))

        lo, hi = math.floor(corr_dim(beta_fast)), math.ceil(corr_dim(beta_slow))
        lo, hi = max(lo, 0), min(hi, dim - 1)
        if lo == hi:
            hi += 0.001
        ramp = np.clip((np.arange(dim // 2, dtype=np.float64) - lo) / (hi - lo), 0, 1)
        extrapolation = 1 - ramp
        pos_freqs = base ** (np.arange(0, dim, 2, dtype=np.float64) / dim)
        inv = (1 / (factor * pos_freqs)) * (1 - extrapolation) + (1 / pos_freqs) * extrapolation
        return inv, attention
    raise SystemExit(f"rope type {kind} not handled")


def rms_norm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def rotate_half(x):
    h = x.shape[-1] // 2
    return np.concatenate([-x[..., h:], x[..., :h]], axis=-1)


def forward(c, w, ids):
    n_head, n_kv = c["num_attention_heads"], c.get("num_key_value_heads", c["num_attention_heads"])
    hidden = c["hidden_size"]
    head_dim = c.get("head_dim") or hidden // n_head
    eps = c["rms_norm_eps"]
    inv, scale = inv_freq_and_scale(c, head_dim)
    pos = np.arange(len(ids), dtype=np.float64)
    ang = np.outer(pos, inv)
    emb = np.concatenate([ang, ang], axis=-1)
    cos, sin = np.cos(emb) * scale, np.sin(emb) * scale
    x = w["model.embed_tokens.weight"][ids]
    T = len(ids)
    mask = np.triu(np.full((T, T), -np.inf), 1)
    for layer in range(c["num_hidden_layers"]):
        pre = f"model.layers.{layer}."

        def lin(name, v):
            y = v @ w[pre + name + ".weight"].T
            b = w.get(pre + name + ".bias")
            return y if b is None else y + b

        h = rms_norm(x, w[pre + "input_layernorm.weight"], eps)
        q = lin("self_attn.q_proj", h).reshape(T, n_head, head_dim).transpose(1, 0, 2)
        k = lin("self_attn.k_proj", h).reshape(T, n_kv, head_dim).transpose(1, 0, 2)
        v = lin("self_attn.v_proj", h).reshape(T, n_kv, head_dim).transpose(1, 0, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = np.repeat(k, n_head // n_kv, axis=0)
        v = np.repeat(v, n_head // n_kv, axis=0)
        att = q @ k.transpose(0, 2, 1) / math.sqrt(head_dim) + mask
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        o = (att @ v).transpose(1, 0, 2).reshape(T, n_head * head_dim)
        x = x + lin("self_attn.o_proj", o)
        h = rms_norm(x, w[pre + "post_attention_layernorm.weight"], eps)
        g = lin("mlp.gate_proj", h)
        x = x + lin("mlp.down_proj", g / (1 + np.exp(-g)) * lin("mlp.up_proj", h))
    x = rms_norm(x, w["model.norm.weight"], eps)
    head = w.get("lm_head.weight", w["model.embed_tokens.weight"])
    logits = x[-1] @ head.T
    m = logits.max()
    return logits - m - math.log(np.exp(logits - m).sum())


def main():
    req = json.load(sys.stdin)
    with open(f"{req['dir']}/config.json") as f:
        c = json.load(f)
    w = read_safetensors(f"{req['dir']}/model.safetensors")
    json.dump({"logprobs": [forward(c, w, ids).tolist() for ids in req["prompts"]]}, sys.stdout)


main()
