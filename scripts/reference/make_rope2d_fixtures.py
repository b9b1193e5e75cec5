"""Generate the 2-D rotary decoder fixture: packages/decoder/fixtures/mobillama-rope2d/.

Run with the SYSTEM python (Debian torch 1.13):  /usr/bin/python3 scripts/reference/make_rope2d_fixtures.py

A tiny MobiLlama (2 layers, hidden 64, 4 heads x 16, one shared MLP, model.safetensors F32) whose
config.json sets `rope_2d: true`: rotary frequency pair i turns by position_ids[i % 2] of
position_ids [2, B, S] (mobillama.rope_cos_sin). The prompt is inputs_embeds [1, 23, 64]: 4 text
tokens, a 4 x 4 grid of image tokens (row by row in the sequence), 3 text tokens. Ids: the first
axis 0..22; the second the same except the grid, numbered column by column (4 + 4c + r for the
token at row r, column c).

golden.safetensors (float64 reference, stored float32):
  embeds [1, 23, 64], position_ids [2, 1, 23] int64
  logits [1, 23, V]                          forward with the 2-D ids
  logits_1d [1, 23, V]                       forward with the first axis only (plain RoPE), for contrast
  next_embeds [1, 1, 64], next_logits [1, 1, V]  one cached step at position 23 (both ids 23)
The script ends with a self-test: equal ids give exactly plain RoPE; the cached step equals a full
forward; the 2-D and 1-D logits differ.
"""

import os
import sys
from collections import OrderedDict

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_decoder_fixtures as dec  # noqa: E402
import mobillama as ml  # noqa: E402
import st  # noqa: E402

OUT = os.path.join(dec.OUT, "mobillama-rope2d")
F64 = torch.float64
TEXT_BEFORE, SIDE, TEXT_AFTER = 4, 4, 3
SEQ = TEXT_BEFORE + SIDE * SIDE + TEXT_AFTER
SEED = 4100

torch.set_grad_enabled(False)


def position_ids():
    first = torch.arange(SEQ)
    second = first.clone()
    for r in range(SIDE):
        for c in range(SIDE):
            second[TEXT_BEFORE + r * SIDE + c] = TEXT_BEFORE + c * SIDE + r
    return torch.stack([first, second])[:, None, :]  # [2, 1, S]


def main():
    os.makedirs(OUT, exist_ok=True)
    hf_cfg = dec.mobillama_config("MobiLlama-rope2d-tiny", layers=2, torch_dtype="float32", intermediate=96)
    hf_cfg["num_key_value_heads"] = 4
    hf_cfg["rope_2d"] = True
    model, cfg = dec.init_model(hf_cfg, True, 4, SEED, torch.float32)
    g = torch.Generator().manual_seed(SEED + 1)
    # Larger than the weights' scale so attention is far from uniform and positions matter.
    embeds = (1.0 * torch.randn(1, SEQ, dec.HIDDEN, generator=g, dtype=F64)).to(torch.float32).to(F64)
    next_embeds = (1.0 * torch.randn(1, 1, dec.HIDDEN, generator=g, dtype=F64)).to(torch.float32).to(F64)
    pos = position_ids()

    out = model(inputs_embeds=embeds, position_ids=pos, use_cache=True)
    logits_1d = model(inputs_embeds=embeds, position_ids=pos[0])["logits"]
    step = model(inputs_embeds=next_embeds, position_ids=torch.full((2, 1, 1), SEQ), past_key_values=out["past_key_values"], use_cache=True)

    # Self-test.
    same = model(inputs_embeds=embeds, position_ids=torch.stack([pos[0], pos[0]]))["logits"]
    assert torch.equal(same, logits_1d), "equal ids must be plain RoPE exactly"
    full = model(inputs_embeds=torch.cat([embeds, next_embeds], 1),
                 position_ids=torch.cat([pos, torch.full((2, 1, 1), SEQ)], 2))["logits"][:, -1:]
    e_cache = (full - step["logits"]).abs().max().item()
    assert e_cache < 1e-10, e_cache
    diff = (out["logits"] - logits_1d)[:, TEXT_BEFORE:].abs().max().item()
    assert diff > 0.05, f"2-D ids barely change the logits ({diff})"
    assert torch.equal(out["logits"][:, :TEXT_BEFORE + 1], logits_1d[:, :TEXT_BEFORE + 1]), "the grid's first token has equal ids"

    golden = OrderedDict(
        embeds=embeds, position_ids=pos, logits=out["logits"], logits_1d=logits_1d,
        next_embeds=next_embeds, next_logits=step["logits"],
    )
    st.save_file(dec.published_tensors(model, torch.float32), os.path.join(OUT, "model.safetensors"), {"format": "pt"})
    dec.write_json(os.path.join(OUT, "config.json"), hf_cfg)
    st.save_file(dec.to_store(golden), os.path.join(OUT, "golden.safetensors"), {
        "generator": "scripts/reference/make_rope2d_fixtures.py (float64 reference, stored float32)",
        "weights_seed": str(SEED),
        "grid": f"{SIDE}x{SIDE} image tokens at {TEXT_BEFORE}..{TEXT_BEFORE + SIDE * SIDE - 1}",
    })
    size = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"mobillama-rope2d: 2-D vs 1-D max |dlogit| {diff:.3f}, cache vs full {e_cache:.1e}, {size} bytes")
    print("self-test OK")


if __name__ == "__main__":
    main()
