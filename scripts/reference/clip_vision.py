"""Plain-torch reference of Hugging Face's CLIPVisionTransformer and CLIPImageProcessor (no transformers).

Model (transformers models/clip/modeling_clip.py, eager attention):
  * CLIPVisionEmbeddings: patch_embedding = Conv2d(C, D, kernel=P, stride=P, bias=False);
    tokens = [class_embedding; patches.flatten(2).transpose(1, 2)] + position_embedding(arange(N + 1)).
  * pre_layrnorm (LayerNorm eps = layer_norm_eps).
  * Encoder layer (pre-LN): x = x + out_proj(MHA(layer_norm1(x)))  with q = q_proj(x) * head_dim**-0.5, biases on
    q/k/v/out; x = x + fc2(act(fc1(layer_norm2(x)))), act = ACT2FN[hidden_act]:
    quick_gelu = x * sigmoid(1.702 x) (OpenAI CLIP), gelu = exact erf GELU.
  * hidden_states[0] = pre_layrnorm output, hidden_states[i] = output of layer i (i = 1..L); none of them is
    post-layernormed. last_hidden_state = hidden_states[L]; pooled = post_layernorm(last_hidden_state[:, 0]).
  * LLaVA (llava/model/multimodal_encoder/clip_encoder.py) takes hidden_states[select_layer] (-2) and drops the
    CLS token for select_feature 'patch' ([:, 1:]); 'cls_patch' keeps it.

Preprocessing (transformers CLIPImageProcessor, LLaVA expand2square), with PIL + numpy:
  convert_rgb (alpha composited on white) -> [expand2square with int(mean*255)] -> resize shortest edge to
  size (PIL bicubic, reducing_gap None, long side int(size * long / short)) -> center crop (top = (h - ch) // 2)
  -> float32(x * rescale_factor computed in float64) -> (x - mean) / std in float32 -> CHW.
"""

import json
import math
import os
from collections import OrderedDict

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

OPENAI_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

# HF CLIPVisionConfig defaults
VISION_DEFAULTS = dict(
    hidden_size=768,
    intermediate_size=3072,
    projection_dim=512,
    num_hidden_layers=12,
    num_attention_heads=12,
    num_channels=3,
    image_size=224,
    patch_size=32,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
)


def vision_config(cfg_json: dict) -> dict:
    """The vision fields of a CLIPModel config (vision_config inside) or a CLIPVisionModel config, with HF defaults."""
    src = cfg_json.get("vision_config", cfg_json) if cfg_json.get("model_type") != "clip_vision_model" else cfg_json
    return {k: src.get(k, v) for k, v in VISION_DEFAULTS.items()}


def quick_gelu(x):
    return x * torch.sigmoid(1.702 * x)


ACT = {"quick_gelu": quick_gelu, "gelu": F.gelu}


