"""Plain-torch reference of Hugging Face's CLIP text tower, CLIPModel heads, clip_loss and the CLIP tokenizer (no
transformers, no tokenizers package).

Model (transformers models/clip/modeling_clip.py, eager attention):
  * CLIPTextEmbeddings: token_embedding(input_ids) + position_embedding(arange(T)).
  * Encoder layers exactly as the vision tower's (pre-LN, MHA with biases, q scaled by head_dim**-0.5, fc1 -> act -> fc2)
    but with an additive causal mask (finfo.min above the diagonal) and, when given, an additive padding mask
    ((1 - attention_mask) * finfo.min per key); both are added to the scores, as HF does.
  * final_layer_norm on every position -> last_hidden_state.
  * pooled = last_hidden_state[b, eos_position(b)] where eos_position is argmax(input_ids) when the config's
    eos_token_id == 2 (legacy configs, whose EOS is the largest id) and the FIRST position of eos_token_id otherwise.
  * CLIPModel: text_embeds = text_projection(pooled_text), image_embeds = visual_projection(pooled_vision) (no biases);
    both L2-normalised; logits_per_text = logit_scale.exp() * text_embeds @ image_embeds.T; logits_per_image = its T.
  * clip_loss(logits_per_text) = (CE(logits_per_text, arange) + CE(logits_per_text.T, arange)) / 2.

Tokenizer: what transformers' CLIPConverter builds (tokenizer.json of openai/clip-*): normalizer NFC, Replace(\\s+ -> ' '),
Lowercase; pre-tokenizer Split(CLIP regex, Removed, invert) then ByteLevel (GPT-2 byte-to-unicode map); BPE with
end_of_word_suffix "</w>"; RobertaProcessing: <|startoftext|> ids <|endoftext|>. The regex here approximates
\\p{L} / \\p{N} with Python's re classes, which is exact for the ASCII and Latin text the fixtures use.
"""

import json
import re
import unicodedata
from collections import OrderedDict

import torch
from torch import nn
import torch.nn.functional as F

import clip_vision as cv

# HF CLIPTextConfig defaults (transformers >= 4.31)
TEXT_DEFAULTS = dict(
    vocab_size=49408,
    hidden_size=512,
    intermediate_size=2048,
    projection_dim=512,
    num_hidden_layers=12,
    num_attention_heads=8,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
    pad_token_id=1,
    bos_token_id=49406,
    eos_token_id=49407,
)


def text_config(cfg_json: dict) -> dict:
    src = cfg_json if cfg_json.get("model_type") == "clip_text_model" else cfg_json.get("text_config", {})
    return {k: src.get(k, v) for k, v in TEXT_DEFAULTS.items()}


# ----------------------------------------------------------------------------- model


class TextAttention(cv.Attention):
    def forward(self, x, bias):
        b, t, d = x.shape
        split = lambda y: y.view(b, t, self.heads, self.head_dim).transpose(1, 2)  # noqa: E731
        q = split(self.q_proj(x) * self.scale)
        k = split(self.k_proj(x))
        v = split(self.v_proj(x))
        w = torch.softmax(q @ k.transpose(-1, -2) + bias, dim=-1)
        return self.out_proj((w @ v).transpose(1, 2).reshape(b, t, d))


class TextLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, eps = c["hidden_size"], c["layer_norm_eps"]
        self.self_attn = TextAttention(c)
        self.layer_norm1 = nn.LayerNorm(d, eps=eps)
        self.mlp = cv.MLP(c)
        self.layer_norm2 = nn.LayerNorm(d, eps=eps)

    def forward(self, x, bias):
        x = x + self.self_attn(self.layer_norm1(x), bias)
        return x + self.mlp(self.layer_norm2(x))


class TextEncoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.layers = nn.ModuleList([TextLayer(c) for _ in range(c["num_hidden_layers"])])


