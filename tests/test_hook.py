"""heap_hook: attention routed through the heap inside the block, and put back however it ends."""

import mlx_lm.models.llama as llama_module
import pytest
from mlx_lm.models.base import scaled_dot_product_attention as original

from conftest import build_model
from mlx_kv import HeapConfig, heap_hook, install, make_heap_cache, uninstall
from mlx_kv.hook import is_installed


def test_the_block_installs_and_removes_the_hook_even_when_it_raises():
    model = build_model("llama")
    with pytest.raises(RuntimeError):
        with heap_hook(model):
            assert is_installed(model) and llama_module.scaled_dot_product_attention is not original
            make_heap_cache(model, HeapConfig(budget=128))
            raise RuntimeError("boom")
    assert llama_module.scaled_dot_product_attention is original


def test_a_hook_installed_before_the_block_stays_and_uninstall_without_a_model_finds_it():
    model = build_model("llama")
    install(model)
    with heap_hook(model):
        pass
    assert is_installed(model)
    uninstall()  # every patched module, found from the modules themselves
    assert llama_module.scaled_dot_product_attention is original and not is_installed(model)
