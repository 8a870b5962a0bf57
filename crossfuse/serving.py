"""Where models registered before the library was grouped by stage find their pyfunc class.

MLflow stores a registered model's ``python_model`` with cloudpickle, which records the
class by its import path: versions logged by crossfuse 0.1.0 before the move point at
``crossfuse.serving.CrossfusePyfunc``. This name keeps them loadable; new code imports
:mod:`crossfuse.registry.serving`.

>>> from crossfuse.registry import serving
>>> CrossfusePyfunc is serving.CrossfusePyfunc
True
"""

from crossfuse.registry.serving import CrossfusePyfunc, FusionPredictor

__all__ = ["CrossfusePyfunc", "FusionPredictor"]
