"""Bad input: one line on stderr, a non-zero exit, never a traceback."""

import json
import os
import shutil
import subprocess
import sys

import pytest


def run_cli(*args, env_extra=None):
    env = dict(os.environ, MLX_KV_OPENBLAS="0", HF_HUB_OFFLINE="1")
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "mlx_kv.cli", *args], capture_output=True, text=True,
                          env=env, timeout=120)


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("bad")
    corrupt = root / "corrupt-model"
    shutil.copytree(tiny_model_dir, corrupt)
    weights = corrupt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    gemma = root / "gemma-model"
    shutil.copytree(tiny_model_dir, gemma)
    config = json.loads((gemma / "config.json").read_text())
    config["model_type"] = "gemma2"
    (gemma / "config.json").write_text(json.dumps(config))
    huge = root / "huge-model"
    shutil.copytree(tiny_model_dir, huge)
    config = json.loads((huge / "config.json").read_text())
    config["num_hidden_layers"] = 10**9
    (huge / "config.json").write_text(json.dumps(config))
    pickled = root / "pickle-model"
    shutil.copytree(tiny_model_dir, pickled)
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    (root / "binary.txt").write_bytes(bytes(range(256)) * 4)
    (root / "latin1.txt").write_bytes("d\xe9j\xe0 vu".encode("latin-1"))
    (root / "empty.txt").write_text("")
    return root


CASES = [
    ("missing model path", ["generate", "hi", "--model", "/no/such/folder"], "does not exist"),
    ("hub id offline", ["generate", "hi", "--model", "nobody/no-such-model-xyz"], "hub"),
    ("corrupt safetensors", ["generate", "hi", "--model", "{root}/corrupt-model"], "cannot load"),
    ("unsupported architecture", ["generate", "hi", "--model", "{root}/gemma-model"], "not supported"),
    ("insane config", ["generate", "hi", "--model", "{root}/huge-model"], "num_hidden_layers"),
    ("pickle weights only", ["generate", "hi", "--model", "{root}/pickle-model"], "pickle"),
    ("binary document", ["ingest", "{root}/binary.txt", "--model", "{model}"], "binary"),
    ("undecodable document", ["ingest", "{root}/latin1.txt", "--model", "{model}"], "UTF-8"),
    ("empty document", ["ingest", "{root}/empty.txt", "--model", "{model}"], "empty"),
    ("missing document", ["ingest", "{root}/nope.txt", "--model", "{model}"], "does not exist"),
    ("budget below sinks + window", ["generate", "hi", "--model", "{model}", "--budget", "10"], "sinks + window"),
    ("zero budget", ["generate", "hi", "--model", "{model}", "--budget", "0"], "positive"),
    ("negative window", ["generate", "hi", "--model", "{model}", "--window", "-4"], "window"),
    ("unreadable size", ["generate", "hi", "--model", "{model}", "--budget", "lots"], "size"),
    ("unknown policy", ["generate", "hi", "--model", "{model}", "--policy", "lru"], "unknown policy"),
    ("unknown flag value", ["ingest", "x.txt", "--errors", "ignore"], "invalid choice"),
    ("unknown command", ["frobnicate"], "invalid choice"),
]


@pytest.mark.parametrize("name, args, expect", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_line(bad_inputs, tiny_model_dir, name, args, expect):
    args = [a.format(root=bad_inputs, model=tiny_model_dir) for a in args]
    result = run_cli(*args)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("mlx-kv:")]
    assert len(errors) == 1, result.stderr  # progress lines ("fetching ...") may precede it
    assert result.stderr.rstrip().endswith(errors[0])
    assert "Traceback" not in result.stderr
    assert expect in errors[0], errors[0]


def test_replace_loads_undecodable_text(bad_inputs, tiny_model_dir):
    result = run_cli("ingest", f"{bad_inputs}/latin1.txt", "--model", str(tiny_model_dir), "--errors", "replace")
    assert result.returncode == 0, result.stderr
    assert "loaded latin1.txt" in result.stderr


def test_headmask_outside_the_compress_setting_is_one_line_before_any_model_loads(capsys):
    from mlx_kv.cli import main

    assert main(["bench", "niah", "--model", "/no/such/model", "--policies", "kvzip+headmask",
                 "--setting", "stream"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--setting compress" in err[0]
