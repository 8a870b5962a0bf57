"""Audio files in, the mono waveform an audio encoder expects out.

Files are read with ``soundfile`` (libsndfile): WAV (PCM 8/16/24/32-bit, float), FLAC,
OGG/Vorbis, AIFF, CAF and the other containers libsndfile reads — :data:`SUPPORTED_FORMATS`.
MP3 is refused with the fix (convert to WAV or FLAC): its decoder pads the start with
silence by encoder-dependent amounts, so the same recording gives different samples.

:func:`prepare_audio` is the one path from file to waveform, used by preprocessing and by
the served model: float32 samples -> mono (the channels' mean) -> the encoder's sample
rate (``scipy.signal.resample_poly``, a polyphase FIR resampler) -> peak-normalised to
:data:`PEAK` -> trimmed or zero-padded to ``seconds``. Deterministic: the same file gives
the same samples, bit for bit.

Example
-------
>>> import tempfile, soundfile as sf
>>> path = Path(tempfile.mkdtemp()) / "tone.wav"
>>> t = np.arange(8000) / 8000
>>> sf.write(path, np.stack([np.sin(2 * np.pi * 440 * t)] * 2, axis=1) * 0.1, 8000)
>>> wave = prepare_audio(path, sample_rate=16000, seconds=0.5)
>>> wave.shape, wave.dtype, round(float(np.abs(wave).max()), 2)
((8000,), dtype('float32'), 0.95)
"""

from __future__ import annotations

import io
from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf

SUPPORTED_FORMATS = frozenset({"WAV", "WAVEX", "RF64", "W64", "FLAC", "OGG", "AIFF", "CAF"})
PEAK = 0.95  # peak level after normalisation: headroom, so noise added later rarely clips
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1000, 384_000
SILENCE = 1e-6  # a peak below this (in [-1, 1] units) is silence


def audio_problem(source, relative: str, min_seconds: float, max_seconds: float,
                  max_channels: int) -> tuple[str, str] | None:
    """(kind, reason) when the audio file is unusable, None when it decodes to usable sound.

    ``source``: a path or a binary file object. Checks, in order: a format libsndfile
    reads, one of :data:`SUPPORTED_FORMATS`, 1..``max_channels`` channels, a sample rate in
    [1 kHz, 384 kHz], a duration in [``min_seconds``, ``max_seconds``], every sample finite,
    and not all silent.
    """
    try:
        info = sf.info(source)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        return "not audio", (f"audio file {relative} is not audio soundfile can read ({exc}); "
                             f"save it as WAV or FLAC")
    if info.format not in SUPPORTED_FORMATS:
        return "unsupported audio format", (
            f"audio file {relative} is {info.format_info or info.format}, which crossfuse does "
            f"not read; convert it to WAV or FLAC")
    if not 1 <= info.channels <= max_channels:
        return "audio channels", (f"audio file {relative} has {info.channels} channels; "
                                  f"1 to validation.max_audio_channels={max_channels} are read")
    if not MIN_SAMPLE_RATE <= info.samplerate <= MAX_SAMPLE_RATE:
        return "audio sample rate", (f"audio file {relative} says its sample rate is "
                                     f"{info.samplerate} Hz; expected {MIN_SAMPLE_RATE} to "
                                     f"{MAX_SAMPLE_RATE} Hz (a corrupt header?)")
    seconds = info.frames / info.samplerate
    if not min_seconds <= seconds <= max_seconds:
        return "audio duration", (f"audio file {relative} lasts {seconds:.3f} s, outside "
                                  f"validation.min_audio_seconds={min_seconds} .. "
                                  f"max_audio_seconds={max_seconds}")
    try:
        if hasattr(source, "seek"):
            source.seek(0)
        samples, _ = sf.read(source, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as exc:
        return "audio does not decode", f"audio file {relative} does not decode: {exc}"
    if samples.size == 0:
        return "audio duration", f"audio file {relative} holds no samples"
    if not np.isfinite(samples).all():
        return "audio not finite", (f"audio file {relative} holds NaN or infinite samples "
                                    f"({int((~np.isfinite(samples)).sum())} of {samples.size})")
    peak = float(np.abs(samples).max())
    if peak < SILENCE:
        loudest = "every sample is 0" if peak == 0 else f"its loudest sample is {peak:.1e}"
        return "audio silent", (f"audio file {relative} is silent ({loudest}, under {SILENCE:g} "
                                f"of full scale); record it louder or leave the cell empty")
    return None


def waveform(samples: np.ndarray, rate: int, sample_rate: int, seconds: float) -> np.ndarray:
    """``[frames, channels]`` (or ``[frames]``) float samples at ``rate`` -> the encoder's input.

    Returns float32 ``[round(seconds * sample_rate)]``: mono, resampled, peak-normalised,
    trimmed or zero-padded at the end.
    """
    mono = samples.astype(np.float64)
    if mono.ndim == 2:
        mono = mono.mean(axis=1)
    if rate != sample_rate:
        common = gcd(int(rate), int(sample_rate))
        from scipy.signal import resample_poly  # scipy.signal takes a second to import

        mono = resample_poly(mono, sample_rate // common, rate // common)
    peak = float(np.abs(mono).max()) if mono.size else 0.0
    if peak >= SILENCE:
        mono = mono * (PEAK / peak)
    length = int(round(seconds * sample_rate))
    out = np.zeros(length, dtype=np.float32)
    out[:min(length, mono.size)] = mono[:length]
    return out


def prepare_audio(source, sample_rate: int, seconds: float) -> np.ndarray:
    """Read an audio file (path, bytes or file object) and make it the encoder's waveform."""
    if isinstance(source, bytes | bytearray):
        source = io.BytesIO(source)
    samples, rate = sf.read(source, dtype="float32", always_2d=True)
    return waveform(samples, rate, sample_rate, seconds)


def write_waveform(path: Path, wave: np.ndarray) -> None:
    """Write a prepared waveform losslessly as float32 ``.npy``: same samples, same bytes.

    Not WAV: libsndfile stamps float WAVs with a PEAK chunk holding the time of writing,
    so the same samples would give different bytes (and miss the feature cache).
    """
    with open(path, "wb") as handle:
        np.save(handle, np.asarray(wave, dtype=np.float32), allow_pickle=False)


def read_waveform(path: Path) -> np.ndarray:
    """A waveform :func:`write_waveform` wrote, as float32 ``[n]``."""
    return np.load(path, allow_pickle=False)


MAX_SNR_DB = 40.0  # noise level 0.0 is clean; 0.1 is 36 dB SNR ... 1.0 is 0 dB


def snr_noise(wave: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    """White Gaussian noise at SNR ``MAX_SNR_DB * (1 - level)`` dB over the signal's power.

    >>> w = np.sin(np.linspace(0, 100, 16000)).astype(np.float32)
    >>> noisy = snr_noise(w, 1.0, np.random.default_rng(0))     # 0 dB: noise power = signal's
    >>> round(float(np.mean((noisy - w) ** 2) / np.mean(w ** 2)), 1)
    1.0
    >>> bool((snr_noise(w, 0.0, None) == w).all())
    True
    """
    if level <= 0:
        return wave
    power = float(np.mean(wave.astype(np.float64) ** 2))
    noise_power = power / 10 ** (MAX_SNR_DB * (1 - level) / 10)
    return (wave + rng.normal(0.0, np.sqrt(noise_power), wave.shape)).astype(np.float32)
