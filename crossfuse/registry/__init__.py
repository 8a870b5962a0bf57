"""The MLflow model registry: the register stage, the promotion gate, the served pyfunc."""
