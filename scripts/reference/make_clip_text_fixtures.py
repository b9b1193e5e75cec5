"""Generate the CLIP text-tower / zero-shot / contrastive-loss golden fixture packages/vision/fixtures/clip-text/.

Run with the SYSTEM python (Debian torch 1.13 + python3-pil):  /usr/bin/python3 scripts/reference/make_clip_text_fixtures.py

A complete HF CLIPModel folder at toy size, laid out as openai/clip-vit-* publish theirs:

  config.json              CLIPModel: text_config (vocab 2*256 + merges + 2, hidden 32, 2 layers, 4 heads, intermediate 64,
                           max_position_embeddings 77, quick_gelu, bos/eos = the last two ids) and vision_config (image 32,
                           patch 8, hidden 32, 2 layers, 4 heads, quick_gelu), projection_dim 16, logit_scale_init_value 2.6592
  model.safetensors        logit_scale, text_model.* (incl. the int64 text_model.embeddings.position_ids buffer older
                           checkpoints carry), text_projection.weight, vision_model.*, visual_projection.weight (F32)
  tokenizer.json           real CLIP layout (transformers' CLIPConverter): NFC + \\s+ -> ' ' + lowercase, CLIP split regex,
                           ByteLevel, BPE with end_of_word_suffix </w>, unk <|endoftext|>, RobertaProcessing BOS/EOS; the
                           vocabulary is openai's order (256 byte chars, the same + </w>, one piece per merge, BOS, EOS) with
                           merges learned here on shape/colour captions
  tokenizer_config.json    CLIPTokenizer config (pad_token <|endoftext|>, model_max_length 77)
  preprocessor_config.json CLIPImageProcessor, size/crop 32
  image.png                32x32 RGB red disc on a grey-blue gradient (the crop size: preprocessing is only the normalize)
  tokens.json              [{text, ids}]: tokenizer goldens (BOS/EOS added, truncated to 77)
  golden.safetensors       see GOLDEN_DOC

Everything is computed in float64 from the stored float32 weights and stored as F32 (ids I64). The script ends with a
self-test that reloads every written file and reproduces the goldens.
"""

import json
import math
import os
import sys
from collections import OrderedDict

import numpy as np
import torch
from PIL import Image, ImageDraw

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import clip_text as ct  # noqa: E402
import clip_vision as cv  # noqa: E402
import st  # noqa: E402

ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
OUT = os.path.join(ROOT, "packages", "vision", "fixtures", "clip-text")
F64 = torch.float64

LABELS = ["a red circle", "a blue square", "a green triangle", "a yellow star"]
TOKEN_TEXTS = [
    "a red circle",
    "A  RED\tcircle!!",
    "  two small blue squares, left of a star.  ",
    "it's 3 stars",
    "naïve café",
    "🙂 emoji",
    "x<|endoftext|>y",
    "",
    " ".join(["a big purple star above a small orange circle"] * 12),  # > 77 tokens: truncated
]
TRAIN_GRADS = OrderedDict(
    grad_text_projection="text_projection.weight",
    grad_visual_projection="visual_projection.weight",
    grad_logit_scale="logit_scale",
    grad_text_q_proj0="text_model.encoder.layers.0.self_attn.q_proj.weight",
    grad_text_final_ln="text_model.final_layer_norm.weight",
    grad_class_embedding="vision_model.embeddings.class_embedding",
)

