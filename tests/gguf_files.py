"""Writing small GGUF files for tests, the way llama.cpp's converter does.

Independent of mlx_kv.gguf on purpose: blocks are quantized here from the
format's definition (ggml-quants.c's reference quantizers, in numpy), q/k
rows are permuted as convert_hf_to_gguf.py permutes them, and the header is
written field by field, so reading these files back tests the reader,
decoder and un-permutation against the format rather than against themselves.
"""

from __future__ import annotations

import struct

import numpy as np

F32, F16, Q4_0, Q4_1, Q8_0, BF16 = 0, 1, 2, 3, 8, 30


def quantize(w: np.ndarray, ggml_type: int) -> tuple[bytes, np.ndarray]:
    """(block bytes, the float32 values those blocks decode to)."""
    w = np.asarray(w, dtype=np.float32)
    rows, cols = w.shape
    x = w.reshape(rows, cols // 32, 32)
    if ggml_type == Q8_0:
        d = (np.abs(x).max(axis=-1, keepdims=True) / 127.0).astype(np.float16)
        inv = np.where(d == 0, 0, 1.0 / np.where(d == 0, 1, d.astype(np.float32)))
        q = np.clip(np.round(x * inv), -128, 127).astype(np.int8)
        blocks = np.concatenate([d.view(np.uint8), q.view(np.uint8)], axis=-1)
        return blocks.tobytes(), (q.astype(np.float32) * d.astype(np.float32)).reshape(rows, cols)
    if ggml_type == Q4_0:
        idx = np.argmax(np.abs(x), axis=-1)[..., None]
        amax = np.take_along_axis(x, idx, axis=-1)  # signed value of largest magnitude
        d = (amax / -8.0).astype(np.float16)
        inv = np.where(d == 0, 0, 1.0 / np.where(d == 0, 1, d.astype(np.float32)))
        q = np.clip(np.floor(x * inv + 8.5), 0, 15).astype(np.uint8)
        packed = q[..., :16] | (q[..., 16:] << 4)
        blocks = np.concatenate([d.view(np.uint8), packed], axis=-1)
        return blocks.tobytes(), ((q.astype(np.float32) - 8) * d.astype(np.float32)).reshape(rows, cols)
    if ggml_type == Q4_1:
        lo, hi = x.min(axis=-1, keepdims=True), x.max(axis=-1, keepdims=True)
        d = ((hi - lo) / 15.0).astype(np.float16)
        m = lo.astype(np.float16)
        inv = np.where(d == 0, 0, 1.0 / np.where(d == 0, 1, d.astype(np.float32)))
        q = np.clip(np.floor((x - m.astype(np.float32)) * inv + 0.5), 0, 15).astype(np.uint8)
        packed = q[..., :16] | (q[..., 16:] << 4)
        blocks = np.concatenate([d.view(np.uint8), m.view(np.uint8), packed], axis=-1)
        values = q.astype(np.float32) * d.astype(np.float32) + m.astype(np.float32)
        return blocks.tobytes(), values.reshape(rows, cols)
    raise ValueError(ggml_type)


def encode_tensor(w: np.ndarray, ggml_type: int) -> tuple[bytes, np.ndarray]:
    w = np.asarray(w, dtype=np.float32)
    if ggml_type == F32:
        return w.tobytes(), w
    if ggml_type == F16:
        h = w.astype(np.float16)
        return h.tobytes(), h.astype(np.float32)
    if ggml_type == BF16:
        top = (w.view(np.uint32) >> 16).astype(np.uint16)  # truncation: exact for the decoded values
        return top.tobytes(), (top.astype(np.uint32) << 16).view(np.float32)
    return quantize(w, ggml_type)


def permute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """convert_hf_to_gguf.py's LlamaModel.permute (HF rows -> llama.cpp rows)."""
    return w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _string(s: str) -> bytes:
    raw = s.encode("utf-8")
    return struct.pack("<Q", len(raw)) + raw


def _value(v) -> tuple[int, bytes]:
    if isinstance(v, bool):
        return 7, struct.pack("<?", v)
    if isinstance(v, int):
        return 4, struct.pack("<I", v)
    if isinstance(v, float):
        return 6, struct.pack("<f", v)
    if isinstance(v, str):
        return 8, _string(v)
    if isinstance(v, np.ndarray):
        code = {np.dtype(np.int32): 5, np.dtype(np.float32): 6, np.dtype(np.uint32): 4}[v.dtype]
        return 9, struct.pack("<IQ", code, v.size) + v.tobytes()
    if isinstance(v, list) and all(isinstance(x, str) for x in v):
        return 9, struct.pack("<IQ", 8, len(v)) + b"".join(_string(x) for x in v)
    raise TypeError(type(v))


def write_gguf(path, metadata: dict, tensors: dict[str, tuple[int, bytes, tuple[int, ...]]],
               alignment: int = 32, version: int = 3) -> None:
    """tensors: name -> (ggml type, data bytes, numpy shape)."""
    header = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(metadata))
    for key, value in metadata.items():
        vtype, raw = _value(value)
        header += _string(key) + struct.pack("<I", vtype) + raw
    offset, infos, blobs = 0, b"", []
    for name, (ggml_type, data, shape) in tensors.items():
        dims = shape[::-1]
        infos += _string(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        infos += struct.pack("<IQ", ggml_type, offset)
        padded = data + b"\0" * (-len(data) % alignment)
        blobs.append(padded)
        offset += len(padded)
    head = header + infos
    head += b"\0" * (-len(head) % alignment)
    with open(path, "wb") as f:
        f.write(head + b"".join(blobs))


def byte_level_tokenizer_metadata(texts: list[str], vocab_size: int = 300):
    """(GGUF metadata, the `tokenizers` tokenizer it came from): a GPT-2-style
    byte-level BPE trained on `texts`."""
    import json

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<|im_start|>",
                                                                         "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    model = json.loads(tok.to_str())["model"]
    vocab = sorted(model["vocab"].items(), key=lambda kv: kv[1])
    tokens = [t for t, _ in vocab]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    types = np.array([3 if t.startswith("<|") else 1 for t in tokens], dtype=np.int32)
    return {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "default", "tokenizer.ggml.tokens": tokens,
            "tokenizer.ggml.token_type": types, "tokenizer.ggml.merges": merges,
            "tokenizer.ggml.bos_token_id": 0, "tokenizer.ggml.eos_token_id": 2,
            "tokenizer.chat_template": ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
                                        "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>"
                                        "assistant\n{% endif %}")}, tok


