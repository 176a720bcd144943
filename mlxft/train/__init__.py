"""The one training loop, schedules, checkpoints and the supervised child process.

`mlxft.train(recipe)` is the package's training function, and `mlxft.train` is also this subpackage: importing any
`mlxft.train.*` module makes Python set the attribute `mlxft.train` to this module, which would hide the function.
So this module is callable and does what the function does.
"""

import sys
import types


class _TrainModule(types.ModuleType):
    def __call__(self, recipe, **kwargs):
        """Train from a Recipe (or a path to a recipe YAML) in a supervised child process; returns a Run."""
        from mlxft.api import train

        return train(recipe, **kwargs)


sys.modules[__name__].__class__ = _TrainModule
