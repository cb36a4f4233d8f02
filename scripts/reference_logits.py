"""Independent reference data for SmolLM2-135M-Instruct (Q4_1 GGUF), from PyTorch.

Dev-only: runs in a separate virtual environment, never imported by mlx_kv.

    /usr/bin/python3 -m venv /work/venvs/ref
    /work/venvs/ref/bin/pip install torch==2.13.0 kvpress==0.5.5 gguf
    /work/venvs/ref/bin/pip install --no-deps gguf2mlx      # optional 2nd tokenizer
    /work/venvs/ref/bin/python scripts/reference_logits.py \
        --gguf /work/models-src/SmolLM2-135M-Instruct.Q4_1.gguf

Writes tests/data/smollm2_reference.npz and tests/data/smollm2_reference.json
(the JSON says what every array in the npz is).

Tokenizer references (see the JSON's "tokenizer" section for the measured
agreement):
  * "spec": built here from the GGUF's own vocabulary and merges with the
    pre-tokenizer the GGUF metadata names (tokenizer.ggml.pre = "smollm", which
    is llama.cpp's two-step split: every Unicode number code point \\p{N}
    isolated first, then the GPT-2 byte-level regex on the pieces between),
    via the `tokenizers` library: Digits(individual_digits=True) +
    ByteLevel(use_regex=True).  It is checked against a second, pure-Python
    implementation of the same rule written in this file (regex + BPE merges).
    THE REFERENCE IDS ARE THE SPEC IDS.
  * "transformers": transformers' own GGUF tokenizer converter.  It does NOT
    implement "smollm": it uses the plain GPT-2 ByteLevel regex, so digits come
    out one by one only because the vocabulary has no multi-digit token, while
    whitespace in front of a digit is split differently; it also prepends
    <|im_start|> (id 1) by default although tokenizer.ggml.add_bos_token is
    false, and reports eos_token = <|im_start|> (id 1) although the GGUF's
    eos_token_id is 2.  Stored for comparison only.
  * "gguf2mlx": gguf2mlx's tokenizer extraction (no MLX needed), which warns
    that "smollm" is unsupported and falls back to a Qwen-style regex with an
    NFC normalizer.  Stored for comparison only, when the package is present.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import tempfile
import warnings
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # transformers' GGUF dequantize bar
warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_GGUF = Path("/work/models-src/SmolLM2-135M-Instruct.Q4_1.gguf")

# Fixed mixed text: English prose, Python, accented Latin, CJK, digits, emoji,
# repeated spaces / tabs / newlines, and whitespace right before digits (where
# the "smollm" pre-tokenizer and a plain GPT-2 regex disagree).
MIXED_TEXT = (
    "The quick brown fox jumps over the lazy dog. It's 2024, and we'll see.\n"
    "\n"
    "def fib(n: int) -> int:\n"
    "    if n < 2:\n"
    "        return n\n"
    "    return fib(n - 1) + fib(n - 2)  # recursion\n"
    "\n"
    "Café, naïve façade, Ångström, São Paulo, Zürich, crème brûlée.\n"
    "日本語のテキストと中文字符。\n"
    "Numbers: 12345 and 3.14159; 1,000,000 items; x²+½; ٣ apples.\n"
    "Emoji: 🙂🚀 👍🏽 ❤️\n"
    "Spaces:   three,\t\ttabs,  \n"
    "\n"
    "\n"
    "  42 indented, \n\n 7 after newlines.\n"
)

CHAT_PROMPTS = [
    {
        "name": "capital",
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
    },
    {
        "name": "document_question",
        # Document and question in one user turn: the 135M model answers this
        # one correctly ("sourdough") with a clear greedy margin; with the
        # question in a second user turn its greedy path is a near-tie.
        "messages": [
            {
                "role": "user",
                "content": (
                    "Read this note.\n\n"
                    "The Harbor Street bakery opens at 7 a.m. on weekdays and at "
                    "9 a.m. on Saturdays. It is closed on Sundays. The owner, Maria "
                    "Lopez, bakes rye bread on Tuesdays and sourdough on Fridays. A "
                    "loaf of sourdough costs 6 dollars; a rye loaf costs 5 dollars."
                    "\n\nQuestion: What does Maria bake on Fridays?"
                ),
            },
        ],
    },
    {
        "name": "system_prompt",
        "messages": [
            {
                "role": "system",
                "content": "You are a terse assistant. Answer in one short sentence.",
            },
            {"role": "user", "content": "Why is the sky blue?"},
        ],
    },
]

TOPK = 20
GREEDY_TOKENS = 20

# --------------------------------------------------------------------------
# GGUF metadata
# --------------------------------------------------------------------------


def read_gguf_tokenizer(path: Path) -> dict:
    from gguf import GGUFReader

    r = GGUFReader(str(path))

    def get(key, default=None):
        f = r.fields.get(key)
        return default if f is None else f.contents()

    return {
        "tokens": get("tokenizer.ggml.tokens"),
        "token_type": get("tokenizer.ggml.token_type"),
        "merges": get("tokenizer.ggml.merges"),
        "model": get("tokenizer.ggml.model"),
        "pre": get("tokenizer.ggml.pre"),
        "bos_token_id": get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": get("tokenizer.ggml.eos_token_id"),
        "padding_token_id": get("tokenizer.ggml.padding_token_id"),
        "add_bos_token": get("tokenizer.ggml.add_bos_token"),
        "chat_template": get("tokenizer.chat_template"),
    }


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------
# Tokenizer 1: spec, with the `tokenizers` library
# --------------------------------------------------------------------------


def control_tokens(meta: dict) -> list[str]:
    return [t for t, ty in zip(meta["tokens"], meta["token_type"]) if ty == 3]


def build_spec_tokenizer(meta: dict):
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    if meta["model"] != "gpt2" or meta["pre"] != "smollm":
        raise SystemExit(f"expected a gpt2/smollm tokenizer, got {meta['model']}/{meta['pre']}")
    vocab = {t: i for i, t in enumerate(meta["tokens"])}
    merges = [tuple(m.split(" ", 1)) for m in meta["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in control_tokens(meta)])
    return tok


# --------------------------------------------------------------------------
# Tokenizer 2: spec again, pure Python (regex module + BPE merge ranks)
# --------------------------------------------------------------------------

_GPT2_PAT = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def _bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


class PurePythonSmolLM:
    """llama.cpp's LLAMA_VOCAB_PRE_TYPE_SMOLLM split, then byte-level BPE."""

    def __init__(self, meta: dict):
        import regex

        self.re = regex
        self.pat = regex.compile(_GPT2_PAT)
        self.num = regex.compile(r"\p{N}")
        self.vocab = {t: i for i, t in enumerate(meta["tokens"])}
        self.ranks = {tuple(m.split(" ", 1)): i for i, m in enumerate(meta["merges"])}
        self.b2u = _bytes_to_unicode()
        specials = sorted(control_tokens(meta), key=len, reverse=True)
        self.special_re = regex.compile("(" + "|".join(regex.escape(s) for s in specials) + ")")
        self.cache: dict[str, list[int]] = {}

    def pretokenize(self, text: str) -> list[str]:
        out, start = [], 0
        for m in self.num.finditer(text):
            out += self.pat.findall(text[start : m.start()])
            out.append(m.group())
            start = m.end()
        out += self.pat.findall(text[start:])
        return out

    def bpe(self, piece: str) -> list[int]:
        if piece in self.cache:
            return self.cache[piece]
        word = [self.b2u[b] for b in piece.encode("utf-8")]
        while len(word) > 1:
            pairs = [(self.ranks.get((word[i], word[i + 1]), 1 << 30), i) for i in range(len(word) - 1)]
            rank, i = min(pairs)
            if rank == 1 << 30:
                break
            word = word[:i] + [word[i] + word[i + 1]] + word[i + 2 :]
        ids = [self.vocab[w] for w in word]
        self.cache[piece] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        ids = []
        for part in self.special_re.split(text):
            if not part:
                continue
            if part in self.vocab and self.special_re.fullmatch(part):
                ids.append(self.vocab[part])
                continue
            for piece in self.pretokenize(part):
                ids += self.bpe(piece)
        return ids