HF_NAMES = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
            "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
            "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm",
            "post_attention_layernorm": "ffn_norm"}
# a mix of every type the converter keeps exactly
TYPE_OF = {"attn_q": Q4_1, "attn_k": Q4_0, "attn_v": Q8_0, "attn_output": F16, "ffn_gate": Q4_1,
           "ffn_up": Q4_0, "ffn_down": BF16, "attn_norm": F32, "ffn_norm": F32}


def llama_gguf(path, model, metadata_extra: dict, embed_type: int = Q8_0) -> None:
    """Write `model` (an mlx-lm llama) as llama.cpp would, and load the values the
    file decodes to back into `model`, so that it is the reference for the file."""
    import mlx.core as mx
    from mlx.utils import tree_flatten, tree_unflatten

    args = model.args
    tensors, decoded = {}, {}
    for name, value in tree_flatten(model.parameters()):
        w = np.array(value.astype(mx.float32))
        if name == "model.embed_tokens.weight":
            gname, gtype = "token_embd.weight", embed_type
        elif name == "model.norm.weight":
            gname, gtype = "output_norm.weight", F32
        elif name == "lm_head.weight":
            gname, gtype = "output.weight", Q8_0
        else:
            _, _, layer, rest = name.split(".", 3)
            module = rest.rsplit(".", 1)[0]
            gname, gtype = f"blk.{layer}.{HF_NAMES[module]}.weight", TYPE_OF[HF_NAMES[module]]
        data, values = encode_tensor(w, gtype)
        decoded[name] = mx.array(values.reshape(w.shape))
        heads = {"attn_q": args.num_attention_heads, "attn_k": args.num_key_value_heads}
        kind = gname.split(".")[2] if gname.startswith("blk.") else None
        if kind in heads:
            rows = np.frombuffer(data, dtype=np.uint8).reshape(w.shape[0], -1)
            data = permute(rows, heads[kind]).tobytes()
        tensors[gname] = (gtype, data, w.shape)
    model.update(tree_unflatten(list(decoded.items())))
    metadata = {
        "general.architecture": "llama", "general.alignment": 32,
        "llama.block_count": args.num_hidden_layers, "llama.context_length": 2048,
        "llama.embedding_length": args.hidden_size, "llama.feed_forward_length": args.intermediate_size,
        "llama.attention.head_count": args.num_attention_heads,
        "llama.attention.head_count_kv": args.num_key_value_heads,
        "llama.attention.layer_norm_rms_epsilon": float(args.rms_norm_eps),
        "llama.rope.freq_base": float(args.rope_theta),
    }
    metadata.update(metadata_extra)
    write_gguf(path, metadata, tensors)
