"""A Hugging Face tokenizer as GGUF metadata: llama.cpp's `gpt2` (byte-level BPE) or `llama` (SentencePiece) vocabulary.

What llama.cpp needs to tokenize as the original does: every token's text and type, the merges (BPE) or scores
(SentencePiece), the pre-tokenizer by the name llama.cpp gives its split pattern, the special token ids, whether a
BOS/EOS is added, and the chat template. The pre-tokenizer is recognised from the tokenizer.json's structure (the
pattern itself), not guessed; one llama.cpp does not have is refused, since a GGUF that splits text differently
would answer with other tokens than the model was trained on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from mlxft.errors import ModelError
from mlxft.llm.gguf import _LLAMA3, _QWEN2

# llama.cpp's token types (gguf.TokenType)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
SPACE = "\u2581"  # SentencePiece's word-start mark

HINT = ("llama.cpp's own converter (convert_hf_to_gguf.py) knows more tokenizers; or export --format fused/peft "
        "for tools that read Hugging Face folders")


@dataclass
class Vocab:
    model: str                      # "gpt2" (byte-level BPE) or "llama" (SentencePiece)
    pre: str | None                 # the pre-tokenizer's llama.cpp name (gpt2 only)
    tokens: list[str]
    types: list[int]
    scores: list[float] | None = None
    merges: list[str] | None = None
    special_ids: dict[str, int] = field(default_factory=dict)   # bos, eos, unk, pad -> id
    add_bos: bool = False
    add_eos: bool = False
    add_space_prefix: bool | None = None
    chat_template: str | dict | None = None
    padded: int = 0                 # ids the embedding has and the tokenizer does not (written as [PADn], unused)
    notes: list[str] = field(default_factory=list)  # where llama.cpp will tokenize differently, said plainly

    def add_to(self, writer) -> None:
        """Write this vocabulary's keys with a gguf.GGUFWriter."""
        writer.add_tokenizer_model(self.model)
        if self.pre is not None:
            writer.add_tokenizer_pre(self.pre)
        writer.add_token_list(self.tokens)
        writer.add_token_types(self.types)
        if self.scores is not None:
            writer.add_token_scores(self.scores)
        if self.merges is not None:
            writer.add_token_merges(self.merges)
        for kind, idx in self.special_ids.items():
            getattr(writer, f"add_{kind}_token_id")(idx)
        # Written always: llama.cpp's default for a missing key is to add a BOS for SentencePiece vocabularies.
        writer.add_add_bos_token(self.add_bos)
        writer.add_add_eos_token(self.add_eos)
        if self.add_space_prefix is not None:
            writer.add_add_space_prefix(self.add_space_prefix)
        if isinstance(self.chat_template, dict):
            writer.add_chat_template([{"name": k, "template": v} for k, v in self.chat_template.items()])
        elif self.chat_template:
            writer.add_chat_template(self.chat_template)


def hf_tokenizer(tokenizer):
    """The transformers tokenizer inside mlx-lm's TokenizerWrapper (or the tokenizer itself)."""
    return getattr(tokenizer, "_tokenizer", tokenizer)


def vocab_from_tokenizer(tokenizer, vocab_size: int, config: dict | None = None) -> Vocab:
    """The GGUF vocabulary of `tokenizer` for a model whose embedding has `vocab_size` rows."""
    hf = hf_tokenizer(tokenizer)
    backend = getattr(hf, "backend_tokenizer", None)
    if backend is None:
        raise ModelError(f"the tokenizer ({type(hf).__name__}) has no tokenizer.json (a 'fast' tokenizer), which the GGUF export reads",
                         hint=HINT)
    spec = json.loads(backend.to_str())
    model = spec.get("model") or {}
    if model.get("type") != "BPE":
        raise ModelError(f"the tokenizer is a {model.get('type')} model; the GGUF export writes BPE tokenizers "
                         "(byte-level like GPT-2/Llama 3/Qwen, or SentencePiece-style like Llama 2/Mistral)", hint=HINT)
    spm = bool(model.get("byte_fallback"))
    vocab = backend.get_vocab(with_added_tokens=True)
    if vocab and max(vocab.values()) >= vocab_size:
        raise ModelError(f"the tokenizer has token id {max(vocab.values())}, the model's embedding only {vocab_size} rows",
                         hint="the tokenizer does not belong to this model: put back the one it came with")
    by_id = {i: t for t, i in vocab.items()}
    added = {i: t for i, t in hf.added_tokens_decoder.items()}

    tokens, types = [], []
    for i in range(vocab_size):
        text = by_id.get(i)
        if text is None:
            tokens.append(f"[PAD{i}]")
            types.append(UNUSED)
        elif i in added:
            tokens.append(text)
            types.append(CONTROL if added[i].special else USER_DEFINED)
        elif spm and _is_byte_token(text):
            tokens.append(text)
            types.append(BYTE)
        elif spm and text == model.get("unk_token"):
            tokens.append(text)
            types.append(UNKNOWN)
        else:
            tokens.append(text)
            types.append(NORMAL)
    merges = [_merge_text(m) for m in model.get("merges") or []]

    out = Vocab(model="llama" if spm else "gpt2", pre=None if spm else bpe_pre_name(spec), tokens=tokens, types=types,
                padded=sum(1 for i in range(vocab_size) if i not in by_id))
    if spm:
        out.scores = _spm_scores(tokens, types, merges)
        out.add_space_prefix = _adds_space_prefix(backend)
        if out.add_space_prefix and _no_prefix_after_added_token(backend, added):
            out.notes.append(
                "this SentencePiece-style tokenizer marks a word start only at the very start of a text (transformers' "
                "legacy=False); llama.cpp marks one after every special token too, so the first word after a special "
                "token (a chat turn's first word) gets an extra '▁' token there; plain text tokenizes the same")
    else:
        out.merges = merges
    out.special_ids = _special_ids(hf, config or {}, vocab_size)
    out.add_bos, out.add_eos = _adds_bos_eos(hf, out.special_ids)
    out.chat_template = getattr(hf, "chat_template", None) or None
    return out


