"""``logmel``: the bundled audio encoder — log-mel filterbank statistics. NOT pretrained.

No pretrained audio encoder we checked installs from PyPI with its weights and runs
offline (docs/models.md, Encoders), so the default is a fixed feature extractor built on
``transformers.audio_utils`` (the mel filterbank and STFT the Whisper and CLAP feature
extractors use): 16 kHz input, 25 ms Hann windows every 10 ms, 64 Slaney mel
bands, log10 power. The vector is, per band, the mean and standard deviation over time of
the log-mel energies and of their first differences (deltas): ``4 x 64 = 256`` numbers.
For a pretrained model use ``hf:<local folder>`` (wav2vec2, HuBERT, AST, Whisper, CLAP...).

Tokens (``encode_tokens``) are the same statistics over ``max_tokens`` consecutive
segments of the clip.

Example
-------
>>> enc = LogMelEncoder()
>>> wave = np.sin(2 * np.pi * 440 * np.arange(16000) / 16000).astype(np.float32)
>>> enc.encode([wave]).shape, enc.dim
(torch.Size([1, 256]), 256)
"""

from __future__ import annotations

import numpy as np
import torch
from transformers.audio_utils import mel_filter_bank, spectrogram, window_function

from crossfuse.encoders.base import Encoder

SAMPLE_RATE = 16_000
N_FFT, HOP, N_MELS = 400, 160, 64
FLOOR = 1e-10  # power floor before the log: silence is -100 dB, not -inf


class LogMelEncoder(Encoder):
    modality = "audio"
    name = "logmel"
    sample_rate = SAMPLE_RATE
    dim = 4 * N_MELS
    cache_key = f"logmel:sr{SAMPLE_RATE}:fft{N_FFT}:hop{HOP}:mel{N_MELS}:v1"

    def __init__(self) -> None:
        self.window = window_function(N_FFT, "hann")
        self.filters = mel_filter_bank(num_frequency_bins=N_FFT // 2 + 1, num_mel_filters=N_MELS,
                                       min_frequency=0.0, max_frequency=SAMPLE_RATE / 2,
                                       sampling_rate=SAMPLE_RATE, norm="slaney",
                                       mel_scale="slaney")

    def log_mel(self, wave: np.ndarray) -> np.ndarray:
        """``[n_samples]`` float waveform at 16 kHz -> ``[frames, 64]`` log10 mel power."""
        wave = np.asarray(wave, dtype=np.float64)
        if wave.size < N_FFT:
            wave = np.pad(wave, (0, N_FFT - wave.size))
        mel = spectrogram(wave, self.window, frame_length=N_FFT, hop_length=HOP, power=2.0,
                          mel_filters=self.filters, mel_floor=FLOOR, log_mel="log10")
        return mel.T  # transformers returns [mels, frames]

    @staticmethod
    def statistics(frames: np.ndarray) -> np.ndarray:
        """``[t, 64]`` log-mel frames -> ``[256]``: mean and std of the frames and of their deltas."""
        deltas = np.diff(frames, axis=0) if len(frames) > 1 else np.zeros_like(frames)
        return np.concatenate([frames.mean(0), frames.std(0), deltas.mean(0), deltas.std(0)])

    def encode(self, items: list[np.ndarray]) -> torch.Tensor:
        out = np.stack([self.statistics(self.log_mel(w)) for w in items]) if items else \
            np.zeros((0, self.dim))
        return torch.from_numpy(out.astype(np.float32))

    def encode_tokens(self, items: list[np.ndarray], max_tokens: int
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        rows = []
        for wave in items:
            frames = self.log_mel(wave)
            parts = np.array_split(frames, min(max_tokens, len(frames)))
            rows.append(np.stack([self.statistics(p) for p in parts]))
        length = max((len(r) for r in rows), default=0)
        tokens = torch.zeros(len(items), length, self.dim)
        mask = torch.zeros(len(items), length, dtype=torch.bool)
        for i, r in enumerate(rows):
            tokens[i, :len(r)] = torch.from_numpy(r.astype(np.float32))
            mask[i, :len(r)] = True
        return tokens, mask
