"""OpenAPI 3.0 description of one decoder stage (``GET /_/openapi.json``, as ``openapi.py``).

Stage 0 takes a JSON prompt and answers a token stream (NDJSON) or, with
``"stream": false``, one JSON document; later stages take one step of hidden
states (safetensors) and answer the chosen token.  Limits come from the
running stage, so clients and the fuzzer read the contract it enforces.
"""
from __future__ import annotations

from typing import Any

from .decoder_wire import STEP_CONTENT_TYPE

STR = {"type": "string"}
INT = {"type": "integer"}
ERROR = {"type": "object", "required": ["error", "stage"],
         "properties": {"error": STR, "stage": INT, "kv_miss": {"type": "boolean"}}}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _err(description: str) -> dict[str, Any]:
    return _json({"$ref": "#/components/schemas/Error"}, description)


def document(server: Any) -> dict[str, Any]:
    """The document of ``server`` (a DecoderServer)."""
    cfg, stage, lim = server.cfg, server.stage, server.limits
    if stage.is_first:
        body = {"application/json": {"schema": {
            "type": "object", "required": ["prompt"], "additionalProperties": False,
            "properties": {
                "prompt": {"type": "string", "maxLength": cfg.max_input_chars},
                "max_new_tokens": {"type": "integer", "minimum": 1,
                                   "maximum": lim.max_new_tokens, "default": 16},
                "stream": {"type": "boolean", "default": True}}}}}
        ok = {"description": "generated tokens: NDJSON lines (one per token, then a summary), "
                             "or one JSON document when stream is false",
              "content": {"application/x-ndjson": {"schema": STR},
                          "application/json": {"schema": {"type": "object"}}}}
        wrong = _err(f"the body is {STEP_CONTENT_TYPE} (stage 0 takes JSON)")
    else:
        body = {STEP_CONTENT_TYPE: {"schema": {
            "type": "string", "format": "binary",
            "description": "safetensors with float32 hidden_states [1, t, "
                           f"{stage.spec.hidden_size}]; metadata model, stage "
                           f"(= {cfg.stage - 1}), session, pos, final"}}}
        ok = _json({"type": "object", "required": ["token"], "properties": {"token": INT}},
                   "the token the last stage chose for this step")
        wrong = _err(f"the content type is not {STEP_CONTENT_TYPE}")
    post = {"200": ok, "400": _err("malformed or out-of-bounds input"),
            "413": _err(f"body over {cfg.max_body_bytes} bytes (QUART_MAX_BODY_BYTES)"),
            "415": wrong}
    if not stage.is_first:
        post["409"] = _err("a step of another model or stage, or no KV session at pos")
    if not stage.is_last:
        post["502"] = _err("the next stage is unreachable")
        post["504"] = _err("the next stage did not answer in time")
    refuse = {"405": _err("only GET (describe) and POST")}
    return {
        "openapi": "3.0.3",
        "info": {"title": f"{server.model} decoder stage {cfg.stage} of {server.n}",
                 "version": "1.0.0",
                 "description": "a Quart-FaaS decoder stage (functions/stage/decoder_server.py)"},
        "paths": {
            "/": {
                "get": {"operationId": "describe", "summary": "what this stage is",
                        "responses": {"200": _json({"type": "object", "required": [
                            "model", "stage", "stages", "layers", "kv"]}, "description")}},
                "post": {"operationId": "generate" if stage.is_first else "step",
                         "requestBody": {"required": True, "content": body},
                         "responses": post},
                **{m: {"operationId": m, "responses": refuse} for m in ("put", "patch",
                                                                         "delete")},
            },
            "/_/health": {"get": {"operationId": "health", "responses": {"200": {
                "description": "serving", "content": {"text/html": {"schema": STR}}}}}},
        },
        "components": {"schemas": {"Error": ERROR}},
    }
