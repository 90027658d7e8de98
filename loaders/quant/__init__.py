"""Quantized weights: one format table, one de-quantisation per format, one quantized Linear.

`formats` names every weight format we read (ComfyUI's ``comfy_quant`` formats, the legacy ``scaled_fp8``
marker, Lightricks' fp8 / NVFP4 layouts, GGUF block types) as data; `kernels` and `ggml` de-quantise them
(bit for bit as comfy-kitchen's eager backend and the ``gguf`` package do); `layers` finds the quantized layers
of a file from its header; `linear.QuantLinear` keeps a layer quantized and de-quantises it for its own matmul.
"""
