"""Generate the projector golden fixtures under packages/projector/fixtures/.

Run with the SYSTEM python (Debian torch 1.13):  /usr/bin/python3 scripts/reference/make_projector_fixtures.py

LLaVA's projector (llava/model/multimodal_projector/builder.py):
  linear       nn.Linear(mm_hidden_size, hidden_size)                                  keys mm_projector.{weight,bias}
  mlpNx_gelu   Sequential(Linear(mm_hidden, hidden), GELU(), Linear(hidden, hidden), GELU(), ...)  N Linears
               keys mm_projector.{0,2,4,...}.{weight,bias} (the GELUs hold no parameters)
  Stage-1 training saves only these, as `mm_projector.bin` with keys `model.mm_projector.*` (torch.save).
llava-hf (LlavaMultiModalProjector): linear_1 -> ACT2FN[projector_hidden_act] ("gelu": exact erf GELU) -> linear_2,
  keys multi_modal_projector.linear_{1,2}.{weight,bias} inside the full model's model.safetensors.

Folders (each with golden.safetensors: `features` [2,5,in] F32 and `projected` [2,5,out], computed in float64 from the
stored fp32 weights, stored F32):
  mlp2x-llava/   mm_projector.bin (model.mm_projector.0/2.*), config.json (LLaVA: mm_projector_type mlp2x_gelu), 32 -> 24
  linear-llava/  mm_projector.bin (model.mm_projector.weight/bias), no config.json, 32 -> 24
  mlp3x-llava/   mm_projector.bin (model.mm_projector.0/2/4.*), no config.json, 16 -> 12
  mlp2x-hf/      model.safetensors (multi_modal_projector.linear_1/2.* among vision_tower.* / language_model.* keys),
                 config.json (llava-hf: model_type llava, projector_hidden_act gelu), 32 -> 24
"""

import json
import os
import sys
from collections import OrderedDict

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import st  # noqa: E402

ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
OUT = os.path.join(ROOT, "packages", "projector", "fixtures")
F64 = torch.float64

torch.set_grad_enabled(False)


