"""The export formats: name -> the run kinds it takes, the options it reads, and the module that writes it (imported only when used)."""

from __future__ import annotations

from mlxft.export import ADAPTER_KINDS, LM_KINDS, ExportFormat

IMAGE_KINDS = ("image-classify",)
FLOAT_DTYPES = ("float16", "bfloat16", "float32")  # fused, peft and vision_folder's DTYPES (a test holds them equal)
GGUF_DTYPES = ("f16", "bf16", "f32", "q8_0")        # gguf_write.TENSOR_TYPES (--quantize 8 is q8_0 again: not offered twice)

FORMATS: dict[str, ExportFormat] = {f.name: f for f in (
    ExportFormat("mlx", ADAPTER_KINDS + IMAGE_KINDS, "the run's result as mlxft saved it (an mlx-lm adapter folder, or the image model)",
                 "mlxft.export.mlx_copy"),
    ExportFormat("fused", ADAPTER_KINDS, "a standalone model with the fine-tune merged in (mlx-lm and transformers load it; "
                 "a score classifier as *ForSequenceClassification), measured for what survived", "mlxft.export.fused",
                 dtypes=FLOAT_DTYPES, dtype_default="the base's", quantize=(4, 8), base=True),
    ExportFormat("timm", IMAGE_KINDS, "the image classifier in timm's layout (config.json + model.safetensors): "
                 'timm.create_model("local-dir:FOLDER", pretrained=True); ResNet, ViT, EfficientNet-Lite', "mlxft.export.vision_timm",
                 dtypes=FLOAT_DTYPES, dtype_default="float32"),
    ExportFormat("transformers", IMAGE_KINDS, "the image classifier as transformers' *ForImageClassification (+ preprocessor_config.json): "
                 "AutoModelForImageClassification.from_pretrained; ResNet, ViT, DINOv2", "mlxft.export.vision_transformers",
                 dtypes=FLOAT_DTYPES, dtype_default="float32"),
    ExportFormat("peft", tuple(k for k in ADAPTER_KINDS if k != "lm-full"),
                 "a LoRA/DoRA adapter as Hugging Face PEFT's adapter_model.safetensors + adapter_config.json (a full fine-tune: use fused)",
                 "mlxft.export.peft", dtypes=FLOAT_DTYPES, dtype_default="as trained", base=True),
    ExportFormat("gguf", LM_KINDS, "one GGUF file for llama.cpp / Ollama: the adapter fused in, tokenizer and chat template inside "
                 "(--dtype f16 | bf16 | f32 | q8_0), and a Modelfile", "mlxft.export.gguf_model",
                 dtypes=GGUF_DTYPES, dtype_default="f16", base=True),
    ExportFormat("gguf-adapter", tuple(k for k in LM_KINDS if k != "lm-full"), "the LoRA adapter as a GGUF for llama.cpp --lora / Ollama ADAPTER, and a Modelfile "
                 "(--with-base also writes the base as GGUF)", "mlxft.export.gguf_adapter",
                 dtypes=GGUF_DTYPES, dtype_default="f16", base=True, with_base=True),
)}
