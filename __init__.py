"""AIPROD: LTX-2 / LTX-2.3 / LTX-2.5 audio+video generation for ComfyUI.

ComfyUI imports this folder as a package. The mappings below are static literals so ComfyUI Manager's
scanner can read them; node classes are V3 (``comfy_api.latest``) and carry V1 shims.
"""

from .nodes.audio_nodes import (
    AIPRODAudioOnlyModel,
    AIPRODAudioToVideoPipeline,
    AIPRODEmptyAudioLatent,
    AIPRODEncodeAudio,
    AIPRODSaveAudio,
    AIPRODTextToAudioPipeline,
)
from .nodes.dfr_nodes import AIPRODDFRPipeline
from .nodes.edit_nodes import (
    AIPRODAppendContinuation,
    AIPRODEncodeClip,
    AIPRODExtendPipeline,
    AIPRODRetakePipeline,
    AIPRODRetakeWindow,
)
from .nodes.hq_nodes import AIPRODTwoStageHQPipeline
from .nodes.inspect_nodes import AIPRODCheckpointInspect
from .nodes.latent_nodes import (
    AIPRODEmptyLatent,
    AIPRODImageCondition,
    AIPRODLoadLatent,
    AIPRODReferenceVideo,
    AIPRODSaveLatent,
)
from .nodes.loader_nodes import (
    AIPRODAudioVAELoader,
    AIPRODCheckpointLoader,
    AIPRODDiffusionModelLoader,
    AIPRODICLoraLoader,
    AIPRODLoraLoader,
    AIPRODTextEncoderLoader,
    AIPRODUpsamplerLoader,
    AIPRODVideoVAELoader,
)
from .nodes.lora_nodes import AIPRODTextEncoderLoraLoader
from .nodes.ltx25_nodes import AIPRODDurationHeadLoader, AIPRODPredictFrames, AIPRODTemporalUpsample
from .nodes.output_nodes import AIPRODAudioDecode, AIPRODSaveVideo, AIPRODVideoDecode
from .nodes.pipeline_nodes import (
    AIPRODDistilledPipeline,
    AIPRODICLoraPipeline,
    AIPRODKeyframePipeline,
    AIPRODTextToVideoPipeline,
    AIPRODTwoStagePipeline,
)
from .nodes.sampling_nodes import AIPRODGuider, AIPRODLatentUpsample, AIPRODSampler
from .nodes.text_nodes import AIPRODEnhancePrompt, AIPRODLoadPrompt, AIPRODSavePrompt, AIPRODTextEncode

