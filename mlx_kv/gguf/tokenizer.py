"""A Hugging Face `tokenizers` tokenizer rebuilt from GGUF metadata.

GGUF stores the vocabulary, and for byte-level BPE the merges, but not the
pre-tokenizer: only its name (`tokenizer.ggml.pre`), which stands for
llama.cpp's built-in split rules. Those rules are rebuilt here by name; an
unknown name is refused rather than guessed, since a wrong split gives a
model text it was never trained on without any error.

Two tokenizer models:
- "gpt2": byte-level BPE (SmolLM2, Llama 3, Qwen2): vocabulary + merges.
- "llama": SentencePiece (Llama 2, Mistral 7B): vocabulary + scores. A
  SentencePiece BPE merges the pair whose merged piece scores highest, so the
  merge list is every in-vocabulary split of each piece, ordered by that
  piece's score (the construction Hugging Face uses for these files); bytes
  outside the vocabulary fall back to <0xNN> tokens.
"""

from __future__ import annotations

from typing import Any

from mlx_kv.gguf.reader import GGUFError, GGUFFile

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

# llama.cpp's split regexes for the BPE pre-tokenizers it names (llama-vocab.cpp)
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
BPE_PRE = ("default", "gpt-2", "gpt2", "smollm", "llama-bpe", "llama3", "qwen2", "deepseek-r1-qwen")


def build_tokenizer(gguf: GGUFFile) -> tuple[Any, dict[str, Any]]:
    """(tokenizers.Tokenizer, tokenizer_config.json contents)."""
    kind = gguf.get("tokenizer.ggml.model")
    tokens = gguf.get("tokenizer.ggml.tokens")
    name = gguf.path.name
    if kind is None or not isinstance(tokens, list) or not tokens:
        raise GGUFError(f"model: {name} has no tokenizer (tokenizer.ggml.model/tokens missing); "
                        "mlx-kv needs a GGUF that carries its tokenizer")
    _check_metadata(gguf, tokens)
    types = gguf.get("tokenizer.ggml.token_type")
    types = [NORMAL] * len(tokens) if types is None else [int(t) for t in types]
    if len(types) != len(tokens):
        raise GGUFError(f"model: {name} is corrupt ({len(tokens)} tokens but {len(types)} token types)")
    if kind == "gpt2":
        tokenizer = _byte_level_bpe(gguf, tokens)
    elif kind == "llama":
        tokenizer = _sentencepiece_bpe(gguf, tokens, types)
    else:
        raise GGUFError(f"model: {name} uses tokenizer {kind!r}; supported: gpt2 (byte-level BPE), "
                        "llama (SentencePiece)")
    _add_special_tokens(tokenizer, tokens, types)
    config = _tokenizer_config(gguf, tokens, tokenizer)
    return tokenizer, config


_TEXT_KEYS = ("tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.chat_template")
_FLAG_KEYS = ("tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_eos_token", "tokenizer.ggml.add_space_prefix")
_ID_KEYS = tuple(f"tokenizer.ggml.{k}_token_id" for k in ("bos", "eos", "eot", "eom", "unknown", "padding",
                                                          "separator"))


def _check_metadata(gguf: GGUFFile, tokens: list) -> None:
    """Every tokenizer field, of the type and size the builders below read it
    as: a damaged or foreign file is refused here in one line, not by a
    TypeError deep inside (tests/test_gguf.py fuzzes these values)."""
    import numpy as np

    name, n = gguf.path.name, len(tokens)

    def bad(key: str, what: str) -> GGUFError:
        return GGUFError(f"model: {name} has a damaged {key} ({what})")

    def numbers(value: Any, kinds: str) -> bool:
        if isinstance(value, np.ndarray):
            return value.ndim == 1 and value.dtype.kind in kinds
        allowed = (int,) if kinds == "iu" else (int, float)
        return isinstance(value, list) and all(isinstance(v, allowed) and not isinstance(v, bool) for v in value)

    if not all(isinstance(t, str) for t in tokens):
        raise bad("tokenizer.ggml.tokens", "not all of them are text")
    for key in _TEXT_KEYS:
        if gguf.get(key) is not None and not isinstance(gguf.get(key), str):
            raise bad(key, "not text")
    for key in _FLAG_KEYS:
        if gguf.get(key) is not None and not isinstance(gguf.get(key), (bool, int)):
            raise bad(key, "not a flag")
    for key in _ID_KEYS:
        value = gguf.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < n):
            raise bad(key, f"not one of the {n} token ids")
    for key, kinds in (("tokenizer.ggml.token_type", "iu"), ("tokenizer.ggml.scores", "iuf")):
        value = gguf.get(key)
        if value is not None and not (numbers(value, kinds) and len(value) == n):
            raise bad(key, f"not {n} numbers")
    merges = gguf.get("tokenizer.ggml.merges")
    if merges is not None and not (isinstance(merges, list) and all(isinstance(m, str) for m in merges)):
        raise bad("tokenizer.ggml.merges", "not a list of text")
    scores = gguf.get("tokenizer.ggml.scores")
    if scores is not None and not np.isfinite(np.asarray(scores, dtype=np.float64)).all():
        raise bad("tokenizer.ggml.scores", "not finite")


