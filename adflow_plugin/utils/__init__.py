import importlib
import json
import os
import pkgutil


def import_modules(package_name, package_path, suffix):
    """Import every module of a package whose name ends with ``suffix`` (BasicSR's registry scan)."""
    modules = []
    for info in sorted(pkgutil.iter_modules(package_path), key=lambda m: m.name):
        if info.name.endswith(suffix):
            modules.append(importlib.import_module(f'{package_name}.{info.name}'))
    return modules


def as_list(value):
    """``value`` as a list: lists and tuples unchanged, anything else wrapped (e.g. ``val.temperature``)."""
    return list(value) if isinstance(value, (list, tuple)) else [value]


def write_json(path, obj, suffix='.part'):
    """Write ``obj`` as JSON under a temporary name, then rename: a file under ``path`` is always whole."""
    tmp = path + suffix
    with open(tmp, 'w') as f:
        json.dump(obj, f, indent=1, sort_keys=True)
    os.replace(tmp, path)
