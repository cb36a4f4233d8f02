#!/usr/bin/env python
"""Train the bundled model ``models/mlx-kv-tiny`` (dev-time script, PyTorch CPU).

A small Llama-architecture model (GQA, RoPE with a small base, RMSNorm,
SwiGLU, tied embeddings) with its own byte-level BPE tokenizer, trained on a
mix of the synthetic long-context tasks in :mod:`mlx_kv.tasks` plus a small
chat set, in exactly the chat format the app uses: a ``document`` block, a
``user`` question, the ``assistant`` reply ended by ``<|end|>``.

PyTorch is used only here, because on a CPU it trains several times faster
than MLX; the export uses Hugging Face Llama parameter names, which
``mlx_lm.load`` reads, and writes ``reference_logits.npz`` so a test can check
that MLX reproduces the trained model.

    pip install torch==2.13.0 tokenizers        # CPU wheel
    python scripts/train_bundled_model.py --prev-token-init --induction-init \
        --lr 2e-3 --steps 7000 --minutes 120                     # the shipped run (fresh)
    python scripts/train_bundled_model.py --minutes 30 --resume  # continue
    python scripts/train_bundled_model.py --export-only          # re-export last/best

Recall needs induction-like circuits (a previous-token head feeding a
content-matching head). Trained from random weights on this data they did
not form within the few thousand steps a CPU affords (runs stayed at the
value prior for 3,000 steps), so the shipped run starts from an
initialisation that builds them: layer-0 heads that attend 1, 2 and 3 tokens
back (`prev_token_init`) and two layer-1 heads that match a token against
earlier positions' previous tokens (`induction_init`). Every weight is then
trained; those circuit weights at a lower rate (`--circuit-lr-mult`), and
embedding channel 0 stays pinned at the constant the positional heads use.
The data follow a curriculum (`PHASES`): repetition, then documents of
nothing but facts, then the task mix at growing lengths.

Loss: language-model loss on a random quarter of the document tokens (text
with repeated structure encourages induction heads) plus the loss on every
assistant-reply token. Held-out accuracy is teacher-forced exact match of the
whole reply on eval seeds >= 10**9 (exact match under teacher forcing is the
same as greedy decoding producing the reply). Training seeds are < 10**9.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mlx_kv import tasks as T  # noqa: E402
from mlx_kv.tiny_chat import CHAT_TEMPLATE, render_chat  # noqa: E402

SPECIAL = ["<|bos|>", "<|end|>", "<|pad|>", "<|document|>", "<|user|>", "<|assistant|>", "<|system|>"]
EVAL_SEED0 = 10**9
SYSTEM_PROMPTS = (
    "You are a helpful assistant that answers questions about the loaded document .",
    "Answer briefly from the document .",
)

# --------------------------------------------------------------------------
# tokenizer


class _Len:
    def encode(self, s):
        return s.split()


def _tokenizer_corpus(rng: random.Random):
    w = _Len()
    for i in range(3000):
        task = T.TASKS[i % len(T.TASKS)]
        s = T.make_sample(task, rng.choice([100, 200, 400]), w, rng.random(), seed=rng.randrange(10**9))
        yield render_chat([{"role": "document", "content": s.context}, {"role": "user", "content": s.question}], True)
        yield reply_text(s)
    words = list(T.KEYS) + list(T.VALUES) + list(T.VAR_NAMES) + list(T.CWE_WORDS)
    for _ in range(40):
        rng.shuffle(words)
        yield " ".join(words)
    for _ in range(50):
        for q, a in _chat_pairs(rng, None):
            yield q + "\n" + a


def build_tokenizer(out_dir: Path, vocab_size: int = 4096):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    tok.train_from_iterator(_tokenizer_corpus(random.Random(0)), trainer=trainer)
    save_tokenizer(tok, out_dir)
    return tok


def save_tokenizer(tok, out_dir: Path):
    from transformers import PreTrainedTokenizerFast

    out_dir.mkdir(parents=True, exist_ok=True)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|bos|>",
        eos_token="<|end|>",
        pad_token="<|pad|>",
        additional_special_tokens=["<|document|>", "<|user|>", "<|assistant|>", "<|system|>"],
        model_max_length=32768,
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(str(out_dir))
    # make sure chat_template is in tokenizer_config.json (newer transformers may
    # write chat_template.jinja instead; mlx-lm reads both, older readers only the json)
    cfg_path = out_dir / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["chat_template"] = CHAT_TEMPLATE
    cfg["mlx_kv_document_role"] = "document"  # trained with its own document role (mlx_kv.chat_format)
    # portable across transformers 4.x and 5.x
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    if "extra_special_tokens" in cfg:
        cfg["additional_special_tokens"] = cfg.pop("extra_special_tokens")
    cfg_path.write_text(json.dumps(cfg, indent=2))
    stm = {"bos_token": "<|bos|>", "eos_token": "<|end|>", "pad_token": "<|pad|>",
           "additional_special_tokens": ["<|document|>", "<|user|>", "<|assistant|>", "<|system|>"]}
    (out_dir / "special_tokens_map.json").write_text(json.dumps(stm, indent=2))
    jinja = out_dir / "chat_template.jinja"
    if jinja.exists():
        jinja.unlink()


class TokWrap:
    """``tokenizers.Tokenizer`` with ``encode(str) -> list[int]``."""

    def __init__(self, tok):
        self.tok = tok
        self.eos_id = tok.token_to_id("<|end|>")
        self.pad_id = tok.token_to_id("<|pad|>")
        self.bos_id = tok.token_to_id("<|bos|>")

    def encode(self, s):
        return self.tok.encode(s, add_special_tokens=False).ids

    def decode(self, ids):
        return self.tok.decode(ids, skip_special_tokens=False)


# --------------------------------------------------------------------------
# data


def reply_text(s: T.Sample) -> str:
    """The assistant reply the model is trained to give for a task sample."""
    if s.task in ("single_needle", "multi_key"):
        key = s.question.split(" for ")[1].rstrip(" ?")
        return f"The special magic number for {key} is {s.answer[0]} ."
    if s.task == "multi_value":
        key = s.question.split(" for ")[1].rstrip(" ?")
        return " ".join(f"The special magic number for {key} is {v} ." for v in s.answer)
    if s.task == "multi_query":
        keys = s.question.split(" for ")[1].rstrip(" ?").replace(" and ", " , ").split(" , ")
        return " ".join(f"The special magic number for {k} is {v} ." for k, v in zip(keys, s.answer))
    if s.task == "variable_tracking":
        return "The variables are " + " , ".join(s.answer) + " ."
    if s.task == "common_words":
        return "The most common words are " + " , ".join(s.answer) + " ."
    raise ValueError(s.task)


def _chat_pairs(rng: random.Random, doc_sample):
    """(question, reply) pairs of the small chat set; replies about the
    document are derived from ``doc_sample`` when given."""
    pairs = [
        (rng.choice(["hello", "hi", "hey", "Hello !", "Hi there", "good morning", "hello , how are you ?"]),
         "Hello ! Load a document and ask me about it ."),
        (rng.choice(["what can you do ?", "What can you do ?", "help", "How can you help me ?", "what are you good at ?"]),
         "I can answer questions about the document you loaded : I find special magic numbers , "
         "track variables and list the most common words ."),
        (rng.choice(["who are you ?", "What are you ?", "what is your name ?"]),
         "I am mlx-kv tiny , a small model trained to find facts in long documents ."),
        (rng.choice(["thank you", "thanks !", "Thanks"]), "You are welcome !"),
        (rng.choice(["bye", "goodbye"]), "Goodbye !"),
    ]
    if doc_sample is not None:
        q = rng.choice([
            "summarize the document", "Summarize the document .", "What is the document about ?",
            "what is in the document ?", "give me a summary",
        ])
        keys = [ln.split(" for ")[1].split(" is ")[0] for ln in doc_sample.context.split(" . ")
                if ln.strip().startswith("The special magic number for ")]
        if keys:
            uniq = list(dict.fromkeys(keys))
            a = "The document is a story with special magic numbers for " + " , ".join(uniq) + " ."
        elif doc_sample.task == "variable_tracking":
            a = "The document is a story with variable assignments ."
        else:
            a = "The document is a short story with no special magic numbers ."
        pairs.append((q, a))
    return pairs


def _dense_kv(tw, n_tokens, rng, seed, filler=True):
    """Training-only: many facts with little filler, several asked at once
    (many retrieval targets per token of compute; MQAR-like). Without filler
    the document is nothing but facts: the cleanest key -> value signal, the
    curriculum's first phase."""
    n = max(3, min(len(T.KEYS) // 2, n_tokens // rng.choice([16, 24, 40])))
    keys = rng.sample(T.KEYS, n)
    values = [rng.choice(T.VALUES) for _ in keys]
    if filler:
        inserts = [(rng.random(), T.needle_sentence(k, v)) for k, v in zip(keys, values)]
        doc = T.build_document(tw, n_tokens, rng, inserts)
    else:
        n = max(2, min(n, n_tokens // 11))
        keys, values = keys[:n], values[:n]
        doc = " ".join(T.needle_sentence(k, v) for k, v in zip(keys, values))
    nq = rng.choice([1, 1, 2, 3, 4, 6, 8]) if filler else rng.randint(max(1, n // 2), n)
    idx = rng.sample(range(n), min(nq, n))
    asked = [keys[i] for i in idx]
    if len(asked) == 1:
        q = f"What is the special magic number for {asked[0]} ?"
    else:
        q = "What are the special magic numbers for " + " , ".join(asked[:-1]) + f" and {asked[-1]} ?"
    a = " ".join(f"The special magic number for {keys[i]} is {values[i]} ." for i in idx)
    return doc, q, a


def _dense_vt(tw, n_tokens, rng, seed):
    """Training-only: several variable chains with little filler."""
    n_chains = rng.randint(2, 5)
    names = rng.sample(T.VAR_NAMES, n_chains * 5)
    vals = rng.sample(T.VALUES, n_chains)
    chains = []
    inserts = []
    for c in range(n_chains):
        hops = rng.randint(1, 5)
        ch = names[c * 5: c * 5 + hops]
        chains.append(ch)
        depths = sorted(rng.random() for _ in ch)
        stmts = [f"VAR {ch[0]} = {vals[c]} ."] + [f"VAR {b} = VAR {a} ." for a, b in zip(ch, ch[1:])]
        inserts += list(zip(depths, stmts))
    doc = T.build_document(tw, n_tokens, rng, inserts)
    c = rng.randrange(n_chains)
    q = f"Find all variables that are assigned the value {vals[c]} ."
    a = "The variables are " + " , ".join(chains[c]) + " ."
    return doc, q, a


def _code_copy(tw, n_tokens, rng, seed):
    """Training-only: a sequence of random codes behind a marker, to be repeated.
    Every code after the first is an induction target (copy the token that
    followed the current one), the circuit key -> value recall is built from."""
    k = rng.randint(4, 40)
    pool = T.KEYS + T.VALUES + T.VAR_NAMES
    codes = [rng.choice(pool) for _ in range(k)]
    sent = "The secret code is " + " ".join(codes) + " ."
    doc = T.build_document(tw, n_tokens, rng, [(rng.random(), sent)])
    return doc, "What is the secret code ?", sent


def _repeat(tw, n_tokens, rng, seed):
    """Training-only: a list of random codes, repeated back. Pure induction
    (find the current token earlier, copy what followed it): forms in about a
    hundred steps here, and the key -> value recall is built on top of it."""
    pool = T.KEYS + T.VALUES + T.VAR_NAMES
    codes = [rng.choice(pool) for _ in range(max(4, n_tokens // 2))]
    text = " ".join(codes)
    return text, "Repeat the document .", text


def make_example(tw: TokWrap, task: str, n_tokens: int, seed: int):
    """Token ids, loss-weight kind (0 ignore, 1 document LM, 2 reply) for one example."""
    rng = random.Random(f"ex:{task}:{seed}")
    depth = rng.random()
    if task == "chat":
        base = rng.choice(["single_needle", "multi_key", "variable_tracking", "none"])
        messages = []
        if rng.random() < 0.2:
            messages.append({"role": "system", "content": rng.choice(SYSTEM_PROMPTS)})
        s = None
        if base != "none":
            s = T.make_sample(base, n_tokens, tw, depth, seed)
            messages.append({"role": "document", "content": s.context})
        q, a = rng.choice(_chat_pairs(rng, s)[-3:] if s is not None and rng.random() < 0.6 else _chat_pairs(rng, s))
        messages.append({"role": "user", "content": q})
    elif task in ("dense_kv", "facts_only", "dense_vt", "code_copy", "repeat"):
        make = {"dense_kv": _dense_kv, "facts_only": lambda *a: _dense_kv(*a, filler=False),
                "dense_vt": _dense_vt, "code_copy": _code_copy, "repeat": _repeat}[task]
        doc, q, a = make(tw, n_tokens, rng, seed)
        s = None
        messages = [{"role": "document", "content": doc}, {"role": "user", "content": q}]
    else:
        s = T.make_sample(task, n_tokens, tw, depth, seed)
        messages = []
        if rng.random() < 0.05:
            messages.append({"role": "system", "content": rng.choice(SYSTEM_PROMPTS)})
        messages.append({"role": "document", "content": s.context})
        messages.append({"role": "user", "content": s.question})
        a = reply_text(s)
    prompt = render_chat(messages, add_generation_prompt=True)
    p_ids = tw.encode(prompt)
    a_ids = tw.encode(a) + [tw.eos_id]
    ids = p_ids + a_ids
    kind = np.zeros(len(ids), np.int8)
    kind[: len(p_ids)] = 1
    kind[len(p_ids):] = 2
    return ids, kind, s


# The curriculum. First pure repetition (induction heads form in ~100
# steps), then documents made only of facts, short, most of them asked back:
# every example is key -> value recall with nothing else to learn (runs on
# the mixed set alone stayed at 0% for 3,000 steps, and facts alone sat at
# the value prior for 1,000). A phase ends when the reply-token accuracy's moving average
# passes `until` (or after `max_steps` steps in it); the last phase runs on.
PHASES = (
    {"name": "copy", "mix": {"repeat": 0.7, "facts_only": 0.3}, "lengths": ((1.0, 32, 96),), "until": 0.9,
     "max_steps": 600},
    {"name": "facts", "mix": {"facts_only": 0.85, "repeat": 0.15}, "lengths": ((1.0, 48, 192),), "until": 0.97,
     "max_steps": 3000},
    {"name": "tasks", "mix": {"facts_only": 0.2, "dense_kv": 0.15, "single_needle": 0.2, "multi_key": 0.15,
                              "variable_tracking": 0.08, "dense_vt": 0.04, "multi_query": 0.05, "multi_value": 0.03,
                              "common_words": 0.03, "code_copy": 0.03, "chat": 0.04},
     "lengths": ((0.6, 64, 384), (1.0, 384, 768)), "until": 0.96, "max_steps": 2500},
    {"name": "long", "mix": {"facts_only": 0.04, "dense_kv": 0.08, "single_needle": 0.2, "multi_key": 0.25,
                             "variable_tracking": 0.12, "dense_vt": 0.05, "multi_query": 0.06, "multi_value": 0.03,
                             "common_words": 0.03, "code_copy": 0.04, "chat": 0.1},
     "lengths": ((0.5, 64, 512), (0.85, 512, 1024), (1.0, 1024, 2048)), "until": 2.0, "max_steps": 10**9},
)
TASK_MIX = PHASES[-1]["mix"]


def pick_length(rng: random.Random, phase: int) -> int:
    r = rng.random()
    for upto, lo, hi in PHASES[phase]["lengths"]:
        if r < upto:
            return rng.randint(lo, hi)
    return PHASES[phase]["lengths"][-1][2]


def make_batch(tw: TokWrap, step: int, tokens_per_batch: int, lm_frac: float, phase: int = len(PHASES) - 1):
    rng = random.Random(step)
    L = pick_length(rng, phase)
    B = max(1, tokens_per_batch // (L + 40))
    mix = PHASES[phase]["mix"]
    names = list(mix)
    weights = [mix[n] for n in names]
    exs = []
    for i in range(B):
        task = rng.choices(names, weights)[0]
        ids, kind, _ = make_example(tw, task, L, seed=(step * 1009 + i) % EVAL_SEED0)
        exs.append((ids, kind))
    maxlen = max(len(e[0]) for e in exs)
    x = np.full((B, maxlen), tw.pad_id, np.int64)
    kinds = np.zeros((B, maxlen), np.int8)
    for b, (ids, kind) in enumerate(exs):
        x[b, : len(ids)] = ids
        kinds[b, : len(ids)] = kind
    # targets: next token; kind of the *target* token decides its weight
    tgt = np.full_like(x, -100)
    tgt[:, :-1] = x[:, 1:]
    tkind = np.zeros_like(kinds)
    tkind[:, :-1] = kinds[:, 1:]
    lm_mask = (tkind == 1) & (np.random.default_rng(step).random(tkind.shape) < lm_frac)
    ans_mask = tkind == 2
    return x, tgt, lm_mask, ans_mask


# --------------------------------------------------------------------------
# model (Hugging Face Llama parameter names)


def rope_inv_freq(cfg) -> np.ndarray:
    """Rotary angular frequencies, exactly as mlx-lm computes them (incl. llama3 scaling)."""
    hd = cfg["head_dim"]
    periods = (np.float32(cfg["rope_theta"]) ** (np.arange(0, hd, 2, dtype=np.float32) / np.float32(hd))).astype(np.float32)
    sc = cfg.get("rope_scaling")
    if sc and (sc.get("rope_type") or sc.get("type")) == "llama3":
        factor = sc["factor"]
        lo, hi = sc.get("low_freq_factor", 1.0), sc.get("high_freq_factor", 4.0)
        old = sc.get("original_max_position_embeddings", 8192)
        low_wl, high_wl = old / lo, old / hi
        wl = (2 * np.pi * periods).astype(np.float32)
        p2 = np.where(wl > low_wl, periods * factor, periods)
        medium = (wl > high_wl) & (wl < low_wl)
        smooth = (old / wl - lo) / (hi - lo)
        smooth_p = p2 / ((1 - smooth) / factor + smooth)
        periods = np.where(medium, smooth_p, p2).astype(np.float32)
    elif sc:
        raise ValueError(f"unsupported rope_scaling {sc}")
    return (1.0 / periods).astype(np.float32)


# llama3-style scaling used as a frequency *split*: the fast rotary pairs
# (wavelength <= 64 tokens, full periods seen in every training sample) stay
# positional, the slow ones are slowed 10^4x to near-static "content" channels,
# so key matching works at any distance and nothing rotates into angles unseen
# in training at 4k-16k tokens.
ROPE_SCALING = {"rope_type": "llama3", "factor": 10000.0, "low_freq_factor": 1.0, "high_freq_factor": 2.0,
                "original_max_position_embeddings": 128}


def build_model(cfg):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    d = cfg["hidden_size"]
    nh = cfg["num_attention_heads"]
    nkv = cfg["num_key_value_heads"]
    hd = cfg["head_dim"]
    ff = cfg["intermediate_size"]
    eps = cfg["rms_norm_eps"]

    class RMSNorm(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(d))

        def forward(self, x):
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * self.weight

    def rope_tables(T_, device):
        inv = torch.from_numpy(rope_inv_freq(cfg))
        t = torch.arange(T_, dtype=torch.float32)
        f = torch.outer(t, inv)
        emb = torch.cat([f, f], -1)
        return emb.cos()[None, None], emb.sin()[None, None]

    def rot_half(x):
        x1, x2 = x.chunk(2, -1)
        return torch.cat([-x2, x1], -1)

    class Attn(nn.Module):
        def __init__(self):
            super().__init__()
            self.q_proj = nn.Linear(d, nh * hd, bias=False)
            self.k_proj = nn.Linear(d, nkv * hd, bias=False)
            self.v_proj = nn.Linear(d, nkv * hd, bias=False)
            self.o_proj = nn.Linear(nh * hd, d, bias=False)

        def forward(self, x, cos, sin):
            B, T_, _ = x.shape
            q = self.q_proj(x).view(B, T_, nh, hd).transpose(1, 2)
            k = self.k_proj(x).view(B, T_, nkv, hd).transpose(1, 2)
            v = self.v_proj(x).view(B, T_, nkv, hd).transpose(1, 2)
            q = q * cos + rot_half(q) * sin
            k = k * cos + rot_half(k) * sin
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
            return self.o_proj(o.transpose(1, 2).reshape(B, T_, nh * hd))

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.gate_proj = nn.Linear(d, ff, bias=False)
            self.up_proj = nn.Linear(d, ff, bias=False)
            self.down_proj = nn.Linear(ff, d, bias=False)

        def forward(self, x):
            return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))

    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            self.self_attn = Attn()
            self.mlp = MLP()
            self.input_layernorm = RMSNorm()
            self.post_attention_layernorm = RMSNorm()

        def forward(self, x, cos, sin):
            x = x + self.self_attn(self.input_layernorm(x), cos, sin)
            return x + self.mlp(self.post_attention_layernorm(x))

    class Inner(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed_tokens = nn.Embedding(cfg["vocab_size"], d)
            self.layers = nn.ModuleList([Layer() for _ in range(cfg["num_hidden_layers"])])
            self.norm = RMSNorm()

    class Llama(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = Inner()

        def hidden(self, ids):
            cos, sin = rope_tables(ids.shape[1], ids.device)
            x = self.model.embed_tokens(ids)
            for layer in self.model.layers:
                x = layer(x, cos, sin)
            return self.model.norm(x)

        def logits(self, h):
            return h @ self.model.embed_tokens.weight.T

        def forward(self, ids):
            return self.logits(self.hidden(ids))

    m = Llama()
    g = torch.Generator().manual_seed(cfg.get("init_seed", 0))
    for name, p in m.named_parameters():
        if p.dim() == 2:
            std = 0.02
            if name.endswith("o_proj.weight") or name.endswith("down_proj.weight"):
                std = 0.02 / math.sqrt(2 * cfg["num_hidden_layers"])
            with torch.no_grad():
                p.normal_(0.0, std, generator=g)
    return m


PINNED_CONST = 0.05  # embedding channel 0 with --prev-token-init: the positional heads' bias direction


def prev_token_init(model, cfg, offsets=(1, 2, 3), const=PINNED_CONST, amp=30.0, n_freq=4):
    """Give layer 0 positional heads that look ``offsets`` tokens back.

    Induction (key -> value recall) needs a previous-token head feeding a
    content-matching head; learning both at once stalls for thousands of steps
    on this budget. So one embedding channel is made constant (a "bias"
    direction), and the query heads that share KV head 0 in layer 0 get
    constant queries/keys whose RoPE phases peak at relative position
    ``-offset`` (only the ``n_freq`` fastest rotary frequencies, which
    discriminate neighbours). Their values carry token content, not the
    constant. Everything stays trainable; this is an initialisation.
    The constant is small (0.05, about the size of the other channels after
    RMSNorm) and the query weights large: a constant of 3.0 dominated every
    layer's normalised input and the model then learned nothing at all.
    Training pins the channel at the constant (``pin_const``); the large
    query weight keeps the heads sharp while the other channels grow.
    """
    import torch

    hd = cfg["head_dim"]
    nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    group = nh // nkv
    half = hd // 2
    theta = cfg["rope_theta"] ** (-torch.arange(0, half, dtype=torch.float64) / half)
    attn = model.model.layers[0].self_attn
    with torch.no_grad():
        model.model.embed_tokens.weight[:, 0] = const
        # kv head 0: constant key 1 + 0i on the fast frequencies, values ignore the constant
        attn.k_proj.weight[0:hd, :] = 0.0
        attn.k_proj.weight[0:n_freq, 0] = 1.0
        attn.v_proj.weight[0:hd, 0] = 0.0
        for h, off in zip(range(group), offsets):
            rows = slice(h * hd, (h + 1) * hd)
            attn.q_proj.weight[rows, :] = 0.0
            for j in range(n_freq):
                attn.q_proj.weight[h * hd + j, 0] = amp * math.cos(off * theta[j])
                attn.q_proj.weight[h * hd + half + j, 0] = -amp * math.sin(off * theta[j])
            # make these heads' outputs visible in the residual stream
            attn.o_proj.weight[:, rows].normal_(0.0, 0.08)
    return model


def pin_const(model, const=PINNED_CONST):
    """Hold embedding channel 0 at its constant (the positional heads need it
    fixed; Adam moved it several times its size within 100 steps)."""
    import torch

    with torch.no_grad():
        model.model.embed_tokens.weight[:, 0] = const


def induction_init(model, cfg, scale=6.0, out_scale=0.3, content_pairs=range(10, 16)):
    """Give layer 1 two content-matching heads on top of ``prev_token_init``.

    Query head 0 (KV head 0) matches the current token against each earlier
    position's previous token: classic induction (find where this token
    occurred, attend to what followed). Query head 3 (KV head 1) matches the
    previous token against each position's token two back: the recall the
    tasks need ("... for KEY is" -> the token after "KEY is"). Keys read the
    layer-0 heads' outputs back through the pseudo-inverse of their output
    projections; queries and keys use only the slow rotary pairs
    (``content_pairs``, wavelengths of millions of tokens), so matching does
    not depend on distance. Their outputs (what is copied) start random: the
    run learns them in a few hundred steps, and everything stays trainable.
    The runs without this stayed at chance on recall for thousands of steps.
    """
    import torch

    hd = cfg["head_dim"]
    half = hd // 2
    dims = [j for j in content_pairs] + [j + half for j in content_pairs]
    a0 = model.model.layers[0].self_attn
    a1 = model.model.layers[1].self_attn
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        v0 = a0.v_proj.weight[0:hd, :]  # (hd, d): what the layer-0 positional heads carry
        # The positional heads write into mutually orthogonal subspaces that
        # are also orthogonal to v0's rows, so reading one back (its transpose)
        # sees neither the others nor, through v0, the current token's own value.
        d = v0.shape[1]
        q_v = torch.linalg.qr(v0.T)[0]  # (d, hd)
        z = torch.randn(d, 3 * hd, generator=gen, dtype=v0.dtype)
        z = z - q_v @ (q_v.T @ z)
        q_o = torch.linalg.qr(z)[0]  # (d, 3 hd), orthonormal, orthogonal to v0's rows
        for h in range(3):
            a0.o_proj.weight[:, h * hd:(h + 1) * hd] = out_scale * q_o[:, h * hd:(h + 1) * hd]
        back = [q_o[:, h * hd:(h + 1) * hd].T / out_scale for h in (0, 1)]  # prev 1, prev 2
        r = torch.linalg.qr(torch.randn(hd, len(dims), generator=gen))[0].T  # (len(dims), hd), orthonormal rows
        current, prev1, prev2 = r @ v0, r @ back[0], r @ back[1]
        c = scale
        # head 0 / KV head 0: query = current token, key = previous token
        a1.q_proj.weight[0:hd, :] = 0.0
        a1.k_proj.weight[0:hd, :] = 0.0
        a1.q_proj.weight[dims, :] = c * current
        a1.k_proj.weight[dims, :] = c * prev1
        # head 3 / KV head 1: query = previous token, key = token two back
        g3 = 3 * hd
        a1.q_proj.weight[g3:g3 + hd, :] = 0.0
        a1.k_proj.weight[hd:2 * hd, :] = 0.0
        a1.q_proj.weight[[g3 + j for j in dims], :] = c * prev1
        a1.k_proj.weight[[hd + j for j in dims], :] = c * prev2
        for h in (0, 3):
            a1.o_proj.weight[:, h * hd:(h + 1) * hd].normal_(0.0, 0.08, generator=gen)
    return model


def default_config(vocab_size: int, eos_id: int, bos_id: int, pad_id: int):
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": vocab_size,
        "hidden_size": 192,
        "intermediate_size": 512,
        "num_hidden_layers": 4,
        "num_attention_heads": 6,
        "num_key_value_heads": 2,
        "head_dim": 32,
        "rms_norm_eps": 1e-5,
        "rope_theta": 200.0,
        "rope_traditional": False,
        "rope_scaling": dict(ROPE_SCALING),
        "attention_bias": False,
        "mlp_bias": False,
        "hidden_act": "silu",
        "max_position_embeddings": 16384,
        "tie_word_embeddings": True,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "pad_token_id": pad_id,
        "torch_dtype": "float32",
    }


# --------------------------------------------------------------------------
# eval (teacher-forced exact match of the reply == greedy reply)

EVAL_TASKS = ("single_needle", "multi_key", "multi_query", "variable_tracking", "multi_value", "common_words")


def evaluate(model, tw, n_per_task: int, length: int):
    import torch

    model.eval()
    res = {}
    with torch.no_grad():
        for ti, task in enumerate(EVAL_TASKS):
            ok = 0
            for i in range(n_per_task):
                ids, kind, _ = make_example(tw, task, length, seed=EVAL_SEED0 + ti * 100000 + i)
                x = torch.tensor([ids])
                h = model.hidden(x)
                start = int(np.argmax(kind == 2))
                pred = model.logits(h[0, start - 1: len(ids) - 1]).argmax(-1)
                ok += int(torch.equal(pred, x[0, start:]))
            res[task] = ok / n_per_task
    model.train()
    return res


# --------------------------------------------------------------------------
# export


def export(model, cfg, tok_dir: Path, out_dir: Path, meta: dict):
    import torch
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().to(torch.float32).contiguous().clone() for k, v in model.state_dict().items()}
    if cfg["tie_word_embeddings"]:
        sd.pop("lm_head.weight", None)
    tmp = out_dir / "model.safetensors.tmp"
    save_file(sd, str(tmp), metadata={"format": "pt"})
    os.chmod(tmp, 0o644)
    os.replace(tmp, out_dir / "model.safetensors")
    (out_dir / "config.json").write_text(json.dumps({k: v for k, v in cfg.items() if k != "init_seed"}, indent=2))
    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (tok_dir / f).exists() and tok_dir != out_dir:
            shutil.copy(tok_dir / f, out_dir / f)
    # reference logits on a short fixed input
    from tokenizers import Tokenizer

    tw = TokWrap(Tokenizer.from_file(str(out_dir / "tokenizer.json")))
    text = render_chat(
        [{"role": "document", "content": "The special magic number for lemon is 417 . The old river was quiet ."},
         {"role": "user", "content": "What is the special magic number for lemon ?"}],
        add_generation_prompt=True,
    )
    ids = tw.encode(text)
    model.eval()
    with torch.no_grad():
        logits = model(torch.tensor([ids]))[0].numpy().astype(np.float32)
    model.train()
    np.savez(out_dir / "reference_logits.npz", input_ids=np.array(ids, np.int32), logits=logits)
    (out_dir / "training_meta.json").write_text(json.dumps(meta, indent=2))


# --------------------------------------------------------------------------
# main


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "models" / "mlx-kv-tiny"))
    ap.add_argument("--ckpt-dir", default=str(ROOT / "runs" / "ckpt"))
    ap.add_argument("--log", default=str(ROOT / "runs" / "train_metrics.jsonl"))
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--minutes", type=float, default=80.0, help="wall-clock budget for this invocation")
    ap.add_argument("--steps", type=int, default=5000, help="total steps of the LR schedule")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--wd", type=float, default=0.1)
    ap.add_argument("--min-lr", type=float, default=1e-4)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--tokens-per-batch", type=int, default=4096)
    ap.add_argument("--lm-frac", type=float, default=0.25)
    ap.add_argument("--lm-weight", type=float, default=0.1,
                    help="weight of the document LM loss relative to the reply loss")
    ap.add_argument("--ckpt-every-s", type=float, default=240.0)
    ap.add_argument("--eval-every", type=int, default=200)
    ap.add_argument("--eval-n", type=int, default=24)
    ap.add_argument("--eval-len", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--export-only", action="store_true")
    ap.add_argument("--induction-init", action="store_true",
                    help="with --prev-token-init, also initialise layer-1 matching heads (see induction_init)")
    ap.add_argument("--circuit-lr-mult", type=float, default=0.05,
                    help="learning-rate multiplier for the initialised circuit's weights (with --prev-token-init)")
    ap.add_argument("--phase", type=int, default=None,
                    help="start (or on --resume, restart) the curriculum at this phase (index into PHASES)")
    ap.add_argument("--set-rope-scaling", action="store_true",
                    help="on --resume, switch the loaded model to this script's rope_scaling (ROPE_SCALING)")
    ap.add_argument("--prev-token-init", action="store_true",
                    help="initialise layer-0 previous-token heads (see prev_token_init); on --resume it is applied to the loaded weights")
    args = ap.parse_args(argv)

    import torch
    from tokenizers import Tokenizer

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out_dir = Path(args.out)
    ckpt_dir = Path(args.ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    tok_dir = ckpt_dir / "tokenizer"
    if not (tok_dir / "tokenizer.json").exists():
        t0 = time.time()
        build_tokenizer(tok_dir)
        print(f"built tokenizer in {time.time() - t0:.1f}s", flush=True)
    tw = TokWrap(Tokenizer.from_file(str(tok_dir / "tokenizer.json")))
    vocab = tw.tok.get_vocab_size()
    cfg = default_config(vocab, tw.eos_id, tw.bos_id, tw.pad_id)

    model = build_model(cfg)
    nparams = sum(p.numel() for p in model.parameters())
    circuit_names = {f"model.layers.0.self_attn.{w}_proj.weight" for w in "qkvo"} | {
        f"model.layers.1.self_attn.{w}_proj.weight" for w in "qk"}
    circuit = [p for n, p in model.named_parameters() if n in circuit_names]
    decay = [p for n, p in model.named_parameters() if p.dim() == 2 and n not in circuit_names]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]

    def make_optimizer():
        # The initialised circuit (see induction_init) moves slowly: at the full
        # rate Adam's steps, ~10% of those weights' size each, scrambled it
        # within 400 steps, before the rest had learned to use it.
        mult = args.circuit_lr_mult if args.prev_token_init else 1.0
        return torch.optim.AdamW(
            [{"params": decay, "weight_decay": args.wd, "lr_mult": 1.0},
             {"params": circuit, "weight_decay": 0.0 if args.prev_token_init else args.wd, "lr_mult": mult},
             {"params": no_decay, "weight_decay": 0.0, "lr_mult": 1.0}],
            lr=args.lr, betas=(0.9, 0.95), eps=1e-8,
        )

    opt = make_optimizer()
    step = 0
    best = -1.0
    phase, phase_start = 0, 0
    elapsed_prev = 0.0
    last_path = ckpt_dir / "last.pt"
    if args.resume or args.export_only:
        if last_path.exists():
            ck = torch.load(last_path, map_location="cpu", weights_only=False)
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["opt"])
            step, best, elapsed_prev = ck["step"], ck["best"], ck.get("elapsed", 0.0)
            phase, phase_start = ck.get("phase", len(PHASES) - 1), ck.get("phase_start", 0)
            rope = cfg["rope_scaling"]
            cfg.update(ck["cfg"])  # in place: the model's rope reads this dict
            if args.set_rope_scaling:
                cfg["rope_scaling"] = rope
                best = -1.0
            print(f"resumed at step {step} (best {best:.3f})", flush=True)
    if args.phase is not None:
        phase, phase_start = args.phase, step
    if args.prev_token_init and step == 0:
        prev_token_init(model, cfg)
        if args.induction_init:
            induction_init(model, cfg)
        opt = make_optimizer()
        rewarm_from = step
        print(f"applied previous-token init to layer 0 at step {step}; optimizer reset", flush=True)
    else:
        rewarm_from = None
    print(f"params {nparams} ({nparams / 1e6:.2f}M), vocab {vocab}, config {json.dumps(cfg)}", flush=True)

    def meta(extra=None):
        m = {"step": step, "best_eval": best, "train_wall_s": elapsed_prev + (time.time() - t_start),
             "params": nparams, "args": vars(args), "task_mix": TASK_MIX}
        m.update(extra or {})
        return m

    t_start = time.time()
    if args.export_only:
        best_path = ckpt_dir / "best.pt"
        if best_path.exists():
            model.load_state_dict(torch.load(best_path, map_location="cpu", weights_only=False)["model"])
        export(model, cfg, tok_dir, out_dir, meta())
        print("exported", out_dir)
        return

    def save_ckpt():
        tmp = ckpt_dir / "last.pt.tmp"
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "best": best,
                    "cfg": cfg, "elapsed": elapsed_prev + (time.time() - t_start), "phase": phase,
                    "phase_start": phase_start}, tmp)
        os.replace(tmp, last_path)

    def lr_at(s):
        if s < args.warmup:
            return args.lr * (s + 1) / args.warmup
        if rewarm_from is not None and s < rewarm_from + 50:
            return lr_cos(s) * (s - rewarm_from + 1) / 50
        return lr_cos(s)

    def lr_cos(s):
        p = min(1.0, (s - args.warmup) / max(1, args.steps - args.warmup))
        return args.min_lr + 0.5 * (args.lr - args.min_lr) * (1 + math.cos(math.pi * p))

    log = open(args.log, "a")
    deadline = t_start + args.minutes * 60
    last_ckpt = time.time()
    ema = acc_ema = None
    model.train()
    while time.time() < deadline:
        t0 = time.time()
        x, tgt, lm_mask, ans_mask = make_batch(tw, step, args.tokens_per_batch, args.lm_frac, phase)
        t_data = time.time() - t0
        for g in opt.param_groups:
            g["lr"] = lr_at(step) * g.get("lr_mult", 1.0)
        xt = torch.from_numpy(x)
        h = model.hidden(xt)
        tg = torch.from_numpy(tgt)
        lm_idx = torch.from_numpy(lm_mask)
        an_idx = torch.from_numpy(ans_mask)
        lm_loss = torch.nn.functional.cross_entropy(model.logits(h[lm_idx]), tg[lm_idx])
        an_logits = model.logits(h[an_idx])
        an_loss = torch.nn.functional.cross_entropy(an_logits, tg[an_idx])
        an_acc = (an_logits.argmax(-1) == tg[an_idx]).float().mean().item()
        loss = args.lm_weight * lm_loss + an_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if args.prev_token_init:
            pin_const(model)
        step += 1
        dt = time.time() - t0
        ema = an_loss.item() if ema is None else 0.95 * ema + 0.05 * an_loss.item()
        acc_ema = an_acc if acc_ema is None else 0.95 * acc_ema + 0.05 * an_acc
        spec = PHASES[phase]
        if phase < len(PHASES) - 1 and step - phase_start >= 100 and (
                acc_ema >= spec["until"] or step - phase_start >= spec["max_steps"]):
            phase, phase_start, acc_ema = phase + 1, step, None
            print(f"phase {PHASES[phase]['name']} from step {step}", flush=True)
            log.write(json.dumps({"step": step, "phase": PHASES[phase]["name"]}) + "\n")
        if step % 10 == 0:
            rec = {"step": step, "lm_loss": round(lm_loss.item(), 4), "ans_loss": round(an_loss.item(), 4),
                   "ans_ema": round(ema, 4), "ans_acc": round(an_acc, 3), "phase": phase, "gnorm": round(float(gn), 3), "lr": lr_at(step), "len": x.shape[1],
                   "batch": x.shape[0], "step_s": round(dt, 3), "data_s": round(t_data, 3),
                   "wall_s": round(elapsed_prev + time.time() - t_start, 1)}
            print(json.dumps(rec), flush=True)
            log.write(json.dumps(rec) + "\n")
            log.flush()
        if step % args.eval_every == 0:
            te = time.time()
            acc = evaluate(model, tw, args.eval_n, args.eval_len)
            score = (acc["single_needle"] + acc["multi_key"] + acc["variable_tracking"] + acc["multi_query"]) / 4
            rec = {"step": step, "eval_len": args.eval_len, "eval": acc, "score": round(score, 4),
                   "eval_s": round(time.time() - te, 1)}
            print(json.dumps(rec), flush=True)
            log.write(json.dumps(rec) + "\n")
            log.flush()
            if score >= best:
                best = score
                torch.save({"model": model.state_dict(), "step": step, "score": score, "cfg": cfg}, ckpt_dir / "best.pt")
                export(model, cfg, tok_dir, out_dir, meta({"eval_at_export": acc, "eval_len": args.eval_len}))
                print(f"exported step {step} score {score:.3f}", flush=True)
            save_ckpt()
            last_ckpt = time.time()
        elif time.time() - last_ckpt > args.ckpt_every_s:
            save_ckpt()
            last_ckpt = time.time()
    save_ckpt()
    print(f"stopped at step {step}", flush=True)


if __name__ == "__main__":
    main()
