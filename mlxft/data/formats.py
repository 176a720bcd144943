"""Detect a data set's format and normalise each row to its canonical training form, naming the field of every problem.

Formats and what `normalize` returns for a row:

  text                  {text}                         -> {"text"}
  completion            {prompt, completion}           -> {"prompt", "completion"} (prompt may be empty)
  instruction (Alpaca)  {instruction, input?, output}  -> {"prompt", "completion"}; prompt is
                        instruction + "\\n\\n" + input when input is not blank. A row with a
                        non-empty `system` or `history` ([[question, answer], ...]) becomes
                        {"messages"} instead, so neither is lost.
  chat                  {messages: [{role, content}]}  -> {"messages"}; OpenAI's SFT rows are chat rows:
                        an assistant turn's `weight` (0: no loss on it) and `tool_calls`, a tool
                        turn's `tool_call_id` and the row's `tools` are kept (openai_format.py)
  sharegpt              {conversations: [{from, value}], system?} -> {"messages"}; human/user ->
                        user, gpt/assistant/model -> assistant, system -> system,
                        observation/tool/function -> tool, function_call -> assistant
  preference            {prompt, chosen, rejected}     -> {"prompt", "chosen", "rejected"}; each
                        a string or a list of turns. The layouts people publish are all read:
                        TRL's explicit prompt; TRL's implicit prompt (no prompt column: chosen
                        and rejected are whole conversations whose shared opening turns become
                        the prompt); Anthropic HH transcripts (chosen and rejected are strings of
                        "\n\nHuman: ... \n\nAssistant: ..." turns, read as conversations);
                        ShareGPT / LLaMA-Factory ({conversations, chosen, rejected}, the answers
                        single {from, value} turns); OpenAI's ({input: {messages},
                        preferred_output, non_preferred_output}, the outputs lists of turns).
  classification        {text, label}                  -> {"text", "label"}
  image-classification  {image, label}                 -> {"image", "label"}; the image is a path
                        (relative paths are resolved against the data file's folder), an
                        {"bytes"|"path"} dict or a PIL image, and must open and decode.

A label is a non-empty string or an integer. `mapping` renames columns when a file's names
differ: {"prompt": "question", "completion": "answer"} reads the prompt from `question`.

Conversation rules (chat, sharegpt, conversational preference), checked here so validation
and training agree: a system turn may only open the conversation; the first turn after it is
the user's (Llama 2, Mistral and Gemma templates refuse anything else); user and assistant
alternate, with tool turns allowed only after an assistant turn or another tool turn; user and
assistant turns are not empty; there is at least one assistant turn. A conversation may end
on a user turn (that turn simply trains nothing).
"""

from __future__ import annotations

import hashlib
import io
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Iterable

from mlxft.data.readers import Record, RowError
from mlxft.errors import DataError

FORMATS = ("text", "completion", "instruction", "chat", "sharegpt", "preference", "classification", "image-classification")
# What each format trains as in the language-model encoder; the others need their own objective.
LM_FORM = {"text": "text", "completion": "completion", "instruction": "completion", "chat": "chat", "sharegpt": "chat"}
COLUMNS = ("text", "prompt", "completion", "instruction", "input", "output", "system", "history", "messages", "conversations", "chosen", "rejected",
           "preferred_output", "non_preferred_output", "label", "image")
# The columns whose presence makes a row look like each format, most specific first.
SIGNATURES = {
    "preference": ("chosen", "rejected"),
    "chat": ("messages",),
    "sharegpt": ("conversations",),
    "instruction": ("instruction", "output"),
    "completion": ("prompt", "completion"),
    "image-classification": ("image", "label"),
    "classification": ("text", "label"),
}
OPENAI_PREFERENCE = ("preferred_output", "non_preferred_output")  # OpenAI's preference fine-tuning rows
HH_MARKERS = ("\n\nHuman:", "\n\nAssistant:")  # Anthropic HH transcripts
ROLE_NAMES = {
    "system": "system", "developer": "system", "user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant", "model": "assistant",
    "chatgpt": "assistant", "bot": "assistant", "function_call": "assistant", "tool": "tool", "observation": "tool", "function": "tool",
    "ipython": "tool",
}
DETECT_ROWS = 100
FORMAT_HINT = (
    "set the format (data.format, or --format) and, when your column names differ, a mapping such as "
    "{prompt: question, completion: answer}; formats: text {text}, completion {prompt, completion}, "
    "instruction {instruction, input, output}, chat {messages}, sharegpt {conversations}, "
    "preference {prompt, chosen, rejected}, classification {text, label}, image-classification {image, label}"
)


