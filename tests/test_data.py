"""Data encoding: loss on every assistant turn only, length policy counted, bad rows named by file and line."""

import json

import numpy as np
import pytest

from mlxft.data.batches import collate, epoch_order
from mlxft.data.encode import SampleEncoder, encode_records
from mlxft.data.sources import Record, read_split
from mlxft.errors import DataError
from mlxft.llm.loading import load_model
from mlxft.recipe import DataSection


@pytest.fixture(scope="module")
def tok(tiny_llama):
    return load_model(str(tiny_llama)).tokenizer


def _trained_text(tok, enc) -> list[str]:
    """Decode each contiguous run of trained tokens."""
    runs, cur = [], []
    for i, m in zip(enc.ids, enc.mask):
        if m:
            cur.append(int(i))
        elif cur:
            runs.append(tok.decode(cur))
            cur = []
    if cur:
        runs.append(tok.decode(cur))
    return runs


def test_loss_falls_on_every_assistant_turn_and_nothing_else(tok):
    msgs = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What color is the cat?"},
        {"role": "assistant", "content": "The cat is red."},
        {"role": "user", "content": "And the dog?"},
        {"role": "assistant", "content": "The dog is blue."},
    ]
    enc = SampleEncoder(tok, DataSection(path="x")).encode(Record("mem", 1, {"messages": msgs}), "chat")
    runs = _trained_text(tok, enc)
    assert runs == ["The cat is red.<|im_end|>\n", "The dog is blue.<|im_end|>\n"]


def test_mask_prompt_false_trains_on_the_whole_conversation(tok):
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    enc = SampleEncoder(tok, DataSection(path="x", mask_prompt=False)).encode(Record("mem", 1, {"messages": msgs}), "chat")
    assert enc.mask.all()


def test_completion_format_masks_the_prompt(tok):
    enc = SampleEncoder(tok, DataSection(path="x")).encode(Record("mem", 1, {"prompt": "Count:", "completion": "one two"}), "auto")
    assert _trained_text(tok, enc) == ["one two<|im_end|>\n"]


def test_text_format_trains_on_everything_and_ends_with_eos(tok):
    enc = SampleEncoder(tok, DataSection(path="x")).encode(Record("mem", 1, {"text": "red green blue"}), "auto")
    assert enc.mask.all() and enc.ids[-1] == tok.eos_token_id


def test_overlong_samples_are_truncated_or_dropped_and_counted(tok):
    long = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "one two three " * 40}]}
    short = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "one"}]}
    records = [Record("f.jsonl", 1, long), Record("f.jsonl", 2, short)]
    enc = SampleEncoder(tok, DataSection(path="x"))
    kept, stats = encode_records(records, enc, "chat", 40, "truncate")
    assert len(kept) == 2 and stats.truncated == 1 and max(len(k) for k in kept) == 40
    kept, stats = encode_records(records, enc, "chat", 40, "drop")
    assert len(kept) == 1 and stats.dropped_overlong == 1 and "f.jsonl:1" in stats.dropped_where[0]


def test_a_sample_with_no_trainable_tokens_is_dropped_and_counted(tok):
    # Truncation cuts the assistant turn off entirely: nothing to learn, so no NaN loss either.
    row = {"messages": [{"role": "user", "content": "one two three four five six seven eight nine ten " * 5}, {"role": "assistant", "content": "ok"}]}
    kept, stats = encode_records([Record("f.jsonl", 7, row)], SampleEncoder(tok, DataSection(path="x")), "chat", 20, "truncate")
    assert kept == [] and stats.dropped_no_target == 1 and "f.jsonl:7" in stats.dropped_where[0]


def test_bad_rows_are_all_reported_with_file_and_line(tok, tmp_path):
    p = tmp_path / "train.jsonl"
    rows = [
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]},
        {"messages": [{"role": "user", "content": "no reply"}]},
        {"messages": [{"role": "wizard", "content": "x"}, {"role": "assistant", "content": "y"}]},
        {"prompt": "p", "completion": 3},
    ]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError) as err:
        encode_records(read_split(p, "train"), SampleEncoder(tok, DataSection(path=str(p))), "auto", 64, "truncate")
    msg = err.value.message
    assert "3 bad sample(s)" in msg
    assert f"{p}:2" in msg and "no assistant turn" in msg
    assert f"{p}:3" in msg and "wizard" in msg
    assert f"{p}:4" in msg and "completion" in msg


def test_invalid_json_names_the_line(tmp_path):
    p = tmp_path / "train.jsonl"
    p.write_text('{"text": "ok"}\n{"text": broken}\n')
    with pytest.raises(DataError) as err:
        read_split(p, "train")
    assert f"{p}:2" in err.value.message


def test_bucketed_batches_waste_little_padding_and_are_reproducible():
    rng = np.random.default_rng(0)
    lengths = rng.integers(10, 400, size=200).tolist()
    a = epoch_order(lengths, 4, seed=1, epoch=0, mode="bucket")
    assert a == epoch_order(lengths, 4, seed=1, epoch=0, mode="bucket")
    assert a != epoch_order(lengths, 4, seed=1, epoch=1, mode="bucket")
    assert sorted(i for b in a for i in b) == list(range(200))
    waste = sum(len(b) * max(lengths[i] for i in b) - sum(lengths[i] for i in b) for b in a) / sum(lengths)
    assert waste < 0.05


def test_collate_lists_exactly_the_trained_positions():
    from mlxft.data.encode import Encoded

    s1 = Encoded(np.array([5, 6, 7, 8], np.int32), np.array([0, 0, 1, 1], bool))
    s2 = Encoded(np.array([9, 10], np.int32), np.array([0, 1], bool))
    b = collate([s1, s2])
    assert b.trained_tokens == 3 and b.weights.sum() == 3
    flat_targets = b.targets.reshape(-1)[b.positions[: b.trained_tokens]]
    assert flat_targets.tolist() == [7, 8, 10]
