"""Headless side-by-side chat: one model in memory answers JSON requests as base (adapter off) and tuned (adapter on).

`mlxft chat --json` runs `serve_chat`: one JSON request a line on stdin, JSON lines out on stdout.

  in:  {"messages": [{"role": "user", "content": "Hi"}], "sides": ["base", "tuned"], "temperature": 0.7, "max_tokens": 128}
       ("messages" may also be {"base": [...], "tuned": [...]}: each side keeps its own history;
        "prompt": "Hi" is short for one user turn; sampling keys: temperature, top_p, top_k, max_tokens, seed)
  in:  {"cancel": true}   stops the request being answered
  out: {"ready": true, "model": ..., "adapter": ..., "sides": [...]}            once, after loading
       {"side": "base", "delta": "Hel"}                                          as tokens arrive
       {"side": "base", "done": true, "text": ..., "tokens": n, "tokens_per_second": x, "cancelled": false}
       {"finished": true, "id": ..., "cancelled": false}                         after the last side
       {"error": ..., "hint": ...}                                                a bad request; the loop goes on
       {"error": ..., "hint": ..., "fatal": true}                                 the model or adapter cannot be loaded; exit 1
"""

from __future__ import annotations

import json
import os
import select
import time
from collections import deque
from dataclasses import replace
from typing import Callable

from mlxft.errors import MlxftError
from mlxft.llm.generate import SamplingSettings, render_prompt, stream_responses

SIDES = ("base", "tuned")
ROLES = ("system", "user", "assistant")


class LineReader:
    """Lines from a file descriptor, with a non-blocking look (a cancel can arrive while a side generates)."""

    def __init__(self, fd: int):
        self.fd = fd
        self._buffer = b""
        self._lines: deque[bytes] = deque()
        self.eof = False

    def _fill(self, timeout: float | None) -> None:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return
        chunk = os.read(self.fd, 65536)
        if not chunk:
            self.eof = True
            if self._buffer:
                self._lines.append(self._buffer)
                self._buffer = b""
            return
        *complete, self._buffer = (self._buffer + chunk).split(b"\n")
        self._lines.extend(complete)

    def poll(self) -> bytes | None:
        """A complete line if one has arrived, without waiting."""
        if not self._lines and not self.eof:
            self._fill(0)
        return self._lines.popleft() if self._lines else None

    def read(self) -> bytes | None:
        """The next line, waiting for it; None at end of input."""
        while not self._lines and not self.eof:
            self._fill(None)
        return self._lines.popleft() if self._lines else None


