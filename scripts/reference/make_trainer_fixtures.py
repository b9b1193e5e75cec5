"""Golden fixtures for the trainer: packages/trainer/fixtures/tiny-vlm/.

Run with the SYSTEM python (Debian torch 1.13 + python3-pil):  /usr/bin/python3 scripts/reference/make_trainer_fixtures.py

A tiny MobiLlama-V (CLIP -> mlp2x_gelu projector -> MobiLlama decoder with ONE shared FFN), a
two-sample LLaVA-1.5 instruction batch, and what plain torch computes for ONE training step:

  decoder/              config.json, model.safetensors (F32; shared FFN stored once, under layer 0, as
                        MobiLlama's bf16 checkpoint does), tokenizer.json + tokenizer_config.json (a real HF
                        fast tokenizer in LLaMA layout: BPE with byte fallback, 320 tokens, merges learnt
                        from the fixture texts)
  (vision)              packages/vision/fixtures/clip-tiny is the vision tower (32x32 images, 16 patches)
  projector.safetensors the starting projector, LLaVA keys model.mm_projector.{0,2}.{weight,bias}
  images/*.png          32x32 RGB (already the crop size: preprocessing is rescale + normalize only)
  data.json             the batch: two vicuna_v1 samples with images (s0: two rounds, <image> after the
                        question, so LLaVA moves it to the front; s1: one round)
  pretrain.json         two stage-1 (plain template) samples, for the masking golden
  text.json             one text-only vicuna_v1 sample (no image), for the masking golden
  golden.safetensors    see GOLDEN_DOC
  adamw.safetensors     a 3-step torch.optim.AdamW trajectory (lr 1e-2, wd 0.1) incl. gradients near eps

Masking follows LLaVA's llava/train/train.py literally (preprocess_multimodal, preprocess_v1 with its
round-length arithmetic, preprocess_plain, tokenizer_image_token); the forward follows
prepare_inputs_labels_for_multimodal (splice at -200, right padding with zeros, attention mask,
positions 0..L-1) and LlamaForCausalLM's shifted mean cross-entropy over all supervised tokens of the
batch. Forward/backward run in float64 from the stored float32 weights. The AdamW steps are
torch.optim.AdamW with HF Trainer's parameter groups (weights decayed, biases not), betas (0.9, 0.999),
eps 1e-8, lr 1e-3, constant schedule, no clipping.
"""

import json
import math
import os
import shutil
import sys
from collections import Counter, OrderedDict

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import clip_vision as cv  # noqa: E402
import mobillama as ml  # noqa: E402
import st  # noqa: E402

ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
OUT = os.path.join(ROOT, "packages", "trainer", "fixtures", "tiny-vlm")
VISION = os.path.join(ROOT, "packages", "vision", "fixtures", "clip-tiny")

F64 = torch.float64
IGNORE_INDEX = -100
IMAGE_TOKEN_INDEX = -200
VOCAB = 320
BYTE_BASE = 3
LR = 1e-3
SEED = 7

DEC_CFG = OrderedDict(
    architectures=["MobiLlamaForCausalLM"], model_type="llama", hidden_size=48, intermediate_size=96,
    num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4, hidden_act="silu", rms_norm_eps=1e-5,
    rope_theta=10000.0, max_position_embeddings=512, vocab_size=VOCAB, bos_token_id=1, eos_token_id=2,
    tie_word_embeddings=False, torch_dtype="float32",
)

VICUNA_SYSTEM = ("A chat between a curious human and an artificial intelligence assistant. "
                 "The assistant gives helpful, detailed, and polite answers to the human's questions.")

DATA = [
    OrderedDict(id="s0", image="red.png", conversations=[
        {"from": "human", "value": "What is in the image?\n<image>"},
        {"from": "gpt", "value": "A red circle on a grey background."},
        {"from": "human", "value": "What color is the circle?"},
        {"from": "gpt", "value": "It is red."},
    ]),
    OrderedDict(id="s1", image="blue.png", conversations=[
        {"from": "human", "value": "<image>\nDescribe the picture."},
        {"from": "gpt", "value": "A blue square."},
    ]),
]
PRETRAIN = [
    OrderedDict(id="p0", image="red.png", conversations=[
        {"from": "human", "value": "<image>\nDescribe the image briefly."},
        {"from": "gpt", "value": "a red circle"},
    ]),
    OrderedDict(id="p1", image="blue.png", conversations=[
        {"from": "human", "value": "Give a short description.\n<image>"},
        {"from": "gpt", "value": "a blue square on white"},
    ]),
]
TEXT = [
    OrderedDict(id="t0", conversations=[
        {"from": "human", "value": "What is the color of the sky?"},
        {"from": "gpt", "value": "The sky is blue."},
        {"from": "human", "value": "And grass?"},
        {"from": "gpt", "value": "Green."},
    ]),
]