def _byte_level_bpe(gguf: GGUFFile, tokens: list[str]):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors

    pre = gguf.get("tokenizer.ggml.pre", "default")
    if pre not in BPE_PRE:
        raise GGUFError(f"model: {gguf.path.name} names pre-tokenizer {pre!r}, which mlx-kv cannot rebuild; "
                        f"supported: {', '.join(BPE_PRE)}")
    merges = gguf.get("tokenizer.ggml.merges")
    if not isinstance(merges, list):
        raise GGUFError(f"model: {gguf.path.name} has a BPE tokenizer without merges")
    pairs = []
    for merge in merges:
        left, sep, right = merge.partition(" ")
        if not sep:
            raise GGUFError(f"model: {gguf.path.name} has a malformed merge {merge!r}")
        pairs.append((left, right))
    vocab: dict[str, int] = {}
    for i, token in enumerate(tokens):
        vocab.setdefault(token, i)
    llama3 = pre in ("llama-bpe", "llama3")
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=pairs, fuse_unk=False, ignore_merges=llama3))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    if pre == "smollm":  # digits one by one, then GPT-2's split
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    elif pre in ("default", "gpt-2", "gpt2"):
        tokenizer.pre_tokenizer = byte_level
    else:
        split = _LLAMA3_SPLIT if llama3 else _QWEN2_SPLIT
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(split), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)])
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    return tokenizer


def _sentencepiece_bpe(gguf: GGUFFile, tokens: list[str], types: list[int]):
    from tokenizers import Tokenizer, decoders, models, normalizers

    scores = gguf.get("tokenizer.ggml.scores")
    if scores is None or len(scores) != len(tokens):
        raise GGUFError(f"model: {gguf.path.name} has a SentencePiece tokenizer without one score per token")
    vocab: dict[str, int] = {}
    for i, token in enumerate(tokens):
        vocab.setdefault(token, i)
    mergeable = {t for t, kind in zip(tokens, types) if kind in (NORMAL, USER_DEFINED)}
    ranked = []
    for i, (piece, kind) in enumerate(zip(tokens, types)):
        if kind != NORMAL or len(piece) < 2:
            continue
        splits = [(piece[:k], piece[k:]) for k in range(1, len(piece))
                  if piece[:k] in mergeable and piece[k:] in mergeable]
        splits.sort(key=lambda lr: (vocab[lr[0]], vocab[lr[1]]))
        ranked.extend((-float(scores[i]), i, order, pair) for order, pair in enumerate(splits))
    ranked.sort(key=lambda r: r[:3])
    unk_id = int(gguf.get("tokenizer.ggml.unknown_token_id", 0))
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[r[3] for r in ranked], unk_token=tokens[unk_id],
                                     byte_fallback=True, fuse_unk=True))
    prefix = bool(gguf.get("tokenizer.ggml.add_space_prefix", True))
    steps = [normalizers.Prepend("\u2581")] if prefix else []
    tokenizer.normalizer = normalizers.Sequence(steps + [normalizers.Replace(" ", "\u2581")])
    tail = [decoders.Strip(" ", 1, 0)] if prefix else []
    tokenizer.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(),
                                           decoders.Fuse(), *tail])
    return tokenizer


def _add_special_tokens(tokenizer, tokens: list[str], types: list[int]) -> None:
    from tokenizers import AddedToken

    control = [AddedToken(t, special=True, normalized=False) for t, k in zip(tokens, types) if k == CONTROL]
    user = [AddedToken(t, special=False, normalized=False) for t, k in zip(tokens, types) if k == USER_DEFINED]
    if control:
        tokenizer.add_special_tokens(control)
    if user:
        tokenizer.add_tokens(user)


def _token(tokens: list[str], gguf: GGUFFile, key: str) -> str | None:
    value = gguf.get(f"tokenizer.ggml.{key}")
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(tokens):
        return tokens[value]
    return None


def _tokenizer_config(gguf: GGUFFile, tokens: list[str], tokenizer) -> dict[str, Any]:
    from tokenizers import processors

    bos = _token(tokens, gguf, "bos_token_id")
    add_bos = bool(gguf.get("tokenizer.ggml.add_bos_token", gguf.get("tokenizer.ggml.model") == "llama"))
    if add_bos and bos is not None:
        bos_id = tokens.index(bos)
        steps = [processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                               special_tokens=[(bos, bos_id)])]
        if gguf.get("tokenizer.ggml.model") == "gpt2":
            steps.insert(0, processors.ByteLevel(trim_offsets=False))
        tokenizer.post_processor = processors.Sequence(steps)
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "clean_up_tokenization_spaces": False,
        "add_bos_token": add_bos,
        "model_max_length": _context_length(gguf),
    }
    for field, key in (("bos_token", "bos_token_id"), ("eos_token", "eos_token_id"),
                       ("unk_token", "unknown_token_id"), ("pad_token", "padding_token_id")):
        token = _token(tokens, gguf, key)
        if token is not None:
            config[field] = token
    template = gguf.get("tokenizer.chat_template")
    if isinstance(template, str) and template.strip():
        config["chat_template"] = template
    return config


def _context_length(gguf: GGUFFile) -> int:
    value = gguf.get(f"{gguf.get('general.architecture')}.context_length", 4096)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 4096


def eos_token_ids(gguf: GGUFFile) -> list[int]:
    """Tokens that end a reply: the declared EOS and, where given, end-of-turn."""
    ids = []
    for key in ("eos_token_id", "eot_token_id", "eom_token_id"):
        value = gguf.get(f"tokenizer.ggml.{key}")
        if isinstance(value, int) and not isinstance(value, bool) and value not in ids:
            ids.append(value)
    return ids
