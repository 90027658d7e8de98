"""LTX-2 / LTX-2.3 / LTX-2.5 audio VAE (mel front end, encoder, decoder) and vocoders (HiFi-GAN; BigVGAN-v2 + BWE).

LTX-2.5's ``vae/ltx-2.5-audio-vae`` file keeps LTX-2.3's layers, config keys and key names (one file holding
``audio_vae.*`` and ``vocoder.*``); the bandwidth-extension vocoder computes in float32 whatever its weights' dtype.

State-dict keys equal ltx-core's after the checkpoint prefixes are stripped: ``audio_vae.encoder.`` /
``audio_vae.decoder.`` (statistics: ``audio_vae.per_channel_statistics.`` -> ``per_channel_statistics.``) and
``vocoder.`` (stripped once: LTX-2.3 keeps ``vocoder.*``, ``bwe_generator.*``, ``mel_stft.*`` beneath it).
"""

from .bwe import VocoderWithBWE, build_vocoder
from .codec import decode_latent, encode_waveform
from .config import AudioVAEConfig, VocoderConfig
from .decoder import AudioDecoder
from .encoder import AudioEncoder
from .mel import MelFrontEnd
from .vocoder import Vocoder

__all__ = [
    "AudioDecoder",
    "AudioEncoder",
    "AudioVAEConfig",
    "MelFrontEnd",
    "Vocoder",
    "VocoderConfig",
    "VocoderWithBWE",
    "build_vocoder",
    "decode_latent",
    "encode_waveform",
]