GOLDEN_DOC = OrderedDict(
    generator="scripts/reference/make_trainer_fixtures.py",
    pixel_values="images/{red,blue}.png -> CLIPImageProcessor (32x32 already: no pad/resize/crop change) -> [2,3,32,32]",
    ids_and_labels="ids.<id> / labels.<id>: LLaVA preprocess_v1 (data.json, text.json) or preprocess_plain (pretrain.json); -200 = image, -100 = no loss",
    loss="mean shifted cross-entropy over all supervised tokens of the data.json batch (both samples, right padded)",
    grad="grad.<projector key>: d loss / d projector weight (float64)",
    after="after_wd0.<key>, after_wd0.1.<key>: the projector after one torch.optim.AdamW step (lr 1e-3, wd 0 or 0.1 on weights, 0 on biases)",
    grad_norm="global L2 norm of the projector gradient (what log.jsonl reports as grad_norm)",
)


# ----------------------------------------------------------------------------- tokenizer

def texts_for_vocab():
    out = [VICUNA_SYSTEM, "USER:", "ASSISTANT:"]
    for d in DATA + PRETRAIN + TEXT:
        out += [t["value"].replace("<image>", "") for t in d["conversations"]]
    return out


def learn_vocab():
    """Chars of the fixture texts (not newline: it stays a byte piece, as in LLaMA) + BPE merges learnt from them."""
    words = ["▁" + t.replace(" ", "▁").replace("\n", "") for t in texts_for_vocab()]
    chars = sorted({c for w in words for c in w})
    n_merges = VOCAB - BYTE_BASE - 256 - len(chars)
    assert n_merges > 0, n_merges
    seqs = [list(w) for w in words]
    merges = []
    for _ in range(n_merges):
        pairs = Counter()
        for s in seqs:
            for a, b in zip(s, s[1:]):
                pairs[(a, b)] += 1
        best = max(sorted(pairs), key=lambda p: pairs[p])
        merges.append(best)
        for s in seqs:
            i = 0
            while i < len(s) - 1:
                if (s[i], s[i + 1]) == best:
                    s[i : i + 2] = [s[i] + s[i + 1]]
                i += 1
    vocab = OrderedDict([("<unk>", 0), ("<s>", 1), ("</s>", 2)])
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = BYTE_BASE + b
    for p in [a + b for a, b in merges] + chars:
        if p not in vocab:
            vocab[p] = len(vocab)
    assert len(vocab) <= VOCAB, len(vocab)
    k = 0
    while len(vocab) < VOCAB:  # pad with unused pieces so the vocabulary is exactly VOCAB
        vocab[f"▁unused{k}"] = len(vocab)
        k += 1
    return vocab, merges


def tokenizer_json(vocab, merges):
    special = lambda i, c: OrderedDict(id=i, content=c, single_word=False, lstrip=False, rstrip=False, normalized=False, special=True)  # noqa: E731
    return OrderedDict(
        version="1.0", truncation=None, padding=None,
        added_tokens=[special(0, "<unk>"), special(1, "<s>"), special(2, "</s>")],
        normalizer={"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "▁"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "▁"},
        ]},
        pre_tokenizer=None,
        post_processor={
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}},
        },
        decoder={"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0},
        ]},
        model=OrderedDict(
            type="BPE", dropout=None, unk_token="<unk>", continuing_subword_prefix=None, end_of_word_suffix=None,
            fuse_unk=True, byte_fallback=True, vocab=vocab, merges=[f"{a} {b}" for a, b in merges],
        ),
    )