GOLDEN_DOC = OrderedDict(
    generator="scripts/reference/make_clip_text_fixtures.py (clip_text.py reference, float64 from the stored fp32 weights)",
    label_ids="tokenizer(LABELS) padded to the longest with <|endoftext|> (pad_token), BOS/EOS added; LABELS = " + json.dumps(LABELS),
    label_mask="1 = token, 0 = pad",
    last_hidden_state="text_model final_layer_norm output for label_ids WITH label_mask (HF causal + padding mask) [4,T,32]",
    text_pooled="last_hidden_state at the first eos_token_id position [4,32]",
    text_embeds="L2-normalised text_projection(text_pooled) [4,16]",
    pixel_values="image.png through CLIPImageProcessor [1,3,32,32]",
    image_embeds="L2-normalised visual_projection(post_layernorm(CLS)) [1,16]",
    logits_per_image="logit_scale.exp() * image_embeds @ text_embeds.T [1,4]",
    probs="softmax(logits_per_image) over the labels [1,4]",
    rule_ids="hand-made ids [2,8] whose argmax position differs from the first position of id 300",
    pooled_argmax="pooled with the legacy rule (eos_token_id == 2): last_hidden_state[argmax(ids)], no mask [2,32]",
    pooled_eos300="pooled with eos_token_id = 300: last_hidden_state[first position of 300], no mask [2,32]",
    loss_image_embeds="random unnormalised image embeddings [4,16]",
    loss_text_embeds="random unnormalised text embeddings [4,16]",
    loss_logit_scale="log scale (the logit_scale parameter, exp applied) []",
    loss="clip_loss(logit_scale.exp() * norm(text) @ norm(image).T): (CE(rows) + CE(cols)) / 2 []",
    train_pixel_values="random pixels [3,3,32,32] paired with LABELS[:3]",
    train_ids="tokenizer(LABELS[:3]) padded with <|endoftext|> (no mask needed: pooled is causal-invariant) [3,T]",
    train_loss="CLIPModel(train_ids, train_pixel_values, return_loss=True).loss []",
    grads="d train_loss / d param for " + json.dumps(TRAIN_GRADS),
    filip_patch_embeds="random unnormalised patch embeddings [3,4,6] (own generator, seed 303)",
    filip_token_embeds="random unnormalised word embeddings [3,5,6]",
    filip_token_mask="1 = a word to match, 0 = BOS/EOS/padding [3,5]",
    filip_logit_scale="log scale []",
    filip_loss="FILIP token-wise loss (clip_text.filip_loss_from_embeds) []",
    filip_grad_patch="d filip_loss / d filip_patch_embeds [3,4,6]",
    filip_grad_token="d filip_loss / d filip_token_embeds [3,5,6]",
)


def init_params(module, seed):
    """As make_vision_fixtures.init_params: LayerNorm w ~ 1 + 0.15 N, biases 0.1 N, matrices 1/sqrt(fan_in) N,
    embeddings 0.5 N; float64 rounded to float32 and widened back."""
    g = torch.Generator().manual_seed(seed)
    for name, p in module.named_parameters():
        shape = p.shape
        if name == "logit_scale":
            continue
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


def corpus():
    """Captions of the synthetic-shapes kind: the tokenizer's merges are learned on their words."""
    colours = ["red", "green", "blue", "yellow", "orange", "purple", "pink", "black", "white", "gray", "brown", "cyan"]
    shapes = ["circle", "square", "triangle", "star"]
    words = {}

    def add(sentence, n=1):
        for w in ct.pre_tokenize(sentence):
            words[w] = words.get(w, 0) + n

    for c in colours:
        for s in shapes:
            add(f"a photo of a {c} {s}", 3)
            add(f"there is one {c} {s} on the left", 1)
            add(f"two {c} {s}s above a small {s}", 1)
            add(f"a big {c} {s} below the right {s}", 1)
    add("is there a star? yes. no. how many shapes are there? three four", 4)
    return words


def write_image(path):
    y, x = np.mgrid[0:32, 0:32].astype(np.float64)
    bg = np.stack([110 + 2 * y, 130 + x, 180 - y], -1)
    img = Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8), "RGB")
    ImageDraw.Draw(img).ellipse([7, 6, 25, 24], fill=(220, 30, 40))
    img.save(path)


