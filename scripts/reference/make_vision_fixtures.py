"""Generate the CLIP vision golden fixtures under packages/vision/fixtures/.

Run with the SYSTEM python (Debian torch 1.13 + python3-pil):  /usr/bin/python3 scripts/reference/make_vision_fixtures.py

  clip-tiny/         full CLIPModel layout: config.json with vision_config + a tiny text_config, model.safetensors holding
                     vision_model.* AND text_model.* / visual_projection / text_projection / logit_scale tensors,
                     preprocessor_config.json in the current dict style. image 32, patch 8, hidden 32, 3 layers, 4 heads,
                     intermediate 64, quick_gelu.
  clip-vision-bin/   CLIPVisionModel layout (model_type clip_vision_model, fields at top level), pytorch_model.bin via
                     torch.save, hidden_act gelu, preprocessor_config.json in the old int style (size: 32, crop_size: 32).
                     image 32, patch 8, hidden 16, 3 layers, 2 heads, intermediate 32.
  preprocess/        photo.jpg (a synthetic photo-like 160x120 JPEG) and small.png (32x24), with what
                     CLIPImageProcessor (PIL) makes of them, as lossless PNGs of the uint8 crop before rescale/normalize:
                       photo.crop64.png  shortest edge 64 (PIL bicubic), center crop 64
                       photo.pad64.png   LLaVA expand2square with int(mean*255), then the same
                       small.up40.png    upscaling: shortest edge 40, center crop 40

Each model folder has golden.safetensors: pixel_values [2,3,32,32] F32 and, computed in float64 from the stored fp32
weights and stored as F32:
  features_m2_patch      hidden_states[-2][:, 1:]   (LLaVA default: mm_vision_select_layer -2, patch)   [2,16,D]
  features_m1_cls_patch  hidden_states[-1]          (last layer output, CLS kept, no post_layernorm)    [2,17,D]
  pooled                 post_layernorm(hidden_states[-1][:, 0])                                      [2,D]
  features_0_cls_patch   hidden_states[0] (pre_layrnorm output)  (clip-tiny only)                      [2,17,D]
"""

import os
import sys
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import clip_vision as cv  # noqa: E402
import st  # noqa: E402

ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
OUT = os.path.join(ROOT, "packages", "vision", "fixtures")
F64 = torch.float64

torch.set_grad_enabled(False)


def init_params(module, seed):
    """Deterministic weights with O(1) activations: LayerNorm w ~ 1 + 0.15 N, biases 0.1 N, linear/conv 1/sqrt(fan_in) N,
    embeddings 0.5 N. Generated in float64, rounded to float32 (the stored dtype) and widened back."""
    g = torch.Generator().manual_seed(seed)
    for name, p in module.named_parameters():
        shape = p.shape
        if "norm" in name and name.endswith("weight"):
            v = 1.0 + 0.15 * torch.randn(shape, generator=g, dtype=F64)
        elif name.endswith("bias"):
            v = 0.1 * torch.randn(shape, generator=g, dtype=F64)
        elif "embedding" in name and "patch" not in name:
            v = 0.5 * torch.randn(shape, generator=g, dtype=F64)
        else:
            fan_in = int(np.prod(shape[1:]))
            v = torch.randn(shape, generator=g, dtype=F64) / fan_in**0.5
        p.data = v.to(torch.float32).to(F64)


def golden(model, pixel_values, with_layer0):
    hs, last, pooled = model(pixel_values.to(F64))
    out = OrderedDict(pixel_values=pixel_values)
    out["features_m2_patch"] = cv.select_features(hs, -2, "patch").to(torch.float32)
    out["features_m1_cls_patch"] = cv.select_features(hs, -1, "cls_patch").to(torch.float32)
    out["pooled"] = pooled.to(torch.float32)
    if with_layer0:
        out["features_0_cls_patch"] = hs[0].to(torch.float32)
    return out


def metadata(extra):
    m = {
        "reference": "scripts/reference/clip_vision.py (HF CLIPVisionTransformer, eager attention), float64",
        "features_m2_patch": "hidden_states[-2][:, 1:] (output of layer L-1, CLS dropped)",
        "features_m1_cls_patch": "hidden_states[-1] (output of layer L, CLS kept, no post_layernorm)",
        "pooled": "post_layernorm(hidden_states[-1][:, 0])",
    }
    m.update(extra)
    return m