def tokenizer_config():
    tok = lambda c: OrderedDict(__type="AddedToken", content=c, lstrip=False, normalized=False, rstrip=False, single_word=False)  # noqa: E731
    return OrderedDict(
        add_bos_token=True, add_eos_token=False, bos_token=tok("<s>"), eos_token=tok("</s>"), unk_token=tok("<unk>"),
        pad_token=None, clean_up_tokenization_spaces=False, legacy=True, model_max_length=2048,
        tokenizer_class="LlamaTokenizer",
    )


class Tok:
    """What HF tokenizers does with tokenizer_json(): split out the special tokens, then per piece:
    prepend "▁", spaces -> "▁", BPE over the whole piece (no pre-tokenizer) by merge rank, byte fallback."""

    SPECIAL = ("<unk>", "<s>", "</s>")

    def __init__(self, vocab, merges):
        self.vocab = vocab
        self.rank = {m: i for i, m in enumerate(merges)}

    def _bpe(self, piece):
        word = list("▁" + piece.replace(" ", "▁"))
        while True:
            best = None
            for i in range(len(word) - 1):
                r = self.rank.get((word[i], word[i + 1]))
                if r is not None and (best is None or r < best[0]):
                    best = (r, i)
            if best is None:
                break
            _, i = best
            word[i : i + 2] = [word[i] + word[i + 1]]
        ids = []
        for p in word:
            if p in self.vocab:
                ids.append(self.vocab[p])
            else:
                ids.extend(BYTE_BASE + b for b in p.encode("utf-8"))
        return ids

    def __call__(self, text):
        """tokenizer(text).input_ids: BOS + pieces."""
        ids = [1]
        rest = text
        while rest:
            hits = [(rest.find(s), s) for s in self.SPECIAL if rest.find(s) >= 0]
            if not hits:
                ids += self._bpe(rest)
                break
            at, s = min(hits)
            if at > 0:
                ids += self._bpe(rest[:at])
            ids.append(self.vocab[s])
            rest = rest[at + len(s):]
        return ids


def tokenizer_image_token(prompt, tok):
    """LLaVA mm_utils.tokenizer_image_token."""
    chunks = [tok(c) for c in prompt.split("<image>")]
    out, offset = [], 0
    if chunks and chunks[0] and chunks[0][0] == 1:
        offset = 1
        out.append(1)
    for i, c in enumerate(chunks):
        if i > 0:
            out.append(IMAGE_TOKEN_INDEX)
        out.extend(c[offset:])
    return out


# ----------------------------------------------------------------------------- LLaVA preprocessing

def preprocess_multimodal(source):
    out = []
    for s in source:
        v = s["value"]
        if "<image>" in v:
            v = v.replace("<image>", "").strip()
            v = ("<image>" + "\n" + v).strip()
        out.append({"from": s["from"], "value": v})
    return out


def vicuna_prompt(source):
    roles = {"human": "USER", "gpt": "ASSISTANT"}
    if roles[source[0]["from"]] != "USER":
        source = source[1:]
    ret = VICUNA_SYSTEM + " "
    for j, s in enumerate(source):
        role = roles[s["from"]]
        assert role == ("USER", "ASSISTANT")[j % 2]
        ret += role + ": " + s["value"] + (" ", "</s>")[j % 2]
    return ret


def preprocess_v1(sample, tok):
    has_image = "image" in sample
    source = preprocess_multimodal(sample["conversations"]) if has_image else sample["conversations"]
    conversation = vicuna_prompt(source)
    t = (lambda s: tokenizer_image_token(s, tok)) if has_image else tok
    input_ids = t(conversation)
    target = list(input_ids)
    total_len = sum(1 for i in input_ids if i != 0)
    sep = " " + "ASSISTANT" + ": "
    rounds = conversation.split("</s>")
    cur_len = 1
    target[:cur_len] = [IGNORE_INDEX] * cur_len
    for rou in rounds:
        if rou == "":
            break
        parts = rou.split(sep)
        if len(parts) != 2:
            break
        parts[0] += sep
        round_len = len(t(rou))
        instruction_len = len(t(parts[0])) - 2
        for k in range(cur_len, min(len(target), cur_len + instruction_len)):
            target[k] = IGNORE_INDEX
        cur_len += round_len
    for k in range(cur_len, len(target)):
        target[k] = IGNORE_INDEX
    assert cur_len == total_len, f"tokenization mismatch {cur_len} vs {total_len} in {sample['id']}"
    return input_ids, target


