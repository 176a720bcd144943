"""OpenAI fine-tuning JSONL both ways: the turn fields mlxft reads from it, rows written in its layouts, its rules checked.

Reading needs no format of its own. OpenAI's SFT rows ({"messages": [...], "tools": [...]}) are `chat` rows and its DPO
rows ({"input": {"messages", "tools"}, "preferred_output": [...], "non_preferred_output": [...]}) are `preference`
rows; formats.py detects both and keeps, beyond role and content, what this module checks (`turn_extras`,
`check_tools`): an assistant turn's `weight` (0: no loss on that turn; data/encode.py honours it), its `tool_calls`
(then its content may be null), a tool turn's `tool_call_id`, and the row's `tools`.

Writing (`mlxft data convert --to openai`): `to_openai(canonical)` makes an SFT row of a chat or prompt/completion row
and a DPO row of a preference row. `example_problems(row)` checks one written row against OpenAI's rules and
`check_openai_file(path)` a whole file, every problem with its line number.

The rules, and where they are published (OpenAI's platform documentation, read 2026-12):
- at least 10 examples in a training file (Supervised fine-tuning guide, "Right number of examples");
- one file at most 512 MB (Files API reference, "Upload file": individual files can be up to 512 MB);
- each example within the model's training context: 65,536 tokens for gpt-4o / gpt-4o-mini / gpt-4.1 ("training
  example context length" in the fine-tuning model tables); counted here only as an upper bound (UTF-8 bytes plus a few
  tokens per message), since OpenAI's tokenizer is not available offline, so an example over it is a warning;
- SFT rows: `messages` (>= 1), optional `tools` / `parallel_tool_calls`; roles system, developer, user, assistant, tool;
  content a string (or text parts), null only on an assistant turn with tool_calls; `weight` 0 or 1 on assistant turns
  only; tool calls {id, type: "function", function: {name, arguments: a JSON string}}; a tool turn answers an earlier
  call by its tool_call_id (API reference, "The chat input format" / FineTuneChatRequestInput);
- each SFT example ends with the assistant's reply, and some assistant turn has weight 1 (the target);
- DPO rows: `input` {messages, tools?, parallel_tool_calls?}, `preferred_output` and `non_preferred_output` each exactly
  one assistant message (API reference, FineTunePreferenceRequestInput: at most one item each; DPO guide).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from mlxft.data.formats import RowProblem, _type_name

MIN_EXAMPLES = 10
MAX_FILE_BYTES = 512 * 1024 * 1024
MAX_EXAMPLE_TOKENS = 65_536
TOKENS_PER_MESSAGE = 4  # role and separators around each message, on top of its text (OpenAI's cookbook counts 3-4)

ROLES = ("system", "developer", "user", "assistant", "tool")
SFT_KEYS = ("messages", "tools", "parallel_tool_calls")
DPO_KEYS = ("input", "preferred_output", "non_preferred_output")
MESSAGE_KEYS = {"system": {"role", "content", "name"}, "developer": {"role", "content", "name"}, "user": {"role", "content", "name"},
                "assistant": {"role", "content", "name", "weight", "tool_calls", "refusal"}, "tool": {"role", "content", "tool_call_id"}}


# -- reading: what formats.check_turns keeps beyond role and content -----------------------------------------


def turn_extras(turn: dict, at: str, role: str) -> dict:
    """The OpenAI fields of one turn that training uses, checked: weight, tool_calls (arguments as a JSON string), tool_call_id."""
    out = {}
    if turn.get("weight") is not None:
        weight = turn["weight"]
        if role != "assistant":
            raise RowProblem(f"{at}.weight", f"only assistant turns have a weight (it says whether that turn gets loss); this is a {role} turn")
        if isinstance(weight, bool) or weight not in (0, 1):
            raise RowProblem(f"{at}.weight", f"must be 0 (no loss on this turn) or 1, got {weight!r}")
        out["weight"] = int(weight)
    if turn.get("tool_calls") is not None:
        if role != "assistant":
            raise RowProblem(f"{at}.tool_calls", f"only assistant turns call tools; this is a {role} turn")
        out["tool_calls"] = check_tool_calls(turn["tool_calls"], f"{at}.tool_calls")
    if role == "tool" and turn.get("tool_call_id") is not None:
        if not isinstance(turn["tool_call_id"], str) or not turn["tool_call_id"]:
            raise RowProblem(f"{at}.tool_call_id", f"must be the id of the call this answers, got {_type_name(turn['tool_call_id'])}")
        out["tool_call_id"] = turn["tool_call_id"]
    return out


def check_tool_calls(value, at: str) -> list[dict]:
    """[{id, type: function, function: {name, arguments}}], arguments normalised to a JSON string (OpenAI's form)."""
    if not isinstance(value, list) or not value:
        raise RowProblem(at, f"must be a non-empty list of calls, got {_type_name(value) if not isinstance(value, list) else 'an empty list'}")
    calls = []
    for i, call in enumerate(value):
        where = f"{at}[{i}]"
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise RowProblem(where, "must be {id, type: \"function\", function: {name, arguments}}")
        if call.get("type", "function") != "function":
            raise RowProblem(f"{where}.type", f"is {call['type']!r}; only function calls are read")
        args = fn.get("arguments", "{}")
        if isinstance(args, dict):  # Hugging Face chat templates take a dict; OpenAI's files hold a JSON string
            args = json.dumps(args, ensure_ascii=False)
        if not isinstance(args, str):
            raise RowProblem(f"{where}.function.arguments", f"must be a JSON string (or object), got {_type_name(args)}")
        out = {"type": "function", "function": {"name": fn["name"], "arguments": args}}
        if call.get("id") is not None:
            out = {"id": str(call["id"]), **out}
        calls.append(out)
    return calls


def check_tools(value, col: str) -> list[dict]:
    """A row's tools: [{type: function, function: {name, description?, parameters?}}], as given."""
    if not isinstance(value, list):
        raise RowProblem(col, f"must be a list of tools, got {_type_name(value)}")
    for i, tool in enumerate(value):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise RowProblem(f"{col}[{i}]", "must be {type: \"function\", function: {name, description, parameters}}")
        if tool.get("type", "function") != "function":
            raise RowProblem(f"{col}[{i}].type", f"is {tool['type']!r}; only function tools are read")
        if fn.get("parameters") is not None and not isinstance(fn["parameters"], dict):
            raise RowProblem(f"{col}[{i}].function.parameters", f"must be a JSON schema object, got {_type_name(fn['parameters'])}")
    return value


def content_text(content, at: str, role: str, has_calls: bool) -> str:
    """A turn's content as text: a string, OpenAI's text parts joined, or "" where a call stands in for it."""
    if content is None and has_calls:
        return ""
    if isinstance(content, list) and all(isinstance(p, dict) for p in content):
        kinds = {p.get("type") for p in content}
        if kinds <= {"text"} and all(isinstance(p.get("text"), str) for p in content):
            return "".join(p["text"] for p in content)
        raise RowProblem(f"{at}.content", f"has {', '.join(sorted(str(k) for k in kinds - {'text'}))} parts; only text is trained here")
    if not isinstance(content, str):
        raise RowProblem(f"{at}.content", f"must be a string, got {_type_name(content)}")
    return content


def template_turns(messages: list[dict]) -> list[dict]:
    """Canonical turns as chat templates take them: no weight, tool-call arguments as objects (Hugging Face's convention)."""
    out = []
    for m in messages:
        turn = {k: v for k, v in m.items() if k != "weight"}
        if "tool_calls" in turn:
            calls = []
            for call in turn["tool_calls"]:
                fn = dict(call["function"])
                try:
                    fn["arguments"] = json.loads(fn["arguments"])
                except (TypeError, ValueError):
                    pass  # not JSON: the template gets the text as it is
                calls.append({**call, "function": fn})
            turn["tool_calls"] = calls
        out.append(turn)
    return out


# -- writing ------------------------------------------------------------------------------------------------


def _turn(t: dict) -> dict:
    out = {"role": t["role"], "content": None if (t.get("tool_calls") and not t["content"]) else t["content"]}
    for key in ("tool_calls", "tool_call_id", "weight"):
        if key in t:
            out[key] = t[key]
    return out


def _turns(value, role: str) -> list[dict]:
    return [_turn(t) for t in value] if isinstance(value, list) else [{"role": role, "content": value}]


def to_openai(row: dict) -> dict:
    """One canonical row (formats.normalize) as an OpenAI SFT row (chat, prompt/completion) or DPO row (preference)."""
    if "chosen" in row:
        given = {"messages": _turns(row["prompt"], "user")}
        if row.get("tools"):
            given["tools"] = row["tools"]
        return {"input": given, "preferred_output": _turns(row["chosen"], "assistant"),
                "non_preferred_output": _turns(row["rejected"], "assistant")}
    if "messages" in row:
        out = {"messages": [_turn(t) for t in row["messages"]]}
        if row.get("tools"):
            out["tools"] = row["tools"]
        return out
    if "completion" in row:
        turns = [{"role": "user", "content": row["prompt"]}] if row["prompt"] else []
        return {"messages": turns + [{"role": "assistant", "content": row["completion"]}]}
    what = "a text row has no reply to learn" if "text" in row and "label" not in row else "OpenAI's fine-tuning files hold conversations"
    raise RowProblem("row", f"cannot be written as OpenAI fine-tuning data: {what}",
                     hint="convert chat, prompt/completion, instruction or preference data (OpenAI: SFT or DPO)")


# -- OpenAI's rules -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Violation:
    where: str
    field: str | None
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: " + (f"{self.field}: " if self.field else "") + self.reason


@dataclass
class OpenAICheck:
    """What `check_openai_file` found: the kind (sft or dpo), examples counted, rule violations, and warnings."""

    path: str
    kind: str | None = None
    examples: int = 0
    problems: list[Violation] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        head = f"{self.path}: {self.examples} {self.kind or 'OpenAI'} example(s); " + (
            "meets OpenAI's fine-tuning rules" if self.ok else f"{len(self.problems)} problem(s) with OpenAI's fine-tuning rules")
        return "\n".join([head] + [f"  {p}" for p in self.problems] + [f"  warning: {w}" for w in self.warnings])


def row_kind(data: dict) -> str | None:
    """"dpo" for a row with OpenAI's preference keys, "sft" for one with messages, None otherwise."""
    if any(k in data for k in DPO_KEYS):
        return "dpo"
    return "sft" if "messages" in data else None


def _messages(value, col: str, problems: list) -> list[dict]:
    """Check OpenAI's message rules over a list; the dict messages (for the rules that look at the whole example)."""
    if not isinstance(value, list) or not value:
        problems.append((col, f"must be a non-empty list of messages, got {_type_name(value) if not isinstance(value, list) else 'an empty list'}"))
        return []
    calls, good = set(), []
    for i, m in enumerate(value):
        at = f"{col}[{i}]"
        if not isinstance(m, dict):
            problems.append((at, f"must be an object with role and content, got {_type_name(m)}"))
            continue
        role = m.get("role")
        if role not in ROLES:
            problems.append((f"{at}.role", f"is {role!r}; OpenAI's roles are {', '.join(ROLES)}"))
            continue
        good.append(m)
        extra = sorted(set(m) - MESSAGE_KEYS[role])
        if extra:
            problems.append((at, f"has {', '.join(extra)}, which OpenAI does not accept on a {role} message"))
        has_calls = role == "assistant" and m.get("tool_calls") is not None
        content = m.get("content")
        if content is None and not has_calls:
            problems.append((f"{at}.content", "is missing" if "content" not in m else "is null (only an assistant message with tool_calls may have no content)"))
        elif content is not None:
            try:
                text = content_text(content, at, role, has_calls)
                if role in ("user", "assistant") and not text.strip() and not has_calls:
                    problems.append((f"{at}.content", f"the {role} message is empty"))
            except RowProblem as p:
                problems.append((p.field, p.reason))
        if "weight" in m and (isinstance(m["weight"], bool) or m["weight"] not in (0, 1)):
            problems.append((f"{at}.weight", f"must be 0 or 1, got {m['weight']!r}"))
        if has_calls:
            if not isinstance(m["tool_calls"], list) or not m["tool_calls"]:
                problems.append((f"{at}.tool_calls", "must be a non-empty list of calls"))
            else:
                for j, call in enumerate(m["tool_calls"]):
                    fn = call.get("function") if isinstance(call, dict) else None
                    if not isinstance(call, dict) or not isinstance(call.get("id"), str) or call.get("type") != "function" \
                            or not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                        problems.append((f"{at}.tool_calls[{j}]", 'must be {"id", "type": "function", "function": {"name", "arguments"}}'))
                        continue
                    if not isinstance(fn.get("arguments"), str):
                        problems.append((f"{at}.tool_calls[{j}].function.arguments", f"must be a JSON string, got {_type_name(fn.get('arguments'))}"))
                    calls.add(call["id"])
        if role == "tool":
            cid = m.get("tool_call_id")
            if not isinstance(cid, str):
                problems.append((f"{at}.tool_call_id", "is missing: a tool message names the call it answers"))
            elif cid not in calls:
                problems.append((f"{at}.tool_call_id", f"{cid!r} answers no earlier tool call of this example"))
    return good


def _tools(data: dict, col: str, problems: list) -> None:
    if data.get("tools") is None:
        return
    try:
        check_tools(data["tools"], col)
    except RowProblem as p:
        problems.append((p.field, p.reason))


def token_bound(messages: list[dict], tools=None) -> int:
    """An upper bound on the tokens of an example: every BPE token covers at least one UTF-8 byte, plus per-message overhead."""
    size = sum(len(json.dumps(m.get("content") or "", ensure_ascii=False).encode()) + len(json.dumps(m.get("tool_calls") or "").encode())
               + TOKENS_PER_MESSAGE for m in messages if isinstance(m, dict))
    return size + (len(json.dumps(tools).encode()) if tools else 0)


def example_problems(data: dict, max_tokens: int = MAX_EXAMPLE_TOKENS) -> tuple[str | None, list[tuple[str, str]], list[str]]:
    """(kind, [(field, reason)] OpenAI would refuse, [warnings]) for one row of an OpenAI fine-tuning file."""
    problems, warnings = [], []
    kind = row_kind(data)
    if kind is None:
        problems.append(("row", "is neither an SFT example (messages) nor a DPO example (input, preferred_output, non_preferred_output)"))
        return None, problems, warnings
    if kind == "sft":
        extra = sorted(set(data) - set(SFT_KEYS))
        if extra:
            problems.append(("row", f"has {', '.join(extra)}; an SFT example has only {', '.join(SFT_KEYS)}"))
        messages = _messages(data.get("messages"), "messages", problems)
        _tools(data, "tools", problems)
        assistant = [m for m in messages if m.get("role") == "assistant"]
        if messages and messages[-1].get("role") != "assistant":
            problems.append((f"messages[{len(data['messages']) - 1}]", f"the example ends with a {messages[-1].get('role')} message; "
                             "it must end with the assistant's reply (the target)"))
        elif assistant and not any(m.get("weight", 1) == 1 for m in assistant):
            problems.append(("messages", "every assistant message has weight 0: nothing to learn"))
        bound = token_bound(messages, data.get("tools"))
    else:
        extra = sorted(set(data) - set(DPO_KEYS))
        if extra:
            problems.append(("row", f"has {', '.join(extra)}; a DPO example has only {', '.join(DPO_KEYS)}"))
        given = data.get("input")
        messages = []
        if not isinstance(given, dict):
            problems.append(("input", f"must be an object with messages, got {_type_name(given)}"))
        else:
            unknown = sorted(set(given) - set(SFT_KEYS))
            if unknown:
                problems.append(("input", f"has {', '.join(unknown)}; the input has only {', '.join(SFT_KEYS)}"))
            messages = _messages(given.get("messages"), "input.messages", problems)
            _tools(given, "input.tools", problems)
            if messages and messages[-1].get("role") == "assistant":
                problems.append((f"input.messages[{len(given['messages']) - 1}]", "the input ends with an assistant message; the outputs answer it"))
        answers = []
        for col in DPO_KEYS[1:]:
            value = data.get(col)
            if not isinstance(value, list) or len(value) != 1:
                n = len(value) if isinstance(value, list) else None
                problems.append((col, "must be a list of exactly one assistant message" + (f", got {n}" if n is not None else f", got {_type_name(value)}")))
                continue
            turns = _messages(value, col, problems)
            if turns and turns[0].get("role") != "assistant":
                problems.append((f"{col}[0].role", f"is {turns[0].get('role')!r}; the output is the assistant's message"))
            answers += turns
        bound = token_bound(messages, given.get("tools") if isinstance(given, dict) else None) + max(
            (token_bound([a]) for a in answers), default=0)
    if bound > max_tokens:
        warnings.append(f"may be over the {max_tokens:,}-token training example limit (up to {bound:,} tokens by UTF-8 bytes; "
                        "OpenAI counts with its own tokenizer)")
    return kind, problems, warnings


def check_openai_file(path: str | Path, *, training: bool = True, max_tokens: int = MAX_EXAMPLE_TOKENS) -> OpenAICheck:
    """Every OpenAI fine-tuning rule over one JSONL file, each problem with its line; `training`: the >= 10 examples rule applies."""
    from mlxft.data.readers import RowError, iter_jsonl_rows

    path = Path(path)
    report = OpenAICheck(str(path))
    if not path.is_file():
        report.problems.append(Violation(str(path), None, "no such file"))
        return report
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        report.problems.append(Violation(str(path), None, f"is {size / 2**20:,.0f} MB; OpenAI takes files up to 512 MB (split it)"))
    kinds: dict[str, str] = {}  # kind -> where it was first seen
    for row in iter_jsonl_rows(path):
        if isinstance(row, RowError):
            report.problems.append(Violation(row.where, None, row.reason))
            continue
        kind, problems, warnings = example_problems(row.data, max_tokens)
        report.examples += 1
        report.problems += [Violation(row.where, f, r) for f, r in problems]
        report.warnings += [f"{row.where}: {w}" for w in warnings]
        if kind is not None and kind not in kinds:
            kinds[kind] = row.where
            if len(kinds) > 1:
                report.problems.append(Violation(row.where, None, f"a {kind} example in a file of {next(iter(kinds))} examples "
                                                                    f"(from {kinds[next(iter(kinds))]}); one file is one method"))
    report.kind = next(iter(kinds), None)
    if training and report.examples < MIN_EXAMPLES:
        report.problems.append(Violation(str(path), None, f"has {report.examples} example(s); OpenAI needs at least {MIN_EXAMPLES} to fine-tune"))
    return report


def check_openai_path(path: str | Path, *, max_tokens: int = MAX_EXAMPLE_TOKENS) -> list[OpenAICheck]:
    """`check_openai_file` over one .jsonl file, or over each .jsonl split file of a folder (the >= 10 rule on train only)."""
    from mlxft.data.readers import canonical_split

    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.jsonl"))
        if not files:
            return [OpenAICheck(str(path), problems=[Violation(str(path), None, "holds no .jsonl files")])]
        return [check_openai_file(f, training=canonical_split(f.stem) == "train", max_tokens=max_tokens) for f in files]
    return [check_openai_file(path, max_tokens=max_tokens)]
