"""Audio files: every bad file named with its reason, and one deterministic preparation."""

import io
import struct

import numpy as np
import pytest
import soundfile as sf

from crossfuse.config import RunConfig, load_config
from crossfuse.data.audio import prepare_audio
from crossfuse.data.validation.checks import check_media_file

RATE = 8000


def tone(seconds=0.5, hz=440.0, channels=1, rate=RATE, level=0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    wave = level * np.sin(2 * np.pi * hz * t)
    return np.stack([wave] * channels, axis=1) if channels > 1 else wave


def write(path, data, rate=RATE, **kwargs):
    sf.write(path, data, rate, **kwargs)
    return path.name


def nan_wav(path):
    data = tone().astype(np.float32)
    data[100] = np.nan
    return write(path, data, subtype="FLOAT")


def zero_channel_wav(path):
    # A RIFF/WAVE header that declares 0 channels, with some data after it.
    fmt = struct.pack("<HHIIHH", 1, 0, RATE, 0, 0, 16)
    data = b"\x00\x01" * 100
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack(
        "<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path.name


BAD = [  # (file name, how to make it, kind)
    ("gone.wav", None, "audio not found"),
    ("empty.wav", lambda p: p.write_bytes(b"") or p.name, "audio empty"),
    ("noise.wav", lambda p: p.write_bytes(bytes(range(256)) * 8) or p.name, "not audio"),
    ("zero_channels.wav", zero_channel_wav, "not audio"),
    ("nine.wav", lambda p: write(p, tone(channels=9)), "audio channels"),
    ("short.wav", lambda p: write(p, tone(seconds=0.01)), "audio duration"),
    ("long.wav", lambda p: write(p, tone(seconds=3.0)), "audio duration"),
    ("silent.wav", lambda p: write(p, np.zeros(RATE)), "audio silent"),
    ("nan.wav", nan_wav, "audio not finite"),
    ("slow.wav", lambda p: write(p, tone(rate=200), rate=200), "audio sample rate"),
    ("sun.au", lambda p: write(p, tone(), format="AU"), "unsupported audio format"),
]


def config() -> RunConfig:
    return load_config(None, ["extract.encoders={image: efficientnet-lite0, audio: logmel}",
                              "validation.max_audio_seconds=2"], env={})


@pytest.mark.parametrize("name,make,kind", BAD, ids=[b[0] for b in BAD])
def test_each_bad_audio_file_is_named_with_its_reason(tmp_path, name, make, kind):
    if make:
        make(tmp_path / name)
    found = check_media_file(tmp_path, name, "audio", config())
    assert found is not None and found[0] == kind, found
    assert name in found[1]  # the message names the file


def test_silence_says_how_loud_the_loudest_sample_was(tmp_path):
    write(tmp_path / "faint.wav", np.full(RATE, 5e-7), subtype="FLOAT")  # 16-bit PCM: 0
    write(tmp_path / "zero.wav", np.zeros(RATE))
    faint = check_media_file(tmp_path, "faint.wav", "audio", config())
    assert faint[0] == "audio silent" and "its loudest sample is 5.0e-07" in faint[1], faint
    assert "every sample is 0" in check_media_file(tmp_path, "zero.wav", "audio", config())[1]


def test_a_path_out_of_the_dataset_is_refused(tmp_path):
    write(tmp_path / "ok.wav", tone())
    found = check_media_file(tmp_path / "sub", "../ok.wav", "audio", config())
    assert found[0] == "media path outside the dataset"


@pytest.mark.parametrize("fmt,subtype", [("WAV", "PCM_16"), ("WAV", "PCM_24"), ("WAV", "FLOAT"),
                                         ("FLAC", "PCM_16"), ("OGG", "VORBIS")])
def test_wav_flac_and_ogg_read(tmp_path, fmt, subtype):
    path = tmp_path / f"a.{fmt.lower()}"
    write(path, tone(channels=2), format=fmt, subtype=subtype)
    assert check_media_file(tmp_path, path.name, "audio", config()) is None
    wave = prepare_audio(path, 16000, 1.0)
    assert wave.shape == (16000,) and abs(float(np.abs(wave).max()) - 0.95) < 0.02


def test_preparation_mixes_resamples_normalises_pads_and_is_deterministic(tmp_path):
    left = tone(hz=440, level=0.2)
    stereo = np.stack([left, np.zeros_like(left)], axis=1)
    write(tmp_path / "s.wav", stereo, subtype="FLOAT")
    wave = prepare_audio(tmp_path / "s.wav", 16000, 1.0)
    assert wave.dtype == np.float32 and wave.shape == (16000,)
    assert np.abs(wave[:8000]).max() == pytest.approx(0.95, abs=1e-3)  # peak-normalised
    assert not wave[8100:].any()  # 0.5 s of sound at 16 kHz, then zero padding
    spectrum = np.abs(np.fft.rfft(wave[:8000]))
    assert np.fft.rfftfreq(8000, 1 / 16000)[spectrum.argmax()] == pytest.approx(440, abs=4)
    again = prepare_audio(io.BytesIO((tmp_path / "s.wav").read_bytes()), 16000, 1.0)
    assert again.tobytes() == wave.tobytes()  # same file, same samples, from bytes too
    cut = prepare_audio(tmp_path / "s.wav", 16000, 0.25)
    assert cut.shape == (4000,) and np.array_equal(cut, wave[:4000])
