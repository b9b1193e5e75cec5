"""Plain-torch reference implementation of MobiLlama / LLaMA (no transformers needed).

Faithful to the published MobiLlama modelling code (mbzuai-oryx/MobiLlama
model_utils/modeling_mobillama.py, itself a copy of transformers ~4.31 modeling_llama.py),
with its eager attention path (the training code's flash_attn call is replaced by the
commented-out HF eager path, which also honours the padding mask):

  * RMSNorm: variance = mean(x^2) computed in (at least) fp32, x * rsqrt(variance + eps), * weight.
  * RoPE: inv_freq = 1 / theta^(arange(0, d, 2) / d), emb = cat(freqs, freqs),
    x * cos + rotate_half(x) * sin with rotate_half(x) = cat(-x[d/2:], x[:d/2]) (non-interleaved
    halves), cos/sin gathered by position_ids. theta = config.rope_theta (default 10000; the
    MobiLlama code hard-codes 10000, which is what its configs say anyway).
  * Attention: q/k/v/o Linear without bias, scores / sqrt(head_dim) + additive mask, clamp to
    finfo.min, softmax (upcast to >= fp32), @ V, o_proj. Number of KV heads is taken FROM THE
    WEIGHTS (k_proj rows / head_dim): MobiLlama's config says num_key_value_heads=4 but its code
    builds full multi-head attention. Real GQA (fewer KV heads in the weights) uses repeat_kv.
  * Mask: HF _make_causal_mask + _expand_mask (additive finfo(dtype).min), attention_mask [B, S_total].
  * MLP: down(silu(gate(x)) * up(x)); MobiLlama passes ONE LlamaMLP instance to every layer.
  * Final RMSNorm, untied lm_head.

The KV cache (past_key_values) stores post-RoPE keys and values per layer with shape
[B, n_kv_heads, T, head_dim] (before repeat_kv), as HF does.

Everything runs in whatever dtype the module is cast to; the golden fixtures use float64.
"""

import json
import math
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import nn
import torch.nn.functional as F


# ----------------------------------------------------------------------------- config


@dataclass
class DecoderConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int  # what the WEIGHTS have (may differ from config.json)
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    max_position_embeddings: int = 2048
    hidden_act: str = "silu"
    shared_mlp: bool = True  # MobiLlama: one MLP module used by every layer
    extra: dict = field(default_factory=dict)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_hf_dict(cls, d: dict, shared_mlp: bool = True, num_key_value_heads: Optional[int] = None):
        heads = d["num_attention_heads"]
        return cls(
            vocab_size=d["vocab_size"],
            hidden_size=d["hidden_size"],
            intermediate_size=d["intermediate_size"],
            num_hidden_layers=d["num_hidden_layers"],
            num_attention_heads=heads,
            num_key_value_heads=num_key_value_heads if num_key_value_heads is not None else d.get("num_key_value_heads", heads),
            rms_norm_eps=d.get("rms_norm_eps", 1e-6),
            rope_theta=float(d.get("rope_theta", 10000.0) or 10000.0),
            max_position_embeddings=d.get("max_position_embeddings", 2048),
            hidden_act=d.get("hidden_act", "silu"),
            shared_mlp=shared_mlp,
        )


# ----------------------------------------------------------------------------- masks


def make_causal_mask(bsz, tgt_len, dtype, device=None, past_key_values_length=0):
    """HF _make_causal_mask: [bsz, 1, tgt, past + tgt], 0 where allowed, finfo.min above the diagonal."""
    mask = torch.full((tgt_len, tgt_len), torch.finfo(dtype).min, dtype=dtype, device=device)
    cond = torch.arange(tgt_len, device=device)
    mask.masked_fill_(cond < (cond + 1).view(tgt_len, 1), 0)
    mask = mask.to(dtype)
    if past_key_values_length > 0:
        mask = torch.cat([torch.zeros(tgt_len, past_key_values_length, dtype=dtype, device=device), mask], dim=-1)
    return mask[None, None, :, :].expand(bsz, 1, tgt_len, tgt_len + past_key_values_length)


def expand_mask(mask, dtype, tgt_len=None):
    """HF _expand_mask: [bsz, src] 1/0 -> [bsz, 1, tgt, src] additive (0 or finfo.min)."""
    bsz, src_len = mask.size()
    tgt_len = tgt_len if tgt_len is not None else src_len
    expanded = mask[:, None, None, :].expand(bsz, 1, tgt_len, src_len).to(dtype)
    inverted = 1.0 - expanded
    return inverted.masked_fill(inverted.to(torch.bool), torch.finfo(dtype).min)