def state_dict_fp32(model, prefix="vision_model."):
    return OrderedDict((prefix + k, v.to(torch.float32).contiguous()) for k, v in model.state_dict().items())


def pixel_batch(seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 3, 32, 32, generator=g, dtype=torch.float32)


# ----------------------------------------------------------------------------- clip-tiny (CLIPModel layout)


def make_clip_tiny():
    d = os.path.join(OUT, "clip-tiny")
    os.makedirs(d, exist_ok=True)
    vision = OrderedDict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, image_size=32, patch_size=8,
        hidden_act="quick_gelu", layer_norm_eps=1e-5, num_channels=3, projection_dim=8, model_type="clip_vision_model",
    )
    text = OrderedDict(
        hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2, vocab_size=10,
        max_position_embeddings=8, hidden_act="quick_gelu", layer_norm_eps=1e-5, projection_dim=8, model_type="clip_text_model",
    )
    config = OrderedDict(
        _name_or_path="clip-tiny", architectures=["CLIPModel"], initializer_factor=1.0, logit_scale_init_value=2.6592,
        model_type="clip", projection_dim=8, text_config=text, torch_dtype="float32", transformers_version="4.31.0",
        vision_config=vision,
    )
    c = cv.vision_config(config)
    model = cv.VisionTransformer(c)
    init_params(model, 101)
    model = model.to(F64).eval()

    g = torch.Generator().manual_seed(102)
    sd = OrderedDict()
    # A few text-tower tensors and the projections: loaders must ignore them.
    sd["logit_scale"] = torch.tensor(2.6592, dtype=torch.float32)
    sd["text_model.embeddings.position_embedding.weight"] = torch.randn(8, 8, generator=g)
    sd["text_model.embeddings.token_embedding.weight"] = torch.randn(10, 8, generator=g)
    sd["text_model.final_layer_norm.bias"] = torch.zeros(8)
    sd["text_model.final_layer_norm.weight"] = torch.ones(8)
    sd["text_projection.weight"] = torch.randn(8, 8, generator=g)
    sd.update(state_dict_fp32(model))
    sd["visual_projection.weight"] = torch.randn(8, 32, generator=g)
    st.save_file(sd, os.path.join(d, "model.safetensors"), {"format": "pt"})
    cv.write_json(os.path.join(d, "config.json"), config)
    cv.write_json(
        os.path.join(d, "preprocessor_config.json"),
        OrderedDict(
            crop_size={"height": 32, "width": 32}, do_center_crop=True, do_convert_rgb=True, do_normalize=True,
            do_rescale=True, do_resize=True, image_mean=cv.OPENAI_CLIP_MEAN, image_processor_type="CLIPImageProcessor",
            image_std=cv.OPENAI_CLIP_STD, resample=3, rescale_factor=1 / 255, size={"shortest_edge": 32},
        ),
    )
    gold = golden(model, pixel_batch(103), True)
    st.save_file(gold, os.path.join(d, "golden.safetensors"), metadata({"weights_seed": "101", "pixels_seed": "103"}))
    return "clip-tiny", d, config, gold


# ----------------------------------------------------------------------------- clip-vision-bin (CLIPVisionModel layout)


def make_clip_vision_bin():
    d = os.path.join(OUT, "clip-vision-bin")
    os.makedirs(d, exist_ok=True)
    config = OrderedDict(
        _name_or_path="clip-vision-tiny-gelu", architectures=["CLIPVisionModel"], attention_dropout=0.0, hidden_act="gelu",
        hidden_size=16, image_size=32, initializer_factor=1.0, initializer_range=0.02, intermediate_size=32,
        layer_norm_eps=1e-5, model_type="clip_vision_model", num_attention_heads=2, num_channels=3, num_hidden_layers=3,
        patch_size=8, projection_dim=16, torch_dtype="float32", transformers_version="4.31.0",
    )
    c = cv.vision_config(config)
    wrapper = cv.ClipVisionModel(c)
    init_params(wrapper, 201)
    wrapper = wrapper.to(F64).eval()
    sd = OrderedDict((k, v.to(torch.float32).contiguous()) for k, v in wrapper.state_dict().items())
    torch.save(sd, os.path.join(d, "pytorch_model.bin"))
    cv.write_json(os.path.join(d, "config.json"), config)
    cv.write_json(
        os.path.join(d, "preprocessor_config.json"),
        OrderedDict(
            crop_size=32, do_center_crop=True, do_normalize=True, do_resize=True, feature_extractor_type="CLIPFeatureExtractor",
            image_mean=cv.OPENAI_CLIP_MEAN, image_std=cv.OPENAI_CLIP_STD, resample=3, size=32,
        ),
    )
    gold = golden(wrapper.vision_model, pixel_batch(203), False)
    st.save_file(gold, os.path.join(d, "golden.safetensors"), metadata({"weights_seed": "201", "pixels_seed": "203"}))
    return "clip-vision-bin", d, config, gold