class TextEmbeddings(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.token_embedding = nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.position_embedding = nn.Embedding(c["max_position_embeddings"], c["hidden_size"])

    def forward(self, ids):
        return self.token_embedding(ids) + self.position_embedding(torch.arange(ids.shape[1])[None])


def eos_positions(ids, eos_token_id):
    """HF CLIPTextTransformer's pooling index."""
    if eos_token_id == 2:
        return ids.to(torch.int).argmax(dim=-1)
    return (ids.to(torch.int) == eos_token_id).int().argmax(dim=-1)


class TextTransformer(nn.Module):
    """Module names match HF's CLIPTextTransformer (state_dict keys are text_model.* minus the prefix)."""

    def __init__(self, c):
        super().__init__()
        self.c = c
        self.embeddings = TextEmbeddings(c)
        self.encoder = TextEncoder(c)
        self.final_layer_norm = nn.LayerNorm(c["hidden_size"], eps=c["layer_norm_eps"])

    def forward(self, ids, attention_mask=None, eos_token_id=None):
        """Returns (last_hidden_state [B,T,D], pooled [B,D])."""
        h = self.embeddings(ids)
        dt = h.dtype
        t = ids.shape[1]
        lo = torch.finfo(dt).min
        bias = torch.triu(torch.full((t, t), lo, dtype=dt), diagonal=1)[None, None]
        if attention_mask is not None:
            bias = bias + (1.0 - attention_mask[:, None, None, :].to(dt)) * lo
        for layer in self.encoder.layers:
            h = layer(h, bias)
        h = self.final_layer_norm(h)
        eos = self.c["eos_token_id"] if eos_token_id is None else eos_token_id
        pos = eos_positions(ids, eos)
        return h, h[torch.arange(h.shape[0]), pos]


class ClipModel(nn.Module):
    """HF CLIPModel: both towers, the projections and logit_scale."""

    def __init__(self, cfg_json):
        super().__init__()
        tc, vc = text_config(cfg_json), cv.vision_config(cfg_json)
        p = cfg_json.get("projection_dim", 512)
        self.text_model = TextTransformer(tc)
        self.vision_model = cv.VisionTransformer(vc)
        self.visual_projection = nn.Linear(vc["hidden_size"], p, bias=False)
        self.text_projection = nn.Linear(tc["hidden_size"], p, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(cfg_json.get("logit_scale_init_value", 2.6592)))

    def image_embeds(self, pixel_values, normalize=True):
        e = self.visual_projection(self.vision_model(pixel_values)[2])
        return e / e.norm(p=2, dim=-1, keepdim=True) if normalize else e

    def text_embeds(self, ids, attention_mask=None, normalize=True):
        e = self.text_projection(self.text_model(ids, attention_mask)[1])
        return e / e.norm(p=2, dim=-1, keepdim=True) if normalize else e

    def forward(self, ids, pixel_values, attention_mask=None):
        """Returns (logits_per_image [Bi, Bt], logits_per_text [Bt, Bi], text_embeds, image_embeds, loss)."""
        img = self.image_embeds(pixel_values)
        txt = self.text_embeds(ids, attention_mask)
        logits_per_text = self.logit_scale.exp() * txt @ img.t()
        loss = clip_loss(logits_per_text) if ids.shape[0] == pixel_values.shape[0] else None
        return logits_per_text.t(), logits_per_text, txt, img, loss


def contrastive_loss(logits):
    return F.cross_entropy(logits, torch.arange(len(logits)))


def clip_loss(similarity):
    """HF modeling_clip.clip_loss (open_clip's ClipLoss without label smoothing / gathering)."""
    return (contrastive_loss(similarity) + contrastive_loss(similarity.t())) / 2.0


def clip_loss_from_embeds(image_embeds, text_embeds, logit_scale):
    """The whole CLIPModel loss head: normalise, scale, symmetric InfoNCE."""
    img = image_embeds / image_embeds.norm(p=2, dim=-1, keepdim=True)
    txt = text_embeds / text_embeds.norm(p=2, dim=-1, keepdim=True)
    return clip_loss(logit_scale.exp() * txt @ img.t())


def filip_loss_from_embeds(patch_embeds, token_embeds, token_mask, logit_scale):
    """FILIP's token-wise contrastive loss (Yao et al. 2021, eq. 4-5): image i vs text j scores
    mean over patches of max over words (image->text), and mean over words of max over patches
    (text->image); symmetric InfoNCE over each. patch [B,N,P], token [B,T,P], mask [B,T] (1 = word)."""
    v = patch_embeds / patch_embeds.norm(p=2, dim=-1, keepdim=True)
    w = token_embeds / token_embeds.norm(p=2, dim=-1, keepdim=True)
    sim = torch.einsum("ipd,jtd->ijpt", v, w)
    words = token_mask.bool()[None, :, None, :]
    i2t = sim.masked_fill(~words, float("-inf")).amax(dim=3).mean(dim=2)  # [Bi, Bt]
    best = sim.amax(dim=2)  # [Bi, Bt, T]
    m = token_mask[None].to(sim.dtype)
    t2i = (best * m).sum(dim=2) / m.sum(dim=2)  # [Bi, Bt]
    scale = logit_scale.exp()
    return (contrastive_loss(scale * i2t) + contrastive_loss(scale * t2i.t())) / 2.0


def load_clip_state_dict(sd, cfg_json, dtype=torch.float64):
    m = ClipModel(cfg_json)
    own = OrderedDict((k, v) for k, v in sd.items() if not k.endswith("position_ids"))
    m.load_state_dict(own, strict=True)
    return m.to(dtype).eval()


# ----------------------------------------------------------------------------- tokenizer


def bytes_to_unicode():
    """GPT-2's reversible byte -> printable unicode map (CLIP uses it too)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return OrderedDict(zip(bs, [chr(c) for c in cs]))


BYTE_ENCODER = bytes_to_unicode()
BYTE_DECODER = {v: k for k, v in BYTE_ENCODER.items()}
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
# The CLIP split regex as tokenizer.json stores it (Oniguruma/JS \p classes) ...
SPLIT_REGEX = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
# ... and its Python re equivalent (letters = word chars minus digits and _; other = non-space non-word, or _).
_PY_SPLIT = re.compile(r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|(?:[^\s\w]|_)+""")