NODE_CLASS_MAPPINGS = {
    "AIPRODCheckpointInspect": AIPRODCheckpointInspect,
    "AIPRODCheckpointLoader": AIPRODCheckpointLoader,
    "AIPRODDiffusionModelLoader": AIPRODDiffusionModelLoader,
    "AIPRODVideoVAELoader": AIPRODVideoVAELoader,
    "AIPRODAudioVAELoader": AIPRODAudioVAELoader,
    "AIPRODUpsamplerLoader": AIPRODUpsamplerLoader,
    "AIPRODTextEncoderLoader": AIPRODTextEncoderLoader,
    "AIPRODLoraLoader": AIPRODLoraLoader,
    "AIPRODICLoraLoader": AIPRODICLoraLoader,
    "AIPRODTextEncoderLoraLoader": AIPRODTextEncoderLoraLoader,
    "AIPRODTextEncode": AIPRODTextEncode,
    "AIPRODSavePrompt": AIPRODSavePrompt,
    "AIPRODLoadPrompt": AIPRODLoadPrompt,
    "AIPRODEnhancePrompt": AIPRODEnhancePrompt,
    "AIPRODEmptyLatent": AIPRODEmptyLatent,
    "AIPRODImageCondition": AIPRODImageCondition,
    "AIPRODReferenceVideo": AIPRODReferenceVideo,
    "AIPRODSaveLatent": AIPRODSaveLatent,
    "AIPRODLoadLatent": AIPRODLoadLatent,
    "AIPRODGuider": AIPRODGuider,
    "AIPRODSampler": AIPRODSampler,
    "AIPRODLatentUpsample": AIPRODLatentUpsample,
    "AIPRODTemporalUpsample": AIPRODTemporalUpsample,
    "AIPRODDurationHeadLoader": AIPRODDurationHeadLoader,
    "AIPRODPredictFrames": AIPRODPredictFrames,
    "AIPRODVideoDecode": AIPRODVideoDecode,
    "AIPRODAudioDecode": AIPRODAudioDecode,
    "AIPRODSaveVideo": AIPRODSaveVideo,
    "AIPRODTextToVideoPipeline": AIPRODTextToVideoPipeline,
    "AIPRODTwoStagePipeline": AIPRODTwoStagePipeline,
    "AIPRODDistilledPipeline": AIPRODDistilledPipeline,
    "AIPRODICLoraPipeline": AIPRODICLoraPipeline,
    "AIPRODKeyframePipeline": AIPRODKeyframePipeline,
    "AIPRODTwoStageHQPipeline": AIPRODTwoStageHQPipeline,
    "AIPRODAudioToVideoPipeline": AIPRODAudioToVideoPipeline,
    "AIPRODTextToAudioPipeline": AIPRODTextToAudioPipeline,
    "AIPRODRetakePipeline": AIPRODRetakePipeline,
    "AIPRODExtendPipeline": AIPRODExtendPipeline,
    "AIPRODDFRPipeline": AIPRODDFRPipeline,
    "AIPRODAudioOnlyModel": AIPRODAudioOnlyModel,
    "AIPRODEncodeAudio": AIPRODEncodeAudio,
    "AIPRODEmptyAudioLatent": AIPRODEmptyAudioLatent,
    "AIPRODSaveAudio": AIPRODSaveAudio,
    "AIPRODEncodeClip": AIPRODEncodeClip,
    "AIPRODRetakeWindow": AIPRODRetakeWindow,
    "AIPRODAppendContinuation": AIPRODAppendContinuation,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "AIPRODCheckpointInspect": "AIPROD Checkpoint Inspect",
    "AIPRODCheckpointLoader": "AIPROD Checkpoint Loader",
    "AIPRODDiffusionModelLoader": "AIPROD Diffusion Model Loader",
    "AIPRODVideoVAELoader": "AIPROD Video VAE Loader",
    "AIPRODAudioVAELoader": "AIPROD Audio VAE Loader",
    "AIPRODUpsamplerLoader": "AIPROD Latent Upsampler Loader",
    "AIPRODTextEncoderLoader": "AIPROD Text Encoder Loader",
    "AIPRODLoraLoader": "AIPROD LoRA Loader",
    "AIPRODICLoraLoader": "AIPROD IC-LoRA Loader",
    "AIPRODTextEncoderLoraLoader": "AIPROD Text Encoder LoRA Loader",
    "AIPRODTextEncode": "AIPROD Text Encode",
    "AIPRODSavePrompt": "AIPROD Save Prompt",
    "AIPRODLoadPrompt": "AIPROD Load Prompt",
    "AIPRODEnhancePrompt": "AIPROD Enhance Prompt",
    "AIPRODEmptyLatent": "AIPROD Empty Audio+Video Latent",
    "AIPRODImageCondition": "AIPROD Image / Keyframe Condition",
    "AIPRODReferenceVideo": "AIPROD IC-LoRA Reference Video",
    "AIPRODSaveLatent": "AIPROD Save Audio+Video Latent",
    "AIPRODLoadLatent": "AIPROD Load Audio+Video Latent",
    "AIPRODGuider": "AIPROD Guider",
    "AIPRODSampler": "AIPROD Sampler",
    "AIPRODLatentUpsample": "AIPROD Latent Upsample",
    "AIPRODTemporalUpsample": "AIPROD Temporal Upsample",
    "AIPRODDurationHeadLoader": "AIPROD Duration Head Loader",
    "AIPRODPredictFrames": "AIPROD Predict Frames",
    "AIPRODVideoDecode": "AIPROD Video Decode",
    "AIPRODAudioDecode": "AIPROD Audio Decode",
    "AIPRODSaveVideo": "AIPROD Save Video",
    "AIPRODTextToVideoPipeline": "AIPROD Text/Image to Video (one stage)",
    "AIPRODTwoStagePipeline": "AIPROD Two-Stage Pipeline",
    "AIPRODDistilledPipeline": "AIPROD Distilled Pipeline",
    "AIPRODICLoraPipeline": "AIPROD IC-LoRA Pipeline",
    "AIPRODKeyframePipeline": "AIPROD Keyframe Interpolation Pipeline",
    "AIPRODTwoStageHQPipeline": "AIPROD Two-Stage HQ Pipeline (res_2s)",
    "AIPRODAudioToVideoPipeline": "AIPROD Audio to Video (two stages)",
    "AIPRODTextToAudioPipeline": "AIPROD Text to Audio",
    "AIPRODRetakePipeline": "AIPROD Retake (regenerate a time window)",
    "AIPRODExtendPipeline": "AIPROD Extend Video (continue a clip)",
    "AIPRODDFRPipeline": "AIPROD DFR Pipeline (LTX-2.5)",
    "AIPRODAudioOnlyModel": "AIPROD Audio-Only Model",
    "AIPRODEncodeAudio": "AIPROD Encode Audio (freeze)",
    "AIPRODEmptyAudioLatent": "AIPROD Empty Audio Latent",
    "AIPRODSaveAudio": "AIPROD Save Audio (WAV / FLAC)",
    "AIPRODEncodeClip": "AIPROD Encode Clip",
    "AIPRODRetakeWindow": "AIPROD Retake Window",
    "AIPRODAppendContinuation": "AIPROD Append Continuation",
}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