# --------------------------------------------------------------------------
# Tokenizer 3: gguf2mlx (optional)
# --------------------------------------------------------------------------


def load_gguf2mlx_tokenizer(gguf_path: Path):
    try:
        import gguf2mlx
        from gguf import GGUFReader
        from gguf2mlx import gguf2mlx as g2m
        from transformers import PreTrainedTokenizerFast
    except Exception as e:  # not installed / needs MLX
        return None, None, f"unavailable: {type(e).__name__}: {e}"
    out = Path(tempfile.mkdtemp(prefix="g2m_tok_"))
    import contextlib
    import io

    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("always")
        g2m.extract_tokenizer(GGUFReader(str(gguf_path)), out)
    tok = PreTrainedTokenizerFast.from_pretrained(str(out))
    note = "; ".join(str(w.message) for w in caught) or "no warnings"
    return tok, getattr(gguf2mlx, "__version__", "?"), note


# --------------------------------------------------------------------------


def first_difference(a: list[int], b: list[int], decode) -> dict | None:
    if a == b:
        return None
    n = min(len(a), len(b))
    i = next((k for k in range(n) if a[k] != b[k]), n)
    return {
        "index": i,
        "reference_len": len(a),
        "other_len": len(b),
        "reference_next": a[i : i + 6],
        "other_next": b[i : i + 6],
        "reference_text": decode(a[i : i + 6]),
        "other_text": decode(b[i : i + 6]),
    }