def normalize(text):
    return re.sub(r"\s+", " ", unicodedata.normalize("NFC", text)).lower()


def pre_tokenize(text):
    """Normalised text -> byte-level words (each a string of byte-map characters)."""
    return ["".join(BYTE_ENCODER[b] for b in w.encode("utf-8")) for w in _PY_SPLIT.findall(normalize(text))]


def bpe(word, ranks):
    """openai simple_tokenizer.bpe: the last symbol carries </w>; merge the lowest-ranked pair everywhere, repeat."""
    symbols = list(word[:-1]) + [word[-1] + "</w>"]
    while len(symbols) > 1:
        pairs = [(ranks.get((a, b), 1 << 60), i) for i, (a, b) in enumerate(zip(symbols, symbols[1:]))]
        best = min(pairs)[0]
        if best == 1 << 60:
            break
        a, b = next((symbols[i], symbols[i + 1]) for r, i in pairs if r == best)
        out, i = [], 0
        while i < len(symbols):
            if i < len(symbols) - 1 and symbols[i] == a and symbols[i + 1] == b:
                out.append(a + b)
                i += 2
            else:
                out.append(symbols[i])
                i += 1
        symbols = out
    return symbols


class Tokenizer:
    def __init__(self, vocab, merges, max_length=77):
        self.vocab = vocab
        self.ranks = {tuple(m): i for i, m in enumerate(merges)}
        self.bos, self.eos = vocab[BOS], vocab[EOS]
        self.max_length = max_length

    def encode(self, text, truncate=True):
        ids = []
        for piece in re.split(r"(<\|startoftext\|>|<\|endoftext\|>)", text):
            if piece in (BOS, EOS):
                ids.append(self.vocab[piece])
                continue
            for w in pre_tokenize(piece):
                ids.extend(self.vocab[s] for s in bpe(w, self.ranks))
        if truncate:
            ids = ids[: self.max_length - 2]
        return [self.bos] + ids + [self.eos]

    def batch(self, texts, pad_to=None):
        """HF-style padding (pad id = eos, as openai/clip tokenizer_config's pad_token) and attention mask."""
        rows = [self.encode(t) for t in texts]
        n = pad_to or max(len(r) for r in rows)
        ids = torch.tensor([r + [self.eos] * (n - len(r)) for r in rows], dtype=torch.int64)
        mask = torch.tensor([[1] * len(r) + [0] * (n - len(r)) for r in rows], dtype=torch.int64)
        return ids, mask


