"""GGUF files: read, checked, converted into folders plain mlx_lm.load opens."""

import json
import shutil

import mlx.core as mx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import build_model
from gguf_files import byte_level_tokenizer_metadata, llama_gguf, write_gguf
from mlx_kv.gguf import GGUFError, convert_gguf, read_gguf
from mlx_kv.gguf.reader import GGML_TYPES

TEXTS = ["The quick brown fox jumps over the lazy dog. " * 20, "def f(x):\n    return x * 42\n" * 10,
         "Caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u4f60\u597d 12345 3.14159 " * 10]


@pytest.fixture(scope="module")
def tokenizer_meta():
    return byte_level_tokenizer_metadata(TEXTS)


@pytest.fixture(scope="module")
def llama_file(tmp_path_factory, tokenizer_meta):
    """A llama GGUF (Q4_0, Q4_1, Q8_0, F16, BF16, F32 tensors) and the model it decodes to."""
    meta, _ = tokenizer_meta
    model = build_model("llama", vocab_size=len(meta["tokenizer.ggml.tokens"]))
    path = tmp_path_factory.mktemp("gguf") / "tiny-llama.Q4_1.gguf"
    llama_gguf(path, model, meta)
    return path, model


def test_header_reads_metadata_and_tensor_table(llama_file):
    path, model = llama_file
    gguf = read_gguf(path)
    assert gguf.version == 3 and gguf.get("general.architecture") == "llama"
    assert gguf.tensors["blk.0.attn_q.weight"].type_name == "Q4_1"
    assert gguf.tensors["blk.1.ffn_down.weight"].type_name == "BF16"
    assert gguf.tensors["token_embd.weight"].shape == (model.args.vocab_size, model.args.hidden_size)
    assert all(info.offset + info.nbytes <= gguf.size for info in gguf.tensors.values())


def logits(model, ids):
    return model(mx.array([ids]))[0].astype(mx.float32)


def test_converted_folder_loads_in_plain_mlx_lm_and_matches_the_file(llama_file, tmp_path):
    import mlx_lm

    path, reference = llama_file
    out = convert_gguf(path, tmp_path / "converted")
    config = json.loads((out / "config.json").read_text())
    assert config["quantization"]["bits"] == 4
    assert config["quantization"]["model.embed_tokens"] == {"group_size": 32, "bits": 8}
    assert config["quantization"]["model.layers.0.self_attn.v_proj"] == {"group_size": 32, "bits": 8}
    model, tokenizer = mlx_lm.load(str(out))
    ids = list(range(3, 40))
    expected = logits(reference, ids)
    got = logits(model, ids)
    # same values, MLX's quantized matmul instead of a float one: rounding-level differences
    assert float(mx.abs(got - expected).max()) < 2e-3 * float(mx.abs(expected).max())
    assert (mx.argmax(got, axis=-1) == mx.argmax(expected, axis=-1)).all()


def test_float32_weights_match_the_file_exactly(llama_file, tmp_path):
    from mlx_kv.models import load_model

    path, reference = llama_file
    model, _, name = load_model(str(convert_gguf(path, tmp_path / "converted")), weights="float32")
    assert name.endswith("(float32)")
    ids = list(range(3, 40))
    assert float(mx.abs(logits(model, ids) - logits(reference, ids)).max()) < 1e-4


def test_gguf_path_is_a_model_everywhere(llama_file, tmp_path, monkeypatch):
    """--model FILE.gguf: converted once into the cache, then reused."""
    from mlx_kv.models import resolve_model_path

    monkeypatch.setenv("MLX_KV_CACHE_DIR", str(tmp_path / "cache"))
    path, _ = llama_file
    messages = []
    first = resolve_model_path(str(path), messages.append)
    assert (first / "config.json").is_file() and first.parent == tmp_path / "cache" / "models"
    assert any("converting" in m for m in messages)
    messages.clear()
    assert resolve_model_path(str(path), messages.append) == first and not messages


def test_tokenizer_matches_the_one_the_metadata_came_from(llama_file, tokenizer_meta, tmp_path):
    import mlx_lm

    _, original = tokenizer_meta
    path, _ = llama_file
    _, tokenizer = mlx_lm.load(str(convert_gguf(path, tmp_path / "converted")))
    for text in TEXTS + ["unseen words \u00e9\u00e8 99 \n\n  spaces", "<|im_start|>user\nhi<|im_end|>"]:
        assert tokenizer.encode(text, add_special_tokens=False) == original.encode(text).ids
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True,
                                             tokenize=False)
    assert rendered == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert tokenizer.eos_token_ids == {2}


