"""Generate the decoder golden fixtures under packages/decoder/fixtures/.

Run with the SYSTEM python (Debian torch 1.13):  /usr/bin/python3 scripts/reference/make_decoder_fixtures.py

Writes three tiny checkpoints, each with a golden.safetensors (see scripts/reference/README.md):
  mobillama-tiny-bin/       fp32 MobiLlama, pytorch_model.bin, shared MLP stored once PER LAYER (identical copies),
                            config says num_key_value_heads=2 but the weights are full multi-head (the trap)
  llama-gqa-st/             plain LLaMA, different FFN per layer, real GQA (4 heads, 2 KV heads), model.safetensors
  mobillama-bf16-sharded/   bf16 MobiLlama, shared MLP stored ONCE (layer 0 keys only), 2 pytorch_model shards + index

Goldens are computed in float64 from the exact stored weights (bf16 widened exactly) and stored as float32.
The script ends with a self-test (KV-cache decode == full forward; reload of every saved file reproduces the goldens).
"""

import json
import os
import sys
from collections import OrderedDict

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import mobillama as ml  # noqa: E402
import st  # noqa: E402

ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
OUT = os.path.join(ROOT, "packages", "decoder", "fixtures")

F64 = torch.float64
PAD_ID = 0
BOS_ID = 1
EOS_ID = 2
VOCAB = 320
HIDDEN = 64
NEW_TOKENS = 6
MIN_MARGIN = 0.05  # required top1 - top2 logit gap at every greedy step (fp64 golden)
INIT_STD = 0.2

torch.set_grad_enabled(False)


# ----------------------------------------------------------------------------- configs


def mobillama_config(name, layers, torch_dtype, intermediate):
    """MobiLlama-05B style config.json (published fields), shrunk. num_key_value_heads is 2 although
    the weights are full multi-head: the published config says 4 while the code builds 32 KV heads."""
    return OrderedDict(
        [
            ("_name_or_path", name),
            ("architectures", ["MobiLlamaForCausalLM"]),
            ("auto_map", {"AutoModelForCausalLM": "modelling_mobillama.MobiLlamaForCausalLM"}),
            ("attention_bias", False),
            ("attention_dropout", 0.0),
            ("bos_token_id", BOS_ID),
            ("eos_token_id", EOS_ID),
            ("hidden_act", "silu"),
            ("hidden_size", HIDDEN),
            ("initializer_range", 0.02),
            ("intermediate_size", intermediate),
            ("max_position_embeddings", 128),
            ("model_type", "llama"),
            ("num_attention_heads", 4),
            ("num_hidden_layers", layers),
            ("num_key_value_heads", 2),
            ("pretraining_tp", 1),
            ("rms_norm_eps", 1e-05),
            ("rope_scaling", None),
            ("rope_theta", 10000.0),
            ("tie_word_embeddings", False),
            ("torch_dtype", torch_dtype),
            ("transformers_version", "4.36.1"),
            ("use_cache", True),
            ("vocab_size", VOCAB),
        ]
    )


def llama_gqa_config():
    return OrderedDict(
        [
            ("_name_or_path", "llama-gqa-tiny"),
            ("architectures", ["LlamaForCausalLM"]),
            ("attention_bias", False),
            ("attention_dropout", 0.0),
            ("bos_token_id", BOS_ID),
            ("eos_token_id", EOS_ID),
            ("hidden_act", "silu"),
            ("hidden_size", HIDDEN),
            ("initializer_range", 0.02),
            ("intermediate_size", 96),
            ("max_position_embeddings", 128),
            ("model_type", "llama"),
            ("num_attention_heads", 4),
            ("num_hidden_layers", 2),
            ("num_key_value_heads", 2),
            ("pretraining_tp", 1),
            ("rms_norm_eps", 1e-06),
            ("rope_scaling", None),
            ("rope_theta", 50000.0),
            ("tie_word_embeddings", False),
            ("torch_dtype", "float32"),
            ("transformers_version", "4.36.1"),
            ("use_cache", True),
            ("vocab_size", VOCAB),
        ]
    )


# ----------------------------------------------------------------------------- model init


