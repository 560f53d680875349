"""PEFT methods for vlpeft's BLIP. Importing this package registers the methods of the catalogue
(`vlpeft.catalogue`): it imports each entry's module, in the catalogue's order."""

import importlib

from vlpeft import catalogue
from vlpeft.peft.base import (  # noqa: F401
    REGISTRY,
    apply_peft,
    count_params,
    fold,
    get_method,
    load_peft,
    make_config,
    save_peft,
    shared_copy,
)

for _method in catalogue.CATALOGUE.values():
    importlib.import_module(_method.module)