class RowProblem(Exception):
    """One row that cannot be used: the field at fault and why, in words the user can act on."""

    def __init__(self, field: str, reason: str, hint: str | None = None):
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason
        self.hint = hint


@dataclass(frozen=True)
class ImageFacts:
    """What validation reports about one image; `digest` finds byte-identical images."""

    width: int
    height: int
    mode: str
    digest: str


def column_names(mapping: dict | None) -> dict[str, str]:
    """Every canonical column -> the column to read it from; unknown keys in `mapping` are a DataError."""
    mapping = dict(mapping or {})
    problems = [f"{k!r} is not a column mlxft knows" for k in mapping if k not in COLUMNS]
    problems += [f"{k!r} maps to {v!r}, which is not a column name" for k, v in mapping.items() if k in COLUMNS and (not isinstance(v, str) or not v)]
    if problems:
        raise DataError("bad column mapping: " + "; ".join(problems), hint=f"map these names to your columns: {', '.join(COLUMNS)}")
    return {c: mapping.get(c, c) for c in COLUMNS}


def row_formats(data: dict, cols: dict[str, str]) -> list[str]:
    """Every format whose columns this row has; `text` only when nothing more specific matches."""
    found = [fmt for fmt, keys in SIGNATURES.items() if all(cols[k] in data for k in keys)]
    if "preference" not in found and all(cols[k] in data for k in OPENAI_PREFERENCE):
        found.insert(0, "preference")
    if "preference" in found:
        # A preference row's conversation (ShareGPT / LLaMA-Factory) or input (OpenAI) is its prompt.
        found = [f for f in found if f not in ("chat", "sharegpt", "completion", "instruction")]
    if not found and cols["text"] in data:
        found = ["text"]
    return found


def detect_format(rows: Iterable[Record | RowError | dict], mapping: dict | None = None, *, sample: int = DETECT_ROWS) -> str:
    """The one format of the first `sample` readable rows; ambiguous or mixed rows are a DataError saying what was seen.

    Rows that match no format at all do not decide anything here: `normalize` reports each.
    """
    cols = column_names(mapping)
    seen: dict[str, list[str]] = {}
    ambiguous, unknown, looked = [], Counter(), 0
    for row in rows:
        if isinstance(row, RowError):
            continue
        data, where = (row.data, row.where) if isinstance(row, Record) else (row, f"row {looked + 1}")
        looked += 1
        found = row_formats(data, cols)
        if len(found) > 1:
            ambiguous.append(f"{where} matches {' and '.join(found)}")
        elif found:
            seen.setdefault(found[0], []).append(where)
        else:
            unknown.update(str(k) for k in data)
        if looked >= sample:
            break
    if ambiguous:
        listed = "; ".join(ambiguous[:5]) + (f"; and {len(ambiguous) - 5} more" if len(ambiguous) > 5 else "")
        raise DataError(f"cannot tell the format: {listed}", hint=FORMAT_HINT)
    if len(seen) > 1:
        listed = ", ".join(f"{len(w)} {fmt} (first at {w[0]})" for fmt, w in sorted(seen.items(), key=lambda kv: -len(kv[1])))
        raise DataError(f"mixed formats in the first {looked} rows: {listed}", hint="use one format per data set; " + FORMAT_HINT)
    if not seen:
        keys = ", ".join(k for k, _ in unknown.most_common(12)) or "none"
        raise DataError(f"cannot tell the format: no known columns in the first {looked} readable rows (columns seen: {keys})", hint=FORMAT_HINT)
    return next(iter(seen))


# -- fields ---------------------------------------------------------------------------------


def _type_name(value) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "a boolean", list: "a list", dict: "an object", type(None): "null"}.get(type(value), type(value).__name__)


def _present(data: dict, col: str):
    if col not in data:
        raise RowProblem(col, "is missing")
    return data[col]


