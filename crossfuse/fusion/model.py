"""Build a fusion head from encoders' dims, and save/load it (safetensors + JSON spec).

An ensemble (:class:`crossfuse.fusion.ensemble.FusionEnsemble`) is saved as its spec with
the members' weights, and one saved head per member under ``members/<i>/``.

>>> head = build_fusion_head(FusionSpec("concat", {"image": 1280, "text": 384}, 6))
>>> sum(p.numel() for p in head.parameters()) > 0
True
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from crossfuse import __version__
from crossfuse.atomic import atomic_save, write_json
from crossfuse.errors import UserError
from crossfuse.fusion.base import FusionSpec
from crossfuse.fusion.ensemble import ENSEMBLE, FusionEnsemble
from crossfuse.fusion.head import FusionHead, upgrade_state_dict

WEIGHTS_FILE = "fusion_head.safetensors"
SPEC_FILE = "fusion_spec.json"
RUN_CONFIG_FILE = "run_config.json"  # the effective run config (after any search) of the model
HISTORY_FILE = "training_history.json"  # per-epoch losses and scores of a single-method fit
MEMBERS_DIR = "members"


def build_fusion_head(spec: FusionSpec) -> FusionHead:
    """The registered method ``spec.method`` inside a :class:`FusionHead`."""
    return FusionHead(spec)


def save_fusion_head(head: FusionHead | FusionEnsemble, out_dir: Path, extra: dict | None = None) -> None:
    """Write ``fusion_head.safetensors`` and ``fusion_spec.json`` (spec + ``extra``) to ``out_dir``.

    An ensemble writes its members under ``members/<i>/`` and their weights into the spec.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = {**head.spec.to_dict(), **(extra or {}), "crossfuse_version": __version__}
    if isinstance(head, FusionEnsemble):
        for i, member in enumerate(head.members):
            save_fusion_head(member, out_dir / MEMBERS_DIR / f"{i:02d}")
        spec["members"] = [{"dir": f"{MEMBERS_DIR}/{i:02d}", "weight": float(w)}
                           for i, w in enumerate(head.weights.tolist())]
    else:
        atomic_save(head.state_dict(), out_dir / WEIGHTS_FILE)
    write_json(out_dir / SPEC_FILE, spec)


def load_fusion_head(model_dir: Path) -> tuple[FusionHead | FusionEnsemble, dict]:
    """Rebuild a saved head (or ensemble) in eval mode; returns (it, the spec JSON with extras)."""
    model_dir = Path(model_dir)
    meta = json.loads((model_dir / SPEC_FILE).read_text())
    if meta["method"] == ENSEMBLE:
        members = [load_fusion_head(model_dir / m["dir"])[0] for m in meta["members"]]
        return FusionEnsemble(members, [m["weight"] for m in meta["members"]]).eval(), meta
    spec = FusionSpec(**{k: meta[k] for k in FusionSpec.__dataclass_fields__ if k in meta})
    head = build_fusion_head(spec)
    try:
        head.load_state_dict(upgrade_state_dict(load_file(str(model_dir / WEIGHTS_FILE))))
    except RuntimeError as exc:
        saved = meta.get("crossfuse_version", "an earlier version")
        raise UserError(
            f"{model_dir}: the {spec.method} head was saved by crossfuse {saved} and its weights "
            f"do not fit crossfuse {__version__}'s {spec.method} head; retrain it with "
            f"this version ({str(exc).splitlines()[0]})") from exc
    return head.eval(), meta


@torch.inference_mode()
def predict_proba(head: FusionHead | FusionEnsemble, vectors: dict[str, torch.Tensor],
                  present: dict[str, torch.Tensor], tokens=None,
                  batch_size: int = 1024) -> torch.Tensor:
    """Class probabilities ``[N, num_classes]`` for ``N`` rows of features (and tokens)."""
    head.eval()
    n = len(next(iter(vectors.values())))
    out = []
    for s in range(0, n, batch_size):
        part = slice(s, s + batch_size)
        tok = {m: (t[part], k[part]) for m, (t, k) in tokens.items()} if tokens else None
        out.append(head({m: v[part] for m, v in vectors.items()},
                        {m: p[part] for m, p in present.items()}, tok).softmax(-1))
    return torch.cat(out) if out else torch.empty(0)
