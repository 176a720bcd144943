"""The model catalogue: one validated `ModelEntry` per supported base model, read from the YAML files in `models/`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mlxft.catalogue import MODELS_DIR_ENV, catalogue_folder, read_entries
from mlxft.errors import ModelError

__all__ = ["MODELS_DIR_ENV", "ModelEntry", "catalogue_folder", "config_at_hand", "find_model", "load_catalogue"]

_Positive = Annotated[int, Field(gt=0)]


class ModelEntry(BaseModel):
    """A base model we support, with the config.json numbers needed to plan memory without a download."""

    # Frozen and strict: a typo in a catalogue file must fail loudly, not be ignored.
    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$", description="Short lowercase name used in recipes and `mlxft models`.")
    hub_id: str = Field(pattern=r"^[\w.-]+/[\w.-]+$", description="The original repository on the Hugging Face Hub.")
    mlx_4bit_id: str | None = Field(None, pattern=r"^[\w.-]+/[\w.-]+$", description="The mlx-community 4-bit conversion.")
    architecture: str = Field(description="mlx-lm model_type (llama, qwen2, qwen3, mistral, gemma2, gemma3_text, phi3).")
    parameters: _Positive = Field(description="Published parameter count.")
    context_length: _Positive
    license: str
    gated: bool = Field(description="The Hub repository asks you to accept a licence (or share contact details) first.")
    chat_template: str = Field(description="Notes on the chat format: roles, special tokens, default system prompt.")
    lora_targets: list[str] | Literal["all-linear"] = Field(description="Recommended LoRA target module names for this architecture.")
    hidden_size: _Positive
    intermediate_size: _Positive
    num_hidden_layers: _Positive
    num_attention_heads: _Positive
    num_key_value_heads: _Positive
    head_dim: _Positive | None = Field(None, description="Only when it differs from hidden_size / num_attention_heads.")
    vocab_size: _Positive
    tie_word_embeddings: bool
    attention_bias: bool = False
    final_logit_softcapping: float | None = None
    notes: str | None = None

    @model_validator(mode="after")
    def _heads_divide(self):
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_attention_heads must be a multiple of num_key_value_heads")
        if self.head_dim is None and self.hidden_size % self.num_attention_heads:
            raise ValueError("hidden_size is not a multiple of num_attention_heads; give head_dim")
        return self

    def config(self) -> dict:
        """The entry as a Hugging Face style config.json dict (the keys mlx-lm and the memory planner read)."""
        config = {
            "model_type": self.architecture,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim or self.hidden_size // self.num_attention_heads,
            "vocab_size": self.vocab_size,
            "tie_word_embeddings": self.tie_word_embeddings,
            "max_position_embeddings": self.context_length,
            "attention_bias": self.attention_bias,
        }
        if self.final_logit_softcapping is not None:
            config["final_logit_softcapping"] = self.final_logit_softcapping
        return config


def load_catalogue(folder: str | Path | None = None) -> list[ModelEntry]:
    """Read and validate every `*.yaml` in the catalogue folder; raise one MlxftError listing every bad entry."""
    if folder is None:
        folder = catalogue_folder()
        if folder is None:
            return []  # an installed package without its catalogue copy: no keys, Hub ids still work
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelError(f"model catalogue folder not found: {folder}", hint=f"point {MODELS_DIR_ENV} at a folder of model YAML files")
    return read_entries(folder, ModelEntry, "model catalogue")


def find_model(name: str, folder: str | Path | None = None) -> ModelEntry | None:
    """The entry whose key (any case), Hub id or mlx-community id is `name`, or None."""
    wanted = name.strip().lower()
    for entry in load_catalogue(folder):
        if wanted in (entry.key, entry.hub_id.lower(), (entry.mlx_4bit_id or "").lower()):
            return entry
    return None


def config_at_hand(spec: str) -> dict | None:
    """A model's config.json when it needs no download or import: a local folder's, or the catalogue's; else None."""
    from mlxft.llm.model_files import MODEL_CONFIG_HINT, read_json_file

    path = Path(spec).expanduser()
    if path.is_dir():
        return read_json_file(path / "config.json", "the model's config", hint=MODEL_CONFIG_HINT) if (path / "config.json").exists() else None
    entry = find_model(spec)
    return entry.config() if entry is not None else None
