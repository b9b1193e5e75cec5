"""Golden gradients for core's autodiff: packages/core/fixtures/autodiff/mlp_attention.safetensors.

Run with the SYSTEM python (Debian torch 1.13):  /usr/bin/python3 scripts/reference/make_autodiff_fixtures.py

A tiny LLaMA-style block trained as HF's LlamaForCausalLM would be:
  h = embed[input_ids]
  h = h + o_proj(attention(RoPE(q_proj(rms(h))), RoPE(k_proj(rms(h))), v_proj(rms(h))))   causal, GQA
  h = h + down(silu(gate(rms(h))) * up(rms(h)))                                           SwiGLU
  logits = lm_head(rms(h))
  loss = cross_entropy(logits[:, :-1], labels[:, 1:], ignore_index=-100)                    mean over supervised tokens
Weights are random float32 (stored as F32); the forward and autograd backward run in float64 from
those exact values, and the loss and every weight's gradient are stored as F64.
Linear weights use the torch nn.Linear layout [out, in]; RoPE is LLaMA's rotate_half convention.
"""

import math
import os
import sys
from collections import OrderedDict

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import st  # noqa: E402

ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
OUT = os.path.join(ROOT, "packages", "core", "fixtures", "autodiff")
F64 = torch.float64

CFG = dict(vocab=11, hidden=16, heads=4, kv_heads=2, head_dim=4, intermediate=24, eps=1e-6, theta=10000.0)
B, T = 2, 6
MASK = -1e30  # additive causal mask; exp() of it is exactly 0 in float32 and float64 alike


def rnd(g, *shape, std=1.0, mean=0.0):
    """float64 tensor exactly representable in float32."""
    return (mean + std * torch.randn(*shape, generator=g, dtype=F64)).to(torch.float32).to(F64)


def rms(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rope(x, pos, d, theta):
    inv_freq = 1.0 / theta ** (torch.arange(0, d, 2, dtype=F64) / d)
    # float32 tables, as the TS graph builds them (ropeTables computes inv_freq in float32)
    inv_freq = inv_freq.to(torch.float32).to(F64)
    freqs = pos.to(F64)[..., None] * inv_freq
    emb = torch.cat([freqs, freqs], -1)[:, None]  # [B, 1, T, d]
    cos, sin = emb.cos(), emb.sin()
    x1, x2 = x[..., : d // 2], x[..., d // 2 :]
    return x * cos + torch.cat([-x2, x1], -1) * sin


def forward(w, ids, labels):
    c = CFG
    H, KV, D = c["heads"], c["kv_heads"], c["head_dim"]
    pos = torch.arange(T).expand(B, T)
    h = w["embed"][ids]
    a = rms(h, w["attn_norm"], c["eps"])
    q = (a @ w["q_proj"].T).view(B, T, H, D).transpose(1, 2)
    k = (a @ w["k_proj"].T).view(B, T, KV, D).transpose(1, 2)
    v = (a @ w["v_proj"].T).view(B, T, KV, D).transpose(1, 2)
    q, k = rope(q, pos, D, c["theta"]), rope(k, pos, D, c["theta"])
    rep = H // KV  # HF repeat_kv: query head h uses KV head h // rep
    k = k.repeat_interleave(rep, dim=1)
    v = v.repeat_interleave(rep, dim=1)
    scale = torch.tensor(1.0 / math.sqrt(D), dtype=torch.float32).to(F64)  # float32 constant in the graph
    scores = (q @ k.transpose(-1, -2)) * scale + torch.triu(torch.full((T, T), MASK, dtype=F64), 1)
    o = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, H * D)
    h = h + o @ w["o_proj"].T
    m = rms(h, w["mlp_norm"], c["eps"])
    h = h + (F.silu(m @ w["gate_proj"].T) * (m @ w["up_proj"].T)) @ w["down_proj"].T
    logits = rms(h, w["final_norm"], c["eps"]) @ w["lm_head"].T
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, c["vocab"]), labels[:, 1:].reshape(-1), ignore_index=-100)
    return loss, logits


def main():
    c = CFG
    g = torch.Generator().manual_seed(2024)
    E, I, V = c["hidden"], c["intermediate"], c["vocab"]
    HD, KVD = c["heads"] * c["head_dim"], c["kv_heads"] * c["head_dim"]
    w = OrderedDict(
        embed=rnd(g, V, E),
        attn_norm=rnd(g, E, std=0.1, mean=1.0),
        q_proj=rnd(g, HD, E, std=E ** -0.5),
        k_proj=rnd(g, KVD, E, std=E ** -0.5),
        v_proj=rnd(g, KVD, E, std=E ** -0.5),
        o_proj=rnd(g, E, HD, std=HD ** -0.5),
        mlp_norm=rnd(g, E, std=0.1, mean=1.0),
        gate_proj=rnd(g, I, E, std=E ** -0.5),
        up_proj=rnd(g, I, E, std=E ** -0.5),
        down_proj=rnd(g, E, I, std=I ** -0.5),
        final_norm=rnd(g, E, std=0.1, mean=1.0),
        lm_head=rnd(g, V, E, std=E ** -0.5),
    )
    # Token 3 repeats (embedding rows accumulate), tokens 9 and 10 never occur (zero rows).
    ids = torch.tensor([[1, 3, 5, 3, 7, 2], [4, 3, 0, 8, 6, 3]], dtype=torch.int64)
    # Prompt positions are unsupervised (-100), as LLaVA masks them; one more in the middle.
    labels = torch.tensor([[-100, -100, 5, 3, 7, 2], [-100, 3, 0, -100, 6, 3]], dtype=torch.int64)
    params = OrderedDict((k, v.clone().requires_grad_(True)) for k, v in w.items())
    loss, _ = forward(params, ids, labels)
    loss.backward()

    # Self-checks: the mean is over supervised tokens only, and autograd agrees with finite differences.
    supervised = (labels[:, 1:] != -100).sum().item()
    assert supervised == 8, supervised
    with torch.no_grad():
        for name in ("q_proj", "embed", "attn_norm"):
            p = params[name]
            idx = (0,) * p.dim()
            eps = 1e-6
            p[idx] += eps
            fp = forward(params, ids, labels)[0].item()
            p[idx] -= 2 * eps
            fm = forward(params, ids, labels)[0].item()
            p[idx] += eps
            num = (fp - fm) / (2 * eps)
            ana = p.grad[idx].item()
            assert abs(num - ana) <= 1e-7 * max(1.0, abs(ana)), (name, num, ana)
    assert torch.all(params["embed"].grad[9:] == 0)

    out = OrderedDict()
    out["input_ids"] = ids
    out["labels"] = labels
    for k, v in w.items():
        out[k] = v.to(torch.float32).contiguous()
    out["loss"] = loss.detach().reshape(())
    for k, p in params.items():
        out[f"grad.{k}"] = p.grad.detach().contiguous()
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, "mlp_attention.safetensors")
    meta = {k: str(v) for k, v in CFG.items()}
    meta.update(batch=str(B), seq=str(T), mask=str(MASK), loss="cross_entropy(logits[:, :-1], labels[:, 1:], ignore_index=-100), mean")
    st.save_file(out, path, meta)
    back = st.load_file(path)
    assert torch.equal(back["grad.q_proj"], out["grad.q_proj"])
    print(f"wrote {path} ({os.path.getsize(path)} bytes), loss {loss.item():.6f}")


if __name__ == "__main__":
    main()