def preprocess_plain(sample, tok):
    source = preprocess_multimodal(sample["conversations"])
    assert len(source) == 2 and "<image>" in source[0]["value"]
    conversation = "<image>" + source[1]["value"] + "\n"
    input_ids = tokenizer_image_token(conversation, tok)
    target = list(input_ids)
    n = len(tokenizer_image_token("<image>", tok))
    target[:n] = [IGNORE_INDEX] * n
    return input_ids, target


# ----------------------------------------------------------------------------- images and weights

def draw(kind):
    y, x = np.mgrid[0:32, 0:32].astype(np.float64)
    if kind == "red":
        img = np.stack([150 + 0 * y, 150 + 0 * y, 160 - 1.0 * y], -1)
        img[np.hypot(x - 15.5, y - 15.5) <= 9.5] = (220, 40, 30)
    else:
        img = np.stack([255 - 0.5 * x, 255 - 0.5 * y, 250 + 0 * y], -1)
        img[6:26, 8:24] = (30, 60, 210)
    return np.clip(img, 0, 255).round().astype(np.uint8)


def rnd(g, *shape, std=1.0, mean=0.0):
    """float32-representable float64 values."""
    return (mean + std * torch.randn(*shape, generator=g, dtype=F64)).to(torch.float32).to(F64)


def torch_linear_init(g, out_f, in_f):
    """torch.nn.Linear's default init (kaiming_uniform a=sqrt(5) -> U(+-1/sqrt(in)), bias likewise)."""
    b = 1 / math.sqrt(in_f)
    w = ((torch.rand(out_f, in_f, generator=g, dtype=F64) * 2 - 1) * b).to(torch.float32).to(F64)
    bias = ((torch.rand(out_f, generator=g, dtype=F64) * 2 - 1) * b).to(torch.float32).to(F64)
    return w, bias


def decoder_state(g):
    c = DEC_CFG
    H, I, V, L = c["hidden_size"], c["intermediate_size"], c["vocab_size"], c["num_hidden_layers"]
    sd = OrderedDict()
    sd["model.embed_tokens.weight"] = rnd(g, V, H)
    for i in range(L):
        p = f"model.layers.{i}."
        sd[p + "self_attn.q_proj.weight"] = rnd(g, H, H, std=H ** -0.5)
        sd[p + "self_attn.k_proj.weight"] = rnd(g, H, H, std=H ** -0.5)
        sd[p + "self_attn.v_proj.weight"] = rnd(g, H, H, std=H ** -0.5)
        sd[p + "self_attn.o_proj.weight"] = rnd(g, H, H, std=H ** -0.5)
        if i == 0:  # the shared FFN, stored once
            sd[p + "mlp.gate_proj.weight"] = rnd(g, I, H, std=H ** -0.5)
            sd[p + "mlp.up_proj.weight"] = rnd(g, I, H, std=H ** -0.5)
            sd[p + "mlp.down_proj.weight"] = rnd(g, H, I, std=I ** -0.5)
        sd[p + "input_layernorm.weight"] = rnd(g, H, std=0.1, mean=1.0)
        sd[p + "post_attention_layernorm.weight"] = rnd(g, H, std=0.1, mean=1.0)
    sd["model.norm.weight"] = rnd(g, H, std=0.1, mean=1.0)
    sd["lm_head.weight"] = rnd(g, V, H, std=H ** -0.5)
    return sd


# ----------------------------------------------------------------------------- the reference step

def projector_forward(p, x):
    return F.linear(F.gelu(F.linear(x, p["model.mm_projector.0.weight"], p["model.mm_projector.0.bias"])),
                    p["model.mm_projector.2.weight"], p["model.mm_projector.2.bias"])


