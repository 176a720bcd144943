"""OpenAI fine-tuning JSONL both ways: SFT rows with per-turn weights and tool calls, DPO rows as preference pairs,
`mlxft data convert --to openai` writing them, and every one of OpenAI's rules reported with its line."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mlxft.data import formats, openai_format
from mlxft.data.convert import convert_data
from mlxft.data.encode import SampleEncoder, encode_records
from mlxft.data.pairs import PairEncoder
from mlxft.data.readers import Record, iter_rows
from mlxft.errors import DataError
from mlxft.recipe import DataSection

MLXFT = [sys.executable, "-m", "mlxft", "data"]
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "The weather in a city",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
# A ChatML template that renders tools the way Qwen2.5's does (tools in the system turn, calls as <tool_call> JSON).
TOOLS_TEMPLATE = (
    "{% if tools %}<|im_start|>system\nTools: {% for t in tools %}{{ t.function.name }}{% endfor %}<|im_end|>\n{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content or '' }}"
    "{% if m.tool_calls %}{% for c in m.tool_calls %}<tool_call>{{ c.function.name }} {{ c.function.arguments | tojson }}</tool_call>{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def sft_row(i: int, **extra) -> dict:
    return {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"What is {i} plus {i}?"},
                         {"role": "assistant", "content": f"It is {2 * i}."}], **extra}


def dpo_row(i: int) -> dict:
    return {"input": {"messages": [{"role": "user", "content": f"Say {i} politely."}]},
            "preferred_output": [{"role": "assistant", "content": f"Certainly: {i}."}],
            "non_preferred_output": [{"role": "assistant", "content": f"{i}, whatever."}]}


def tool_row() -> dict:
    return {"tools": [WEATHER], "messages": [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function",
                                                                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"sky": "blue"}'},
        {"role": "assistant", "content": "Blue sky in Paris."}]}


def write_jsonl(path: Path, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def canonical_rows(path: Path) -> list[dict]:
    rows = [r for r in iter_rows(path) if isinstance(r, Record)]
    fmt = formats.detect_format(rows)
    return [formats.normalize(r, fmt) for r in rows]


@pytest.fixture(scope="module")
def tok(tiny_llama):
    from mlxft.llm.loading import load_model

    return load_model(str(tiny_llama)).tokenizer


@pytest.fixture(scope="module")
def tools_tok(tiny_llama, tmp_path_factory):
    """The tiny model's tokenizer with a chat template that renders tools."""
    from mlxft.llm.loading import load_tokenizer

    folder = tmp_path_factory.mktemp("tools-tokenizer")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_llama / name, folder / name)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": TOOLS_TEMPLATE}))
    return load_tokenizer(str(folder))


def trained_text(tok, enc) -> list[str]:
    """Each contiguous run of trained tokens, decoded."""
    hf = getattr(tok, "_tokenizer", tok)
    runs, cur = [], []
    for i, m in zip(enc.ids, enc.mask):
        if m:
            cur.append(int(i))
        elif cur:
            runs.append(hf.decode(cur))
            cur = []
    return runs + ([hf.decode(cur)] if cur else [])


# ---------------------------------------------------------------- reading

