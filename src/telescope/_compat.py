"""Old import paths kept for one release: each shim module makes its old name an alias of the new one.

A shim is a one-line module at the old path, e.g. ``telescope/ladder.py``::

    from ._compat import alias
    alias(__name__, "telescope.simulation.ladder")

Importing it warns once (:class:`DeprecationWarning`) and puts the new module in ``sys.modules``
under the old name, so ``import telescope.ladder`` and ``from telescope.ladder import X`` give
the very same objects as the new path (monkeypatching either patches both).  Library code never
imports a shim (``tests/test_layers.py`` checks it).
"""

from __future__ import annotations

import importlib
import sys
import types
import warnings

__all__ = ["alias"]


class _CallableModule(types.ModuleType):
    """A module that can also be called: for old module paths named like a public function.

    ``telescope.train`` was both a module and (on the package) the function ``ts.train``; importing
    the old module path rebinds the package attribute to the module, so the module must stay callable.
    """

    _target: str

    def __call__(self, *args, **kwargs):
        return getattr(self, self._target)(*args, **kwargs)


def alias(old: str, new: str, *, call: str | None = None) -> types.ModuleType:
    """Make module ``old`` an alias of module ``new`` and warn that ``old`` is deprecated.

    Arguments:
        old: the deprecated module name (the shim's ``__name__``).
        new: the module that replaces it.
        call: for an old module named like a public function, the name of that function; the old
            module is then a callable copy of ``new`` rather than ``new`` itself.
    """
    warnings.warn(f"{old} is deprecated and will be removed in the next release; import {new} instead",
                  DeprecationWarning, stacklevel=3)  # the importer (warnings skips importlib's frames)
    module = importlib.import_module(new)
    if call is not None:
        shim = sys.modules[old]
        shim.__dict__.update({k: v for k, v in vars(module).items() if not k.startswith("__") or k == "__all__"})
        shim.__class__ = _CallableModule
        shim._target = call
        return shim
    sys.modules[old] = module
    return module