# ----------------------------------------------------------------------------- preprocessing references


def photo_like(w, h, seed):
    """A synthetic 'photo': sky gradient, sun, textured hills, thin high-frequency lines, text, sensor noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    sky = np.stack([90 + 80 * y / h, 140 + 60 * y / h, 230 - 40 * y / h], -1)
    img = Image.fromarray(np.clip(sky, 0, 255).astype(np.uint8), "RGB")
    dr = ImageDraw.Draw(img)
    dr.ellipse([w * 0.68, h * 0.08, w * 0.86, h * 0.32], fill=(255, 214, 90))
    dr.polygon([(0, h * 0.65), (w * 0.3, h * 0.35), (w * 0.55, h * 0.6), (w * 0.8, h * 0.42), (w, h * 0.62), (w, h), (0, h)],
               fill=(60, 120, 50))
    for i in range(0, w, 3):  # a fence: 1-px lines, aliasing-prone
        dr.line([(i, h * 0.78), (i, h * 0.9)], fill=(120, 80, 40) if i % 2 else (230, 220, 200))
    dr.rectangle([w * 0.08, h * 0.12, w * 0.4, h * 0.3], outline=(20, 20, 20), width=2)
    dr.text((w * 0.1, h * 0.15), "MobiLlama-V", fill=(10, 10, 10))
    arr = np.asarray(img).astype(np.float64)
    hills = y > h * 0.5
    arr[hills] += rng.normal(0, 18, size=(int(hills.sum()), 3))  # foliage texture
    arr += rng.normal(0, 3, size=arr.shape)  # sensor noise
    return Image.fromarray(np.clip(arr, 0, 255).round().astype(np.uint8), "RGB")


def make_preprocess():
    d = os.path.join(OUT, "preprocess")
    os.makedirs(d, exist_ok=True)
    photo_path = os.path.join(d, "photo.jpg")
    photo_like(160, 120, 7).save(photo_path, quality=88, subsampling=2)
    photo = Image.open(photo_path)
    photo.load()
    Image.fromarray(cv.clip_preprocess_u8(photo, 64, 64)).save(os.path.join(d, "photo.crop64.png"))
    Image.fromarray(cv.clip_preprocess_u8(photo, 64, 64, pad=True)).save(os.path.join(d, "photo.pad64.png"))
    small_path = os.path.join(d, "small.png")
    photo_like(32, 24, 8).save(small_path)
    Image.fromarray(cv.clip_preprocess_u8(Image.open(small_path), 40, 40)).save(os.path.join(d, "small.up40.png"))


# ----------------------------------------------------------------------------- self-test


def close(a, b, atol, what):
    err = (a.to(F64) - b.to(F64)).abs().max().item()
    if err > atol:
        raise AssertionError(f"{what}: max abs err {err:.3e}")
    return err


def patch_linear(model, pixel_values):
    """The patch embedding as the TS graph computes it: pixels to [B, N, C*P*P] patches, times the conv weight as [D, C*P*P]."""
    w = model.embeddings.patch_embedding.weight
    dd, c, p, _ = w.shape
    b, _, hh, ww = pixel_values.shape
    gh, gw = hh // p, ww // p
    patches = pixel_values.reshape(b, c, gh, p, gw, p).permute(0, 2, 4, 1, 3, 5).reshape(b, gh * gw, c * p * p)
    return patches @ w.reshape(dd, -1).T


def self_test(name, d, config, gold_mem):
    c = cv.vision_config(config)
    path = os.path.join(d, "model.safetensors")
    sd = st.load_file(path) if os.path.exists(path) else torch.load(os.path.join(d, "pytorch_model.bin"), map_location="cpu")
    assert any(k.startswith("vision_model.") for k in sd)
    m = cv.load_vision_state_dict(sd, c)
    gold = st.load_file(os.path.join(d, "golden.safetensors"))
    for k, v in gold_mem.items():
        assert torch.equal(gold[k], v), f"{name}: golden {k} round-trip"
    px = gold["pixel_values"].to(F64)
    hs, last, pooled = m(px)
    assert len(hs) == c["num_hidden_layers"] + 1
    close(hs[-2][:, 1:], gold["features_m2_patch"], 1e-6, f"{name} reload -2 patch")
    close(hs[-1], gold["features_m1_cls_patch"], 1e-6, f"{name} reload -1 cls_patch")
    close(pooled, gold["pooled"], 1e-6, f"{name} reload pooled")
    # The conv patch embedding equals the reshape/transpose + matmul formulation.
    conv = m.embeddings.patch_embedding(px).flatten(2).transpose(1, 2)
    close(patch_linear(m, px), conv, 1e-12, f"{name} patch embedding as linear")
    # A LLaVA-nested copy of the weights gives the same model (prefix detection).
    nested = OrderedDict(("model.vision_tower.vision_tower." + k, v) for k, v in sd.items())
    nested["model.embed_tokens.weight"] = torch.zeros(3, 3)
    close(cv.load_vision_state_dict(nested, c)(px)[2], gold["pooled"], 1e-6, f"{name} nested prefix")
    # the activation matters: the other one gives different features
    other = dict(c, hidden_act="gelu" if c["hidden_act"] == "quick_gelu" else "quick_gelu")
    diff = (cv.load_vision_state_dict(sd, other)(px)[1] - gold["features_m1_cls_patch"].to(F64)).abs().max().item()
    assert diff > 1e-3, f"{name}: activation does not matter ({diff})"
    # what a float32 consumer can expect
    m32 = cv.load_vision_state_dict(sd, c, dtype=torch.float32)
    e32 = (m32(gold["pixel_values"])[1].double() - gold["features_m1_cls_patch"].double()).abs().max().item()
    rel = e32 / gold["features_m1_cls_patch"].abs().max().item()
    print(f"{name}: layers={c['num_hidden_layers']} act={c['hidden_act']} |features|max={gold['features_m1_cls_patch'].abs().max():.2f} "
          f"fp32 vs golden rel={rel:.1e} act-swap diff={diff:.2f}")


def self_test_preprocess():
    d = os.path.join(OUT, "preprocess")
    # An image already at crop size is untouched by PIL resize (same-size copy) and crop.
    img = Image.open(os.path.join(d, "small.png"))
    crop = cv.center_crop(np.asarray(cv.resize_shortest_edge(img.crop((0, 0, 24, 24)), 24)), 24, 24)
    assert np.array_equal(crop, np.asarray(img.crop((0, 0, 24, 24))))
    # Alpha is composited on white.
    rgba = Image.new("RGBA", (2, 1), (255, 0, 0, 0))
    assert np.asarray(cv.convert_rgb(rgba)).tolist() == [[[255, 255, 255], [255, 255, 255]]]
    # Normalization is float32 (x*scale - mean) / std.
    x = cv.normalize(np.full((1, 1, 3), 255, np.uint8))
    want = (np.float32(1.0) - np.float32(cv.OPENAI_CLIP_MEAN[0])) / np.float32(cv.OPENAI_CLIP_STD[0])
    assert x[0, 0, 0] == want
    assert tuple(int(v * 255) for v in cv.OPENAI_CLIP_MEAN) == (122, 116, 104)
    pad = np.asarray(Image.open(os.path.join(d, "photo.pad64.png")))
    assert pad.shape == (64, 64, 3) and pad[0, 32].tolist() != [0, 0, 0]


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, d, config, gold in [make_clip_tiny(), make_clip_vision_bin()]:
        self_test(name, d, config, gold)
    make_preprocess()
    self_test_preprocess()
    total = 0
    for dp, _, fns in os.walk(OUT):
        for fn in sorted(fns):
            size = os.path.getsize(os.path.join(dp, fn))
            total += size
            print(f"  {os.path.relpath(os.path.join(dp, fn), OUT)}: {size}")
    print(f"vision fixtures total {total} bytes")
    assert total < 300_000, total
    print("self-test OK")


if __name__ == "__main__":
    main()
