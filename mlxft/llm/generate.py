"""Text generation with or without an adapter: chat template, sampling settings, streaming."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator


@dataclass(frozen=True)
class SamplingSettings:
    temperature: float = 0.0  # 0 = greedy, deterministic
    top_p: float = 1.0
    top_k: int = 0
    max_tokens: int = 256
    seed: int = 0


def render_prompt(tokenizer, prompt: str | None = None, messages: list[dict] | None = None, system: str | None = None, use_template: bool = True) -> str:
    """The exact text the model sees: the chat template with a generation prompt, when the tokenizer has one."""
    if messages is None:
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt or ""}]
    hf = getattr(tokenizer, "_tokenizer", tokenizer)
    if use_template and getattr(hf, "chat_template", None):
        return hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return "\n".join(m["content"] for m in messages)


def prompt_ids(tokenizer, text: str) -> list[int]:
    """Token ids of a rendered prompt: a chat template already holds its special tokens, plain text gets them added."""
    hf = getattr(tokenizer, "_tokenizer", tokenizer)
    return hf(text, add_special_tokens=not getattr(hf, "chat_template", None))["input_ids"]


def stream_responses(model, tokenizer, text: str, settings: SamplingSettings = SamplingSettings()) -> Iterator:
    """Yield mlx-lm's response per generated token: its text piece, token counts and speed."""
    import mlx.core as mx
    from mlx_lm import stream_generate
    from mlx_lm.sample_utils import make_sampler

    mx.random.seed(settings.seed)
    sampler = make_sampler(temp=settings.temperature, top_p=settings.top_p, top_k=settings.top_k)
    yield from stream_generate(model, tokenizer, prompt_ids(tokenizer, text), max_tokens=settings.max_tokens, sampler=sampler)


def stream_text(model, tokenizer, text: str, settings: SamplingSettings = SamplingSettings()) -> Iterator[str]:
    """Yield text pieces as they are generated."""
    for response in stream_responses(model, tokenizer, text, settings):
        yield response.text


def generate_text(model, tokenizer, text: str, settings: SamplingSettings = SamplingSettings(), on_text: Callable[[str], None] | None = None) -> str:
    pieces = []
    for piece in stream_text(model, tokenizer, text, settings):
        pieces.append(piece)
        if on_text is not None:
            on_text(piece)
    return "".join(pieces)