def test_a_killed_conversion_leaves_nothing_at_the_destination(llama_file, tmp_path, monkeypatch):
    import mlx_kv.gguf.convert as convert

    path, _ = llama_file

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(convert, "_fsync_tree", boom)
    with pytest.raises(KeyboardInterrupt):
        convert_gguf(path, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []
    # a partial folder left by a process that died is cleaned up by the next conversion
    (tmp_path / ".out.partial-999999999").mkdir()
    monkeypatch.undo()
    convert_gguf(path, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def _rewrite(path, tmp_path, **changes):
    """A copy of the file with metadata keys changed (None removes a key)."""
    gguf = read_gguf(path)
    meta = dict(gguf.metadata)
    for key, value in changes.items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    raw = path.read_bytes()
    tensors = {name: (info.ggml_type, raw[info.offset:info.offset + info.nbytes], info.shape)
               for name, info in gguf.tensors.items()}
    out = tmp_path / f"changed-{len(list(tmp_path.iterdir()))}.gguf"
    write_gguf(out, meta, tensors)
    return out


@pytest.mark.parametrize("changes, message", [
    ({"general.architecture": "gemma2"}, "supported GGUF architectures"),
    ({"tokenizer.ggml.tokens": None}, "has no tokenizer"),
    ({"tokenizer.ggml.pre": "tekken"}, "pre-tokenizer 'tekken'"),
    ({"tokenizer.ggml.model": "bert"}, "uses tokenizer 'bert'"),
    ({"llama.block_count": None}, "lacks the metadata llama.block_count"),
])
def test_unsupported_files_are_one_line_errors(llama_file, tmp_path, changes, message):
    path, _ = llama_file
    with pytest.raises(GGUFError, match=message):
        convert_gguf(_rewrite(path, tmp_path, **changes), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_truncated_and_foreign_files_are_one_line_errors(llama_file, tmp_path):
    path, _ = llama_file
    raw = path.read_bytes()
    data_end = max(info.offset + info.nbytes for info in read_gguf(path).tensors.values())
    for cut in (10, 200, len(raw) // 2, data_end - 1):
        (tmp_path / "cut.gguf").write_bytes(raw[:cut])
        with pytest.raises(GGUFError, match="truncated|too short"):
            read_gguf(tmp_path / "cut.gguf")
    (tmp_path / "foreign.gguf").write_bytes(b"PK\x03\x04" + raw[4:])
    with pytest.raises(GGUFError, match="not a GGUF file"):
        read_gguf(tmp_path / "foreign.gguf")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_headers_fail_with_one_line_or_read(llama_file, tmp_path, data):
    """Damaged bytes anywhere in the header: a GGUFError or a consistent read, never anything else."""
    path, _ = llama_file
    raw = bytearray(path.read_bytes()[:4096])
    for _ in range(data.draw(st.integers(1, 8))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(24, len(raw)))
    target = tmp_path / "fuzz.gguf"
    target.write_bytes(bytes(raw[:cut]))
    try:
        gguf = read_gguf(target)
    except GGUFError as exc:
        assert "\n" not in str(exc)
        return
    assert all(info.offset + info.nbytes <= gguf.size and info.ggml_type in GGML_TYPES
               for info in gguf.tensors.values())


def test_cli_convert_and_bad_gguf_errors(llama_file, tmp_path):
    import subprocess
    import sys

    path, _ = llama_file
    env = {"MLX_KV_OPENBLAS": "0", "MLX_KV_CACHE_DIR": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"}
    run = lambda *a: subprocess.run([sys.executable, "-m", "mlx_kv.cli", *a], capture_output=True, text=True,
                                    env=env, timeout=120)
    done = run("convert", str(path), str(tmp_path / "out"))
    assert done.returncode == 0 and (tmp_path / "out" / "model.safetensors").is_file(), done.stderr
    again = run("convert", str(path), str(tmp_path / "out"))
    assert again.returncode == 2 and "already exists" in again.stderr
    shutil.copy(path, tmp_path / "cut.gguf")
    with open(tmp_path / "cut.gguf", "r+b") as f:
        f.truncate(path.stat().st_size // 2)
    bad = run("generate", "hi", "--model", str(tmp_path / "cut.gguf"))
    assert bad.returncode == 2 and "truncated" in bad.stderr and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_a_file_missing_a_layer_tensor_is_refused_before_it_is_written(llama_file, tmp_path):
    path, _ = llama_file
    gguf = read_gguf(path)
    raw = path.read_bytes()
    tensors = {name: (info.ggml_type, raw[info.offset:info.offset + info.nbytes], info.shape)
               for name, info in gguf.tensors.items() if name != "blk.1.ffn_up.weight"}
    write_gguf(tmp_path / "holey.gguf", gguf.metadata, tensors)
    with pytest.raises(GGUFError, match="does not make a complete model"):
        convert_gguf(tmp_path / "holey.gguf", tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["holey.gguf"]


@pytest.mark.parametrize("key, value", [("llama.attention.head_count", 0), ("llama.block_count", 10**9),
                                        ("llama.attention.head_count_kv", 3)])
def test_absurd_sizes_are_refused(llama_file, tmp_path, key, value):
    path, _ = llama_file
    with pytest.raises(GGUFError, match="sane range|not a multiple"):
        convert_gguf(_rewrite(path, tmp_path, **{key: value}), tmp_path / "out")


def test_sentencepiece_vocabularies_tokenize_as_sentencepiece_does():
    """Llama 2 / Mistral GGUFs carry SentencePiece pieces and scores, no merges."""
    import io
    from pathlib import Path

    import numpy as np
    import sentencepiece as spm

    from mlx_kv.gguf.reader import GGUFFile
    from mlx_kv.gguf.tokenizer import build_tokenizer

    proto = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(TEXTS * 5 + ["hello world " * 50]), model_writer=proto, vocab_size=420,
        model_type="bpe", byte_fallback=True, normalization_rule_name="identity", add_dummy_prefix=True,
        remove_extra_whitespaces=False, split_digits=True, character_coverage=1.0, bos_id=1, eos_id=2, unk_id=0,
        pad_id=-1, minloglevel=2)
    sp = spm.SentencePieceProcessor(model_proto=proto.getvalue())
    n = sp.get_piece_size()
    # token types as llama.cpp's converter writes them
    types = [2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 5 if sp.is_unused(i) else 6 if sp.is_byte(i)
             else 1 for i in range(n)]
    meta = {"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": [sp.id_to_piece(i) for i in range(n)],
            "tokenizer.ggml.scores": np.array([sp.get_score(i) for i in range(n)], np.float32),
            "tokenizer.ggml.token_type": np.array(types, np.int32), "tokenizer.ggml.bos_token_id": 1,
            "tokenizer.ggml.eos_token_id": 2, "tokenizer.ggml.unknown_token_id": 0,
            "general.architecture": "llama"}
    tokenizer, config = build_tokenizer(GGUFFile(Path("spm.gguf"), 3, meta, {}, 0))
    assert config["add_bos_token"] and config["bos_token"] == "<s>"
    for text in TEXTS + ["unseen Z\u00fcrich 2024 \u2713 na\u00efve", "  two  spaces\nnewline", "the cat"]:
        ids = tokenizer.encode(text, add_special_tokens=False).ids
        assert ids == sp.encode(text), text
        assert tokenizer.decode(ids) == sp.decode(ids)
    assert tokenizer.encode("hi").ids[0] == 1  # the BOS a llama tokenizer adds


METADATA_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40), st.floats(), st.text(max_size=12),
                            st.lists(st.integers(-5, 5), max_size=4), st.lists(st.text(max_size=4), max_size=4))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=st.dictionaries(st.sampled_from([
    "general.architecture", "llama.block_count", "llama.embedding_length", "llama.feed_forward_length",
    "llama.attention.head_count", "llama.attention.head_count_kv", "llama.attention.key_length",
    "llama.attention.layer_norm_rms_epsilon", "llama.rope.freq_base", "llama.context_length",
    "llama.rope.scaling.type", "llama.rope.scaling.factor", "tokenizer.ggml.model", "tokenizer.ggml.pre",
    "tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type", "tokenizer.ggml.scores",
    "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.chat_template"]),
    METADATA_VALUES, min_size=1, max_size=3))
def test_fuzzed_metadata_values_fail_with_one_line_or_convert(llama_file, changes):
    """A header that reads but whose values have the wrong type or size (what
    a buggy converter writes): the config and tokenizer builders refuse it
    with a GGUFError, never another exception. (The header fuzzer above
    checks the reader; this checks what reads the metadata.)"""
    from mlx_kv.gguf.convert import model_config
    from mlx_kv.gguf.reader import GGUFFile
    from mlx_kv.gguf.tokenizer import build_tokenizer

    path, _ = llama_file
    gguf = read_gguf(path)
    meta = dict(gguf.metadata)
    for key, value in changes.items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    changed = GGUFFile(gguf.path, gguf.version, meta, gguf.tensors, gguf.size)
    try:
        model_config(changed)
        build_tokenizer(changed)
    except GGUFError as exc:
        assert "\n" not in str(exc)