def init_model(hf_cfg, shared_mlp, kv_heads, seed, weight_dtype):
    """float64 reference model whose parameters are exactly representable in weight_dtype."""
    cfg = ml.DecoderConfig.from_hf_dict(hf_cfg, shared_mlp=shared_mlp, num_key_value_heads=kv_heads)
    m = ml.LlamaForCausalLM(cfg).to(F64).eval()
    g = torch.Generator().manual_seed(seed)
    for name, p in m.named_parameters():  # named_parameters() yields a shared MLP only once
        if name.endswith("norm.weight"):
            v = 1.0 + 0.15 * torch.randn(p.shape, generator=g, dtype=F64)
        else:
            v = INIT_STD * torch.randn(p.shape, generator=g, dtype=F64)
        p.copy_(v.to(weight_dtype).to(F64))
    return m, cfg


def make_prompt(seed):
    g = torch.Generator().manual_seed(seed)
    body0 = torch.randint(3, VOCAB, (6,), generator=g)
    body1 = torch.randint(3, VOCAB, (4,), generator=g)
    ids = torch.tensor(
        [[BOS_ID] + body0.tolist(), [PAD_ID, PAD_ID, BOS_ID] + body1.tolist()], dtype=torch.int64
    )
    mask = torch.tensor([[1] * 7, [0, 0] + [1] * 5], dtype=torch.int64)
    return ids, mask


def top2_margin(logits):
    t = logits.topk(2, dim=-1).values
    return (t[..., 0] - t[..., 1]).min().item()


def compute_golden(model, ids, mask):
    pos = ml.hf_position_ids(mask)
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, output_hidden_states=True)
    logits = out["logits"]
    hidden0 = out["hidden_states"][1]  # output of decoder layer 0 (input of layer 1)
    next_ids = logits[:, -1, :].argmax(-1, keepdim=True)
    ids8 = torch.cat([ids, next_ids], dim=1)
    mask8 = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
    pos8 = ml.hf_position_ids(mask8)
    next_logits = model(input_ids=ids8, attention_mask=mask8, position_ids=pos8)["logits"][:, -1:, :]
    greedy, step_logits = ml.greedy_generate(model, ids, mask, NEW_TOKENS, use_cache=False)
    g = OrderedDict()
    g["input_ids"] = ids
    g["attention_mask"] = mask
    g["position_ids"] = pos
    g["logits"] = logits
    g["next_ids"] = next_ids
    g["next_position_ids"] = pos8[:, -1:].clone()
    g["next_attention_mask"] = mask8
    g["next_logits"] = next_logits
    g["greedy_ids"] = greedy
    g["hidden_after_layer0"] = hidden0
    return g, step_logits


def acceptable(g, step_logits):
    if top2_margin(step_logits) < MIN_MARGIN:
        return False
    if ((g["greedy_ids"] == EOS_ID) | (g["greedy_ids"] == PAD_ID)).any():
        return False
    return True


def to_store(g):
    """float64 -> float32 for storage; int64 unchanged."""
    return OrderedDict((k, v.to(torch.float32).contiguous() if v.is_floating_point() else v.contiguous()) for k, v in g.items())


# ----------------------------------------------------------------------------- checkpoint writers


def published_tensors(model, dtype):
    """Published-key state dict cast to dtype, every entry its OWN storage (clone)."""
    return OrderedDict((k, v.to(dtype).clone().contiguous()) for k, v in model.published_state_dict().items())


def inv_freq_fp32(head_dim, theta):
    return 1.0 / (theta ** (torch.arange(0, head_dim, 2).float() / head_dim))


def with_inv_freq(sd, n_layers, head_dim, theta):
    """Insert `model.layers.N.self_attn.rotary_emb.inv_freq` after o_proj, as a transformers-4.31-era
    save_pretrained does (the buffer was persistent then). Loaders must ignore these keys."""
    out = OrderedDict()
    for k, v in sd.items():
        out[k] = v
        if k.endswith("self_attn.o_proj.weight"):
            layer = k.split(".")[2]
            out[f"model.layers.{layer}.self_attn.rotary_emb.inv_freq"] = inv_freq_fp32(head_dim, theta)
    return out


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def golden_metadata(extra):
    md = {
        "generator": "scripts/reference/make_decoder_fixtures.py (float64 reference, stored float32)",
        "pad_id": str(PAD_ID),
        "padding": "left; row 1 has 2 pad tokens",
        "position_ids": "cumsum(attention_mask)-1, masked positions set to 1 (HF generate)",
        "masked_positions": "logits/hidden at attention_mask==0 positions follow HF eager masking (uniform attention over all keys) and are not meaningful; compare only where attention_mask==1",
        "greedy": "6 argmax tokens, no EOS stopping, mask extended with ones, position = cumsum-1",
    }
    md.update(extra)
    return md