def state_dict_fp32(model):
    sd = OrderedDict()
    sd["logit_scale"] = model.logit_scale.detach().to(torch.float32).reshape(())
    for k, v in model.state_dict().items():
        if k.startswith("text_model."):
            sd[k] = v.to(torch.float32).contiguous()
    # The buffer 4.31-era checkpoints carry: loaders must ignore it.
    sd["text_model.embeddings.position_ids"] = torch.arange(77, dtype=torch.int64)[None]
    sd["text_projection.weight"] = model.text_projection.weight.detach().to(torch.float32).contiguous()
    for k, v in model.state_dict().items():
        if k.startswith("vision_model."):
            sd[k] = v.to(torch.float32).contiguous()
    sd["visual_projection.weight"] = model.visual_projection.weight.detach().to(torch.float32).contiguous()
    return sd


def make():
    os.makedirs(OUT, exist_ok=True)
    merges = ct.train_bpe(corpus(), 160)
    vocab = ct.clip_vocab(merges)
    tok = ct.Tokenizer(vocab, merges)
    text = OrderedDict(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=77, hidden_act="quick_gelu", layer_norm_eps=1e-5, projection_dim=16,
        bos_token_id=vocab[ct.BOS], eos_token_id=vocab[ct.EOS], pad_token_id=1, model_type="clip_text_model",
    )
    vision = OrderedDict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8,
        hidden_act="quick_gelu", layer_norm_eps=1e-5, num_channels=3, projection_dim=16, model_type="clip_vision_model",
    )
    config = OrderedDict(
        _name_or_path="clip-text-tiny", architectures=["CLIPModel"], initializer_factor=1.0,
        logit_scale_init_value=2.6592, model_type="clip", projection_dim=16, text_config=text, torch_dtype="float32",
        transformers_version="4.31.0", vision_config=vision,
    )
    model = ct.ClipModel(config)
    init_params(model, 301)
    model = model.to(F64).eval()
    sd = state_dict_fp32(model)
    st.save_file(sd, os.path.join(OUT, "model.safetensors"), {"format": "pt"})
    cv.write_json(os.path.join(OUT, "config.json"), config)
    with open(os.path.join(OUT, "tokenizer.json"), "w") as f:
        json.dump(ct.tokenizer_json(vocab, merges), f, ensure_ascii=False)
    cv.write_json(os.path.join(OUT, "tokenizer_config.json"), ct.tokenizer_config())
    cv.write_json(
        os.path.join(OUT, "preprocessor_config.json"),
        OrderedDict(
            crop_size={"height": 32, "width": 32}, do_center_crop=True, do_convert_rgb=True, do_normalize=True,
            do_rescale=True, do_resize=True, image_mean=cv.OPENAI_CLIP_MEAN, image_processor_type="CLIPImageProcessor",
            image_std=cv.OPENAI_CLIP_STD, resample=3, rescale_factor=1 / 255, size={"shortest_edge": 32},
        ),
    )
    write_image(os.path.join(OUT, "image.png"))
    tokens = [OrderedDict(text=t, ids=tok.encode(t)) for t in TOKEN_TEXTS]
    cv.write_json(os.path.join(OUT, "tokens.json"), tokens)

    m = ct.load_clip_state_dict(st.load_file(os.path.join(OUT, "model.safetensors")), config)
    gold = OrderedDict()
    with torch.no_grad():
        ids, mask = tok.batch(LABELS)
        gold["label_ids"], gold["label_mask"] = ids, mask
        hs, pooled = m.text_model(ids, mask)
        gold["last_hidden_state"] = hs
        gold["text_pooled"] = pooled
        gold["text_embeds"] = m.text_embeds(ids, mask)
        img = Image.open(os.path.join(OUT, "image.png"))
        px = torch.from_numpy(cv.normalize(cv.clip_preprocess_u8(img, 32, 32)))[None]
        gold["pixel_values"] = px
        gold["image_embeds"] = m.image_embeds(px.to(F64))
        lpi, _, _, _, _ = m(ids, px.to(F64), mask)
        gold["logits_per_image"] = lpi
        gold["probs"] = torch.softmax(lpi, dim=-1)
        rule_ids = torch.tensor([[5, 300, 41, 500, 300, 7, 300, 9], [12, 13, 300, 2, 510, 2, 300, 6]])
        gold["rule_ids"] = rule_ids
        gold["pooled_argmax"] = m.text_model(rule_ids, None, eos_token_id=2)[1]
        gold["pooled_eos300"] = m.text_model(rule_ids, None, eos_token_id=300)[1]
        g = torch.Generator().manual_seed(302)
        gold["loss_image_embeds"] = torch.randn(4, 16, generator=g, dtype=F64).to(torch.float32)
        gold["loss_text_embeds"] = torch.randn(4, 16, generator=g, dtype=F64).to(torch.float32)
        gold["loss_logit_scale"] = torch.tensor(1.7, dtype=torch.float32)
        gold["loss"] = ct.clip_loss_from_embeds(
            gold["loss_image_embeds"].to(F64), gold["loss_text_embeds"].to(F64), gold["loss_logit_scale"].to(F64)
        )
        gold["train_pixel_values"] = torch.randn(3, 3, 32, 32, generator=g, dtype=F64).to(torch.float32)
        gold["train_ids"] = tok.batch(LABELS[:3])[0]
    with torch.enable_grad():
        m.zero_grad()
        loss = m(gold["train_ids"], gold["train_pixel_values"].to(F64))[4]
        loss.backward()
        params = dict(m.named_parameters())
        gold["train_loss"] = loss.detach()
        for k, name in TRAIN_GRADS.items():
            gold[k] = params[name].grad.detach().clone()
    # FILIP's token-wise loss on random embeddings: its own generator, so the values above stay as they were.
    g = torch.Generator().manual_seed(303)
    fp = torch.randn(3, 4, 6, generator=g, dtype=F64).to(torch.float32)
    ft = torch.randn(3, 5, 6, generator=g, dtype=F64).to(torch.float32)
    fm = torch.tensor([[0, 1, 1, 1, 0], [0, 1, 0, 0, 0], [0, 1, 1, 0, 0]], dtype=torch.float32)
    fs = torch.tensor(1.5, dtype=torch.float32)
    with torch.enable_grad():
        p64, t64 = fp.to(F64).requires_grad_(), ft.to(F64).requires_grad_()
        fl = ct.filip_loss_from_embeds(p64, t64, fm.to(F64), fs.to(F64))
        fl.backward()
    gold.update(filip_patch_embeds=fp, filip_token_embeds=ft, filip_token_mask=fm, filip_logit_scale=fs,
                filip_loss=fl.detach(), filip_grad_patch=p64.grad.detach(), filip_grad_token=t64.grad.detach())
    gold = OrderedDict((k, v.to(torch.float32) if v.is_floating_point() else v) for k, v in gold.items())
    meta = dict(GOLDEN_DOC, weights_seed="301", random_seed="302")
    st.save_file(gold, os.path.join(OUT, "golden.safetensors"), meta)
    return config, vocab, merges, gold


