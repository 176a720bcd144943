"""The export formats: name -> the run kinds it takes and the module that writes it (imported only when used)."""

from __future__ import annotations

from mlxft.export import ADAPTER_KINDS, ExportFormat

IMAGE_KINDS = ("image-classify",)

FORMATS: dict[str, ExportFormat] = {f.name: f for f in (
    ExportFormat("mlx", ADAPTER_KINDS + IMAGE_KINDS, "the run's result as mlxft saved it (an mlx-lm adapter folder, or the image model)",
                 "mlxft.export.mlx_copy"),
    ExportFormat("peft", tuple(k for k in ADAPTER_KINDS if k != "lm-full"),
                 "a LoRA/DoRA adapter as Hugging Face PEFT's adapter_model.safetensors + adapter_config.json (a full fine-tune: use fused)",
                 "mlxft.export.peft"),
)}
