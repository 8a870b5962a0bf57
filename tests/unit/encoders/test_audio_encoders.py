"""Audio encoders: the bundled log-mel statistics and any transformers audio model (hf:)."""

import numpy as np
import pytest
import torch

from crossfuse.encoders import build_encoder, encoder_sample_rate

RATE = 16000


def tone(hz: float, seconds: float = 1.0, level: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (level * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def test_logmel_is_deterministic_and_hears_pitch_not_level():
    enc = build_encoder("logmel", "audio")
    low, high = tone(330), tone(880)
    vectors = enc.encode([low, high, low])
    assert vectors.shape == (3, 256) and torch.isfinite(vectors).all()
    assert torch.equal(vectors[0], vectors[2])  # same input, same vector
    # The mel band means (the first 64 numbers) peak at the tone's band.
    assert vectors[0, :64].argmax() < vectors[1, :64].argmax()
    silence = enc.encode([np.zeros(RATE, dtype=np.float32)])
    assert torch.isfinite(silence).all()
    tokens, mask = enc.encode_tokens([low, tone(330, seconds=0.2)], max_tokens=8)
    assert tokens.shape == (2, 8, 256) and mask[0].all() and mask.dtype == torch.bool
    assert encoder_sample_rate("logmel") == RATE


def _tiny_audio_models():
    from transformers import (
        ASTConfig,
        ASTFeatureExtractor,
        ASTModel,
        ClapConfig,
        ClapFeatureExtractor,
        ClapModel,
        HubertConfig,
        HubertModel,
        Wav2Vec2Config,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2Model,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperModel,
    )

    w2v = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
               conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 4),
               num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
    return {
        "wav2vec2": lambda: (Wav2Vec2Model(Wav2Vec2Config(**w2v)),
                             Wav2Vec2FeatureExtractor(sampling_rate=RATE)),
        "hubert": lambda: (HubertModel(HubertConfig(**w2v)),
                           Wav2Vec2FeatureExtractor(sampling_rate=RATE)),
        "ast": lambda: (ASTModel(ASTConfig(hidden_size=32, num_hidden_layers=1,
                                           num_attention_heads=2, intermediate_size=37,
                                           max_length=128, num_mel_bins=16)),
                        ASTFeatureExtractor(num_mel_bins=16, max_length=128)),
        "whisper": lambda: (WhisperModel(WhisperConfig(
            d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
            decoder_attention_heads=2, encoder_ffn_dim=37, decoder_ffn_dim=37, num_mel_bins=16,
            max_source_positions=50, vocab_size=100, pad_token_id=0, bos_token_id=1,
            eos_token_id=2, decoder_start_token_id=1)),
            WhisperFeatureExtractor(feature_size=16, chunk_length=1, n_samples=RATE)),
        "clap": lambda: (ClapModel(ClapConfig(
            text_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                             intermediate_size=37, vocab_size=100, max_position_embeddings=64),
            audio_config=dict(hidden_size=32, num_mel_bins=16, spec_size=64, patch_size=4,
                              patch_stride=(4, 4), depths=[1, 1], num_attention_heads=[2, 2],
                              window_size=4, patch_embeds_hidden_size=16),
            projection_dim=16)),
            ClapFeatureExtractor(feature_size=16, sampling_rate=RATE, hop_length=160,
                                 max_length_s=1, fft_window_size=400, truncation="rand_trunc")),
    }


@pytest.mark.parametrize("family", ["wav2vec2", "hubert", "ast", "whisper", "clap"])
def test_any_transformers_audio_model_encodes_waveforms(family, tmp_path):
    torch.manual_seed(0)
    model, extractor = _tiny_audio_models()[family]()
    model.save_pretrained(tmp_path)
    extractor.save_pretrained(tmp_path)
    assert encoder_sample_rate(f"hf:{tmp_path}") == RATE  # read without loading the model
    enc = build_encoder(f"hf:{tmp_path}", "audio")
    wave = tone(440)
    vectors = enc.encode([wave, tone(880)])
    assert vectors.shape == (2, 32) and enc.dim == 32 and torch.isfinite(vectors).all()
    assert not torch.allclose(vectors[0], vectors[1])
    assert torch.allclose(enc.encode([wave])[0], vectors[0], atol=1e-5)  # batch-independent
    tokens, mask = enc.encode_tokens([wave], max_tokens=8)
    assert tokens.shape == (1, 8, 32) and mask.all()


@pytest.mark.parametrize("family", ["wav2vec2", "hubert", "ast", "whisper", "clap"])
def test_an_audio_transformer_splits_for_finetuning_exactly_or_is_refused(family, tmp_path):
    """wav2vec2-style models (and Whisper's encoder) split into a cached bottom and a trainable
    top that reproduce the encoder; an architecture the split misreads is refused, not tuned."""
    from crossfuse.encoders.adapt import FinetuneSpec, split_encoder
    from crossfuse.errors import UserError

    torch.manual_seed(0)
    model, extractor = _tiny_audio_models()[family]()
    model.save_pretrained(tmp_path)
    extractor.save_pretrained(tmp_path)
    enc = build_encoder(f"hf:{tmp_path}", "audio")
    try:
        split = split_encoder(enc, FinetuneSpec.parse("top:1"))
    except UserError as exc:
        assert family not in ("wav2vec2", "hubert", "whisper"), exc
        assert "cannot be split for fine-tuning" in str(exc) and "fusion.finetune=none" in str(exc)
        return
    waves = [tone(440), tone(880)]
    with torch.no_grad():
        assert torch.allclose(split.top.eval()(split.bottom(waves)), enc.encode(waves), atol=1e-4)
