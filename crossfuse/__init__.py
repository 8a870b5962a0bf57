"""crossfuse: multimodal data fusion for classification, as an MLOps pipeline.

See README.md for the quick start (docs/ for the rest) and ``crossfuse.stages`` for the six stages.
"""

__version__ = "0.1.0"