def _string(data: dict, col: str, *, allow_empty: bool = False) -> str:
    value = _present(data, col)
    if not isinstance(value, str):
        raise RowProblem(col, f"must be a string, got {_type_name(value)}")
    if not allow_empty and not value.strip():
        raise RowProblem(col, "is empty")
    return value


def _label(data: dict, col: str):
    value = _present(data, col)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise RowProblem(col, f"must be a class name or an integer, got {_type_name(value)}")
    if isinstance(value, str) and not value.strip():
        raise RowProblem(col, "is empty")
    return value


def check_turns(value, col: str, *, need_assistant: bool = True, after: str | None = None) -> list[dict]:
    """A list of {role, content} (or ShareGPT {from, value}) turns, checked and renamed to role/content.

    `after` is the role of the turn these continue (an answer continues its prompt's last turn)."""
    if not isinstance(value, list) or not value:
        raise RowProblem(col, f"must be a non-empty list of turns, got {_type_name(value) if not isinstance(value, list) else 'an empty list'}")
    from mlxft.data.openai_format import content_text, turn_extras

    turns = []
    for i, turn in enumerate(value):
        at = f"{col}[{i}]"
        if not isinstance(turn, dict):
            raise RowProblem(at, f"must be an object with role and content, got {_type_name(turn)}")
        role = turn.get("role", turn.get("from"))
        calls = turn.get("tool_calls") is not None  # OpenAI: an assistant turn that calls tools may have no content
        content = turn["content"] if "content" in turn else turn.get("value")
        if role is None or ("content" not in turn and "value" not in turn and not calls):
            raise RowProblem(at, "must have 'role' and 'content' (or ShareGPT 'from' and 'value')")
        if not isinstance(role, str) or role.lower() not in ROLE_NAMES:
            raise RowProblem(f"{at}.role", f"is {role!r}", hint=f"roles are system, user, assistant, tool (ShareGPT: {', '.join(k for k in ROLE_NAMES if k not in ('system', 'user', 'assistant', 'tool'))})")
        role = ROLE_NAMES[role.lower()]
        content = content_text(content, at, role, calls)
        extras = turn_extras(turn, at, role)  # weight, tool_calls, tool_call_id (openai_format.py)
        if role in ("user", "assistant") and not content.strip() and "tool_calls" not in extras:
            raise RowProblem(f"{at}.content", f"the {role} turn is empty")
        turns.append({"role": role, "content": content, **extras})
    _check_order(turns, col, need_assistant, after)
    return turns


def _check_order(turns: list[dict], col: str, need_assistant: bool, after: str | None = None) -> None:
    allowed_after = {None: ("user",), "system": ("user",), "user": ("assistant",), "assistant": ("user", "tool"), "tool": ("tool", "assistant")}
    prev = after
    for i, t in enumerate(turns):
        role = t["role"]
        if role == "system" and i == 0 and after is None:
            prev = "system"
            continue
        if role == "system":
            raise RowProblem(f"{col}[{i}].role", "a system turn may only open the conversation")
        if role not in allowed_after[prev]:
            if i == 0 and after is not None:
                reason = f"must start with the assistant's answer to the prompt's {after} turn, not a {role} turn"
            elif role == prev:
                reason = f"two {role} turns in a row ({col}[{i - 1}] and {col}[{i}]); merge them or add the missing turn between"
            elif prev in (None, "system"):
                reason = f"the conversation must start with a user turn{' after the system turn' if prev else ''}, not {role}"
            else:
                reason = f"a {role} turn cannot follow a {prev} turn"
            raise RowProblem(f"{col}[{i}].role", reason)
        prev = role
    if need_assistant and not any(t["role"] == "assistant" for t in turns):
        raise RowProblem(col, "the conversation has no assistant turn, so nothing to learn", hint="add the assistant's reply, or use the text format")


# -- images ---------------------------------------------------------------------------------


def _image_bytes(value, col: str, base: Path | None) -> bytes | None:
    if isinstance(value, dict):
        if isinstance(value.get("bytes"), (bytes, bytearray)):
            return bytes(value["bytes"])
        value = value.get("path")
    if isinstance(value, str) and value:
        path = Path(value).expanduser()
        if not path.is_absolute() and base is not None:
            path = base / path
        if not path.is_file():
            raise RowProblem(col, f"no such image file: {path}")
        return path.read_bytes()
    return None


