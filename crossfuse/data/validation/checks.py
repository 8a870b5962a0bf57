"""Row checks that run in Python: media files, text encoding, empty rows, class sizes.

Each returns :class:`RowIssue` rows naming the manifest line, the id, the column and
the reason (and a short ``kind`` for counting).

>>> check_media_file(Path("/nonexistent"), "a.wav", "audio", RunConfig())[0]
'audio not found'
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pandas as pd

from crossfuse.config import RunConfig
from crossfuse.data.manifest import Manifest, ManifestError, resolve_media
from crossfuse.data.modalities import get_modality, media_modalities
from crossfuse.data.validation.report import RowIssue, named


def check_media_file(root: Path, relative: str, modality: str, cfg: RunConfig
                     ) -> tuple[str, str] | None:
    """Return (kind, reason) when the ``modality`` file at ``relative`` is unusable, None when
    it decodes.

    Checks: confined to ``root``, exists, non-empty, then the modality's own checks
    (:meth:`crossfuse.data.modalities.Modality.check`: an image under
    ``max_image_pixels`` that decodes to the end; audio of a supported format, channel
    count, sample rate and duration, finite and not silent).
    """
    try:
        path = resolve_media(root, relative)
    except ManifestError as exc:
        return "media path outside the dataset", str(exc)
    except (OSError, ValueError, RuntimeError) as exc:  # a NUL byte, a symlink loop, too long
        return "media path unusable", (f"{modality} path {relative!r} cannot be resolved: "
                                       f"{type(exc).__name__}: {exc}")
    try:
        if path.is_dir():
            return (f"{modality} path is a folder", f"{modality} path {relative!r} is a folder, "
                    f"not a file; name the {modality} file inside it")
        if not path.is_file():
            return f"{modality} not found", (f"{modality} file {relative!r} not found under "
                                             f"{root}{path_hint(root, relative)}")
        if path.stat().st_size == 0:
            return f"{modality} empty", f"{modality} file {relative!r} is empty (0 bytes)"
    except OSError as exc:  # permissions, a name too long for the filesystem
        return f"{modality} unreadable", f"{modality} file {relative!r} cannot be read: {exc}"
    return get_modality(modality).check(path, relative, cfg)


def path_hint(root: Path, relative: str) -> str:
    r"""Why a media path that is not there may be mistyped: Windows separators, spaces at
    its ends, or another letter case of a file that is there; "" when none applies.

    >>> path_hint(Path("/nowhere"), "images\\a.png")
    "; write paths with '/', not '\\' (images/a.png)"
    >>> path_hint(Path("/nowhere"), "images/a.png ")
    '; the path ends or starts with spaces'
    """
    if "\\" in relative:
        return f"; write paths with '/', not '\\' ({relative.replace(chr(92), '/')})"
    if relative != relative.strip():
        return "; the path ends or starts with spaces"
    folder = (Path(root) / relative).parent
    try:
        near = [p.name for p in folder.iterdir() if p.name.lower() == Path(relative).name.lower()]
    except OSError:
        return ""
    return f"; did you mean {near[0]!r} (letter case)?" if near else ""


def check_text(cfg: RunConfig, manifest: Manifest) -> list[RowIssue]:
    """Cells that are not valid UTF-8 (any column), and texts that are only whitespace."""
    frame, lines, issues = manifest.frame, manifest.lines, []
    for idx, column, at, byte in manifest.bad_utf8:
        if idx < len(frame):
            issues.append(RowIssue(lines[idx], str(frame.iloc[idx]["id"]), column,
                                   f"{column} is not valid UTF-8 (byte 0x{byte:02x} at "
                                   f"character {at}); re-save manifest.csv as UTF-8",
                                   kind="not valid UTF-8"))
    if "text" in cfg.modalities and "text" in frame.columns:
        for idx, value in enumerate(frame["text"]):
            if value and not value.strip():
                issues.append(RowIssue(lines[idx], str(frame.iloc[idx]["id"]), "text",
                                       WHITESPACE_TEXT))
    return issues


WHITESPACE_TEXT = "text is only whitespace"
TEXT_LENGTH = "text length outside [validation.min_text_chars, max_text_chars]"


def text_problem(value: str, cfg: RunConfig) -> str | None:
    """Why one text would be rejected by validation (the same words), or None; the served
    model refuses what training refuses. An empty text is a missing one, not a problem.

    >>> from crossfuse.config import load_config
    >>> text_problem("   ", load_config(None, env={}))
    'text is only whitespace'
    """
    if not value:
        return None
    if not value.strip():
        return WHITESPACE_TEXT
    v = cfg.validation
    if not v.min_text_chars <= len(value) <= v.max_text_chars:
        return f"{TEXT_LENGTH}: {len(value):,} characters, allowed {v.min_text_chars}..{v.max_text_chars:,}"
    return None


def check_media(cfg: RunConfig, frame: pd.DataFrame, root: Path,
                lines: list[int]) -> list[RowIssue]:
    """Open every media file (image, audio) the manifest names; one RowIssue per unusable one."""
    issues = []
    for m in media_modalities(cfg.modalities):
        if m not in frame.columns:
            continue
        for idx, (sample_id, rel) in enumerate(zip(frame["id"], frame[m], strict=True)):
            if not rel:
                continue  # reported by the GX not-null expectation
            found = check_media_file(root, rel, m, cfg)
            if found:
                issues.append(RowIssue(lines[idx], sample_id, m, found[1], kind=found[0]))
    return issues


def check_some_modality(cfg: RunConfig, frame: pd.DataFrame, lines: list[int]) -> list[RowIssue]:
    """With missing modalities allowed, a row must still have at least one."""
    if not cfg.validation.allow_missing_modalities:
        return []
    empty = (frame[cfg.modalities].apply(lambda c: c.str.strip()) == "").all(axis=1).to_numpy()
    return [RowIssue(lines[i], str(frame.iloc[i]["id"]), "+".join(cfg.modalities),
                     "every modality is missing") for i in empty.nonzero()[0]]


def check_model_labels(frame: pd.DataFrame, lines: list[int], labels: list[str]) -> list[RowIssue]:
    """Data to score: a label, where a row has one, must be one of the model's classes.

    >>> frame = pd.DataFrame({"id": ["a", "b", "c"], "label": ["cat", "", "cow"]})
    >>> [(i.line, i.reason.split(";")[0]) for i in check_model_labels(frame, [2, 3, 4], ["cat", "dog"])]
    [(4, "label 'cow' is not one of the model's classes ['cat', 'dog']")]
    """
    known = set(labels)
    return [RowIssue(line, str(sample_id), "label",
                     f"label {label!r} is not one of the model's classes {sorted(known)}; "
                     f"correct it, or leave it empty to score the row without a label",
                     kind="label unknown to the model")
            for sample_id, label, line in zip(frame["id"], frame["label"], lines, strict=True)
            if label and label not in known]


def check_class_sizes(cfg: RunConfig, labels: list[str]) -> tuple[dict[str, int], list[str]]:
    """Count the valid rows per label: two classes at least, each big enough to split."""
    counts = Counter(label for label in labels if label)
    small = {k: n for k, n in counts.items() if n < cfg.validation.min_samples_per_class}
    failures = []
    if len(counts) < 2:
        failures.append(f"{len(counts)} class{'es' if len(counts) != 1 else ''} among the valid "
                        f"rows ({', '.join(sorted(counts)) or 'none'}): a classifier needs at "
                        f"least two labels")
    if small:
        shown = named([f"{k!r} ({n})" for k, n in small.items()])
        failures.append(f"{len(small)} class{'es' if len(small) != 1 else ''} with fewer than "
                        f"validation.min_samples_per_class={cfg.validation.min_samples_per_class} "
                        f"samples: {shown} (all in report.json's class_counts); add samples "
                        f"or remove these classes")
    return dict(sorted(counts.items())), failures


def image_shape_warnings(cfg: RunConfig, frame: pd.DataFrame, root: Path, lines: list[int],
                         rejected: set[int]) -> list[str]:
    """Warnings (not rejects) for the kept rows' images that are tiny (a side under
    ``validation.min_image_side``) or extreme in shape (beyond ``max_aspect_ratio``): the
    model still gets them, upscaled or squashed to a square, and the run says how many."""
    from PIL import Image

    if "image" not in cfg.modalities or "image" not in frame.columns:
        return []
    v = cfg.validation
    small, long = [], []
    for line, rel in zip(lines, frame["image"], strict=True):
        if not rel or line in rejected:
            continue
        try:
            with Image.open(resolve_media(root, rel)) as img:
                width, height = img.size
        except (OSError, ValueError, ManifestError):
            continue  # validation's media check has said why
        if min(width, height) < v.min_image_side:
            small.append((line, f"{width}x{height}"))
        if max(width, height) > v.max_aspect_ratio * min(width, height):
            long.append((line, f"{width}x{height}"))
    size, out = cfg.preprocess.image_size, []
    if small:
        out.append(shape_warning(small, f"a side under validation.min_image_side="
                                        f"{v.min_image_side} px", f"upscaled to {size} px square"))
    if long:
        out.append(shape_warning(long, f"longer than validation.max_aspect_ratio="
                                       f"{v.max_aspect_ratio:g} times the other side",
                                 f"squashed to {size} px square"))
    return out


def shape_warning(found: list[tuple[int, str]], what: str, how: str) -> str:
    """One warning for the images ``found`` ((line, WxH), ...): how many, which, what is done.

    >>> shape_warning([(2, "1x1")], "a side under 16 px", "upscaled")
    '1 image has a side under 16 px (line 2: 1x1): it is used, upscaled'
    """
    one = len(found) == 1
    verb = ("has" if one else "have") if what.startswith("a side") else ("is" if one else "are")
    return (f"{len(found)} image{'' if one else 's'} {verb} {what} "
            f"({named([f'line {line}: {size}' for line, size in found])}): "
            f"{'it is' if one else 'they are'} used, {how}")