def test_openai_sft_rows_are_detected_as_chat_and_keep_weights_tools_and_calls():
    rows = [Record("f.jsonl", 1, tool_row()), Record("f.jsonl", 2, sft_row(1))]
    assert formats.detect_format(rows) == "chat"
    row = formats.normalize(rows[0], "chat")
    assert row["tools"] == [WEATHER]
    call = row["messages"][1]
    assert call == {"role": "assistant", "content": "", "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]}
    assert row["messages"][2] == {"role": "tool", "content": '{"sky": "blue"}', "tool_call_id": "call_1"}
    weighted = sft_row(2)
    weighted["messages"][2]["weight"] = 0
    assert formats.normalize(Record("f.jsonl", 3, weighted), "chat")["messages"][2]["weight"] == 0
    # Hugging Face-style arguments (an object) are read as OpenAI's JSON string; text parts as their text; developer as system
    hf_call = {"messages": [{"role": "developer", "content": [{"type": "text", "text": "Be "}, {"type": "text", "text": "brief."}]},
                            {"role": "user", "content": "Weather?"},
                            {"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}]}]}
    got = formats.normalize(Record("f.jsonl", 4, hf_call), "chat")["messages"]
    assert got[0] == {"role": "system", "content": "Be brief."} and got[2]["tool_calls"][0]["function"]["arguments"] == '{"city": "Oslo"}'


@pytest.mark.parametrize("turn, field, reason", [
    ({"role": "user", "content": "hi", "weight": 0}, "messages[1].weight", "only assistant turns have a weight"),
    ({"role": "assistant", "content": "ok", "weight": 2}, "messages[1].weight", "must be 0 (no loss on this turn) or 1"),
    ({"role": "assistant", "content": "ok", "weight": True}, "messages[1].weight", "must be 0"),
    ({"role": "assistant", "content": None}, "messages[1].content", "must be a string, got null"),
    ({"role": "assistant", "tool_calls": [{"function": {"arguments": "{}"}}]}, "messages[1].tool_calls[0]", "must be {id, type"),
    ({"role": "assistant", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}, "messages[1].content", "image_url parts"),
])
def test_a_bad_openai_turn_is_a_row_problem_naming_its_field(turn, field, reason):
    row = {"messages": [{"role": "user", "content": "hi"}, turn]} if turn["role"] == "assistant" else {
        "messages": [{"role": "system", "content": "s"}, turn, {"role": "assistant", "content": "ok"}]}
    with pytest.raises(formats.RowProblem) as info:
        formats.normalize(Record("f.jsonl", 1, row), "chat")
    assert info.value.field == field and reason in info.value.reason


def test_openai_dpo_rows_are_preference_pairs_with_their_tools():
    row = dpo_row(3)
    row["input"]["tools"] = [WEATHER]
    record = Record("p.jsonl", 1, row)
    assert formats.detect_format([record]) == "preference"
    pair = formats.normalize(record, "preference")
    assert pair == {"prompt": [{"role": "user", "content": "Say 3 politely."}], "chosen": [{"role": "assistant", "content": "Certainly: 3."}],
                    "rejected": [{"role": "assistant", "content": "3, whatever."}], "tools": [WEATHER]}


# ---------------------------------------------------------------- training: weights, tools, pairs

def test_weight_zero_takes_that_assistant_turn_out_of_the_loss(tok):
    row = {"messages": [{"role": "user", "content": "red?"}, {"role": "assistant", "content": "The cat is red."},
                        {"role": "user", "content": "blue?"}, {"role": "assistant", "content": "The dog is blue."}]}
    enc = SampleEncoder(tok, DataSection(path="x"))
    both = enc.encode(Record("m", 1, row), "chat")
    assert trained_text(tok, both) == ["The cat is red.<|im_end|>\n", "The dog is blue.<|im_end|>\n"]
    row["messages"][1]["weight"] = 0
    first_off = enc.encode(Record("m", 1, row), "chat")
    assert trained_text(tok, first_off) == ["The dog is blue.<|im_end|>\n"]
    assert first_off.ids.tolist() == both.ids.tolist()  # the same tokens; only which of them have loss changed
    # with mask_prompt off, everything trains except the weight-0 turn
    whole = SampleEncoder(tok, DataSection(path="x", mask_prompt=False)).encode(Record("m", 1, row), "chat")
    untrained = [tok._tokenizer.decode([int(i)]) for i, m in zip(whole.ids, whole.mask) if not m]
    assert "".join(untrained) == "The cat is red.<|im_end|>\n" and whole.mask.sum() > first_off.mask.sum()
    # every assistant turn at weight 0: nothing to learn, dropped and counted
    row["messages"][3]["weight"] = 0
    kept, stats = encode_records([Record("m", 7, row)], enc, "chat", 512, "truncate")
    assert kept == [] and stats.dropped_no_target == 1 and "m:7: no trainable tokens" in stats.dropped_where[0]


def test_tool_calls_render_through_a_template_that_supports_them_and_are_refused_by_one_that_does_not(tok, tools_tok):
    record = Record("tools.jsonl", 4, tool_row())
    enc = SampleEncoder(tools_tok, DataSection(path="x")).encode(record, "chat")
    text = tools_tok._tokenizer.decode(enc.ids.tolist())
    assert "Tools: get_weather" in text and '<tool_call>get_weather {"city": "Paris"}</tool_call>' in text
    assert trained_text(tools_tok, enc) == ['<tool_call>get_weather {"city": "Paris"}</tool_call><|im_end|>\n', "Blue sky in Paris.<|im_end|>\n"]
    with pytest.raises(DataError, match=r"tools.jsonl:4: the row has tools and tool_calls, and this model's chat template does not render tools"):
        SampleEncoder(tok, DataSection(path="x")).encode(record, "chat")


def test_an_openai_dpo_row_encodes_exactly_like_the_same_pair_in_trl_layout(tok):
    cfg = DataSection(path="x", format="preference")
    pairs = PairEncoder(tok, cfg)
    openai = pairs.encode(Record("p.jsonl", 1, dpo_row(5)))
    trl = pairs.encode(Record("t.jsonl", 1, {"prompt": [{"role": "user", "content": "Say 5 politely."}],
                                             "chosen": [{"role": "assistant", "content": "Certainly: 5."}],
                                             "rejected": [{"role": "assistant", "content": "5, whatever."}]}))
    for a, b in zip(openai[:2], trl[:2]):
        assert a.ids.tolist() == b.ids.tolist() and a.mask.tolist() == b.mask.tolist()
    assert trained_text(tok, openai[0]) == ["Certainly: 5.<|im_end|>\n"] and trained_text(tok, openai[1]) == ["5, whatever.<|im_end|>\n"]


# ---------------------------------------------------------------- OpenAI's rules, each with its line

BAD_ROWS = [  # (row, field, words of the reason); each on its own line after ten good rows
    ({"messages": [{"role": "user", "content": "hi"}]}, "messages[0]", "must end with the assistant's reply"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "bot", "content": "yo"}]}, "messages[1].role", "OpenAI's roles are"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo", "weight": 3}]}, "messages[1].weight", "0 or 1"),
    ({"messages": [{"role": "user", "content": "hi", "weight": 1}, {"role": "assistant", "content": "yo"}]}, "messages[0]", "weight, which OpenAI does not accept on a user message"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo", "weight": 0}]}, "messages", "every assistant message has weight 0"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant"}]}, "messages[1].content", "is missing"),
    ({"messages": [{"role": "user", "content": "  "}, {"role": "assistant", "content": "yo"}]}, "messages[0].content", "the user message is empty"),
    ({"messages": []}, "messages", "non-empty list"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}], "temperature": 1}, "row", "has temperature"),
    ({"messages": [{"role": "user", "content": "w?"}, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": {"a": 1}}}]}, {"role": "tool", "tool_call_id": "c1", "content": "1"},
        {"role": "assistant", "content": "one"}]}, "messages[1].tool_calls[0].function.arguments", "must be a JSON string"),
    ({"messages": [{"role": "user", "content": "w?"}, {"role": "tool", "tool_call_id": "c9", "content": "1"}, {"role": "assistant", "content": "one"}]},
     "messages[1].tool_call_id", "'c9' answers no earlier tool call"),
    ({"tools": [{"type": "function"}], "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}, "tools[0]", "must be {type"),
    ({**dpo_row(1), "non_preferred_output": [{"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}]}, "non_preferred_output",
     "exactly one assistant message, got 2"),
    ({**dpo_row(2), "preferred_output": [{"role": "user", "content": "a"}]}, "preferred_output[0].role", "the output is the assistant's"),
    ({**dpo_row(3), "input": {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}}, "input.messages[1]", "ends with an assistant"),
    ({**dpo_row(4), "input": "Say it"}, "input", "must be an object with messages"),
    ({"prompt": "old", "completion": "format"}, "row", "neither an SFT example"),
    ('{"messages": [broken', None, "not valid JSON"),
]


def test_every_openai_rule_violation_is_reported_with_its_line(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", [sft_row(i) for i in range(10)] + [row for row, _, _ in BAD_ROWS] + [tool_row()])
    report = openai_format.check_openai_file(path)
    assert not report.ok and report.kind == "sft"
    by_line = {}
    for p in report.problems:
        by_line.setdefault(p.where, []).append(p)
    for n, (_, field, reason) in enumerate(BAD_ROWS, start=11):
        found = by_line.get(f"{path}:{n}", [])
        assert any(p.field == field and reason in p.reason for p in found), f"line {n}: expected {field}: {reason}; got {[str(p) for p in found]}"
    assert not any(f"{path}:{n}" in by_line for n in list(range(1, 11)) + [11 + len(BAD_ROWS)])  # good rows (and the tool row) pass
    mixed = [p for p in report.problems if "one file is one method" in p.reason]
    assert len(mixed) == 1 and mixed[0].where == f"{path}:{11 + 12}"  # the first DPO row in an SFT file


def test_whole_file_rules_count_size_and_tokens(tmp_path, monkeypatch):
    few = openai_format.check_openai_file(write_jsonl(tmp_path / "few.jsonl", [dpo_row(i) for i in range(9)]))
    assert few.kind == "dpo" and [str(p) for p in few.problems] == [f"{tmp_path / 'few.jsonl'}: has 9 example(s); OpenAI needs at least 10 to fine-tune"]
    assert openai_format.check_openai_file(tmp_path / "few.jsonl", training=False).ok  # a validation file has no minimum
    monkeypatch.setattr(openai_format, "MAX_FILE_BYTES", 1000)
    big = openai_format.check_openai_file(write_jsonl(tmp_path / "big.jsonl", [sft_row(i) for i in range(12)]))
    assert any("OpenAI takes files up to 512 MB" in p.reason for p in big.problems)
    monkeypatch.undo()
    long = openai_format.check_openai_file(write_jsonl(tmp_path / "long.jsonl", [sft_row(i) for i in range(12)]), max_tokens=40)
    assert long.ok and len(long.warnings) == 12 and "may be over the 40-token training example limit" in long.warnings[0]


# ---------------------------------------------------------------- writing: mlxft data convert --to openai

def test_an_openai_file_converted_to_openai_reads_back_equal(tmp_path):
    weighted = sft_row(4)
    weighted["messages"].insert(2, {"role": "assistant", "content": "Hmm.", "weight": 0})
    weighted["messages"].insert(3, {"role": "user", "content": "Well?"})
    source = write_jsonl(tmp_path / "src" / "train.jsonl", [tool_row(), weighted] + [sft_row(i) for i in range(10)])
    result = convert_data(source, tmp_path / "out", to="openai")
    assert result.written == {"train": 12} and not result.skipped and not result.problems
    written = tmp_path / "out" / "train.jsonl"
    assert canonical_rows(written) == canonical_rows(source)
    first = json.loads(written.read_text().splitlines()[0])
    assert first["messages"][1]["content"] is None and first["tools"] == [WEATHER]  # OpenAI's own shape, not mlxft's
    assert openai_format.check_openai_file(written).ok


def test_chat_completion_and_instruction_data_become_sft_and_preference_data_becomes_dpo(tmp_path):
    completion = write_jsonl(tmp_path / "c" / "train.jsonl", [{"prompt": f"Q{i}?", "completion": f"A{i}."} for i in range(10)])
    convert_data(completion, tmp_path / "c-out", to="openai")
    rows = [json.loads(l) for l in (tmp_path / "c-out" / "train.jsonl").read_text().splitlines()]
    assert rows[0] == {"messages": [{"role": "user", "content": "Q0?"}, {"role": "assistant", "content": "A0."}]}
    instruction = write_jsonl(tmp_path / "i" / "train.jsonl", [{"instruction": f"Do {i}", "input": "now", "output": f"Done {i}"} for i in range(10)])
    convert_data(instruction, tmp_path / "i-out", to="openai")
    assert json.loads((tmp_path / "i-out" / "train.jsonl").read_text().splitlines()[0])["messages"][0] == {"role": "user", "content": "Do 0\n\nnow"}
    trl = write_jsonl(tmp_path / "p" / "train.jsonl", [{"prompt": f"Say {i} politely.", "chosen": f"Certainly: {i}.", "rejected": f"{i}, whatever."}
                                                       for i in range(10)])
    result = convert_data(trl, tmp_path / "p-out", to="openai")
    written = tmp_path / "p-out" / "train.jsonl"
    assert result.format == "preference" and [json.loads(l) for l in written.read_text().splitlines()] == [dpo_row(i) for i in range(10)]
    assert openai_format.check_openai_file(written).ok and canonical_rows(written) == [formats.normalize(Record("x", 1, dpo_row(i)), "preference") for i in range(10)]


def test_rows_openai_would_refuse_are_listed_not_written_and_a_short_file_is_a_problem(tmp_path):
    unanswered = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}, {"role": "user", "content": "and?"}]}
    rows = [sft_row(i) for i in range(9)] + [unanswered]  # mlxft trains on it (the last turn trains nothing); OpenAI refuses it
    source = write_jsonl(tmp_path / "src" / "train.jsonl", rows)
    result = convert_data(source, tmp_path / "out", to="openai")
    assert result.written == {"train": 9}
    assert result.skipped == [f"{source}:10: OpenAI would refuse it: messages[2]: the example ends with a user message; it must end with the assistant's reply (the target)"]
    assert result.problems == [f"{tmp_path / 'out' / 'train.jsonl'}: 9 example(s); OpenAI needs at least 10 to fine-tune"]
    with pytest.raises(DataError, match="nothing written"):
        convert_data(write_jsonl(tmp_path / "t" / "train.jsonl", [{"text": f"plain {i}"} for i in range(10)]), tmp_path / "t-out", to="openai")
    assert not (tmp_path / "t-out").exists()


def test_the_cli_converts_to_openai_and_checks_a_file_by_line(tmp_path):
    good = write_jsonl(tmp_path / "good" / "train.jsonl", [sft_row(i) for i in range(10)])
    out = subprocess.run(MLXFT + ["convert", str(good), "--out", str(tmp_path / "o"), "--to", "openai"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "OpenAI fine-tuning JSONL" in out.stdout and "OpenAI's rules: met" in out.stdout
    out = subprocess.run(MLXFT + ["validate", str(tmp_path / "o" / "train.jsonl"), "--openai"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "meets OpenAI's fine-tuning rules" in out.stdout, out.stdout + out.stderr
    bad = write_jsonl(tmp_path / "bad.jsonl", [sft_row(i) for i in range(3)] + [{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y", "weight": 5}]}])
    out = subprocess.run(MLXFT + ["validate", str(bad), "--openai"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert f"{bad}:4: messages[1].weight: must be 0 or 1, got 5" in out.stdout and "has 4 example(s); OpenAI needs at least 10" in out.stdout
    short = write_jsonl(tmp_path / "short" / "train.jsonl", [sft_row(i) for i in range(4)])
    out = subprocess.run(MLXFT + ["convert", str(short), "--out", str(tmp_path / "s"), "--to", "openai"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "4 example(s); OpenAI needs at least 10" in out.stdout