def prepare_decoder_attention_mask(attention_mask, input_shape, dtype, past_key_values_length):
    combined = None
    if input_shape[-1] > 1:
        combined = make_causal_mask(input_shape[0], input_shape[1], dtype, attention_mask.device, past_key_values_length)
    if attention_mask is not None:
        expanded = expand_mask(attention_mask, dtype, tgt_len=input_shape[-1])
        combined = expanded if combined is None else expanded + combined
    return combined


def hf_position_ids(attention_mask):
    """What HF generate/prepare_inputs_for_generation computes: cumsum(mask) - 1, masked -> 1."""
    pos = attention_mask.long().cumsum(-1) - 1
    pos.masked_fill_(attention_mask == 0, 1)
    return pos


# ----------------------------------------------------------------------------- modules


class RMSNorm(nn.Module):
    def __init__(self, hidden_size, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states):
        input_dtype = hidden_states.dtype
        acc = torch.promote_types(input_dtype, torch.float32)  # fp32 in HF; fp64 stays fp64
        variance = hidden_states.to(acc).pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        return (self.weight * hidden_states).to(input_dtype)


def rotate_half(x):
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2 :]
    return torch.cat((-x2, x1), dim=-1)


def rope_cos_sin(position_ids, head_dim, theta, dtype):
    """cos, sin of shape [B, 1, S, head_dim] for integer position_ids [B, S], or [2, B, S] for
    2-D rotary (config rope_2d, ours): frequency pair i turns by position_ids[i % 2]."""
    acc = torch.promote_types(dtype, torch.float32)
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=acc) / head_dim))
    if position_ids.dim() == 3:
        per_axis = [position_ids[a].to(acc)[..., None] * inv_freq for a in range(2)]  # 2 x [B, S, d/2]
        odd = torch.arange(head_dim // 2) % 2 == 1
        freqs = torch.where(odd, per_axis[1], per_axis[0])
    else:
        freqs = position_ids.to(acc)[..., None] * inv_freq  # [B, S, d/2]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype)[:, None], emb.sin().to(dtype)[:, None]


def apply_rotary_pos_emb(q, k, cos, sin):
    return (q * cos) + (rotate_half(q) * sin), (k * cos) + (rotate_half(k) * sin)


def repeat_kv(x, n_rep):
    if n_rep == 1:
        return x
    b, h, s, d = x.shape
    return x[:, :, None, :, :].expand(b, h, n_rep, s, d).reshape(b, h * n_rep, s, d)


class LlamaMLP(nn.Module):
    def __init__(self, hidden_size, intermediate_size, hidden_act="silu"):
        super().__init__()
        assert hidden_act == "silu", hidden_act
        # definition order as published (gate, down, up) -> state_dict order
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaAttention(nn.Module):
    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.cfg = cfg
        self.num_heads = cfg.num_attention_heads
        self.head_dim = cfg.head_dim
        self.num_kv_heads = cfg.num_key_value_heads
        if self.head_dim * self.num_heads != cfg.hidden_size:
            raise ValueError("hidden_size must be divisible by num_heads")
        if self.num_heads % self.num_kv_heads:
            raise ValueError("num_heads must be a multiple of num_kv_heads")
        h = cfg.hidden_size
        self.q_proj = nn.Linear(h, self.num_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(h, self.num_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(h, self.num_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, h, bias=False)

    def forward(self, hidden_states, attention_mask, position_ids, past_key_value=None, use_cache=False):
        bsz, q_len, _ = hidden_states.shape
        q = self.q_proj(hidden_states).view(bsz, q_len, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(hidden_states).view(bsz, q_len, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(hidden_states).view(bsz, q_len, self.num_kv_heads, self.head_dim).transpose(1, 2)

        cos, sin = rope_cos_sin(position_ids, self.head_dim, self.cfg.rope_theta, q.dtype)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)

        if past_key_value is not None:
            k = torch.cat([past_key_value[0], k], dim=2)
            v = torch.cat([past_key_value[1], v], dim=2)
        present = (k, v) if use_cache else None

        n_rep = self.num_heads // self.num_kv_heads
        k_all = repeat_kv(k, n_rep)
        v_all = repeat_kv(v, n_rep)
        kv_len = k_all.shape[2]

        attn = torch.matmul(q, k_all.transpose(2, 3)) / math.sqrt(self.head_dim)
        if attention_mask is not None:
            assert attention_mask.shape == (bsz, 1, q_len, kv_len), attention_mask.shape
            attn = attn + attention_mask
            attn = torch.max(attn, torch.tensor(torch.finfo(attn.dtype).min, dtype=attn.dtype))
        attn = F.softmax(attn, dim=-1, dtype=torch.promote_types(attn.dtype, torch.float32)).to(q.dtype)
        out = torch.matmul(attn, v_all)  # [B, H, S, D]
        out = out.transpose(1, 2).reshape(bsz, q_len, self.num_heads * self.head_dim)
        return self.o_proj(out), present


class LlamaDecoderLayer(nn.Module):
    def __init__(self, cfg: DecoderConfig, mlp: nn.Module):
        super().__init__()
        self.self_attn = LlamaAttention(cfg)
        self.mlp = mlp  # MobiLlama: the SAME module object in every layer
        self.input_layernorm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)

    def forward(self, hidden_states, attention_mask, position_ids, past_key_value=None, use_cache=False):
        residual = hidden_states
        h = self.input_layernorm(hidden_states)
        h, present = self.self_attn(h, attention_mask, position_ids, past_key_value, use_cache)
        hidden_states = residual + h
        residual = hidden_states
        h = self.post_attention_layernorm(hidden_states)
        h = self.mlp(h)
        return residual + h, present


class LlamaModel(nn.Module):
    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        if cfg.shared_mlp:
            mlp = LlamaMLP(cfg.hidden_size, cfg.intermediate_size, cfg.hidden_act)
            self.layers = nn.ModuleList([LlamaDecoderLayer(cfg, mlp) for _ in range(cfg.num_hidden_layers)])
        else:
            self.layers = nn.ModuleList(
                [
                    LlamaDecoderLayer(cfg, LlamaMLP(cfg.hidden_size, cfg.intermediate_size, cfg.hidden_act))
                    for _ in range(cfg.num_hidden_layers)
                ]
            )
        self.norm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        past_key_values=None,
        inputs_embeds=None,
        use_cache=False,
        output_hidden_states=False,
    ):
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("give exactly one of input_ids / inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        bsz, seq_len = inputs_embeds.shape[:2]
        past_len = past_key_values[0][0].shape[2] if past_key_values is not None else 0
        device = inputs_embeds.device
        if position_ids is None:
            position_ids = torch.arange(past_len, past_len + seq_len, dtype=torch.long, device=device)[None].expand(bsz, seq_len)
        elif position_ids.dim() == 3:  # 2-D rotary: [2, B, S]
            position_ids = position_ids.long()
        else:
            position_ids = position_ids.view(-1, seq_len).long()
        if attention_mask is None:
            attention_mask = torch.ones((bsz, past_len + seq_len), dtype=torch.bool, device=device)
        mask4 = prepare_decoder_attention_mask(attention_mask, (bsz, seq_len), inputs_embeds.dtype, past_len)

        hidden = inputs_embeds
        all_hidden = [] if output_hidden_states else None
        presents = [] if use_cache else None
        for i, layer in enumerate(self.layers):
            if output_hidden_states:
                all_hidden.append(hidden)
            pkv = past_key_values[i] if past_key_values is not None else None
            hidden, present = layer(hidden, mask4, position_ids, pkv, use_cache)
            if use_cache:
                presents.append(present)
        hidden = self.norm(hidden)
        if output_hidden_states:
            all_hidden.append(hidden)  # HF convention: last entry is AFTER the final norm
        return hidden, presents, all_hidden


class LlamaForCausalLM(nn.Module):
    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.cfg = cfg
        self.model = LlamaModel(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                inputs_embeds=None, use_cache=False, output_hidden_states=False):
        hidden, presents, all_hidden = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
        )
        return {"logits": self.lm_head(hidden), "past_key_values": presents, "hidden_states": all_hidden}

    # --- checkpoint conventions -------------------------------------------------------

    def published_state_dict(self):
        """State dict with the published key names; for a shared MLP every layer's
        `model.layers.N.mlp.*` entry is the SAME tensor object (what nn.Module.state_dict does)."""
        return OrderedDict((k, v.detach()) for k, v in self.state_dict().items())


# ----------------------------------------------------------------------------- loading

MLP_NAMES = ("gate_proj", "up_proj", "down_proj")


def analyse_state_dict(sd, hf_config: dict):
    """Derive the facts a loader must derive: KV heads from weight shapes, MLP sharing from
    tensor comparison (absent per-layer keys count as 'shared with layer 0')."""
    n_layers = hf_config["num_hidden_layers"]
    heads = hf_config["num_attention_heads"]
    head_dim = hf_config["hidden_size"] // heads
    k_rows = sd["model.layers.0.self_attn.k_proj.weight"].shape[0]
    assert k_rows % head_dim == 0
    kv_heads = k_rows // head_dim

    present = [all(f"model.layers.{i}.mlp.{n}.weight" in sd for n in MLP_NAMES) for i in range(n_layers)]
    if not present[0]:
        raise ValueError("layer 0 has no MLP weights")
    shared = True
    for i in range(1, n_layers):
        if not present[i]:
            continue
        for n in MLP_NAMES:
            a = sd[f"model.layers.0.mlp.{n}.weight"]
            b = sd[f"model.layers.{i}.mlp.{n}.weight"]
            if a.shape != b.shape or not torch.equal(a, b):
                shared = False
    if not shared and not all(present):
        raise ValueError("some layers lack MLP weights but the present ones differ")
    return {"num_key_value_heads": kv_heads, "shared_mlp": shared, "mlp_present": present}


def build_from_state_dict(sd, hf_config: dict, dtype=torch.float64, strict=True):
    """Build a reference model from a (published-key) state dict. Tensors are widened/cast to
    `dtype` (bf16 -> fp32 -> fp64 is exact). Keys `*.rotary_emb.inv_freq` are ignored."""
    info = analyse_state_dict(sd, hf_config)
    cfg = DecoderConfig.from_hf_dict(hf_config, shared_mlp=info["shared_mlp"], num_key_value_heads=info["num_key_value_heads"])
    m = LlamaForCausalLM(cfg).to(dtype)
    target = m.state_dict()
    used = set()
    with torch.no_grad():
        for k, p in target.items():
            src_key = k
            if k not in sd:
                # shared MLP stored once (only layer 0's keys present)
                parts = k.split(".")
                if parts[:2] == ["model", "layers"] and parts[3] == "mlp":
                    src_key = ".".join(["model", "layers", "0"] + parts[3:])
            if src_key not in sd:
                raise KeyError(f"missing weight {k}")
            src = sd[src_key]
            if tuple(src.shape) != tuple(p.shape):
                raise ValueError(f"{k}: shape {tuple(src.shape)} != expected {tuple(p.shape)}")
            p.copy_(src.to(torch.float32).to(dtype) if src.dtype == torch.bfloat16 else src.to(dtype))
            used.add(src_key)
    extra = [k for k in sd if k not in used and not k.endswith("rotary_emb.inv_freq")]
    if strict and extra:
        raise KeyError(f"unexpected weights: {extra}")
    m.eval()
    return m, cfg, info


def load_checkpoint_dir(path):
    """Read config.json + weights (model.safetensors, pytorch_model.bin, or a sharded
    pytorch_model.bin.index.json / model.safetensors.index.json) -> (hf_config, state_dict)."""
    with open(os.path.join(path, "config.json")) as f:
        hf_config = json.load(f)
    files = []
    for idx_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        p = os.path.join(path, idx_name)
        if os.path.exists(p):
            with open(p) as f:
                idx = json.load(f)
            files = sorted(set(idx["weight_map"].values()))
            break
    if not files:
        for single in ("model.safetensors", "pytorch_model.bin"):
            if os.path.exists(os.path.join(path, single)):
                files = [single]
                break
    if not files:
        raise FileNotFoundError(f"no weights in {path}")
    sd = OrderedDict()
    for fn in files:
        full = os.path.join(path, fn)
        if fn.endswith(".safetensors"):
            import st  # local helper

            part = st.load_file(full)
        else:
            part = torch.load(full, map_location="cpu")
        for k, v in part.items():
            if k in sd:
                raise KeyError(f"duplicate key {k}")
            sd[k] = v
    return hf_config, sd


# ----------------------------------------------------------------------------- generation


@torch.no_grad()
def greedy_generate(model, input_ids, attention_mask, max_new_tokens, use_cache=True):
    """HF-generate-style greedy decoding (no EOS stopping): positions = cumsum(mask)-1 (masked->1),
    the mask grows by a column of ones per step. Returns (new_ids [B, N], per-step logits [B, N, V])."""
    ids = input_ids
    mask = attention_mask
    past = None
    new_tokens, step_logits = [], []
    for _ in range(max_new_tokens):
        pos = hf_position_ids(mask)
        if use_cache and past is not None:
            out = model(input_ids=ids[:, -1:], attention_mask=mask, position_ids=pos[:, -1:], past_key_values=past, use_cache=True)
        else:
            out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=use_cache)
        past = out["past_key_values"]
        last = out["logits"][:, -1, :]
        nxt = last.argmax(-1, keepdim=True)
        step_logits.append(last)
        new_tokens.append(nxt)
        ids = torch.cat([ids, nxt], dim=1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
    return torch.cat(new_tokens, dim=1), torch.stack(step_logits, dim=1)