# ----------------------------------------------------------------------------- fixtures


def build_fixture(name, hf_cfg, shared_mlp, kv_heads, weight_dtype, base_seed, prompt_seed):
    ids, mask = make_prompt(prompt_seed)
    for seed in range(base_seed, base_seed + 200):
        model, cfg = init_model(hf_cfg, shared_mlp, kv_heads, seed, weight_dtype)
        g, step_logits = compute_golden(model, ids, mask)
        if acceptable(g, step_logits):
            return model, cfg, g, step_logits, seed
    raise RuntimeError(f"{name}: no acceptable seed")


def make_tiny_bin():
    name = "mobillama-tiny-bin"
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    hf_cfg = mobillama_config("MobiLlama-tiny", layers=3, torch_dtype="float32", intermediate=160)
    model, cfg, g, steps, seed = build_fixture(name, hf_cfg, True, 4, torch.float32, 1000, 7)

    # inputs_embeds path: [1,5,64], positions 0..4, no padding
    ge = torch.Generator().manual_seed(seed + 77)
    embeds = (INIT_STD * torch.randn(1, 5, HIDDEN, generator=ge, dtype=F64)).to(torch.float32).to(F64)
    g["embeds"] = embeds
    g["embeds_logits"] = model(inputs_embeds=embeds)["logits"]

    sd = published_tensors(model, torch.float32)  # 3 identical but separate MLP copies
    sd = with_inv_freq(sd, cfg.num_hidden_layers, cfg.head_dim, cfg.rope_theta)
    torch.save(sd, os.path.join(d, "pytorch_model.bin"))
    write_json(os.path.join(d, "config.json"), hf_cfg)
    st.save_file(
        to_store(g),
        os.path.join(d, "golden.safetensors"),
        golden_metadata(
            {
                "weights_seed": str(seed),
                "embeds": "embeds_logits = forward(inputs_embeds=embeds), position_ids 0..4, no mask",
            }
        ),
    )
    return name, model, g, steps


def make_llama_gqa():
    name = "llama-gqa-st"
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    hf_cfg = llama_gqa_config()
    model, cfg, g, steps, seed = build_fixture(name, hf_cfg, False, 2, torch.float32, 2000, 11)
    sd = published_tensors(model, torch.float32)
    st.save_file(sd, os.path.join(d, "model.safetensors"), {"format": "pt"})
    write_json(os.path.join(d, "config.json"), hf_cfg)
    st.save_file(to_store(g), os.path.join(d, "golden.safetensors"), golden_metadata({"weights_seed": str(seed)}))
    return name, model, g, steps


def make_bf16_sharded():
    name = "mobillama-bf16-sharded"
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    hf_cfg = mobillama_config("MobiLlama-tiny-Chat", layers=3, torch_dtype="bfloat16", intermediate=96)
    model, cfg, g, steps, seed = build_fixture(name, hf_cfg, True, 4, torch.bfloat16, 3000, 13)

    full = published_tensors(model, torch.bfloat16)
    # save_pretrained drops shared duplicates: keep only layer 0's mlp keys
    sd = OrderedDict(
        (k, v) for k, v in full.items() if not (k.startswith("model.layers.") and ".mlp." in k and k.split(".")[2] != "0")
    )
    total = sum(v.numel() * v.element_size() for v in sd.values())
    # HF shard_checkpoint: walk keys in order, start a new shard when the next tensor would overflow
    max_shard = (total * 3) // 5
    shards, cur, cur_size = [], OrderedDict(), 0
    for k, v in sd.items():
        nb = v.numel() * v.element_size()
        if cur and cur_size + nb > max_shard:
            shards.append(cur)
            cur, cur_size = OrderedDict(), 0
        cur[k] = v
        cur_size += nb
    shards.append(cur)
    assert len(shards) == 2, len(shards)
    weight_map = OrderedDict()
    for i, shard in enumerate(shards):
        fn = f"pytorch_model-{i + 1:05d}-of-{len(shards):05d}.bin"
        torch.save(shard, os.path.join(d, fn))
        for k in shard:
            weight_map[k] = fn
    write_json(os.path.join(d, "pytorch_model.bin.index.json"), {"metadata": {"total_size": total}, "weight_map": weight_map})
    write_json(os.path.join(d, "config.json"), hf_cfg)
    st.save_file(
        to_store(g),
        os.path.join(d, "golden.safetensors"),
        golden_metadata({"weights_seed": str(seed), "weights": "bf16 checkpoint widened exactly to fp32; golden in fp64"}),
    )
    return name, model, g, steps


