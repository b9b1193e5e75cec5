"""PyTorch side of `pnpm bench:train`: the same model and batch, one LLaVA training step on the CPU.

Run by packages/trainer/bench/train.bench.ts with the system python (Debian python3-torch):
  /usr/bin/python3 packages/trainer/bench/train_torch.py DIR STAGE STEPS THREADS [LORA_R LORA_ALPHA]

DIR holds what the TS bench wrote: decoder/ (config.json + model.safetensors), vision/ (CLIPVisionModel
safetensors + config.json), projector.safetensors (the starting projector), batch.safetensors (ids.<b>,
labels.<b> with -200 at the image and -100 where there is no loss, pixel_values [B, 3, S, S]: exactly what
our data pipeline made of the first micro-batch). The step is LLaVA's: vision tower under no_grad
(frozen, as LLaVA's CLIPVisionTower.forward is), projector, splice at -200, right padding, LlamaForCausalLM
with its shifted mean cross-entropy, backward, torch.optim.AdamW, zero_grad. Two loss variants:
  hf       logits for every position, as HF / LLaVA compute them
  targets  logits only where a label follows (what our graph does), to compare the kernels alone
Prints one JSON line per variant: {"variant","step_ms":[...],"tokens","loss_first"}.
"""

import json
import math
import os
import sys
import time
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "scripts", "reference"))
import clip_vision as cv  # noqa: E402
import mobillama as ml  # noqa: E402
import st  # noqa: E402

IGNORE, IMAGE = -100, -200


class LoraLinear(nn.Module):
    """PEFT's LoRA Linear: base(x) + (alpha / r) * B(A(x)), A kaiming-uniform, B zero (dropout 0)."""

    def __init__(self, base, r, alpha):
        super().__init__()
        self.base = base
        self.a = nn.Linear(base.in_features, r, bias=False)
        self.b = nn.Linear(r, base.out_features, bias=False)
        nn.init.kaiming_uniform_(self.a.weight, a=math.sqrt(5))
        nn.init.zeros_(self.b.weight)
        self.scale = alpha / r

    def forward(self, x):
        return self.base(x) + self.b(self.a(x)) * self.scale


def add_lora(decoder, r, alpha):
    params = []
    mlps = []
    for layer in decoder.model.layers:
        att = layer.self_attn
        for n in ("q_proj", "k_proj", "v_proj", "o_proj"):
            m = LoraLinear(getattr(att, n), r, alpha)
            setattr(att, n, m)
            params += [m.a.weight, m.b.weight]
        if not any(layer.mlp is x for x in mlps):  # MobiLlama: one shared MLP, one adapter
            mlps.append(layer.mlp)
    for mlp in mlps:
        for n in ("gate_proj", "up_proj", "down_proj"):
            m = LoraLinear(getattr(mlp, n), r, alpha)
            setattr(mlp, n, m)
            params += [m.a.weight, m.b.weight]
    return params


def main():
    d, stage, steps, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    with open(os.path.join(d, "decoder", "config.json")) as f:
        dcfg = json.load(f)
    decoder, _, _ = ml.build_from_state_dict(st.load_file(os.path.join(d, "decoder", "model.safetensors")), dcfg, dtype=torch.float32)
    with open(os.path.join(d, "vision", "config.json")) as f:
        vcfg = cv.vision_config(json.load(f))
    vision = cv.load_vision_state_dict(st.load_file(os.path.join(d, "vision", "model.safetensors")), vcfg, dtype=torch.float32)
    for p in list(decoder.parameters()) + list(vision.parameters()):
        p.requires_grad_(False)
    proj_sd = st.load_file(os.path.join(d, "projector.safetensors"))
    projector = nn.Sequential(nn.Linear(vcfg["hidden_size"], dcfg["hidden_size"]), nn.GELU(), nn.Linear(dcfg["hidden_size"], dcfg["hidden_size"]))
    projector.load_state_dict({k[len("model.mm_projector."):]: v for k, v in proj_sd.items()})
    params = list(projector.parameters())
    if stage == "lora":
        params += add_lora(decoder, int(sys.argv[5]), float(sys.argv[6]))
    decoder.train()

    batch = st.load_file(os.path.join(d, "batch.safetensors"))
    pixel_values = batch["pixel_values"]
    B = pixel_values.shape[0]
    ids = [batch[f"ids.{b}"].tolist() for b in range(B)]
    labels = [batch[f"labels.{b}"].tolist() for b in range(B)]

    def step(variant, opt):
        with torch.no_grad():
            hs, _, _ = vision(pixel_values)
            feats = cv.select_features(hs, -2, "patch")
        image_features = projector(feats)
        embeds, labs = [], []
        for b in range(B):
            k = ids[b].index(IMAGE)
            e = decoder.model.embed_tokens
            embeds.append(torch.cat([e(torch.tensor(ids[b][:k])), image_features[b], e(torch.tensor(ids[b][k + 1:]))]))
            labs.append(labels[b][:k] + [IGNORE] * image_features.shape[1] + labels[b][k + 1:])
        T = max(x.shape[0] for x in embeds)
        inp = torch.zeros(B, T, embeds[0].shape[1])
        lab = torch.full((B, T), IGNORE, dtype=torch.long)
        mask = torch.zeros(B, T, dtype=torch.bool)
        for b in range(B):
            n = embeds[b].shape[0]
            inp[b, :n] = embeds[b]
            lab[b, : len(labs[b])] = torch.tensor(labs[b])
            mask[b, :n] = True
        if variant == "hf":
            logits = decoder(inputs_embeds=inp, attention_mask=mask)["logits"]
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), lab[:, 1:].reshape(-1), ignore_index=IGNORE)
        else:
            hidden, _, _ = decoder.model(inputs_embeds=inp, attention_mask=mask)
            sel = lab[:, 1:] != IGNORE
            logits = decoder.lm_head(hidden[:, :-1][sel])
            loss = F.cross_entropy(logits, lab[:, 1:][sel])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item(), int(mask.sum())

    init = [p.detach().clone() for p in params]
    for variant in ("hf", "targets"):
        with torch.no_grad():
            for p, p0 in zip(params, init):
                p.copy_(p0)
        opt = torch.optim.AdamW(params, lr=1e-3 if stage == "pretrain" else 2e-4, weight_decay=0.0)
        times, first, tokens = [], None, 0
        for _ in range(steps):
            t0 = time.perf_counter()
            loss, tokens = step(variant, opt)
            times.append((time.perf_counter() - t0) * 1000)
            first = loss if first is None else first
        print(json.dumps({"variant": variant, "step_ms": times, "tokens": tokens, "loss_first": first}), flush=True)


if __name__ == "__main__":
    main()
