"""The export formats: name -> the run kinds it takes and the module that writes it (imported only when used)."""

from __future__ import annotations

from mlxft.export import ADAPTER_KINDS, ExportFormat

IMAGE_KINDS = ("image-classify",)

FORMATS: dict[str, ExportFormat] = {f.name: f for f in (
    ExportFormat("mlx", ADAPTER_KINDS + IMAGE_KINDS, "the run's result as mlxft saved it (an mlx-lm adapter folder, or the image model)",
                 "mlxft.export.mlx_copy"),
    ExportFormat("fused", ADAPTER_KINDS, "a standalone model with the fine-tune merged in (mlx-lm and transformers load it; "
                 "a score classifier as *ForSequenceClassification), measured for what survived", "mlxft.export.fused"),
)}