# ----------------------------------------------------------------------------- self-test


def close(a, b, atol, rtol=0.0, what=""):
    err = (a.to(F64) - b.to(F64)).abs()
    tol = atol + rtol * b.to(F64).abs()
    ok = bool((err <= tol).all())
    if not ok:
        raise AssertionError(f"{what}: max abs err {err.max().item():.3e}")
    return err.max().item()


def valid(t, mask):
    """Select positions where mask == 1 (t is [B, S, ...])."""
    return t[mask.bool()]


def self_test(name, model, g_mem):
    d = os.path.join(OUT, name)
    ids, mask = g_mem["input_ids"], g_mem["attention_mask"]
    pos = g_mem["position_ids"]

    # (i) KV cache: prefill 7, decode 1 == full forward over 8
    pre = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True)
    close(pre["logits"], g_mem["logits"], 1e-12, what=f"{name} prefill-with-cache")
    step = model(
        input_ids=g_mem["next_ids"],
        attention_mask=g_mem["next_attention_mask"],
        position_ids=g_mem["next_position_ids"],
        past_key_values=pre["past_key_values"],
        use_cache=True,
    )
    e1 = close(step["logits"], g_mem["next_logits"], 1e-10, what=f"{name} kv-cache decode vs full forward")
    kv_shape = tuple(pre["past_key_values"][0][0].shape)
    greedy_kv, _ = ml.greedy_generate(model, ids, mask, NEW_TOKENS, use_cache=True)
    assert torch.equal(greedy_kv, g_mem["greedy_ids"]), f"{name}: greedy with cache differs"
    assert torch.equal(g_mem["greedy_ids"][:, :1], g_mem["next_ids"]), name
    assert torch.equal(g_mem["next_logits"][:, 0].argmax(-1), g_mem["greedy_ids"][:, 1]), name
    # padding must not leak: row 1 alone (unpadded) gives the same valid logits
    solo_ids = ids[1:, 2:]
    solo = model(input_ids=solo_ids)["logits"]
    close(solo[0], g_mem["logits"][1, 2:], 1e-9, what=f"{name} left padding leaks")

    # (ii) reload from disk with torch.load / st.py and reproduce
    hf_cfg, sd = ml.load_checkpoint_dir(d)
    m2, cfg2, info = ml.build_from_state_dict(sd, hf_cfg, dtype=F64)
    gold = st.load_file(os.path.join(d, "golden.safetensors"))
    for k, v in to_store(g_mem).items():
        assert gold[k].dtype == v.dtype and torch.equal(gold[k], v), f"{name}: golden {k} round-trip"
    out = m2(input_ids=gold["input_ids"], attention_mask=gold["attention_mask"], position_ids=gold["position_ids"], output_hidden_states=True)
    e2 = close(out["logits"], gold["logits"], 1e-5, 1e-6, what=f"{name} reload logits")
    close(out["hidden_states"][1], gold["hidden_after_layer0"], 1e-5, 1e-6, what=f"{name} reload hidden0")
    nl = m2(
        input_ids=torch.cat([gold["input_ids"], gold["next_ids"]], 1),
        attention_mask=gold["next_attention_mask"],
        position_ids=ml.hf_position_ids(gold["next_attention_mask"]),
    )["logits"][:, -1:]
    close(nl, gold["next_logits"], 1e-5, 1e-6, what=f"{name} reload next_logits")
    gr, _ = ml.greedy_generate(m2, gold["input_ids"], gold["attention_mask"], NEW_TOKENS)
    assert torch.equal(gr, gold["greedy_ids"]), f"{name}: reload greedy"
    if "embeds" in gold:
        el = m2(inputs_embeds=gold["embeds"].to(F64))["logits"]
        close(el, gold["embeds_logits"], 1e-5, 1e-6, what=f"{name} reload embeds_logits")

    # what a float32 consumer can expect
    m32 = ml.build_from_state_dict(sd, hf_cfg, dtype=torch.float32)[0]
    o32 = m32(input_ids=gold["input_ids"], attention_mask=gold["attention_mask"], position_ids=gold["position_ids"])["logits"]
    e32 = (valid(o32, gold["attention_mask"]).double() - valid(gold["logits"], gold["attention_mask"]).double()).abs().max().item()
    g32, _ = ml.greedy_generate(m32, gold["input_ids"], gold["attention_mask"], NEW_TOKENS)
    assert torch.equal(g32, gold["greedy_ids"]), f"{name}: fp32 greedy differs"
    return info, kv_shape, e1, e2, e32