def linears(dims, seed):
    """[(W [out, in], b [out])] in fp32 (the stored dtype), 1/sqrt(fan_in) scale, biases 0.1 N."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i, o in zip(dims[:-1], dims[1:]):
        w = (torch.randn(o, i, generator=g, dtype=F64) / i**0.5).to(torch.float32)
        b = (0.1 * torch.randn(o, generator=g, dtype=F64)).to(torch.float32)
        out.append((w, b))
    return out


def project(x, layers):
    """Linear -> GELU(exact) -> Linear ... in float64 (no GELU after the last Linear)."""
    h = x.to(F64)
    for i, (w, b) in enumerate(layers):
        h = h @ w.to(F64).T + b.to(F64)
        if i < len(layers) - 1:
            h = F.gelu(h)
    return h


def features(dim, seed):
    g = torch.Generator().manual_seed(seed)
    return (2.0 * torch.randn(2, 5, dim, generator=g, dtype=F64)).to(torch.float32)


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def llava_keys(layers):
    if len(layers) == 1:
        w, b = layers[0]
        return OrderedDict([("model.mm_projector.weight", w), ("model.mm_projector.bias", b)])
    sd = OrderedDict()
    for i, (w, b) in enumerate(layers):
        sd[f"model.mm_projector.{2 * i}.weight"] = w
        sd[f"model.mm_projector.{2 * i}.bias"] = b
    return sd


def save_golden(d, x, layers, what):
    y = project(x, layers).to(torch.float32)
    meta = {"reference": "scripts/reference/make_projector_fixtures.py, float64", "projector": what}
    st.save_file(OrderedDict(features=x, projected=y), os.path.join(d, "golden.safetensors"), meta)
    return y


def make(name, dims, seed, fmt, config=None):
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    layers = linears(dims, seed)
    if fmt == "llava":
        torch.save(llava_keys(layers), os.path.join(d, "mm_projector.bin"))
    else:
        g = torch.Generator().manual_seed(seed + 1)
        sd = OrderedDict()
        sd["language_model.model.embed_tokens.weight"] = torch.randn(4, dims[-1], generator=g)
        (w1, b1), (w2, b2) = layers
        sd["multi_modal_projector.linear_1.bias"] = b1
        sd["multi_modal_projector.linear_1.weight"] = w1
        sd["multi_modal_projector.linear_2.bias"] = b2
        sd["multi_modal_projector.linear_2.weight"] = w2
        sd["vision_tower.vision_model.embeddings.class_embedding"] = torch.randn(dims[0], generator=g)
        st.save_file(sd, os.path.join(d, "model.safetensors"), {"format": "pt"})
    if config:
        write_json(os.path.join(d, "config.json"), config)
    x = features(dims[0], seed + 2)
    y = save_golden(d, x, layers, f"{name}: dims {dims}")
    return d, layers, x, y, fmt


def self_test(d, layers, x, y, fmt):
    """Reload from disk and compare with torch's own modules (nn.Sequential / the llava-hf module shape)."""
    gold = st.load_file(os.path.join(d, "golden.safetensors"))
    assert torch.equal(gold["features"], x) and torch.equal(gold["projected"], y)
    if fmt == "llava":
        sd = torch.load(os.path.join(d, "mm_projector.bin"), map_location="cpu")
        n = len(layers)
        if n == 1:
            mod = torch.nn.Linear(x.shape[-1], y.shape[-1])
        else:
            mods = [torch.nn.Linear(x.shape[-1], y.shape[-1])]
            for _ in range(1, n):
                mods += [torch.nn.GELU(), torch.nn.Linear(y.shape[-1], y.shape[-1])]
            mod = torch.nn.Sequential(*mods)
        mod.load_state_dict({k[len("model.mm_projector."):]: v for k, v in sd.items()})
        ref = mod.to(F64)(gold["features"].to(F64))
    else:
        sd = st.load_file(os.path.join(d, "model.safetensors"))
        p = "multi_modal_projector."
        h = F.linear(gold["features"].to(F64), sd[p + "linear_1.weight"].to(F64), sd[p + "linear_1.bias"].to(F64))
        ref = F.linear(F.gelu(h), sd[p + "linear_2.weight"].to(F64), sd[p + "linear_2.bias"].to(F64))
    err = (ref - gold["projected"].to(F64)).abs().max().item()
    assert err < 1e-6, (d, err)
    # tanh-approximate GELU would be a different projector: the golden must tell them apart
    if len(layers) > 1:
        approx = project_approx(gold["features"], layers)
        assert (approx - gold["projected"].to(F64)).abs().max().item() > 1e-4, d
    print(f"{os.path.basename(d)}: layers={len(layers)} |projected|max={gold['projected'].abs().max():.2f} reload err={err:.1e}")


def project_approx(x, layers):
    h = x.to(F64)
    for i, (w, b) in enumerate(layers):
        h = h @ w.to(F64).T + b.to(F64)
        if i < len(layers) - 1:
            h = F.gelu(h, approximate="tanh")
    return h


def main():
    os.makedirs(OUT, exist_ok=True)
    llava_cfg = OrderedDict(
        _name_or_path="llava-tiny-stage1", architectures=["LlavaLlamaForCausalLM"], hidden_size=24, mm_hidden_size=32,
        mm_projector_type="mlp2x_gelu", mm_vision_select_feature="patch", mm_vision_select_layer=-2,
        mm_vision_tower="openai/clip-vit-large-patch14-336", image_aspect_ratio="pad", model_type="llava_llama",
    )
    hf_cfg = OrderedDict(
        architectures=["LlavaForConditionalGeneration"], model_type="llava", projector_hidden_act="gelu",
        vision_feature_layer=-2, vision_feature_select_strategy="default", image_token_index=32000,
        vision_config=OrderedDict(model_type="clip_vision_model", hidden_size=32),
        text_config=OrderedDict(model_type="llama", hidden_size=24),
    )
    made = [
        make("mlp2x-llava", [32, 24, 24], 301, "llava", llava_cfg),
        make("linear-llava", [32, 24], 311, "llava"),
        make("mlp3x-llava", [16, 12, 12, 12], 321, "llava"),
        make("mlp2x-hf", [32, 24, 24], 331, "hf", hf_cfg),
    ]
    for m in made:
        self_test(*m)
    total = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(OUT) for f in fs)
    print(f"projector fixtures total {total} bytes")
    print("self-test OK")


if __name__ == "__main__":
    main()
