"""Llama/Qwen2/Qwen3/Phi-3, Gemma 2/3 and Bloom forward passes in numpy (float64), written from transformers'
modeling_llama.py, modeling_rope_utils.py and modeling_bloom.py, as an independent reference for
converted models: the rope variants (default, linear, llama3, yarn; either spelling of the config
key) are computed as transformers computes them, not as llama.cpp does.

stdin: {"dir": <checkpoint>, "prompts": [[ids...], ...], "gelu": "exact" | "ggml-f16"};
stdout: {"logprobs": [[...vocab], ...]}, the log-softmax of the position after each prompt.
"ggml-f16" computes the GELU (Bloom's, Gemma's) as ggml's CPU backend does (input and output rounded to float16,
its lookup table), to tell that rounding apart from a wrong conversion. The Llama path is checked
against the fixtures' transformers logits by test/intake/rope.test.ts before it is trusted.
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
        if pre + "self_attn.qkv_proj.weight" in w:  # Phi-3: q, k and v in one projection, in that order
            qkv = lin("self_attn.qkv_proj", h)
            nq, nk = n_head * head_dim, n_kv * head_dim
            q, k, v = qkv[:, :nq], qkv[:, nq : nq + nk], qkv[:, nq + nk :]
        else:
            q, k, v = lin("self_attn.q_proj", h), lin("self_attn.k_proj", h), lin("self_attn.v_proj", h)
        q = q.reshape(T, n_head, head_dim)
        k = k.reshape(T, n_kv, head_dim)
        if pre + "self_attn.q_norm.weight" in w:  # Qwen3: an RMSNorm over each head, before the rope
            q = rms_norm(q, w[pre + "self_attn.q_norm.weight"], eps)
            k = rms_norm(k, w[pre + "self_attn.k_norm.weight"], eps)
        q, k = q.transpose(1, 0, 2), k.transpose(1, 0, 2)
        v = v.reshape(T, n_kv, head_dim).transpose(1, 0, 2)
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
        if pre + "mlp.gate_up_proj.weight" in w:  # Phi-3: gate and up in one projection, gate first
            gu = lin("mlp.gate_up_proj", h)
            g, up = gu[:, : gu.shape[1] // 2], gu[:, gu.shape[1] // 2 :]
        else:
            g, up = lin("mlp.gate_proj", h), lin("mlp.up_proj", h)
        x = x + lin("mlp.down_proj", g / (1 + np.exp(-g)) * up)
    x = rms_norm(x, w["model.norm.weight"], eps)
    head = w.get("lm_head.weight", w["model.embed_tokens.weight"])
    logits = x[-1] @ head.T
    m = logits.max()
    return logits - m - math.log(np.exp(logits - m).sum())


def layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def bloom_gelu(x, ggml_f16):
    def gelu(v):
        return v * 0.5 * (1.0 + np.tanh(0.79788456 * v * (1 + 0.044715 * v * v)))

    if not ggml_f16:
        return gelu(x)
    table = gelu(x.astype(np.float16).astype(np.float64)).astype(np.float16).astype(np.float64)
    return np.where(x <= -10, 0.0, np.where(x >= 10, x, table))


def alibi_slopes(n_head):
    p2 = 2 ** math.floor(math.log2(n_head))
    base = 2 ** (-(2 ** -(math.log2(p2) - 3)))
    slopes = [base**i for i in range(1, p2 + 1)]
    if p2 != n_head:
        extra = 2 ** (-(2 ** -(math.log2(2 * p2) - 3)))
        slopes += [extra**i for i in range(1, 1 + 2 * min(p2, n_head - p2), 2)]
    return np.array(slopes)


def bloom_forward(c, w, ids, ggml_f16):
    pre = "transformer." if "transformer.word_embeddings.weight" in w else ""
    n_head, hidden = c["n_head"], c.get("hidden_size", c.get("n_embed"))
    hd, eps, T = hidden // n_head, c["layer_norm_epsilon"], len(ids)
    x = w[pre + "word_embeddings.weight"][ids]
    x = layer_norm(x, w[pre + "word_embeddings_layernorm.weight"], w[pre + "word_embeddings_layernorm.bias"], eps)
    alibi = alibi_slopes(n_head)[:, None, None] * np.arange(T, dtype=np.float64)[None, None, :]
    mask = np.triu(np.full((T, T), -np.inf), 1)
    for layer in range(c["n_layer"]):
        p = f"{pre}h.{layer}."
        h = layer_norm(x, w[p + "input_layernorm.weight"], w[p + "input_layernorm.bias"], eps)
        fused = h @ w[p + "self_attention.query_key_value.weight"].T + w[p + "self_attention.query_key_value.bias"]
        fused = fused.reshape(T, n_head, 3, hd)
        q, k, v = (fused[:, :, i, :].transpose(1, 0, 2) for i in range(3))
        att = alibi + (q @ k.transpose(0, 2, 1)) / math.sqrt(hd) + mask
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        ctx = (att @ v).transpose(1, 0, 2).reshape(T, hidden)
        x = x + ctx @ w[p + "self_attention.dense.weight"].T + w[p + "self_attention.dense.bias"]
        h = layer_norm(x, w[p + "post_attention_layernorm.weight"], w[p + "post_attention_layernorm.bias"], eps)
        up = bloom_gelu(h @ w[p + "mlp.dense_h_to_4h.weight"].T + w[p + "mlp.dense_h_to_4h.bias"], ggml_f16)
        x = x + up @ w[p + "mlp.dense_4h_to_h.weight"].T + w[p + "mlp.dense_4h_to_h.bias"]
    x = layer_norm(x, w[pre + "ln_f.weight"], w[pre + "ln_f.bias"], eps)
    logits = x[-1] @ w.get("lm_head.weight", w[pre + "word_embeddings.weight"]).T
    m = logits.max()
    return logits - m - math.log(np.exp(logits - m).sum())


def gemma_forward(c, w, ids, ggml_f16):
    """transformers' Gemma2 and Gemma3: scaled embeddings, (1 + w) RMSNorms before and after attention
    and the MLP, GELU (tanh) gating; Gemma 2 soft-caps attention, alternates sliding layers, one rope;
    Gemma 3 norms each head's queries and keys, and its sliding and full layers have their own ropes."""
    gemma3 = c["architectures"][0] == "Gemma3ForCausalLM"
    n_head, n_kv, hidden = c["num_attention_heads"], c["num_key_value_heads"], c["hidden_size"]
    hd, eps, T = c["head_dim"], c["rms_norm_eps"], len(ids)
    scale = c.get("query_pre_attn_scalar", hd) ** -0.5
    if gemma3:
        types = c.get("layer_types") or [
            "full_attention" if (i + 1) % c.get("sliding_window_pattern", 6) == 0 else "sliding_attention"
            for i in range(c["num_hidden_layers"])
        ]
        rp = c.get("rope_parameters") or {}
        full = rp.get("full_attention") or {**(c.get("rope_scaling") or {}), "rope_theta": c.get("rope_theta", 1e6)}
        local = rp.get("sliding_attention") or {"rope_type": "default", "rope_theta": c.get("rope_local_base_freq", 10000)}
        ropes = {"full_attention": full, "sliding_attention": local}
    else:
        types = ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(c["num_hidden_layers"])]
        ropes = {t: {"rope_theta": c.get("rope_theta", 10000)} for t in ("full_attention", "sliding_attention")}

    def cos_sin(params):
        inv, _ = inv_freq_and_scale({"rope_parameters": params}, hd)
        ang = np.outer(np.arange(T, dtype=np.float64), inv)
        emb = np.concatenate([ang, ang], axis=-1)
        return np.cos(emb), np.sin(emb)

    trig = {t: cos_sin(p) for t, p in ropes.items()}

    def norm(x, name):
        return rms_norm(x, 1.0 + w[name], eps)

    x = w["model.embed_tokens.weight"][ids] * math.sqrt(hidden)
    i = np.arange(T)
    for layer in range(c["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        allowed = i[None, :] <= i[:, None]
        if types[layer] == "sliding_attention":
            allowed &= (i[:, None] - i[None, :]) < c["sliding_window"]
        mask = np.where(allowed, 0.0, -np.inf)
        h = norm(x, p + "input_layernorm.weight")
        q = (h @ w[p + "self_attn.q_proj.weight"].T).reshape(T, n_head, hd)
        k = (h @ w[p + "self_attn.k_proj.weight"].T).reshape(T, n_kv, hd)
        v = (h @ w[p + "self_attn.v_proj.weight"].T).reshape(T, n_kv, hd).transpose(1, 0, 2)
        if gemma3:
            q, k = norm(q, p + "self_attn.q_norm.weight"), norm(k, p + "self_attn.k_norm.weight")
        q, k = q.transpose(1, 0, 2), k.transpose(1, 0, 2)
        cos, sin = trig[types[layer]]
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        k, v = np.repeat(k, n_head // n_kv, axis=0), np.repeat(v, n_head // n_kv, axis=0)
        att = (q @ k.transpose(0, 2, 1)) * scale
        if c.get("attn_logit_softcapping"):
            cap = c["attn_logit_softcapping"]
            att = np.tanh(att / cap) * cap
        att = att + mask
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        o = (att @ v).transpose(1, 0, 2).reshape(T, n_head * hd) @ w[p + "self_attn.o_proj.weight"].T
        x = x + norm(o, p + "post_attention_layernorm.weight")
        h = norm(x, p + "pre_feedforward_layernorm.weight")
        g = bloom_gelu(h @ w[p + "mlp.gate_proj.weight"].T, ggml_f16)
        m = (g * (h @ w[p + "mlp.up_proj.weight"].T)) @ w[p + "mlp.down_proj.weight"].T
        x = x + norm(m, p + "post_feedforward_layernorm.weight")
    x = norm(x, "model.norm.weight")
    logits = x[-1] @ w["model.embed_tokens.weight"].T
    if c.get("final_logit_softcapping"):
        cap = c["final_logit_softcapping"]
        logits = np.tanh(logits / cap) * cap
    mx = logits.max()
    return logits - mx - math.log(np.exp(logits - mx).sum())


def main():
    req = json.load(sys.stdin)
    with open(f"{req['dir']}/config.json") as f:
        c = json.load(f)
    w = read_safetensors(f"{req['dir']}/model.safetensors")
    f16 = req.get("gelu") == "ggml-f16"

    def step(ids):
        arch = c["architectures"][0]
        if arch == "BloomForCausalLM":
            return bloom_forward(c, w, ids, f16)
        if arch in ("Gemma2ForCausalLM", "Gemma3ForCausalLM"):
            return gemma_forward(c, w, ids, f16)
        return forward(c, w, ids)

    if "greedy" in req:  # {"greedy": n}: up to n argmax tokens after each prompt, stopping after EOS
        out = []
        for ids in req["prompts"]:
            ids, new = list(ids), []
            for _ in range(req["greedy"]):
                t = int(np.argmax(step(ids)))
                new.append(t)
                if t == c.get("eos_token_id"):
                    break
                ids.append(t)
            out.append(new)
        json.dump({"greedy": out}, sys.stdout)
        return
    json.dump({"logprobs": [step(ids).tolist() for ids in req["prompts"]]}, sys.stdout)


main()