def check_storage(name):
    d = os.path.join(OUT, name)
    if name == "mobillama-tiny-bin":
        sd = torch.load(os.path.join(d, "pytorch_model.bin"), map_location="cpu")
        ptrs = set()
        for i in range(3):
            t = sd[f"model.layers.{i}.mlp.gate_proj.weight"]
            ptrs.add(t.storage().data_ptr())
            assert torch.equal(t, sd["model.layers.0.mlp.gate_proj.weight"])
        assert len(ptrs) == 3, "mlp copies must have separate storage"
        assert all(v.dtype in (torch.float32,) for v in sd.values())
        assert sd["model.layers.0.self_attn.k_proj.weight"].shape == (64, 64)
    elif name == "mobillama-bf16-sharded":
        with open(os.path.join(d, "pytorch_model.bin.index.json")) as f:
            idx = json.load(f)
        keys = idx["weight_map"]
        assert "model.layers.0.mlp.up_proj.weight" in keys
        assert not any(k.startswith("model.layers.1.mlp") or k.startswith("model.layers.2.mlp") for k in keys)
        total = 0
        for fn in sorted(set(keys.values())):
            part = torch.load(os.path.join(d, fn), map_location="cpu")
            assert all(v.dtype == torch.bfloat16 for v in part.values())
            total += sum(v.numel() * 2 for v in part.values())
        assert total == idx["metadata"]["total_size"]
    elif name == "llama-gqa-st":
        sd = st.load_file(os.path.join(d, "model.safetensors"))
        assert sd["model.layers.0.self_attn.k_proj.weight"].shape == (32, 64)
        assert not torch.equal(sd["model.layers.0.mlp.up_proj.weight"], sd["model.layers.1.mlp.up_proj.weight"])


def main():
    os.makedirs(OUT, exist_ok=True)
    results = [make_tiny_bin(), make_llama_gqa(), make_bf16_sharded()]
    for name, model, g, steps in results:
        check_storage(name)
        info, kv_shape, e1, e2, e32 = self_test(name, model, g)
        print(
            f"{name}: kv_heads(weights)={info['num_key_value_heads']} shared_mlp={info['shared_mlp']} "
            f"mlp_present={info['mlp_present']} kv_cache_shape={kv_shape} "
            f"greedy={g['greedy_ids'].tolist()} min_top2_margin={top2_margin(steps):.3f} "
            f"logit_range=[{g['logits'].min().item():.2f},{g['logits'].max().item():.2f}] "
            f"kv_vs_full={e1:.1e} reload={e2:.1e} fp32_vs_golden(valid)={e32:.1e}"
        )
    assert results[0][0] == "mobillama-tiny-bin"
    total = 0
    for dp, _, fns in os.walk(OUT):
        for fn in fns:
            total += os.path.getsize(os.path.join(dp, fn))
    print(f"decoder fixtures total {total} bytes")
    print("self-test OK")


if __name__ == "__main__":
    main()
