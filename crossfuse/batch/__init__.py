"""Batch prediction: score a folder of new data with a registered model and watch for drift.

The batch pipeline (``pipelines/batch_predict.py``) chains :mod:`crossfuse.batch.stages`:
validate (labels optional, checked against the model's), preprocess with the model's own
transforms, extract through the shared feature cache, then score in shards
(:mod:`crossfuse.batch.score`), compare with the model's training data
(:mod:`crossfuse.monitoring.drift`) and write ``predictions.parquet`` and a small report
(:mod:`crossfuse.batch.report`) into one MLflow run of the experiment ``<model>-predictions``.
"""