def batch_loss(decoder, vision, proj, pixel_values, samples):
    """LLaVA prepare_inputs_labels_for_multimodal + LlamaForCausalLM loss."""
    hs, _, _ = vision(pixel_values)
    feats = cv.select_features(hs, -2, "patch")
    image_features = projector_forward(proj, feats)
    embeds, labels = [], []
    for b, (ids, lab) in enumerate(samples):
        k = ids.index(IMAGE_TOKEN_INDEX)
        e = decoder.model.embed_tokens
        before = e(torch.tensor(ids[:k])) if k else torch.zeros(0, image_features.shape[-1], dtype=F64)
        after = e(torch.tensor(ids[k + 1:]))
        embeds.append(torch.cat([before, image_features[b], after]))
        labels.append(lab[:k] + [IGNORE_INDEX] * image_features.shape[1] + lab[k + 1:])
    T = max(x.shape[0] for x in embeds)
    H = embeds[0].shape[1]
    inp = torch.zeros(len(samples), T, H, dtype=F64)
    lab = torch.full((len(samples), T), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros(len(samples), T, dtype=torch.bool)
    for b, (e, l) in enumerate(zip(embeds, labels)):
        inp[b, : e.shape[0]] = e
        lab[b, : len(l)] = torch.tensor(l)
        mask[b, : e.shape[0]] = True
    logits = decoder(inputs_embeds=inp, attention_mask=mask)["logits"]
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), lab[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX)
    return loss, int((lab[:, 1:] != IGNORE_INDEX).sum())


def adamw_step(params, grads, wd):
    ps = OrderedDict((k, v.clone().requires_grad_(True)) for k, v in params.items())
    decay = [p for k, p in ps.items() if not k.endswith(".bias")]
    no_decay = [p for k, p in ps.items() if k.endswith(".bias")]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=LR, betas=(0.9, 0.999), eps=1e-8)
    for k, p in ps.items():
        p.grad = grads[k].clone()
    opt.step()
    return OrderedDict((k, p.detach()) for k, p in ps.items())


def adamw_trajectory():
    g = torch.Generator().manual_seed(11)
    p0 = rnd(g, 9)
    grads = [rnd(g, 9, std=0.1) for _ in range(3)]
    grads[0][0] = 3e-9  # around eps: the update is not just lr * sign(g)
    grads[1][1] = -1e-10
    grads[2][2] = 0.0
    p = p0.clone().requires_grad_(True)
    opt = torch.optim.AdamW([p], lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1)
    out = OrderedDict(p0=p0.clone())
    for i, gr in enumerate(grads):
        p.grad = gr.clone()
        opt.step()
        out[f"grad{i + 1}"] = gr
        out[f"p{i + 1}"] = p.detach().clone()
    return out


