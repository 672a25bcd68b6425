import importlib
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