def diff_runs(a: list[int], b: list[int], decode) -> list[dict]:
    """All differing spans, via difflib on the id sequences."""
    import difflib

    out = []
    sm = difflib.SequenceMatcher(a=a, b=b, autojunk=False)
    for op, i1, i2, j1, j2 in sm.get_opcodes():
        if op != "equal":
            out.append(
                {
                    "reference_span": [i1, i2],
                    "reference_ids": a[i1:i2],
                    "other_ids": b[j1:j2],
                    "text": decode(a[i1:i2]),
                }
            )
    return out


DIGIT_PROBES = ["Price 12345", "3.14159", "x 1", "\n\n 1", "  12", "a  1b", "tab\t\t2", "x²½ ٣", "1,000"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", type=Path, default=DEFAULT_GGUF)
    ap.add_argument("--out", type=Path, default=REPO / "tests" / "data" / "smollm2_reference")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import gguf
    import tokenizers
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    versions = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "gguf": getattr(gguf, "__version__", None) or _dist_version("gguf"),
        "numpy": np.__version__,
    }

    meta = read_gguf_tokenizer(args.gguf)
    spec = build_spec_tokenizer(meta)
    pure = PurePythonSmolLM(meta)
    folder, name = str(args.gguf.parent), args.gguf.name
    hf_tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    g_tok, g_ver, g_note = load_gguf2mlx_tokenizer(args.gguf)
    if g_ver:
        versions["gguf2mlx"] = g_ver

    def dec(ids):
        return spec.decode(ids, skip_special_tokens=False)

    # ---------------- mixed text ----------------
    ref_ids = spec.encode(MIXED_TEXT, add_special_tokens=False).ids
    pure_ids = pure.encode(MIXED_TEXT)
    if ref_ids != pure_ids:
        raise SystemExit(f"spec tokenizers vs pure-Python disagree: {first_difference(ref_ids, pure_ids, dec)}")
    if dec(ref_ids) != MIXED_TEXT:
        raise SystemExit("spec ids do not decode back to the mixed text")
    hf_ids = hf_tok(MIXED_TEXT, add_special_tokens=False)["input_ids"]
    hf_ids_default = hf_tok(MIXED_TEXT)["input_ids"]
    tok_info: dict = {
        "reference": "spec",
        "implementations": {
            "spec": "tokenizers BPE from the GGUF's tokens+merges; pre_tokenizer Sequence[Digits(individual_digits=True), "
            "ByteLevel(add_prefix_space=False, use_regex=True)]; ByteLevel decoder; control tokens (token_type 3) as special",
            "pure_python": "this script's PurePythonSmolLM: \\p{N} isolated, then the GPT-2 regex, then BPE by merge rank",
            "transformers": f"AutoTokenizer.from_pretrained(folder, gguf_file=name), called with add_special_tokens=False; "
            f"its class {type(hf_tok).__name__}, pre_tokenizer {hf_tok.backend_tokenizer.pre_tokenizer}",
            "gguf2mlx": g_note,
        },
        "why_reference_is_spec": (
            "GGUF tokenizer.ggml.pre is 'smollm' (llama.cpp LLAMA_VOCAB_PRE_TYPE_SMOLLM: regex '\\p{N}' then the GPT-2 "
            "regex, applied in sequence). Neither transformers' GGUF converter (plain GPT-2 ByteLevel regex) nor "
            "gguf2mlx (unsupported-pre fallback: Qwen-style regex + NFC) implements it, so the reference ids come from "
            "the spec tokenizer, cross-checked against an independent pure-Python implementation (identical on the "
            "mixed text and every probe)."
        ),
        "gguf_metadata": {k: meta[k] for k in ("model", "pre", "bos_token_id", "eos_token_id", "padding_token_id", "add_bos_token")},
        "transformers_special_tokens": {
            "bos": [hf_tok.bos_token, hf_tok.bos_token_id],
            "eos": [hf_tok.eos_token, hf_tok.eos_token_id],
            "pad": [hf_tok.pad_token, hf_tok.pad_token_id],
            "prepends_by_default": hf_ids_default[: len(hf_ids_default) - len(hf_ids)] if hf_ids_default[-len(hf_ids):] == hf_ids else "n/a",
        },
        "mixed_text": {
            "n_tokens": len(ref_ids),
            "spec_equals_pure_python": True,
            "decodes_to_text": True,
            "transformers_agrees": hf_ids == ref_ids,
            "transformers_ids_decode_to_text": hf_tok.decode(hf_ids) == MIXED_TEXT,
            "transformers_differences": diff_runs(ref_ids, hf_ids, dec),
        },
    }
    arrays: dict[str, np.ndarray] = {
        "mixed_ids": np.array(ref_ids, np.int32),
        "mixed_ids_transformers": np.array(hf_ids, np.int32),
    }
    if g_tok is not None:
        g_ids = g_tok(MIXED_TEXT, add_special_tokens=False)["input_ids"]
        arrays["mixed_ids_gguf2mlx"] = np.array(g_ids, np.int32)
        tok_info["mixed_text"]["gguf2mlx_agrees"] = g_ids == ref_ids
        tok_info["mixed_text"]["gguf2mlx_ids_decode_to_text"] = g_tok.decode(g_ids) == MIXED_TEXT
        tok_info["mixed_text"]["gguf2mlx_differences"] = diff_runs(ref_ids, g_ids, dec)

    probes = []
    for s in DIGIT_PROBES:
        a = spec.encode(s, add_special_tokens=False).ids
        assert a == pure.encode(s), s
        row = {"text": s, "spec": a, "transformers": hf_tok(s, add_special_tokens=False)["input_ids"]}
        if g_tok is not None:
            row["gguf2mlx"] = g_tok(s, add_special_tokens=False)["input_ids"]
        row["pieces"] = [dec([i]) for i in a]
        probes.append(row)
    tok_info["digit_probes"] = probes
    tok_info["digit_handling_summary"] = (
        "The GGUF vocabulary has exactly ten digit tokens ('0'..'9') and no merge involving a digit, so every "
        "implementation emits digit runs one digit per token. The difference is in the whitespace in front of a "
        "digit: with 'smollm' the number is isolated first, so a preceding whitespace run stays whole (e.g. "
        "'\\n\\n 1' -> ['\\n\\n ', '1'], '  12' -> ['  ', '1', '2']); transformers' plain GPT-2 regex attaches "
        "one space to the number (' ?\\p{N}+') and that space becomes its own token ('\\n\\n', ' ', '1'). Non-ASCII "
        "numbers (e.g. Arabic-Indic '٣') after a space differ the same way."
    )

    # ---------------- chat prompts ----------------
    from jinja2 import Template

    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    eos_id = int(meta["eos_token_id"])
    chats = []
    for k, p in enumerate(CHAT_PROMPTS):
        rendered = hf_tok.apply_chat_template(p["messages"], add_generation_prompt=True, tokenize=False)
        direct = Template(meta["chat_template"]).render(messages=p["messages"], add_generation_prompt=True)
        ids = spec.encode(rendered, add_special_tokens=False).ids
        assert ids == pure.encode(rendered)
        hf_chat = hf_tok(rendered, add_special_tokens=False)["input_ids"]
        x = torch.tensor([ids])
        with torch.no_grad():
            logits = model(x).logits[0].float()  # [T, V]
        top = torch.topk(logits, TOPK, dim=-1)
        # greedy, exactly GREEDY_TOKENS tokens (not stopped at EOS), with KV cache
        gen, margins = [], []
        with torch.no_grad():
            out = model(x, use_cache=True)
            past, nxt = out.past_key_values, out.logits[0, -1]
            for _ in range(GREEDY_TOKENS):
                t2 = torch.topk(nxt, 2)
                tid = int(t2.indices[0])
                gen.append(tid)
                margins.append(float(t2.values[0] - t2.values[1]))
                out = model(torch.tensor([[tid]]), past_key_values=past, use_cache=True)
                past, nxt = out.past_key_values, out.logits[0, -1]
        arrays[f"chat{k}_ids"] = np.array(ids, np.int32)
        arrays[f"chat{k}_last_logits"] = logits[-1].numpy().astype(np.float32)
        arrays[f"chat{k}_topk_ids"] = top.indices.numpy().astype(np.int32)
        arrays[f"chat{k}_topk_values"] = top.values.numpy().astype(np.float32)
        arrays[f"chat{k}_greedy_ids"] = np.array(gen, np.int32)
        arrays[f"chat{k}_greedy_margin"] = np.array(margins, np.float32)
        first_eos = gen.index(eos_id) if eos_id in gen else None
        chats.append(
            {
                "index": k,
                "name": p["name"],
                "messages": p["messages"],
                "rendered": rendered,
                "rendered_equals_direct_jinja_of_gguf_template": rendered == direct,
                "n_tokens": len(ids),
                "transformers_ids_agree (add_special_tokens=False)": hf_chat == ids,
                "greedy_text": dec(gen),
                "greedy_text_until_eos": dec(gen[:first_eos]) if first_eos is not None else dec(gen),
                "greedy_first_eos_index": first_eos,
                "greedy_min_top2_margin": min(margins),
                "greedy_min_top2_margin_until_eos": min(margins[: (first_eos if first_eos is not None else len(margins)) + 1]),
            }
        )

    # ---------------- write ----------------
    args.out.parent.mkdir(parents=True, exist_ok=True)
    npz_path = args.out.with_suffix(".npz")
    np.savez_compressed(npz_path, **arrays)
    doc = {
        "what": "Independent PyTorch/transformers reference for SmolLM2-135M-Instruct (Q4_1 GGUF) made by "
        "scripts/reference_logits.py; arrays in the .npz of the same name",
        "gguf": {"file": args.gguf.name, "sha256": sha256(args.gguf)},
        "model": "transformers AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=float32, "
        "attn_implementation='eager'): weights dequantized from Q4_1/Q8_0 to float32, computed in float32 on CPU",
        "versions": versions,
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "torch_threads": torch.get_num_threads()},
        "mixed_text": MIXED_TEXT,
        "tokenizer": tok_info,
        "chat_prompts": chats,
        "arrays": {
            "mixed_ids": "int32 [N]: reference (spec) ids of mixed_text, no special tokens added",
            "mixed_ids_transformers": "int32: transformers' GGUF tokenizer ids of mixed_text (add_special_tokens=False)",
            "mixed_ids_gguf2mlx": "int32: gguf2mlx tokenizer ids of mixed_text (if gguf2mlx was installed)",
            "chat{k}_ids": "int32 [T]: reference ids of chat_prompts[k].rendered (the rendered string already starts "
            "with <|im_start|>; nothing else is prepended)",
            "chat{k}_last_logits": "float32 [49152]: full-vocab logits at the last prompt position",
            "chat{k}_topk_ids": f"int32 [T, {TOPK}]: top-{TOPK} token ids at every prompt position, by value descending",
            "chat{k}_topk_values": f"float32 [T, {TOPK}]: the matching logits",
            "chat{k}_greedy_ids": f"int32 [{GREEDY_TOKENS}]: greedy continuation, exactly {GREEDY_TOKENS} tokens, not "
            f"stopped at EOS (id {eos_id}; see greedy_first_eos_index)",
            "chat{k}_greedy_margin": "float32: top1 - top2 logit at each greedy step (small = fragile step)",
        },
    }
    json_path = args.out.with_suffix(".json")
    json_path.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")

    print("versions:", json.dumps(versions))
    print(f"wrote {npz_path} ({npz_path.stat().st_size} bytes), {json_path} ({json_path.stat().st_size} bytes)")
    for k, v in arrays.items():
        print(f"  {k:28s} {str(v.dtype):8s} {v.shape}")
    mt = tok_info["mixed_text"]
    print(f"mixed text: {mt['n_tokens']} tokens; transformers agrees: {mt['transformers_agrees']} "
          f"({len(mt['transformers_differences'])} differing spans); gguf2mlx agrees: {mt.get('gguf2mlx_agrees')}"
          f" ({len(mt.get('gguf2mlx_differences', []))} differing spans)")
    for c in chats:
        print(f"chat {c['index']} {c['name']}: {c['n_tokens']} tokens, greedy: {c['greedy_text_until_eos']!r} "
              f"(min top1-top2 margin until EOS {c['greedy_min_top2_margin_until_eos']:.3f})")


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    sys.exit(main())
