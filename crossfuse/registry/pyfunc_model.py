"""The registered model's code, logged as MLflow "models from code": no pickle.

MLflow copies this file into the model (``code/pyfunc_model.py``) and runs it when the
model loads; it names the class that serves the model. The weights, encoders' names and
config travel as the artifact ``model`` (safetensors and JSON), read by
:class:`crossfuse.registry.serving.CrossfusePyfunc`.
"""

import mlflow

from crossfuse.registry.serving import CrossfusePyfunc

mlflow.models.set_model(CrossfusePyfunc())
