"""KFP components: one per stage, each a thin typed wrapper over ``crossfuse.stages``.

A component body only turns KFP artifacts into folders, calls the stage, and
reports metrics back to KFP. Imports sit inside the bodies because KFP ships a
lightweight component's source, not its module, to the container.
"""

from components.batch import batch_preprocess, batch_score, batch_validate
from components.close_run import close_run
from components.evaluate import evaluate
from components.extract import extract, merge_features
from components.preprocess import preprocess
from components.register import register
from components.train import train
from components.validate import validate

__all__ = ["batch_preprocess", "batch_score", "batch_validate", "close_run", "evaluate", "extract",
           "merge_features", "preprocess", "register", "train", "validate"]
