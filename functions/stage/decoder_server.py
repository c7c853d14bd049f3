"""A decoder stage: greedy generation driven by stage 0, streamed to the client.

Stage 0 takes ``{"prompt": "text", "max_new_tokens": 16, "stream": true}``.
It runs the generation loop: each step runs its layers over the new
positions (the whole prompt first, then one token), POSTs them to the next
stage through the gateway (``/function/{next}``), and gets back the token the
last stage chose (``{"token": id}``).  With ``stream`` (the default) the
answer is ``application/x-ndjson``, one line per token as soon as it exists::

    {"index": 0, "token": 110, "text": "j", "ms": 41.2, "timing": {"stage0": 3.1, ...}}
    ...
    {"done": true, "finish_reason": "length", "tokens": [...], "text": "...",
     "ttft_ms": 41.2, "total_ms": 180.3, "stage_ms": {"stage0": 12.0, ...}}

The first step (the prefill) runs before the answer starts, so a failure
there is a plain 4xx/5xx; a later failure ends the stream with an
``{"error": ..., "status": ..., "done": true}`` line.  ``Server-Timing`` of
the answer carries every stage's prefill compute; each line its step's (compute
only: the wait for a busy replica's lock shows in the gaps, not there).

Why this shape: the loop needs the last stage's token before the next step,
so some stage must drive it, and the entry stage is the one the client is
connected to.  Why KV sessions in every stage (``decoder_wire.py``) rather
than recomputing the prefix each token: a token then costs one position per
layer; the stateless fallback (a 409 miss -> resend from position 0) keeps
it correct when the gateway sends a step to another replica.

Environment: ``config.py`` plus QUART_MAX_NEW_TOKENS (128), QUART_KV_MAX_SESSIONS
(32), QUART_KV_MAX_BYTES (268435456), QUART_KV_TTL_S (60).
"""
from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import urllib3

from .codec import PayloadError, read_json
from .compute import ComputeLock
from .config import StageConfig
from .decoder_wire import (
    KV_MISS_HEADER,
    STEP_CONTENT_TYPE,
    Session,
    SessionStore,
    decode_step,
    encode_step,
)
from .opt import DecoderStage, KVCache
from .server import check_manifest

log = logging.getLogger("quart.decoder")
JSON = {"Content-Type": "application/json"}
NDJSON = "application/x-ndjson"
DEFAULT_NEW_TOKENS = 16


@dataclass(frozen=True)
class DecoderLimits:
    max_new_tokens: int
    kv_max_sessions: int
    kv_max_bytes: int
    kv_ttl_s: float

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> DecoderLimits:
        e = os.environ if env is None else env
        try:
            return cls(int(e.get("QUART_MAX_NEW_TOKENS") or 128),
                       int(e.get("QUART_KV_MAX_SESSIONS") or 32),
                       int(e.get("QUART_KV_MAX_BYTES") or 256 << 20),
                       float(e.get("QUART_KV_TTL_S") or 60))
        except ValueError as err:
            raise SystemExit(f"decoder limits: {err}") from None


class StepError(Exception):
    """A later stage answered with an error: relayed as it came."""

    def __init__(self, status: int, body: bytes, content_type: str):
        super().__init__(status)
        self.status, self.body, self.content_type = status, body, content_type


