"""Register the ``nas_encoder`` model type with transformers' ``AutoConfig`` and ``AutoModel``.

``import nas`` calls ``install()``; then ``AutoModel.from_pretrained(folder)`` loads an exported
``nas_encoder`` folder with the package's own classes, without ``trust_remote_code``. Importing
transformers' model code costs seconds (about 9 s on a busy 2-core machine), which ``import nas``
must not pay: if transformers' auto modules are not imported yet, the registration waits for them
(an import hook that runs it right after each finishes loading).
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
import warnings
from types import ModuleType

_CONFIG_AUTO = "transformers.models.auto.configuration_auto"
_MODEL_AUTO = "transformers.models.auto.modeling_auto"


def register_config() -> None:
    from transformers import AutoConfig

    from nas.configuration_nas import NasConfig

    AutoConfig.register(NasConfig.model_type, NasConfig, exist_ok=True)


def register_model() -> None:
    from transformers import AutoModel

    from nas.configuration_nas import NasConfig
    from nas.modeling_nas import NasModel

    AutoModel.register(NasConfig, NasModel, exist_ok=True)


_REGISTER = {_CONFIG_AUTO: register_config, _MODEL_AUTO: register_model}


class _RegisterAfterImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: for the two auto modules it wraps the real loader so that the
    registration runs once the module has executed."""

    def find_spec(self, fullname: str, path, target=None):
        if fullname not in _REGISTER:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _ThenRegister(spec.loader, _REGISTER[fullname])
                return spec
        return None


class _ThenRegister(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader, register) -> None:
        self.loader, self.register = loader, register

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.loader.exec_module(module)
        try:
            self.register()
        except Exception as err:  # noqa: BLE001 - never break the user's import of transformers
            warnings.warn(
                f"nas: could not register the nas_encoder model type with transformers ({err}); "
                "load exported folders with trust_remote_code=True",
                stacklevel=2,
            )

    def __getattr__(self, name: str):  # get_source, get_filename, ... as the real loader has them
        return getattr(self.loader, name)


def install() -> None:
    """Register now for the auto modules already imported, and after import for the others."""
    if importlib.util.find_spec("transformers") is None:
        return  # nothing to register with
    for name, register in _REGISTER.items():
        if name in sys.modules:
            register()
    if not all(name in sys.modules for name in _REGISTER):
        if not any(isinstance(finder, _RegisterAfterImport) for finder in sys.meta_path):
            sys.meta_path.insert(0, _RegisterAfterImport())