def parse_request(line: bytes, sides: tuple[str, ...], defaults: SamplingSettings) -> dict:
    """A checked request: {"id", "cancel", "sides", "messages": {side: [...]}, "settings"}; MlxftError names what is wrong."""
    try:
        req = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MlxftError(f"request is not JSON ({exc})", hint='send one JSON object a line, e.g. {"prompt": "Hi"}') from None
    if not isinstance(req, dict):
        raise MlxftError("request must be a JSON object", hint='e.g. {"messages": [{"role": "user", "content": "Hi"}]}')
    if req.get("cancel"):
        return {"id": req.get("id"), "cancel": True}
    wanted = req.get("sides", list(sides))
    if not isinstance(wanted, list) or not wanted or any(s not in SIDES for s in wanted):
        raise MlxftError(f"sides: {wanted!r} is not a list of {' / '.join(SIDES)}")
    missing = [s for s in wanted if s not in sides]
    if missing:
        raise MlxftError("sides: 'tuned' needs an adapter", hint="start `mlxft chat --json` with --adapter, or ask for the base side only")
    if "prompt" in req:
        if not isinstance(req["prompt"], str):
            raise MlxftError("prompt: must be a string")
        conversation = {s: [{"role": "user", "content": req["prompt"]}] for s in wanted}
    else:
        raw = req.get("messages")
        conversation = {s: raw for s in wanted} if isinstance(raw, list) else (raw if isinstance(raw, dict) else None)
        if conversation is None:
            raise MlxftError("messages: missing; give a list of turns, a {side: turns} object, or a prompt")
    for side in wanted:
        turns = conversation.get(side)
        if not isinstance(turns, list) or not turns:
            raise MlxftError(f"messages.{side}: a non-empty list of turns is needed")
        for i, turn in enumerate(turns):
            if not isinstance(turn, dict) or turn.get("role") not in ROLES or not isinstance(turn.get("content"), str):
                raise MlxftError(f"messages.{side}[{i}]: needs a role ({', '.join(ROLES)}) and a string content")
    fields = {"temperature": float, "top_p": float, "top_k": int, "max_tokens": int, "seed": int}
    changes = {}
    for key, kind in fields.items():
        if key in req:
            try:
                changes[key] = kind(req[key])
            except (TypeError, ValueError):
                raise MlxftError(f"{key}: {req[key]!r} is not a number") from None
    if changes.get("max_tokens", 1) < 1 or changes.get("temperature", 0.0) < 0:
        raise MlxftError("max_tokens must be >= 1 and temperature >= 0")
    system = req.get("system")
    messages = {}
    for side in wanted:
        turns = conversation[side]
        messages[side] = ([{"role": "system", "content": system}] if system and turns[0]["role"] != "system" else []) + turns
    return {"id": req.get("id"), "cancel": False, "sides": wanted, "messages": messages, "settings": replace(defaults, **changes)}


def serve_chat(model, tokenizer, *, has_adapter: bool, lines: LineReader, write: Callable[[dict], None],
               defaults: SamplingSettings = SamplingSettings(), system: str | None = None, info: dict | None = None) -> None:
    """Answer requests until end of input; the adapter is switched off for "base" and on for "tuned"."""
    from mlxft.lora import set_adapters_enabled

    sides = SIDES if has_adapter else ("base",)
    write({"ready": True, **(info or {}), "sides": list(sides)})
    queued: deque[bytes] = deque()
    while True:
        line = queued.popleft() if queued else lines.read()
        if line is None:
            return
        if not line.strip():
            continue
        try:
            req = parse_request(line, sides, defaults)
        except MlxftError as exc:
            write({"error": exc.message, "hint": exc.hint})
            continue
        if req["cancel"]:
            continue  # nothing is being answered
        cancelled = False
        for side in req["sides"]:
            if cancelled:
                break
            if has_adapter:
                set_adapters_enabled(model, side == "tuned")
            turns = req["messages"][side]
            if system and turns[0]["role"] != "system":
                turns = [{"role": "system", "content": system}] + turns
            pieces, tokens, speed, start = [], 0, 0.0, time.perf_counter()
            for response in stream_responses(model, tokenizer, render_prompt(tokenizer, messages=turns), req["settings"]):
                pieces.append(response.text)
                tokens, speed = response.generation_tokens, response.generation_tps
                if response.text:
                    write({"side": side, "delta": response.text})
                cancelled = _cancel_arrived(lines, queued)
                if cancelled:
                    break
            if tokens and not speed:
                speed = tokens / max(time.perf_counter() - start, 1e-9)
            write({"side": side, "done": True, "text": "".join(pieces), "tokens": tokens, "tokens_per_second": round(speed, 2), "cancelled": cancelled})
        write({"finished": True, "id": req["id"], "cancelled": cancelled})


def _cancel_arrived(lines: LineReader, queued: deque) -> bool:
    """Look at what arrived while generating: a cancel stops this request, anything else waits its turn."""
    while (line := lines.poll()) is not None:
        try:
            if json.loads(line).get("cancel"):
                return True
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            pass
        queued.append(line)
    return False


def json_line_writer(stream) -> Callable[[dict], None]:
    def write(obj: dict) -> None:
        stream.write(json.dumps(obj, ensure_ascii=False) + "\n")
        stream.flush()

    return write