def train_bpe(words, num_merges):
    """Plain BPE training over word counts (words already byte-mapped); ties break on the lexicographically smallest
    pair so the result is deterministic. Returns the merge list."""
    corpus = {tuple(list(w[:-1]) + [w[-1] + "</w>"]): c for w, c in words.items()}
    merges = []
    for _ in range(num_merges):
        counts = {}
        for sym, c in corpus.items():
            for p in zip(sym, sym[1:]):
                counts[p] = counts.get(p, 0) + c
        if not counts:
            break
        best = min(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        if counts[best] < 2:
            break
        merges.append(best)
        nxt = {}
        for sym, c in corpus.items():
            out, i = [], 0
            while i < len(sym):
                if i < len(sym) - 1 and (sym[i], sym[i + 1]) == best:
                    out.append(sym[i] + sym[i + 1])
                    i += 2
                else:
                    out.append(sym[i])
                    i += 1
            nxt[tuple(out)] = nxt.get(tuple(out), 0) + c
        corpus = nxt
    return merges


def clip_vocab(merges):
    """openai CLIP's vocabulary order: 256 byte chars, the same with </w>, one piece per merge, then BOS, EOS."""
    v = list(BYTE_ENCODER.values())
    v = v + [x + "</w>" for x in v]
    v += ["".join(m) for m in merges]
    v += [BOS, EOS]
    return OrderedDict((t, i) for i, t in enumerate(v))


def tokenizer_json(vocab, merges):
    """A tokenizer.json laid out as transformers' CLIPConverter writes it (openai/clip-vit-*)."""
    special = lambda tok: OrderedDict(  # noqa: E731
        id=vocab[tok], content=tok, single_word=False, lstrip=False, rstrip=False, normalized=True, special=True
    )
    return OrderedDict(
        version="1.0",
        truncation=None,
        padding=None,
        added_tokens=[special(BOS), special(EOS)],
        normalizer=OrderedDict(
            type="Sequence",
            normalizers=[
                {"type": "NFC"},
                OrderedDict(type="Replace", pattern={"Regex": r"\s+"}, content=" "),
                {"type": "Lowercase"},
            ],
        ),
        pre_tokenizer=OrderedDict(
            type="Sequence",
            pretokenizers=[
                OrderedDict(type="Split", pattern={"Regex": SPLIT_REGEX}, behavior="Removed", invert=True),
                OrderedDict(type="ByteLevel", add_prefix_space=False, trim_offsets=True, use_regex=True),
            ],
        ),
        post_processor=OrderedDict(
            type="RobertaProcessing", sep=[EOS, vocab[EOS]], cls=[BOS, vocab[BOS]], trim_offsets=False,
            add_prefix_space=False,
        ),
        decoder=OrderedDict(type="ByteLevel", add_prefix_space=True, trim_offsets=True, use_regex=True),
        model=OrderedDict(
            type="BPE", dropout=None, unk_token=EOS, continuing_subword_prefix="", end_of_word_suffix="</w>",
            fuse_unk=False, byte_fallback=False, vocab=vocab, merges=[" ".join(m) for m in merges],
        ),
    )


def tokenizer_config(max_length=77):
    tok = lambda s: OrderedDict(__type="AddedToken", content=s, lstrip=False, normalized=True, rstrip=False, single_word=False)  # noqa: E731
    return OrderedDict(
        add_prefix_space=False, bos_token=tok(BOS), do_lower_case=True, eos_token=tok(EOS), errors="replace",
        model_max_length=max_length, pad_token=EOS, tokenizer_class="CLIPTokenizer", unk_token=tok(EOS),
    )