def inspect_image(value, col: str = "image", base: Path | None = None) -> ImageFacts:
    """Open and fully decode one image (a path, {"bytes"|"path"} or PIL image); a RowProblem if it cannot be read."""
    from PIL import Image

    if isinstance(value, Image.Image):
        return ImageFacts(value.width, value.height, value.mode, hashlib.blake2b(value.tobytes(), digest_size=16).hexdigest())
    data = _image_bytes(value, col, base)
    if data is None:
        raise RowProblem(col, f"must be an image path, {{bytes|path}} object or image, got {_type_name(value)}")
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.verify()  # checks structure and checksums, but not that every pixel is there
        with Image.open(io.BytesIO(data)) as im:
            im.load()  # a truncated JPEG only fails here
            return ImageFacts(im.width, im.height, im.mode, hashlib.blake2b(data, digest_size=16).hexdigest())
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
        raise RowProblem(col, f"cannot read the image ({exc})") from None


def _resolved_image(value, source: str | None):
    """A relative image path made absolute against the folder of the file that named it."""
    if isinstance(value, str) and source and not Path(value).expanduser().is_absolute():
        base = Path(source).parent
        return str(base / value)
    return value


# -- normalise ------------------------------------------------------------------------------


def normalize(record: Record | dict, fmt: str, mapping: dict | None = None, *, check_images: bool = True) -> dict:
    """The canonical training form of one row (see the module docstring), or a RowProblem naming the field."""
    if fmt not in FORMATS:
        raise DataError(f"unknown data format {fmt!r}", hint=f"formats: {', '.join(FORMATS)}")
    cols = column_names(mapping)
    data = record.data if isinstance(record, Record) else record
    source = record.source if isinstance(record, Record) else None
    if fmt == "text":
        return {"text": _string(data, cols["text"])}
    if fmt == "completion":
        return {"prompt": _string(data, cols["prompt"], allow_empty=True), "completion": _string(data, cols["completion"])}
    if fmt == "instruction":
        return _instruction(data, cols)
    if fmt in ("chat", "sharegpt"):
        col = cols["messages" if fmt == "chat" else "conversations"]
        turns = _present(data, col)
        system = data.get(cols["system"]) if fmt == "sharegpt" else None
        if isinstance(system, str) and system.strip() and isinstance(turns, list) and not (turns and isinstance(turns[0], dict) and turns[0].get("from", turns[0].get("role")) == "system"):
            turns = [{"role": "system", "content": system}, *turns]
        return _with_tools({"messages": check_turns(turns, col)}, data, "tools")
    if fmt == "preference":
        return _preference(data, cols)
    if fmt == "classification":
        return {"text": _string(data, cols["text"]), "label": _label(data, cols["label"])}
    image = _present(data, cols["image"])
    label = _label(data, cols["label"])
    image = _resolved_image(image, source)
    if check_images:
        inspect_image(image, cols["image"])
    return {"image": image, "label": label}


def _with_tools(row: dict, data: dict, col: str) -> dict:
    """`row` with the tools the data offers the model (OpenAI's `tools`), when it has any."""
    if data.get("tools") is None:
        return row
    from mlxft.data.openai_format import check_tools

    return {**row, "tools": check_tools(data["tools"], col)}


def _instruction(data: dict, cols: dict[str, str]) -> dict:
    instruction = _string(data, cols["instruction"])
    extra = data.get(cols["input"])
    if extra is not None and not isinstance(extra, str):
        raise RowProblem(cols["input"], f"must be a string, got {_type_name(extra)}")
    output = _string(data, cols["output"])
    prompt = f"{instruction}\n\n{extra}" if extra and extra.strip() else instruction
    system, history = data.get(cols["system"]), data.get(cols["history"])
    if system is not None and not isinstance(system, str):
        raise RowProblem(cols["system"], f"must be a string, got {_type_name(system)}")
    if history is not None and not isinstance(history, list):
        raise RowProblem(cols["history"], f"must be a list of [question, answer] pairs, got {_type_name(history)}")
    if not (system and system.strip()) and not history:
        return {"prompt": prompt, "completion": output}
    turns = [{"role": "system", "content": system}] if system and system.strip() else []
    for i, pair in enumerate(history or []):
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
            raise RowProblem(f"{cols['history']}[{i}]", "must be a [question, answer] pair of strings")
        turns += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
    turns += [{"role": "user", "content": prompt}, {"role": "assistant", "content": output}]
    return {"messages": check_turns(turns, cols["history"])}