def bpe_pre_name(spec: dict) -> str:
    """llama.cpp's name for a byte-level BPE tokenizer's pre-tokenizer, read off the tokenizer.json's structure."""
    pre = spec.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    kinds = [s.get("type") for s in steps]
    byte_level = steps[-1] if kinds and kinds[-1] == "ByteLevel" else None
    if byte_level is not None and not byte_level.get("add_prefix_space", False):
        regex = byte_level.get("use_regex", True)
        if kinds == ["ByteLevel"] and regex:
            return "gpt-2"
        if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and regex:
            return "smollm"  # GPT-2's split after splitting every digit apart
        if kinds == ["Split", "ByteLevel"] and not regex:
            pattern = (steps[0].get("pattern") or {}).get("Regex")
            if pattern == _LLAMA3:
                return "llama-bpe"
            if pattern == _QWEN2:
                return "qwen2"
    raise ModelError(f"the tokenizer's pre-tokenizer ({json.dumps(pre)[:300]}) is not one the GGUF export knows "
                     "(GPT-2, SmolLM, Llama 3, Qwen2/3); llama.cpp would split text differently from the model's tokenizer",
                     hint=HINT)


def _merge_text(merge) -> str:
    """A merge as GGUF stores it: "left right". A space inside a part is written as U+0120, llama.cpp's byte for it."""
    if isinstance(merge, str):
        return merge
    left, right = merge
    return f"{left.replace(' ', chr(0x120))} {right.replace(' ', chr(0x120))}"


def _is_byte_token(text: str) -> bool:
    return len(text) == 6 and text.startswith("<0x") and text.endswith(">") and all(c in "0123456789abcdefABCDEF" for c in text[3:5])


def _spm_scores(tokens: list[str], types: list[int], merges: list[str]) -> list[float]:
    """SentencePiece scores that make llama.cpp merge in the tokenizer.json's merge order.

    llama.cpp's SentencePiece tokenizer joins the adjacent pair whose joined text is the highest-scoring token; the
    token the merge of rank k makes gets score -k. Tokens no merge makes rank below every merge, so llama.cpp never
    prefers them; control, byte and unknown tokens score 0, as SentencePiece gives them.
    """
    rank: dict[str, int] = {}
    for k, merge in enumerate(merges):
        left, right = merge.split(" ", 1)
        rank.setdefault(left + right, k)
    floor = -float(len(merges))
    scores = []
    for i, (text, kind) in enumerate(zip(tokens, types)):
        if kind != NORMAL:
            scores.append(0.0)
        elif text in rank:
            scores.append(-float(rank[text]))
        else:
            scores.append(floor - i)
    return scores


def _adds_space_prefix(backend) -> bool:
    """Whether the tokenizer marks the start of a text as a word start ("a" -> "▁a"), as SentencePiece's dummy prefix does."""
    pieces = backend.encode("a", add_special_tokens=False).tokens
    return bool(pieces) and pieces[0].startswith(SPACE)


def _no_prefix_after_added_token(backend, added: dict) -> bool:
    """Whether text right after an added token gets no word-start mark ("[INST]a" -> "[INST]", "a"), unlike in llama.cpp."""
    token = next((t.content for t in added.values() if t.content), None)
    if token is None:
        return False
    pieces = backend.encode(token + "a", add_special_tokens=False).tokens
    return len(pieces) >= 2 and pieces[0] == token and not pieces[1].startswith(SPACE)


def _special_ids(hf, config: dict, vocab_size: int) -> dict[str, int]:
    ids = {}
    for kind in ("bos", "eos", "unk", "pad"):
        idx = getattr(hf, f"{kind}_token_id", None)
        if kind in ("bos", "eos") and idx is None and isinstance(config.get(f"{kind}_token_id"), int):
            idx = config[f"{kind}_token_id"]  # a tokenizer without the token named, a config that has its id
        if isinstance(idx, int) and 0 <= idx < vocab_size:
            ids[kind] = idx
    return ids


def _adds_bos_eos(hf, special_ids: dict[str, int]) -> tuple[bool, bool]:
    """Whether encoding adds a BOS / an EOS, seen by encoding a word with and without special tokens."""
    plain = list(hf.encode("a", add_special_tokens=False))
    full = list(hf.encode("a", add_special_tokens=True))
    bos, eos = special_ids.get("bos"), special_ids.get("eos")
    add_bos = bos is not None and len(full) > len(plain) and full[0] == bos and plain[:1] != [bos]
    add_eos = eos is not None and len(full) > len(plain) and full[-1] == eos and plain[-1:] != [eos]
    return add_bos, add_eos