class DecoderServer:
    def __init__(self, cfg: StageConfig, limits: DecoderLimits | None = None):
        self.cfg = cfg
        self.limits = limits or DecoderLimits.from_env()
        torch.set_num_threads(max(1, cfg.torch_threads))
        self.stage = DecoderStage.load(cfg.model_dir, cfg.stage, verify=cfg.verify_sha256,
                                       weights_path=cfg.weights_path or None)
        m = check_manifest(cfg, self.stage.manifest, self.stage.is_last)
        self.model, self.n = m["model"], m["num_stages"]
        self.lock = ComputeLock(cfg.torch_threads)  # one computation at a time (compute.py)
        self.sessions = SessionStore(self.limits.kv_max_sessions, self.limits.kv_max_bytes,
                                     self.limits.kv_ttl_s)
        self.http = urllib3.PoolManager(num_pools=4, maxsize=64, retries=False)

    def warmup(self) -> None:
        """One small step before a zygote forks (as StageServer.warmup), single-threaded."""
        threads = torch.get_num_threads()
        with self.lock:
            torch.set_num_threads(1)
            x = (torch.tensor([[2, 76, 77]]) if self.stage.is_first
                 else torch.zeros(1, 3, self.stage.spec.hidden_size))
            h = self.stage.forward(x, 0, KVCache())
            if self.stage.is_last:
                self.stage.next_token(h)
            torch.set_num_threads(threads)

    def describe(self) -> dict[str, Any]:
        return {"model": self.model, "stage": self.cfg.stage, "stages": self.n,
                "architecture": "opt", "layers": self.stage.info["layers"],
                "parameters": self.stage.info["parameters"], "next": self.cfg.next_function or None,
                "accepts": "application/json" if self.stage.is_first else STEP_CONTENT_TYPE,
                "max_new_tokens": self.limits.max_new_tokens, "kv": self.sessions.stats()}

    # -- requests -----------------------------------------------------------
    def handle(self, event: Any) -> dict[str, Any]:
        try:
            if event.method == "GET":
                return self._json(200, self.describe())
            if event.method != "POST":
                raise PayloadError(f"method {event.method} not allowed; POST the inputs", 405)
            if len(event.body) > self.cfg.max_body_bytes:
                raise PayloadError(f"body of {len(event.body)} bytes exceeds the limit of "
                                   f"{self.cfg.max_body_bytes} (QUART_MAX_BODY_BYTES)", 413)
            ctype = (event.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if self.stage.is_first:
                return self._generate(event, ctype)
            return self._step(event, ctype)
        except PayloadError as e:
            return self._json(e.status, {"error": str(e), "stage": self.cfg.stage})
        except StepError as e:
            return {"statusCode": e.status, "body": e.body,
                    "headers": {"Content-Type": e.content_type}}
        except Exception as e:
            log.exception("stage %s failed", self.cfg.stage)
            return self._json(500, {"error": f"stage {self.cfg.stage} failed: "
                                             f"{type(e).__name__}", "stage": self.cfg.stage})

    def _generate(self, event: Any, ctype: str) -> dict[str, Any]:
        if ctype == STEP_CONTENT_TYPE:
            raise PayloadError('stage 0 takes JSON {"prompt": "text", "max_new_tokens": n}', 415)
        prompt, n, stream = self._parse_prompt(event.body)
        assert self.stage.tokenizer is not None
        ids = self.stage.tokenizer.encode(prompt)
        if len(ids) + n > self.stage.max_positions:
            raise PayloadError(f"{len(ids)} prompt tokens + max_new_tokens {n} exceed the "
                               f"model's {self.stage.max_positions} positions")
        gen = Generation(self, ids, n, event.headers.get("X-Call-Id"))
        first = gen.step()  # the prefill: errors here are plain answers
        headers = {"Server-Timing": _timing_header(first["timing"]),
                   "X-Quart-Session": gen.session}
        if stream:
            return {"statusCode": 200, "body": gen.lines(first),
                    "headers": {"Content-Type": NDJSON, "Cache-Control": "no-store", **headers}}
        while not gen.done():
            gen.step()  # a StepError here is the answer (handle relays it)
        gen.text += gen.detok.flush()
        return self._json(200, gen.summary(), headers=headers)

    def _parse_prompt(self, body: bytes) -> tuple[str, int, bool]:
        doc = read_json(body)
        if not isinstance(doc, dict) or not isinstance(doc.get("prompt"), str):
            raise PayloadError('body must be a JSON object {"prompt": "text", '
                               '"max_new_tokens": n, "stream": true}')
        unknown = sorted(set(doc) - {"prompt", "max_new_tokens", "stream"})
        if unknown:
            raise PayloadError(f"unknown field(s) {unknown}")
        prompt, n = doc["prompt"], doc.get("max_new_tokens", DEFAULT_NEW_TOKENS)
        if len(prompt) > self.cfg.max_input_chars:
            raise PayloadError(f"prompt has {len(prompt)} characters, over the limit of "
                               f"{self.cfg.max_input_chars} (QUART_MAX_INPUT_CHARS)")
        top = self.limits.max_new_tokens
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= top:
            raise PayloadError(f"max_new_tokens must be an integer in 1..{top}"
                               " (QUART_MAX_NEW_TOKENS)")
        stream = doc.get("stream", True)
        if not isinstance(stream, bool):
            raise PayloadError("'stream' must be true or false")
        return prompt, n, stream

    def _step(self, event: Any, ctype: str) -> dict[str, Any]:
        """Stages after the first: extend the session's KV cache, then forward or choose."""
        if ctype != STEP_CONTENT_TYPE:
            raise PayloadError(f"stage {self.cfg.stage} takes {STEP_CONTENT_TYPE}, got "
                               f"{ctype or 'no content type'}", 415)
        st = decode_step(event.body, self.stage.spec.hidden_size, self.stage.max_positions,
                         self.model, self.cfg.stage - 1)
        sess = self.sessions.begin(st.session, st.pos)
        if sess is None:
            return self._json(409, {"error": f"stage {self.cfg.stage} holds no KV cache of "
                                             f"session {st.session} at position {st.pos}",
                                    "stage": self.cfg.stage, "kv_miss": True},
                              headers={KV_MISS_HEADER: "1"})
        try:
            with self.lock:  # Server-Timing is the compute, not the wait for the lock
                t0 = time.perf_counter()
                h = self.stage.forward(st.hidden, st.pos, sess.cache)
                token = self.stage.next_token(h) if self.stage.is_last else None
                own = {f"stage{self.cfg.stage}": (time.perf_counter() - t0) * 1e3}
            if token is not None:
                return self._json(200, {"token": token}, {"Server-Timing": _timing_header(own)})
            sess.history = h if st.pos == 0 or sess.history is None else torch.cat(
                [sess.history, h], dim=1)
            token, down = self.forward(h, st.pos, st.session, st.final, sess,
                                       event.headers.get("X-Call-Id"))
            return self._json(200, {"token": token},
                              {"Server-Timing": _timing_header({**own, **down})})
        finally:
            self.sessions.end(st.session, st.final)

    def forward(self, h: torch.Tensor, pos: int, session: str, final: bool,
                sess: Session, call_id: str | None) -> tuple[int, dict[str, float]]:
        """POST the new positions to the next stage; after a KV miss there, resend the whole
        history once from position 0.  Returns (token, downstream timing)."""
        r = self._post(encode_step(h, self.model, self.cfg.stage, session, pos, final), call_id)
        if r.status == 409 and r.headers.get(KV_MISS_HEADER) and sess.history is not None:
            r = self._post(encode_step(sess.history, self.model, self.cfg.stage, session, 0,
                                       final), call_id)
        ctype = r.headers.get("Content-Type", "application/json")
        if r.status != 200:
            body = r.data
            if "json" not in ctype:
                body = json.dumps({"error": body[:500].decode("utf-8", "replace") or r.reason,
                                   "stage": self.cfg.stage + 1}).encode()
                ctype = "application/json"
            raise StepError(r.status, body, ctype)
        try:
            token = json.loads(r.data)["token"]
            if isinstance(token, bool) or not isinstance(token, int):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            raise StepError(502, json.dumps({"error": f"next stage {self.cfg.next_function} "
                                                      "answered without a token",
                                             "stage": self.cfg.stage + 1}).encode(),
                            "application/json") from None
        return token, _parse_timing(r.headers.get("Server-Timing"))

    def _post(self, payload: bytes, call_id: str | None) -> urllib3.BaseHTTPResponse:
        nxt = self.cfg.next_function
        url = f"{self.cfg.gateway_url}/function/{nxt}"
        headers = {"Content-Type": STEP_CONTENT_TYPE}
        if call_id:
            headers["X-Call-Id"] = call_id
        try:
            return self.http.request("POST", url, body=payload, headers=headers,
                                     timeout=urllib3.Timeout(connect=5.0,
                                                             read=self.cfg.forward_timeout_s))
        except urllib3.exceptions.TimeoutError as e:
            if isinstance(e, urllib3.exceptions.NewConnectionError):
                raise self._unreachable(502, f"next stage {nxt} unreachable at {url}") from e
            raise self._unreachable(504, f"next stage {nxt} did not answer within "
                                         f"{self.cfg.forward_timeout_s:g}s") from e
        except urllib3.exceptions.HTTPError as e:
            raise self._unreachable(502, f"next stage {nxt} unreachable at {url}: "
                                         f"{type(e).__name__}") from e

    def _unreachable(self, status: int, msg: str) -> StepError:
        return StepError(status, json.dumps({"error": msg, "stage": self.cfg.stage + 1}).encode(),
                         "application/json")

    def openapi(self) -> dict[str, Any]:
        """This stage's OpenAPI document (decoder_openapi.py)."""
        from .decoder_openapi import document

        return document(self)

    @staticmethod
    def _json(status: int, doc: dict[str, Any], headers: dict[str, str] | None = None
              ) -> dict[str, Any]:
        extra = {"Allow": "GET, POST"} if status == 405 else {}  # RFC 9110
        return {"statusCode": status, "body": json.dumps(doc),
                "headers": {**JSON, **extra, **(headers or {})}}


class Generation:
    """One request's loop at stage 0: its KV cache and output history live here."""

    def __init__(self, server: DecoderServer, ids: list[int], max_new_tokens: int,
                 call_id: str | None):
        self.s, self.n, self.call_id = server, max_new_tokens, call_id
        self.session = uuid.uuid4().hex
        self.sess = Session()
        self.t0 = time.perf_counter()
        self.x, self.pos = torch.tensor([ids]), 0
        self.prompt_tokens = len(ids)
        self.tokens: list[int] = []
        self.stage_ms: dict[str, float] = {}
        self.text = ""
        assert server.stage.tokenizer is not None
        self.tok = server.stage.tokenizer
        self.detok = self.tok.decoder()
        self.finish = ""
        self.ttft_ms = 0.0

    def step(self) -> dict[str, Any]:
        """One pass through every stage; returns the token's line (without writing it)."""
        s, final = self.s, len(self.tokens) + 1 == self.n
        with s.lock:
            t0 = time.perf_counter()
            h = s.stage.forward(self.x, self.pos, self.sess.cache)
            token = s.stage.next_token(h) if s.stage.is_last else None
            timing = {"stage0": (time.perf_counter() - t0) * 1e3}
        if token is None:
            hist = self.sess.history
            self.sess.history = h if hist is None else torch.cat([hist, h], dim=1)
            token, down = s.forward(h, self.pos, self.session, final, self.sess, self.call_id)
            timing.update(down)
        self.pos += self.x.shape[1]
        self.x = torch.tensor([[token]])
        self.tokens.append(token)
        for k, v in timing.items():
            self.stage_ms[k] = self.stage_ms.get(k, 0.0) + v
        piece = self.detok.piece(token)
        self.text += piece
        ms = (time.perf_counter() - self.t0) * 1e3
        if len(self.tokens) == 1:
            self.ttft_ms = ms
        return {"index": len(self.tokens) - 1, "token": token, "text": piece, "ms": round(ms, 3),
                "timing": {k: round(v, 3) for k, v in timing.items()}}

    def lines(self, first: dict[str, Any]) -> Iterator[bytes]:
        """NDJSON lines: the first token's, then one per step, then the summary."""
        yield _line(first)
        while not self.done():
            try:
                yield _line(self.step())
            except StepError as e:
                yield _line({"error": _error_text(e), "status": e.status, "done": True})
                return
            except Exception as e:  # the stream is already a 200: say it in-band
                log.exception("generation step failed")
                yield _line({"error": f"stage 0 failed: {type(e).__name__}", "status": 500,
                             "done": True})
                return
        self.text += self.detok.flush()
        yield _line(self.summary())

    def done(self) -> bool:
        """Greedy generation stops at ``</s>`` or after max_new_tokens."""
        if not self.finish and self.tokens:
            if self.tokens[-1] == self.tok.eos:
                self.finish = "eos"
            elif len(self.tokens) >= self.n:
                self.finish = "length"
        return bool(self.finish)

    def summary(self) -> dict[str, Any]:
        return {"done": True, "model": self.s.model, "finish_reason": self.finish,
                "tokens": self.tokens, "text": self.text, "prompt_tokens": self.prompt_tokens,
                "session": self.session, "ttft_ms": round(self.ttft_ms, 3),
                "total_ms": round((time.perf_counter() - self.t0) * 1e3, 3),
                "stage_ms": {k: round(v, 3) for k, v in self.stage_ms.items()}}


def _line(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode() + b"\n"


def _error_text(e: StepError) -> str:
    try:
        return str(json.loads(e.body)["error"])
    except (ValueError, KeyError, TypeError):
        return e.body[:300].decode("utf-8", "replace")


def _timing_header(ms: dict[str, float]) -> str:
    return ", ".join(f"{k};dur={v:.2f}" for k, v in ms.items())


def _parse_timing(value: str | None) -> dict[str, float]:
    """``stage1;dur=3.10, stage2;dur=2.00`` -> {"stage1": 3.1, "stage2": 2.0}."""
    out: dict[str, float] = {}
    for part in (value or "").split(","):
        name, *params = [p.strip() for p in part.split(";")]
        for p in params:
            k, _, v = p.partition("=")
            if name and k.lower() == "dur":
                try:
                    out[name] = float(v)
                except ValueError:
                    pass
    return out
