"""GGUF -> an mlx-lm model folder that plain `mlx_lm.load` opens.

The folder holds config.json (with mlx-lm's `quantization` block and
per-module overrides where widths differ, e.g. an 8-bit embedding beside
4-bit layers), model.safetensors, tokenizer.json and tokenizer_config.json
(with the GGUF's chat template). Q4_0/Q4_1/Q8_0 stay quantized bit for bit;
float tensors stay as they are.

llama.cpp stores Llama's q and k projections with their rows permuted for
its interleaved RoPE (convert_hf_to_gguf.py: per head, the two halves of the
rotary dimensions interleaved). mlx-lm rotates halves, so those rows are put
back; rows are whole output features, so this is exact on packed weights,
scales and biases alike. Qwen2/Qwen3 files are stored unpermuted.

The folder is written beside its final place and renamed into it, so a
conversion that is killed leaves no half-written model behind.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import re
import shutil
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import numpy as np

from mlx_kv.gguf.reader import GGUFError, GGUFFile, read_gguf
from mlx_kv.gguf.tensors import Quantized, decode
from mlx_kv.gguf.tokenizer import build_tokenizer, eos_token_ids
from mlx_kv.storage import fsync_folder, is_disk_full, pid_alive, room_note

ARCHITECTURES = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen3": "qwen3"}
_PERMUTED = {"llama"}  # GGUF architectures whose q/k rows llama.cpp permuted
_LAYER_NAMES = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm",
    "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
}
_TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_LAYER_RE = re.compile(r"^blk\.(\d+)\.([a-z_]+)\.(weight|bias)$")
_TOP_RE = re.compile(r"^([a-z_]+)\.(weight|bias)$")

Progress = Callable[[int, int, str], None]  # (done, total, what)


def model_config(gguf: GGUFFile) -> dict[str, Any]:
    """config.json for mlx-lm from the GGUF's metadata."""
    name = gguf.path.name
    arch = gguf.get("general.architecture")
    if not isinstance(arch, str) or arch not in ARCHITECTURES:
        raise GGUFError(f"model: {name} is a {str(arch)[:40]!r} model; supported GGUF architectures: "
                        f"{', '.join(sorted(ARCHITECTURES))}")

    def number(key: str, default: Any = None, whole: bool = True) -> Any:
        """A metadata number, refused unless it is one finite number (a whole one for sizes)."""
        value = gguf.get(f"{arch}.{key}", default)
        if value is None:
            raise GGUFError(f"model: {name} lacks the metadata {arch}.{key}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or (whole and value != int(value)):
            kind = "one whole number" if whole else "one finite number"
            raise GGUFError(f"model: {name} has {arch}.{key}={str(value)[:40]}; expected {kind}")
        return int(value) if whole else value

    heads = number("attention.head_count")
    hidden = number("embedding_length")
    kv_heads = gguf.get(f"{arch}.attention.head_count_kv", heads)
    if not isinstance(kv_heads, int) or isinstance(kv_heads, bool):
        raise GGUFError(f"model: {name} gives a KV head count per layer; mlx-kv needs one for all layers")
    embed = gguf.tensors.get("token_embd.weight")
    if embed is None:
        raise GGUFError(f"model: {name} has no token_embd.weight tensor")
    config: dict[str, Any] = {
        "model_type": ARCHITECTURES[arch],
        "hidden_size": hidden,
        "num_hidden_layers": number("block_count"),
        "intermediate_size": number("feed_forward_length"),
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": number("attention.key_length", hidden // max(1, heads)),
        "rms_norm_eps": _short(number("attention.layer_norm_rms_epsilon", 1e-5, whole=False)),
        "rope_theta": _short(number("rope.freq_base", 10000.0, whole=False)),
        "max_position_embeddings": number("context_length", 4096),
        "vocab_size": int(embed.shape[0]),
        "tie_word_embeddings": "output.weight" not in gguf.tensors,
    }
    scaling = gguf.get(f"{arch}.rope.scaling.type")
    if scaling == "linear":
        config["rope_scaling"] = {"type": "linear", "factor": float(number("rope.scaling.factor", 1.0, whole=False))}
    elif scaling not in (None, "none"):
        raise GGUFError(f"model: {name} uses RoPE scaling {str(scaling)[:40]!r}, which mlx-kv does not convert")
    if "rope_freqs.weight" in gguf.tensors:
        raise GGUFError(f"model: {name} carries per-dimension RoPE factors (Llama 3.1-style rope_freqs), "
                        "which mlx-kv does not convert yet; use the model's Hugging Face/MLX release")
    _check_sizes(name, config)
    eos = eos_token_ids(gguf)
    if eos:
        config["eos_token_id"] = eos if len(eos) > 1 else eos[0]
    bos = gguf.get("tokenizer.ggml.bos_token_id")
    if isinstance(bos, int):
        config["bos_token_id"] = bos
    return config


_SANE = {"hidden_size": 65536, "num_hidden_layers": 512, "intermediate_size": 1_000_000,
         "num_attention_heads": 1024, "num_key_value_heads": 1024, "head_dim": 4096, "vocab_size": 2_000_000}


def _check_sizes(name: str, config: dict[str, Any]) -> None:
    """Sizes a damaged header could make absurd, checked before anything is allocated."""
    for key, top in _SANE.items():
        if not 1 <= config[key] <= top:
            raise GGUFError(f"model: {name} gives {key}={config[key]}, outside the sane range 1..{top}")
    if config["num_attention_heads"] % config["num_key_value_heads"]:
        raise GGUFError(f"model: {name} has {config['num_attention_heads']} query heads, not a multiple of "
                        f"its {config['num_key_value_heads']} KV heads")


def _short(value: float) -> float:
    """A float32 from the file as the number it was written as (1e-05, not 9.99999974e-06)."""
    return float(str(np.float32(value)))


def mlx_name(gguf_name: str, n_layers: int) -> str:
    """`blk.3.attn_q.weight` -> `model.layers.3.self_attn.q_proj.weight`."""
    match = _LAYER_RE.match(gguf_name)
    if match and match.group(2) in _LAYER_NAMES and int(match.group(1)) < n_layers:
        return f"model.layers.{match.group(1)}.{_LAYER_NAMES[match.group(2)]}.{match.group(3)}"
    match = _TOP_RE.match(gguf_name)
    if match and match.group(1) in _TOP_NAMES:
        return f"{_TOP_NAMES[match.group(1)]}.{match.group(2)}"
    raise GGUFError(f"model: unexpected tensor {gguf_name!r} (not part of a llama/mistral/qwen model)")


def unpermute_rows(a: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's q/k row order: per head, rows (pair, half) -> (half, pair)."""
    rows = a.shape[0]
    if rows % (2 * n_heads):
        raise GGUFError(f"model: a q/k projection has {rows} rows, not a multiple of 2 x {n_heads} heads")
    return a.reshape(n_heads, rows // n_heads // 2, 2, *a.shape[1:]).swapaxes(1, 2).reshape(a.shape)


def convert_weights(gguf: GGUFFile, config: dict[str, Any], progress: Progress | None = None
                    ) -> tuple[dict[str, Any], dict[str, Any], Counter]:
    """(mlx arrays by name, the quantization block for config.json, GGUF type counts)."""
    import mlx.core as mx

    arch = gguf.get("general.architecture")
    n_layers = config["num_hidden_layers"]
    heads = {"self_attn.q_proj": config["num_attention_heads"], "self_attn.k_proj": config["num_key_value_heads"]}
    weights: dict[str, Any] = {}
    widths: dict[str, int] = {}
    types: Counter = Counter()
    rounded = 0
    with open(gguf.path, "rb") as f:  # (the map outlives the file; numpy views keep it alive until freed)
        buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    total = len(gguf.tensors)
    for done, info in enumerate(gguf.tensors.values(), 1):
        name = mlx_name(info.name, n_layers)
        types[info.type_name] += 1
        data = decode(buf, info)
        module, _, kind = name.rpartition(".")
        n_heads = next((h for suffix, h in heads.items() if module.endswith(suffix)), None)
        permute = arch in _PERMUTED and n_heads is not None
        if isinstance(data, Quantized):
            if kind != "weight":
                raise GGUFError(f"model: tensor {info.name!r} is quantized but is not a weight")
            for part, array in (("weight", data.weight), ("scales", data.scales), ("biases", data.biases)):
                array = unpermute_rows(array, n_heads) if permute else array
                weights[f"{module}.{part}"] = mx.array(np.ascontiguousarray(array))
            widths[module] = data.bits
            rounded += not data.exact
        else:
            array = unpermute_rows(data, n_heads) if permute else data
            weights[name] = mx.array(np.ascontiguousarray(array))
        if progress is not None:
            progress(done, total, info.name)
    quantization: dict[str, Any] = {}
    if widths:
        common = Counter(widths.values()).most_common(1)[0][0]
        quantization = {"group_size": 32, "bits": common}
        for module, bits in sorted(widths.items()):
            if bits != common:
                quantization[module] = {"group_size": 32, "bits": bits}
    if rounded:
        types["requantized"] = rounded
    return weights, quantization, types


def convert_gguf(source: str | Path, out_dir: str | Path, progress: Progress | None = None,
                 note: Callable[[str], None] | None = None) -> Path:
    """Write the mlx-lm folder for `source` at `out_dir` (which must not exist)."""
    source, out_dir = Path(source), Path(out_dir)
    if out_dir.exists():
        raise GGUFError(f"convert: {out_dir} already exists; remove it or choose another folder")
    gguf = read_gguf(source)
    config = model_config(gguf)
    tokenizer, tokenizer_config = build_tokenizer(gguf)
    if "chat_template" not in tokenizer_config and note is not None:
        note(f"{source.name} has no chat template; chats will use a plain User/Assistant format")
    partial = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_partials(out_dir)
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
    except OSError as exc:
        raise GGUFError(_write_failed(out_dir, exc)) from None
    try:
        weights, quantization, types = convert_weights(gguf, config, progress)
        if types.get("requantized") and note is not None:
            kinds = ", ".join(t for t in types if t not in ("F32", "F16", "BF16", "Q4_0", "Q4_1", "Q8_0",
                                                            "requantized"))
            note(f"{types['requantized']} tensors ({kinds}) were decoded and quantized again by MLX "
                 "(one more rounding than the file's own)")
        if quantization:
            config["quantization"] = config["quantization_config"] = quantization
        config["mlx_kv_source"] = {"gguf": source.name, "bytes": gguf.size, "tensor_types": dict(types)}
        _write_folder(partial, out_dir, weights, tokenizer, tokenizer_config, config)
        del weights
        _check_loads(partial, source.name)
        try:
            _fsync_tree(partial)
        except OSError as exc:
            raise GGUFError(_write_failed(out_dir, exc)) from None
        _publish(partial, out_dir)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return out_dir


def _write_folder(partial: Path, out_dir: Path, weights: dict[str, Any], tokenizer: Any,
                  tokenizer_config: dict[str, Any], config: dict[str, Any]) -> None:
    """The folder's files; a write that fails (a full disk, say) is one line."""
    import mlx.core as mx

    try:
        mx.save_safetensors(str(partial / "model.safetensors"), weights, metadata={"format": "mlx"})
        tokenizer.save(str(partial / "tokenizer.json"))
        (partial / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=1))
        (partial / "config.json").write_text(json.dumps(config, indent=1))
    except Exception as exc:  # noqa: BLE001 - OSError; MLX's RuntimeError and tokenizers' Exception keep no errno
        shutil.rmtree(partial, ignore_errors=True)  # first, so the message tells the room there is without it
        need = sum(int(w.nbytes) for w in weights.values())
        raise GGUFError(_write_failed(out_dir, exc, need)) from None


def _publish(partial: Path, out_dir: Path) -> None:
    """Rename the finished folder into place; another process that finished
    first (two terminals converting the same file) wins, and that is no error."""
    try:
        os.rename(partial, out_dir)
    except OSError as exc:
        if out_dir.exists():
            raise GGUFError(f"convert: {out_dir} already exists; remove it or choose another folder") from None
        raise GGUFError(_write_failed(out_dir, exc)) from None
    fsync_folder(out_dir.parent)


def _write_failed(out_dir: Path, exc: BaseException, need: int | None = None) -> str:
    if is_disk_full(exc, out_dir.parent):
        size = f" ({need / 2**20:.1f} MiB of weights)" if need else ""
        return (f"convert: no space left in {out_dir.parent}{room_note(out_dir.parent)} for the converted "
                f"model{size}")
    text = " ".join(str(getattr(exc, "strerror", None) or exc).split())[:200]
    return f"convert: cannot write {out_dir}: {type(exc).__name__}: {text}"


def _check_loads(folder: Path, name: str) -> None:
    """The folder must open in plain mlx-lm (every tensor present, every shape right)."""
    import mlx_lm

    try:
        mlx_lm.load(str(folder), lazy=True)
    except Exception as exc:
        text = " ".join(str(exc).split())[:200]
        raise GGUFError(f"model: {name} does not make a complete model ({type(exc).__name__}: {text})") from None


def remove_stale_partials(out_dir: Path) -> None:
    """Folders left by conversions that were killed (their process is gone)."""
    for stale in out_dir.parent.glob(f".{out_dir.name}.partial-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)


def _fsync_tree(folder: Path) -> None:
    for path in folder.iterdir():
        with open(path, "rb") as f:
            os.fsync(f.fileno())
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
