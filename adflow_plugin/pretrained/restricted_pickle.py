"""Read a pickle of (nested dicts of) numpy arrays without running anything else it might hold.

``pickle.load`` calls whatever global a file names (``os.system`` included). This unpickler resolves only
the names numpy's own array pickling uses (``_reconstruct``, ``_frombuffer``, ``ndarray``, ``dtype``) and
refuses every other global, persistent id and extension code before anything is called.
"""
import io
import pickle

import numpy as np

try:  # numpy >= 2 moved numpy.core to numpy._core (the old name still appears in older pickles)
    from numpy._core.multiarray import _reconstruct
    from numpy._core.numeric import _frombuffer
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct
    from numpy.core.numeric import _frombuffer

__all__ = ['NumpyOnlyUnpickler', 'load_numpy_tree']

_ALLOWED = {
    ('numpy.core.multiarray', '_reconstruct'): _reconstruct,
    ('numpy._core.multiarray', '_reconstruct'): _reconstruct,
    ('numpy.core.numeric', '_frombuffer'): _frombuffer,  # pickle protocol 5
    ('numpy._core.numeric', '_frombuffer'): _frombuffer,
    ('numpy', 'ndarray'): np.ndarray,
    ('numpy', 'dtype'): np.dtype,
}


class NumpyOnlyUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that admits numpy's array reconstruction and nothing else."""

    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f'refused to load {module}.{name}: this file may hold only numpy arrays '
                                         '(it is read with a restricted unpickler)') from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError('refused a persistent id: this file may hold only numpy arrays')


def _check_tree(node, where):
    if isinstance(node, dict):
        for key, value in node.items():
            if not isinstance(key, str):
                raise pickle.UnpicklingError(f'{where}: key {key!r} is not a string')
            _check_tree(value, f'{where}/{key}')
    elif not (isinstance(node, np.ndarray) and node.dtype.kind in 'fiu'):
        raise pickle.UnpicklingError(f'{where}: a {type(node).__name__} where only numeric numpy arrays may be')


def load_numpy_tree(data, source='pickle'):
    """Unpickle ``data`` (bytes) into nested dicts (str keys) of numeric numpy arrays.

    Raises:
        pickle.UnpicklingError: the file names anything else (nothing it names is called) or holds
            other objects than dicts of numeric arrays.
    """
    try:
        tree = NumpyOnlyUnpickler(io.BytesIO(data)).load()
    except pickle.UnpicklingError as e:
        raise pickle.UnpicklingError(f'{source}: {e}') from None
    except Exception as e:  # a truncated or malformed file
        raise pickle.UnpicklingError(f'{source}: not a readable pickle ({type(e).__name__}: {e})') from None
    if not isinstance(tree, dict):
        raise pickle.UnpicklingError(f'{source}: holds a {type(tree).__name__}, expected a dict of arrays')
    _check_tree(tree, source)
    return tree
