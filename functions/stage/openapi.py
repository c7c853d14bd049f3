"""OpenAPI 3.0 description of one model stage, served by index.py at ``GET /_/openapi.json``.

Why per stage: what a stage accepts depends on where it sits (stage 0 takes
JSON text, later stages take safetensors activations) and on its limits
(QUART_MAX_INPUTS, QUART_MAX_INPUT_CHARS, QUART_MAX_BODY_BYTES), so the
document is built from the running stage's configuration.  Clients and the
fuzzer (tests/test_fuzz_*.py) read the same contract the server enforces.
"""
from __future__ import annotations

from typing import Any

from .codec import CONTENT_TYPE

STR = {"type": "string"}
ERROR = {"type": "object", "required": ["error", "stage"],
         "properties": {"error": STR, "stage": {"type": "integer"}}}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _err(description: str) -> dict[str, Any]:
    return _json({"$ref": "#/components/schemas/Error"}, description)


def document(server: Any) -> dict[str, Any]:
    """The document of ``server``: its own ``openapi()`` if it has one; for an encoder
    StageServer, its position, limits and answers; else what every stage shares."""
    own = getattr(server, "openapi", None)
    if own is not None:
        return own()
    from .server import StageServer

    if not isinstance(server, StageServer):
        return _generic(server)
    cfg, stage = server.cfg, server.stage
    body, post = _post(cfg, stage)
    refuse = {"405": _err("only GET (describe) and POST (infer)")}
    return {
        "openapi": "3.0.3",
        "info": {"title": f"{server.model} stage {cfg.stage} of {server.n}", "version": "1.0.0",
                 "description": "a Quart-FaaS pipeline stage (functions/stage); any path "
                                "answers the same"},
        "paths": {
            "/": {
                "get": {"operationId": "describe", "summary": "what this stage is",
                        "responses": {"200": _json({"$ref": "#/components/schemas/Stage"},
                                                   "description")}},
                "post": {"operationId": "infer", "summary": "run the stage's layers",
                         "requestBody": {"required": True, "content": body},
                         "responses": post},
                **{m: {"operationId": m, "responses": refuse} for m in ("put", "patch",
                                                                         "delete")},
            },
            "/_/health": {"get": {"operationId": "health", "responses": {"200": {
                "description": "serving", "content": {"text/html": {"schema": STR}}}}}},
            "/_/openapi.json": {"get": {"operationId": "openapi", "responses": {
                "200": _json({"type": "object"}, "this document")}}},
        },
        "components": {"schemas": _schemas()},
    }


def _post(cfg: Any, stage: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """POST's request body and answers, which depend on the stage's place in the pipeline."""
    hidden = stage.cfg.hidden_size
    if stage.is_first:
        body = {"application/json": {"schema": {
            "type": "object", "required": ["inputs"],
            "properties": {"inputs": {
                "type": "array", "minItems": 1, "maxItems": cfg.max_inputs,
                "items": {"type": "string", "maxLength": cfg.max_input_chars}}}}}}
        wrong = _err(f"the body is {CONTENT_TYPE} (stage 0 takes JSON)")
    else:
        body = {CONTENT_TYPE: {"schema": {
            "type": "string", "format": "binary",
            "description": f"safetensors with float32 hidden_states [batch 1..{cfg.max_inputs}, "
                           f"seq 1..{stage.max_seq_length}, {hidden}] and int64 0/1 "
                           "attention_mask [batch, seq]; metadata model, stage "
                           f"(= {cfg.stage - 1}), stages"}}}
        wrong = _err(f"the content type is not {CONTENT_TYPE}")
    answer = (_json({"$ref": "#/components/schemas/Embeddings"}, "sentence embeddings")
              if stage.is_last else
              {"description": "the next stages' answer, relayed (embeddings at the end)",
               "content": {"application/json": {"schema": {}}}})
    post = {"200": answer, "400": _err("malformed or out-of-bounds input"),
            "413": _err(f"body over {cfg.max_body_bytes} bytes (QUART_MAX_BODY_BYTES)"),
            "415": wrong}
    if not stage.is_first:
        post["409"] = _err("activations of another model or stage")
    if not stage.is_last:
        post["502"] = _err("the next stage is unreachable")
        post["504"] = _err("the next stage did not answer in time")
    return body, post


def _schemas() -> dict[str, Any]:
    """The document's components (a fresh copy per document, as callers may edit it)."""
    return {
        "Error": ERROR,
        "Stage": {"type": "object",
                  "required": ["model", "stage", "stages", "layers", "parameters", "next",
                               "accepts"],
                  "properties": {"model": STR, "stage": {"type": "integer"},
                                 "stages": {"type": "integer"},
                                 "layers": {"type": "array", "items": {"type": "integer"}},
                                 "parameters": {"type": "integer"},
                                 "next": {"type": "string", "nullable": True},
                                 "accepts": STR}},
        "Embeddings": {"type": "object", "required": ["embeddings", "model", "stages"],
                       "properties": {"embeddings": {"type": "array", "items": {
                           "type": "array", "items": {"type": "number"}}},
                           "model": STR, "stages": {"type": "integer"}}},
    }


def _generic(server: Any) -> dict[str, Any]:
    """A stage of another kind (e.g. the decoder): GET describes it, POST is its protocol."""
    anything = {"description": "the stage's answer (see GET / for what it accepts)",
                "content": {"*/*": {"schema": {}}}}
    return {
        "openapi": "3.0.3",
        "info": {"title": f"{server.model} stage {server.cfg.stage} of {server.n}",
                 "version": "1.0.0"},
        "paths": {"/": {
            "get": {"operationId": "describe", "responses": {"200": _json(
                {"type": "object"}, "what this stage is and accepts")}},
            "post": {"operationId": "infer", "requestBody": {"content": {"*/*": {
                "schema": {"type": "string", "format": "binary"}}}},
                "responses": {"default": anything}}}},
        "components": {"schemas": {"Error": ERROR}},
    }