def _answer(data: dict, col: str, after: str | None):
    """An answer: a string, or the turns that continue a conversational prompt (which ends on `after`)."""
    value = _present(data, col)
    if isinstance(value, list):
        if after is None:
            raise RowProblem(col, "is a list of turns, but the prompt is a plain string: give both as strings or both as turns")
        return check_turns(value, col, need_assistant=True, after=after)
    return _string(data, col)


def _single_turn(value, col: str) -> list[dict] | str:
    """A ShareGPT-style answer: one {from, value} / {role, content} turn (or a list of turns, or a string)."""
    if isinstance(value, dict):
        return check_turns([value], col, need_assistant=True, after="user")
    if isinstance(value, list):
        return check_turns(value, col, need_assistant=True, after="user")
    if not isinstance(value, str):
        raise RowProblem(col, f"must be a string, a turn or a list of turns, got {_type_name(value)}")
    if not value.strip():
        raise RowProblem(col, "is empty")
    return value


def _hh_turns(text: str, col: str) -> list[dict]:
    """An Anthropic HH transcript ("\n\nHuman: ...\n\nAssistant: ...") as turns."""
    turns = []
    marks = list(re.finditer(r"\n\n(Human|Assistant):", text))
    if not marks or text[: marks[0].start()].strip():
        raise RowProblem(col, "does not start with a '\\n\\nHuman:' turn (Anthropic HH layout)")
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        role = "user" if m.group(1) == "Human" else "assistant"
        content = text[m.end(): end].strip()
        if turns and turns[-1]["role"] == role:  # a stray marker inside a turn: keep the text, not a new turn
            turns[-1]["content"] += text[m.start(): end]
            continue
        turns.append({"role": role, "content": content})
    if turns and turns[-1]["role"] == "assistant" and not turns[-1]["content"]:
        raise RowProblem(col, "ends with an empty Assistant turn")
    return check_turns(turns, col, need_assistant=False)


def _is_hh(value) -> bool:
    return isinstance(value, str) and value.lstrip(" ").startswith(HH_MARKERS[0]) and HH_MARKERS[1] in value


def _preference(data: dict, cols: dict[str, str]) -> dict:
    pcol, ccol, rcol = cols["prompt"], cols["chosen"], cols["rejected"]
    if all(cols[k] in data for k in OPENAI_PREFERENCE) and not (ccol in data and rcol in data):
        return _openai_preference(data, cols)
    conv = next((cols[k] for k in ("conversations", "messages") if data.get(cols[k]) is not None), None)
    if conv is not None and data.get(pcol) is None:
        # ShareGPT / LLaMA-Factory: the conversation so far is the prompt, chosen and rejected one turn each.
        prompt = check_turns(data[conv], conv, need_assistant=False)
        if prompt[-1]["role"] == "assistant":
            raise RowProblem(f"{conv}[{len(prompt) - 1}].role", "the prompt conversation must end on a user turn: chosen and rejected are the assistant's answers to it")
        chosen, rejected = _single_turn(_present(data, ccol), ccol), _single_turn(_present(data, rcol), rcol)
        if isinstance(chosen, str):
            chosen = [{"role": "assistant", "content": chosen}]
        if isinstance(rejected, str):
            rejected = [{"role": "assistant", "content": rejected}]
        return _pair(prompt, chosen, rejected, rcol)
    if data.get(pcol) is None and _is_hh(data.get(ccol)) and _is_hh(data.get(rcol)):
        data = {**data, ccol: _hh_turns(data[ccol], ccol), rcol: _hh_turns(data[rcol], rcol)}
    if data.get(pcol) is not None:
        prompt = data[pcol]
        prompt = check_turns(prompt, pcol, need_assistant=False) if isinstance(prompt, list) else _string(data, pcol)
        after = prompt[-1]["role"] if isinstance(prompt, list) else None
        if after == "assistant":
            raise RowProblem(f"{pcol}[{len(prompt) - 1}].role", "the prompt must end on a user turn: chosen and rejected answer it")
        chosen, rejected = _answer(data, ccol, after), _answer(data, rcol, after)
    else:
        chosen, rejected = _present(data, ccol), _present(data, rcol)
        if isinstance(chosen, str) and isinstance(rejected, str):
            return _implicit_text_prompt(chosen, rejected, pcol, ccol, rcol)
        if not (isinstance(chosen, list) and isinstance(rejected, list)):
            raise RowProblem(pcol, "is missing; without a prompt column, chosen and rejected must both be whole texts or both whole conversations (lists of turns)")
        chosen, rejected = check_turns(chosen, ccol), check_turns(rejected, rcol)
        shared = 0
        while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
            shared += 1
        # The prompt is the shared opening; both answers must then begin with the assistant.
        while shared and chosen[shared - 1]["role"] == "assistant":
            shared -= 1
        if shared == 0:
            raise RowProblem(pcol, "is missing and chosen and rejected share no opening turns to take it from")
        prompt, chosen, rejected = chosen[:shared], chosen[shared:], rejected[shared:]
        for col, part in ((ccol, chosen), (rcol, rejected)):
            if not part or part[0]["role"] != "assistant":
                raise RowProblem(col, "must continue the shared prompt with an assistant turn")
    return _pair(prompt, chosen, rejected, rcol)


