"""PEFT methods for vlpeft's BLIP. Importing this package registers the built-in methods, explicitly:"""

from vlpeft.peft import prompt, prefix, adapter, lora, mam, baselines, ia3  # noqa: F401,I001  (registry order)
from vlpeft.peft.base import (REGISTRY, apply_peft, count_params, fold, get_method, load_peft, make_config,  # noqa: F401
                              save_peft, shared_copy)

STUDY_METHODS = ("prompt", "prefix", "adapter", "lora", "mam")
