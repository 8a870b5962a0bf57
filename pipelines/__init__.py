"""The crossfuse KFP pipeline (``multimodal_fusion``) and how to run or compile it."""