def _implicit_text_prompt(chosen: str, rejected: str, pcol: str, ccol: str, rcol: str) -> dict:
    """TRL's implicit prompt for plain texts: their shared beginning, cut back to a word boundary."""
    n = 0
    while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
        n += 1
    while n and not chosen[n - 1].isspace():
        n -= 1  # never split a word between the prompt and the answers
    if not chosen[:n].strip():
        raise RowProblem(pcol, "is missing and chosen and rejected share no beginning to take it from")
    for col, rest in ((ccol, chosen[n:]), (rcol, rejected[n:])):
        if not rest.strip():
            raise RowProblem(col, "adds nothing after the prompt chosen and rejected share")
    return _pair(chosen[:n], chosen[n:], rejected[n:], rcol)


def _pair(prompt, chosen, rejected, rcol: str) -> dict:
    for col, part in (("chosen", chosen), (rcol, rejected)):
        if isinstance(part, list) and isinstance(prompt, list) and part and part[0]["role"] != "assistant":
            raise RowProblem(col, f"must be the assistant's answer to the prompt, but starts with a {part[0]['role']} turn")
    if chosen == rejected:
        raise RowProblem(rcol, "is the same as chosen, so there is nothing to prefer")
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


def _openai_preference(data: dict, cols: dict[str, str]) -> dict:
    icol, ccol, rcol = cols["input"], "preferred_output", "non_preferred_output"
    ccol, rcol = cols[ccol], cols[rcol]
    given = _present(data, icol)
    if not isinstance(given, dict) or "messages" not in given:
        raise RowProblem(icol, f"must be an object with 'messages' (OpenAI's preference layout), got {_type_name(given)}")
    prompt = check_turns(given["messages"], f"{icol}.messages", need_assistant=False)
    if prompt[-1]["role"] == "assistant":
        raise RowProblem(f"{icol}.messages[{len(prompt) - 1}].role", "the input must end on a user turn: the outputs answer it")
    chosen = check_turns(_present(data, ccol), ccol, need_assistant=True, after="user")
    rejected = check_turns(_present(data, rcol), rcol, need_assistant=True, after="user")
    return _with_tools(_pair(prompt, chosen, rejected, rcol), given, f"{icol}.tools")


def example_text(canonical: dict) -> str:
    """All of one normalised example's text, in order: what duplicate and leakage checks compare."""
    parts = []
    for key in ("prompt", "text", "completion", "messages", "chosen", "rejected", "image", "label"):
        value = canonical.get(key)
        if isinstance(value, list):
            parts += [f"{t['role']}: {t['content']}" for t in value]
        elif value is not None:
            parts.append(str(value))
    return "\n".join(parts)
