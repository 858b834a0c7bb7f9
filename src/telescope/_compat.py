"""Old import paths kept for one release: each shim module makes its old name an alias of the new one.

A shim is a one-line module at the old path, e.g. ``telescope/ladder.py``::

    from ._compat import alias
    alias(__name__, "telescope.simulation.ladder")

Importing it warns once (:class:`DeprecationWarning`) and puts the new module in ``sys.modules``
under the old name, so ``import telescope.ladder`` and ``from telescope.ladder import X`` give
the very same objects as the new path (monkeypatching either patches both).  Library code does not
import shims (``tests/test_layers.py`` checks it); where it still does (code owned elsewhere, listed
there), no warning is raised.
"""

from __future__ import annotations

import importlib
import sys
import types
import warnings

__all__ = ["alias"]


def _from_telescope() -> bool:
    """Whether the module importing the shim is part of telescope (code not yet moved to the new path)."""
    frame = sys._getframe(3)  # _from_telescope <- alias <- the shim <- importlib or the importer
    while frame is not None and frame.f_code.co_filename.startswith("<frozen importlib"):
        frame = frame.f_back
    name = frame.f_globals.get("__name__", "") if frame is not None else ""
    return name == "telescope" or name.startswith("telescope.")


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
    if not _from_telescope():
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
