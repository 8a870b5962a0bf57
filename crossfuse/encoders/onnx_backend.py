"""Run a frozen encoder network with ONNX Runtime on the CPU, exported once and checked.

On this project's 2-core CPUs ONNX Runtime runs EfficientNet-Lite0 several times faster
than eager PyTorch (``make bench-perf``, docs/performance.md). The network is exported
with ``torch.onnx.export`` to ``<export_dir>/<name>-<weights hash>-torch<version>.onnx``
(atomically, so parallel extract parts share one file) and reused while the weights, and
the torch that exported them, stay the same.

An export is trusted only after it agrees with PyTorch: on a fixed probe batch every
output row must have cosine similarity ≥ :data:`MIN_COSINE` with PyTorch's; otherwise
the file is deleted and :class:`ExportMismatch` says by how much it missed.

Example
-------
>>> session = OnnxNetwork.export(model, (3, 224, 224), Path(".cache/onnx"), "effnet")  # doctest: +SKIP
>>> session.run(np.zeros((2, 3, 224, 224), np.float32)).shape                         # doctest: +SKIP
(2, 1280, 7, 7)
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from crossfuse import storage
from crossfuse.atomic import atomic_path

log = logging.getLogger(__name__)

MIN_COSINE = 0.999
OPSET = 17
PROBE_ROWS = 4


class ExportMismatch(RuntimeError):
    """The exported network's outputs differ from PyTorch's by more than :data:`MIN_COSINE`."""


def weights_hash(module: torch.nn.Module) -> str:
    """sha256 of a module's parameters and buffers (names, shapes, bytes), 16 hex digits.

    >>> weights_hash(torch.nn.Linear(2, 2)) == weights_hash(torch.nn.Linear(2, 2))
    False
    """
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """The smallest row-wise cosine similarity of two ``[N, ...]`` arrays (rows flattened).

    >>> round(min_cosine(np.ones((2, 3)), np.array([[1, 1, 1], [1, 1, -1]])), 4)
    0.3333
    """
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    num = (a * b).sum(1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return float(np.min(num / np.maximum(den, 1e-12)))


class OnnxNetwork:
    """An ONNX Runtime session over one exported network: ``float32 [B, ...] -> float32 [B, ...]``.

    ``threads`` is ONNX Runtime's intra-op pool (default: every core torch uses).
    """

    def __init__(self, path: Path, threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: its graph notes go nowhere useful
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(batch, np.float32)})[0]

    @classmethod
    def export(cls, network: torch.nn.Module, item_shape: tuple[int, ...], export_dir: Path,
               name: str) -> OnnxNetwork:
        """The cached export of ``network`` (eval mode, batch dimension dynamic), made if missing.

        ``item_shape`` is one input's shape without the batch, e.g. ``(3, 224, 224)``.
        Raises :class:`ExportMismatch` when a new export disagrees with PyTorch.
        """
        network = network.eval()
        path = (Path(export_dir) / f"{name}-{weights_hash(network)}-torch"
                f"{torch.__version__.split('+')[0]}-opset{OPSET}.onnx")
        if path.is_file() or storage.pull(path):  # made by an earlier task or run
            return cls(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        probe = torch.randn((PROBE_ROWS, *item_shape), generator=torch.Generator().manual_seed(0))
        with atomic_path(path) as tmp, warnings.catch_warnings():
            # The TorchScript exporter is the one that handles these convolutions' static
            # padding; its deprecation notice is not actionable for a user.
            warnings.simplefilter("ignore")
            torch.onnx.export(network, (probe,), str(tmp), input_names=["input"],
                              output_names=["output"], opset_version=OPSET, dynamo=False,
                              dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
            candidate = cls(tmp)
            with torch.inference_mode():
                expected = network(probe).numpy()
            agreement = min_cosine(candidate.run(probe.numpy()), expected)
            if agreement < MIN_COSINE:
                raise ExportMismatch(
                    f"the ONNX export of {name} disagrees with PyTorch (min cosine {agreement:.6f}"
                    f" < {MIN_COSINE}); use --set extract.backend=torch")
        log.info("exported %s to %s (min cosine to PyTorch %.6f)", name, path, agreement)
        storage.push(path)
        return cls(path)


def onnxruntime_available() -> bool:
    """Whether ONNX Runtime (and the ``onnx`` package the exporter needs) can be imported."""
    from importlib.util import find_spec

    return find_spec("onnxruntime") is not None and find_spec("onnx") is not None


def default_export_dir() -> Path:
    """Where exports go when the caller keeps none (a served model): one folder per user in
    the system's temporary directory. Exports are named by their weights, so every load
    after the first reuses the file instead of leaving a new copy behind."""
    import tempfile

    user = os.getuid() if hasattr(os, "getuid") else "user"
    return Path(tempfile.gettempdir()) / f"crossfuse-onnx-{user}"
