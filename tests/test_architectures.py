"""Random-weight models come from mlx-lm's public model modules, not its private _get_classes."""

import pytest

from mlx_kv.architectures import model_classes
from mlx_kv.models import SUPPORTED_TYPES


@pytest.mark.parametrize("model_type", sorted(SUPPORTED_TYPES))
def test_every_supported_type_has_public_classes(model_type):
    model_cls, args_cls = model_classes(model_type)
    assert model_cls.__name__ == "Model" and args_cls.__name__ == "ModelArgs"
    assert model_cls.__module__.startswith("mlx_lm.models.")


def test_mistral_runs_through_llama_as_in_mlx_lm_and_unknown_types_are_errors():
    assert model_classes("mistral")[0].__module__ == "mlx_lm.models.llama"
    with pytest.raises(ValueError, match="no architecture"):
        model_classes("no_such_arch")