class Embeddings(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, p = c["hidden_size"], c["patch_size"]
        self.num_patches = (c["image_size"] // p) ** 2
        self.class_embedding = nn.Parameter(torch.zeros(d))
        self.patch_embedding = nn.Conv2d(c["num_channels"], d, kernel_size=p, stride=p, bias=False)
        self.position_embedding = nn.Embedding(self.num_patches + 1, d)

    def forward(self, pixel_values):
        b = pixel_values.shape[0]
        patches = self.patch_embedding(pixel_values.to(self.patch_embedding.weight.dtype)).flatten(2).transpose(1, 2)
        cls = self.class_embedding.expand(b, 1, -1)
        emb = torch.cat([cls, patches], dim=1)
        pos = torch.arange(self.num_patches + 1)[None]
        return emb + self.position_embedding(pos)


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        d = c["hidden_size"]
        self.heads = c["num_attention_heads"]
        self.head_dim = d // self.heads
        assert self.head_dim * self.heads == d
        self.scale = self.head_dim**-0.5
        self.k_proj = nn.Linear(d, d)
        self.v_proj = nn.Linear(d, d)
        self.q_proj = nn.Linear(d, d)
        self.out_proj = nn.Linear(d, d)

    def forward(self, x):
        b, t, d = x.shape
        split = lambda y: y.view(b, t, self.heads, self.head_dim).transpose(1, 2)  # noqa: E731
        q = split(self.q_proj(x) * self.scale)
        k = split(self.k_proj(x))
        v = split(self.v_proj(x))
        w = torch.softmax(q @ k.transpose(-1, -2), dim=-1)
        return self.out_proj((w @ v).transpose(1, 2).reshape(b, t, d))


class MLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.act = ACT[c["hidden_act"]]
        self.fc1 = nn.Linear(c["hidden_size"], c["intermediate_size"])
        self.fc2 = nn.Linear(c["intermediate_size"], c["hidden_size"])

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class EncoderLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, eps = c["hidden_size"], c["layer_norm_eps"]
        self.self_attn = Attention(c)
        self.layer_norm1 = nn.LayerNorm(d, eps=eps)
        self.mlp = MLP(c)
        self.layer_norm2 = nn.LayerNorm(d, eps=eps)

    def forward(self, x):
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class Encoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.layers = nn.ModuleList([EncoderLayer(c) for _ in range(c["num_hidden_layers"])])


class VisionTransformer(nn.Module):
    """Module names match HF's CLIPVisionTransformer, so state_dict keys are vision_model.* minus the prefix."""

    def __init__(self, c):
        super().__init__()
        eps = c["layer_norm_eps"]
        self.embeddings = Embeddings(c)
        self.pre_layrnorm = nn.LayerNorm(c["hidden_size"], eps=eps)
        self.encoder = Encoder(c)
        self.post_layernorm = nn.LayerNorm(c["hidden_size"], eps=eps)

    def forward(self, pixel_values):
        """Returns (hidden_states tuple of L + 1, last_hidden_state, pooled)."""
        h = self.pre_layrnorm(self.embeddings(pixel_values))
        hidden_states = [h]
        for layer in self.encoder.layers:
            h = layer(h)
            hidden_states.append(h)
        pooled = self.post_layernorm(h[:, 0, :])
        return tuple(hidden_states), h, pooled


class ClipVisionModel(nn.Module):
    """CLIPVisionModel: the transformer under `vision_model`."""

    def __init__(self, c):
        super().__init__()
        self.vision_model = VisionTransformer(c)


def select_features(hidden_states, layer, kind):
    """LLaVA's CLIPVisionTower.feature_select."""
    f = hidden_states[layer]
    if kind == "patch":
        return f[:, 1:]
    if kind == "cls_patch":
        return f
    raise ValueError(kind)


def load_vision_state_dict(sd, c, dtype=torch.float64):
    """Builds the reference from any state dict holding `...vision_model.*` keys (prefix detected, other keys ignored)."""
    hit = [k for k in sd if k.endswith("vision_model.embeddings.class_embedding")]
    assert len(hit) == 1, hit
    prefix = hit[0][: -len("embeddings.class_embedding")]
    m = VisionTransformer(c)
    own = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    missing, unexpected = m.load_state_dict(own, strict=False)
    assert not missing, missing
    assert not unexpected, unexpected
    return m.to(dtype).eval()


# ----------------------------------------------------------------------------- preprocessing


def convert_rgb(img):
    """transformers image_transforms.convert_to_rgb: RGBA composited on white, then RGB."""
    from PIL import Image

    if img.mode == "RGB":
        return img
    rgba = img.convert("RGBA")
    bg = Image.new("RGBA", rgba.size, (255, 255, 255))
    return Image.alpha_composite(bg, rgba).convert("RGB")


def expand2square(img, background):
    """LLaVA mm_utils.expand2square."""
    from PIL import Image

    w, h = img.size
    if w == h:
        return img
    if w > h:
        out = Image.new(img.mode, (w, w), background)
        out.paste(img, (0, (w - h) // 2))
        return out
    out = Image.new(img.mode, (h, h), background)
    out.paste(img, ((h - w) // 2, 0))
    return out


def resize_shortest_edge(img, size):
    """CLIPImageProcessor.resize: PIL bicubic to (shortest edge = size, long = int(size * long / short))."""
    from PIL import Image

    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    nw, nh = (new_short, new_long) if w <= h else (new_long, new_short)
    return img.resize((nw, nh), resample=Image.BICUBIC, reducing_gap=None)


def center_crop(arr, ch, cw):
    """image_transforms.center_crop on HWC (the crop is inside the image in our fixtures)."""
    h, w = arr.shape[:2]
    top, left = (h - ch) // 2, (w - cw) // 2
    assert top >= 0 and left >= 0
    return arr[top : top + ch, left : left + cw]


def normalize(arr_u8, mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD, scale=1 / 255):
    """rescale (float64 multiply, then float32) and normalize (float32), HWC uint8 -> CHW float32."""
    x = (arr_u8.astype(np.float64) * scale).astype(np.float32)
    x = (x - np.array(mean, dtype=np.float32)) / np.array(std, dtype=np.float32)
    return x.transpose(2, 0, 1).copy()


def clip_preprocess_u8(img, size, crop, pad=False, mean=OPENAI_CLIP_MEAN):
    """Everything before the rescale: the uint8 HWC crop the processor normalizes."""
    img = convert_rgb(img)
    if pad:
        img = expand2square(img, tuple(int(x * 255) for x in mean))
    img = resize_shortest_edge(img, size)
    return center_crop(np.asarray(img), crop, crop)


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
