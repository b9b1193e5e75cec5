"""Golden fixtures for the core graph builder ops: packages/core/fixtures/builder/.

Run with the SYSTEM python (Debian torch 1.13):  /usr/bin/python3 scripts/reference/make_builder_fixtures.py

All inputs are random float32; every output is computed in float64 from the exact float32 inputs
and stored as float32. Linear weights use the torch nn.Linear layout [out, in]: y = x @ W^T + b.
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
OUT = os.path.join(ROOT, "packages", "core", "fixtures", "builder")
F64 = torch.float64

torch.set_grad_enabled(False)


def rnd(g, *shape, std=1.0):
    """float64 tensor exactly representable in float32."""
    return (std * torch.randn(*shape, generator=g, dtype=F64)).to(torch.float32).to(F64)


def lin(x, w, b=None):
    y = x @ w.T
    return y + b if b is not None else y


def gelu_exact(x):
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def quick_gelu(x):
    return x * torch.sigmoid(1.702 * x)


def silu(x):
    return x * torch.sigmoid(x)


def store(tensors):
    return OrderedDict((k, v.to(torch.float32).contiguous()) for k, v in tensors.items())


# ----------------------------------------------------------------------------- mlp


def make_mlp():
    g = torch.Generator().manual_seed(101)
    x = rnd(g, 2, 3, 8)
    w1, b1 = rnd(g, 16, 8, std=0.5), rnd(g, 16, std=0.5)
    w2, b2 = rnd(g, 8, 16, std=0.5), rnd(g, 8, std=0.5)
    h = lin(x, w1, b1)
    t = OrderedDict(
        x=x, w1=w1, b1=b1, w2=w2, b2=b2,
        y_gelu=lin(gelu_exact(h), w2, b2),
        y_quickgelu=lin(quick_gelu(h), w2, b2),
        y_silu=lin(silu(h), w2, b2),
    )
    # cross-check against torch's own ops
    assert torch.allclose(t["y_gelu"], F.linear(F.gelu(F.linear(x, w1, b1)), w2, b2), atol=1e-12)
    assert torch.allclose(t["y_silu"], F.linear(F.silu(F.linear(x, w1, b1)), w2, b2), atol=1e-12)
    st.save_file(store(t), os.path.join(OUT, "mlp.safetensors"), {
        "convention": "Linear layout [out,in]: lin(x) = x @ w^T + b",
        "y_gelu": "lin2(gelu_exact(lin1 x)), gelu_exact = 0.5 x (1 + erf(x/sqrt 2))",
        "y_quickgelu": "lin2(quick_gelu(lin1 x)), quick_gelu = x * sigmoid(1.702 x)",
        "y_silu": "lin2(silu(lin1 x))",
    })
    return t


# ----------------------------------------------------------------------------- attention


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def rope(x, positions, theta=10000.0):
    """LLaMA rotate_half RoPE on x [B, H, S, D] (non-interleaved halves)."""
    d = x.shape[-1]
    inv_freq = 1.0 / (theta ** (torch.arange(0, d, 2, dtype=F64) / d))
    freqs = positions.to(F64)[:, None] * inv_freq[None, :]  # [S, D/2]
    emb = torch.cat((freqs, freqs), dim=-1)
    return x * emb.cos() + rotate_half(x) * emb.sin()


def rope_pairs(x, positions, theta=10000.0):
    """Independent formulation: rotate the pair (x[i], x[i + D/2]) by angle pos * theta^(-2i/D)."""
    d = x.shape[-1]
    h = d // 2
    out = x.clone()
    for s, p in enumerate(positions.tolist()):
        for i in range(h):
            a = p * theta ** (-2.0 * i / d)
            c, sn = math.cos(a), math.sin(a)
            x1, x2 = x[..., s, i], x[..., s, i + h]
            out[..., s, i] = x1 * c - x2 * sn
            out[..., s, i + h] = x2 * c + x1 * sn
    return out


def mha(x, wq, wk, wv, wo, heads, causal, use_rope):
    b, s, e = x.shape
    d = e // heads

    def split(t):
        return t.view(b, s, heads, d).transpose(1, 2)  # [B, H, S, D]

    q, k, v = split(lin(x, wq)), split(lin(x, wk)), split(lin(x, wv))
    if use_rope:
        pos = torch.arange(s)
        q, k = rope(q, pos), rope(k, pos)
    scores = q @ k.transpose(-1, -2) / math.sqrt(d)
    if causal:
        m = torch.triu(torch.ones(s, s, dtype=torch.bool), diagonal=1)
        scores = scores.masked_fill(m, float("-inf"))
    p = torch.softmax(scores, dim=-1)
    o = (p @ v).transpose(1, 2).reshape(b, s, e)
    return lin(o, wo)


def mha_loop(x, wq, wk, wv, wo, heads, causal, use_rope):
    """Naive per-(batch, head, query) loop, independent of mha() above."""
    b, s, e = x.shape
    d = e // heads
    q_all, k_all, v_all = lin(x, wq), lin(x, wk), lin(x, wv)
    out = torch.zeros(b, s, e, dtype=F64)
    for bi in range(b):
        for h in range(heads):
            q = q_all[bi, :, h * d:(h + 1) * d]
            k = k_all[bi, :, h * d:(h + 1) * d]
            v = v_all[bi, :, h * d:(h + 1) * d]
            if use_rope:
                q = rope_pairs(q, torch.arange(s))
                k = rope_pairs(k, torch.arange(s))
            for i in range(s):
                n = i + 1 if causal else s
                sc = torch.tensor([float(q[i] @ k[j]) / math.sqrt(d) for j in range(n)], dtype=F64)
                w = torch.exp(sc - sc.max())
                w = w / w.sum()
                out[bi, i, h * d:(h + 1) * d] = (w[:, None] * v[:n]).sum(0)
    return lin(out, wo)


def make_attention():
    g = torch.Generator().manual_seed(202)
    x = rnd(g, 2, 5, 16)
    ws = [rnd(g, 16, 16, std=0.4) for _ in range(4)]
    t = OrderedDict(x=x, wq=ws[0], wk=ws[1], wv=ws[2], wo=ws[3])
    t["y_causal"] = mha(x, *ws, heads=2, causal=True, use_rope=False)
    t["y_full"] = mha(x, *ws, heads=2, causal=False, use_rope=False)
    t["y_causal_rope"] = mha(x, *ws, heads=2, causal=True, use_rope=True)
    for key, causal, r in (("y_causal", True, False), ("y_full", False, False), ("y_causal_rope", True, True)):
        ref = mha_loop(x, *ws, heads=2, causal=causal, use_rope=r)
        assert torch.allclose(t[key], ref, atol=1e-12), key
    assert not torch.allclose(t["y_causal"], t["y_full"], atol=1e-3)
    assert not torch.allclose(t["y_causal"], t["y_causal_rope"], atol=1e-3)
    assert torch.allclose(t["y_causal"][:, -1], t["y_full"][:, -1], atol=1e-12)  # last query sees all keys either way
    st.save_file(store(t), os.path.join(OUT, "attention.safetensors"), {
        "convention": "q=x@wq^T etc (Linear layout, no bias); 2 heads of 8 = contiguous 8-column blocks; out = concat(heads)@wo^T",
        "y_causal": "softmax(QK^T/sqrt(8) + causal mask) V, then wo",
        "y_full": "no mask",
        "y_causal_rope": "as y_causal with LLaMA rotate_half RoPE (theta 10000, positions 0..4) on q and k per head (head_dim 8: pairs (i, i+4))",
    })
    return t


# ----------------------------------------------------------------------------- norms


def make_norms():
    g = torch.Generator().manual_seed(303)
    x = rnd(g, 3, 10, std=2.0) + rnd(g, 3, 1)  # nonzero row means so LayerNorm != RMSNorm
    w = 1.0 + rnd(g, 10, std=0.3)
    b = rnd(g, 10, std=0.3)
    eps = 1e-5
    rms = x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * w
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)  # biased variance
    ln = (x - mu) / torch.sqrt(var + eps) * w + b
    sm = torch.exp(x - x.max(-1, keepdim=True).values)
    sm = sm / sm.sum(-1, keepdim=True)
    lsm = x - x.max(-1, keepdim=True).values
    lsm = lsm - torch.log(torch.exp(lsm).sum(-1, keepdim=True))
    assert torch.allclose(ln, F.layer_norm(x, (10,), w, b, eps), atol=1e-12)
    assert torch.allclose(sm, torch.softmax(x, -1), atol=1e-14)
    assert torch.allclose(lsm, torch.log_softmax(x, -1), atol=1e-12)
    t = OrderedDict(x=x, w=w, b=b, rms=rms, ln=ln, softmax=sm, log_softmax=lsm)
    st.save_file(store(t), os.path.join(OUT, "norms.safetensors"), {
        "rms": "x * rsqrt(mean(x^2, -1) + 1e-5) * w",
        "ln": "(x - mean) / sqrt(biased var + 1e-5) * w + b",
        "softmax": "softmax over last dim", "log_softmax": "log_softmax over last dim",
    })
    return t


def main():
    os.makedirs(OUT, exist_ok=True)
    outs = {"mlp": make_mlp(), "attention": make_attention(), "norms": make_norms()}
    for name, t in outs.items():
        back = st.load_file(os.path.join(OUT, f"{name}.safetensors"))
        for k, v in store(t).items():
            assert torch.equal(back[k], v), (name, k)
        print(name + ": " + ", ".join(f"{k} {list(v.shape)}" for k, v in back.items()))
    print("builder fixtures OK")


if __name__ == "__main__":
    main()