def main():
    torch.manual_seed(0)
    if os.path.exists(OUT):
        shutil.rmtree(OUT)
    os.makedirs(os.path.join(OUT, "decoder"))
    os.makedirs(os.path.join(OUT, "images"))

    vocab, merges = learn_vocab()
    tok = Tok(vocab, merges)
    cv.write_json(os.path.join(OUT, "decoder", "tokenizer.json"), tokenizer_json(vocab, merges))
    cv.write_json(os.path.join(OUT, "decoder", "tokenizer_config.json"), tokenizer_config())
    cv.write_json(os.path.join(OUT, "decoder", "config.json"), DEC_CFG)
    for name, d in (("data.json", DATA), ("pretrain.json", PRETRAIN), ("text.json", TEXT)):
        cv.write_json(os.path.join(OUT, name), d)
    for kind in ("red", "blue"):
        Image.fromarray(draw(kind)).save(os.path.join(OUT, "images", f"{kind}.png"))

    g = torch.Generator().manual_seed(SEED)
    dsd = decoder_state(g)
    st.save_file(OrderedDict((k, v.to(torch.float32)) for k, v in dsd.items()), os.path.join(OUT, "decoder", "model.safetensors"), {"format": "pt"})
    w0, b0 = torch_linear_init(g, 48, 32)
    w2, b2 = torch_linear_init(g, 48, 48)
    proj = OrderedDict([("model.mm_projector.0.weight", w0), ("model.mm_projector.0.bias", b0),
                        ("model.mm_projector.2.weight", w2), ("model.mm_projector.2.bias", b2)])
    st.save_file(OrderedDict((k, v.to(torch.float32)) for k, v in proj.items()), os.path.join(OUT, "projector.safetensors"), {"format": "pt"})

    # models in float64 from the stored float32 weights
    decoder, _, info = ml.build_from_state_dict(st.load_file(os.path.join(OUT, "decoder", "model.safetensors")), DEC_CFG, dtype=F64)
    assert info["shared_mlp"]
    with open(os.path.join(VISION, "config.json")) as f:
        vcfg = cv.vision_config(json.load(f))
    vision = cv.load_vision_state_dict(st.load_file(os.path.join(VISION, "model.safetensors")), vcfg, dtype=F64)
    with open(os.path.join(VISION, "preprocessor_config.json")) as f:
        pre = json.load(f)

    golden = OrderedDict()
    pixels = []
    for s in DATA:
        u8 = cv.clip_preprocess_u8(Image.open(os.path.join(OUT, "images", s["image"])), 32, 32, pad=True, mean=pre["image_mean"])
        pixels.append(torch.from_numpy(cv.normalize(u8, pre["image_mean"], pre["image_std"], pre["rescale_factor"])))
    pixel_values = torch.stack(pixels).to(F64)
    golden["pixel_values"] = pixel_values.to(torch.float32)

    samples = []
    for s in DATA:
        ids, lab = preprocess_v1(s, tok)
        samples.append((ids, lab))
        golden[f"ids.{s['id']}"] = torch.tensor(ids)
        golden[f"labels.{s['id']}"] = torch.tensor(lab)
    for s in TEXT:
        ids, lab = preprocess_v1(s, tok)
        golden[f"ids.{s['id']}"] = torch.tensor(ids)
        golden[f"labels.{s['id']}"] = torch.tensor(lab)
    for s in PRETRAIN:
        ids, lab = preprocess_plain(s, tok)
        golden[f"ids.{s['id']}"] = torch.tensor(ids)
        golden[f"labels.{s['id']}"] = torch.tensor(lab)

    params = OrderedDict((k, v.clone().requires_grad_(True)) for k, v in proj.items())
    loss, supervised = batch_loss(decoder, vision, params, pixel_values, samples)
    loss.backward()
    grads = OrderedDict((k, p.grad.detach().clone()) for k, p in params.items())
    min_g = min(float(v.abs().min()) for v in grads.values())
    assert min_g > 1e-8, f"a projector gradient is {min_g}: too close to eps for a float32 comparison; change SEED"
    golden["loss"] = loss.detach().reshape(())
    golden["supervised_tokens"] = torch.tensor(supervised)
    golden["grad_norm"] = torch.sqrt(sum((v ** 2).sum() for v in grads.values())).reshape(())
    for k, v in grads.items():
        golden[f"grad.{k}"] = v
    for wd in (0.0, 0.1):
        after = adamw_step(proj, grads, wd)
        for k, v in after.items():
            golden[f"after_wd{wd:g}.{k}"] = v
    st.save_file(golden, os.path.join(OUT, "golden.safetensors"), {k: str(v) for k, v in GOLDEN_DOC.items()})
    st.save_file(adamw_trajectory(), os.path.join(OUT, "adamw.safetensors"), {"lr": "0.01", "weight_decay": "0.1", "betas": "0.9,0.999", "eps": "1e-8"})

    # self-checks: finite differences on one projector element, and labels carry the </s> of every reply
    with torch.no_grad():
        k = "model.mm_projector.0.weight"
        eps = 1e-6
        pp = OrderedDict((n, v.clone()) for n, v in proj.items())
        pp[k][3, 5] += eps
        lp, _ = batch_loss(decoder, vision, pp, pixel_values, samples)
        pp[k][3, 5] -= 2 * eps
        lm, _ = batch_loss(decoder, vision, pp, pixel_values, samples)
        num = (lp - lm).item() / (2 * eps)
        assert abs(num - grads[k][3, 5].item()) < 1e-7 * max(1.0, abs(num)), (num, grads[k][3, 5].item())
    for ids, lab in samples:
        assert sum(1 for x in lab if x == 2) == sum(1 for x in ids if x == 2) >= 1
    total = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(OUT) for f in fs)
    print(f"wrote {OUT} ({total} bytes): loss {loss.item():.6f} over {supervised} tokens, grad norm {golden['grad_norm'].item():.6f}, min |grad| {min_g:.3g}")


if __name__ == "__main__":
    main()