# ----------------------------------------------------------------------------- self-test


def close(a, b, atol, what):
    err = (a.to(F64) - b.to(F64)).abs().max().item()
    if err > atol:
        raise AssertionError(f"{what}: max abs err {err:.3e}")
    return err


def self_test(config, vocab, merges, gold_mem):
    gold = st.load_file(os.path.join(OUT, "golden.safetensors"))
    for k, v in gold_mem.items():
        assert torch.equal(gold[k], v), f"golden {k} round-trip"
    tj = json.load(open(os.path.join(OUT, "tokenizer.json")))
    vocab2, merges2 = tj["model"]["vocab"], [tuple(m.split(" ")) for m in tj["model"]["merges"]]
    assert vocab2 == dict(vocab) and merges2 == [tuple(m) for m in merges]
    tok = ct.Tokenizer(vocab2, merges2)
    # Every merge result is a piece; the vocabulary is openai's layout.
    assert len(vocab2) == 512 + len(merges) + 2 and vocab2[ct.EOS] == len(vocab2) - 1
    assert vocab2["a</w>"] == 256 + list(ct.BYTE_ENCODER.values()).index("a")
    for t in json.load(open(os.path.join(OUT, "tokens.json"))):
        assert tok.encode(t["text"]) == t["ids"]
        assert len(t["ids"]) <= 77 and t["ids"][0] == vocab2[ct.BOS] and t["ids"][-1] == vocab2[ct.EOS]
    long_ids = tok.encode(TOKEN_TEXTS[-1])
    assert len(long_ids) == 77 and len(tok.encode(TOKEN_TEXTS[-1], truncate=False)) > 77
    # Labels are whole-word pieces (the merges cover them), and the special token in text is its id.
    assert all(len(tok.encode(label)) <= 2 + 3 for label in LABELS), [tok.encode(label) for label in LABELS]
    assert vocab2[ct.EOS] in tok.encode("x<|endoftext|>y")[1:-1]

    m = ct.load_clip_state_dict(st.load_file(os.path.join(OUT, "model.safetensors")), config)
    with torch.no_grad():
        ids, mask = gold["label_ids"], gold["label_mask"]
        close(m.text_embeds(ids, mask), gold["text_embeds"], 1e-6, "text_embeds reload")
        # Causality: the pooled EOS output ignores padding, with or without the mask, and equals the unpadded run.
        close(m.text_embeds(ids, None), gold["text_embeds"], 1e-6, "text_embeds without mask")
        for i, label in enumerate(LABELS):
            one = torch.tensor([tok.encode(label)])
            close(m.text_embeds(one)[0], gold["text_embeds"][i], 1e-6, f"unpadded {label}")
        # The two pooling rules pick different rows of the hand-made batch.
        assert (gold["pooled_argmax"] - gold["pooled_eos300"]).abs().max() > 0.1
        # Zero-shot: the probabilities sum to 1 and are not degenerate.
        p = gold["probs"][0].to(F64)
        assert abs(p.sum().item() - 1) < 1e-6 and p.max() < 0.999 and p.min() > 1e-4, p
        # The loss head by hand.
        i = gold["loss_image_embeds"].to(F64)
        t = gold["loss_text_embeds"].to(F64)
        i, t = i / i.norm(dim=-1, keepdim=True), t / t.norm(dim=-1, keepdim=True)
        lg = math.exp(1.7) * t @ i.t()
        by_hand = 0.5 * (-(torch.log_softmax(lg, 1).diag().mean()) - torch.log_softmax(lg, 0).diag().mean())
        close(by_hand, gold["loss"], 1e-6, "clip loss by hand")
        # What a float32 consumer can expect.
        m32 = ct.load_clip_state_dict(st.load_file(os.path.join(OUT, "model.safetensors")), config, dtype=torch.float32)
        e32 = close(m32.text_embeds(ids, mask), gold["text_embeds"], 1e-4, "fp32 text_embeds")
    # The logit_scale gradient by finite differences (float64).
    with torch.no_grad():
        base = m.logit_scale.item()
        f = []
        for h in (1e-6, -1e-6):
            m.logit_scale.fill_(base + h)
            f.append(m(gold["train_ids"], gold["train_pixel_values"].to(F64))[4].item())
        m.logit_scale.fill_(base)
    fd = (f[0] - f[1]) / 2e-6
    assert abs(fd - gold["grad_logit_scale"].item()) < 1e-5, (fd, gold["grad_logit_scale"])
    print(f"clip-text: vocab {len(vocab2)} ({len(merges)} merges), label ids {[len(tok.encode(x)) for x in LABELS]}, "
          f"probs {[round(x, 4) for x in p.tolist()]}, loss {gold['loss'].item():.5f}, train_loss {gold['train_loss'].item():.5f}, "
          f"fp32 text_embeds err {e32:.1e}")


def main():
    config, vocab, merges, gold = make()
    self_test(config, vocab, merges, gold)
    total = 0
    for fn in sorted(os.listdir(OUT)):
        size = os.path.getsize(os.path.join(OUT, fn))
        total += size
        print(f"  {fn}: {size}")
    print(f"clip-text fixture total {total} bytes")
    assert total < 400_000, total
    print("self-test OK")


if __name__ == "__main__":
    main()
