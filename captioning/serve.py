"""``caption serve``: a vision-language model behind the OpenAI chat-completions protocol, on this machine.

The same protocol as vLLM, SGLang, LMDeploy and TGI, so that ``caption run --backend openai`` can be
tested and used without a GPU engine: ``GET /v1/models``, ``GET /health`` and
``POST /v1/chat/completions`` (no streaming); ``GET /stats`` counts requests and batch sizes. The
model is any the ``transformers`` backend loads (:class:`~pirs.captioning.vlm.TransformersBackend`);
the messages go through the model's own chat template, so a request carrying the ``transformers``
backend's conversation (one user turn: the image as a ``data:`` URL, then the instruction) gets
exactly that backend's caption.

**Batching.** HTTP requests are handled on threads that only parse and decode; one model thread
generates. When the model is free it takes every request waiting and waits up to ``batch_wait``
seconds for the clients it expects (those of the last batch, whose next requests follow their answers,
plus those that queued up meanwhile), then generates them together in one left-padded greedy batch of
at most ``max_batch`` (requests with different
``max_tokens`` in separate batches). That is dynamic batching, what makes concurrent requests
faster than one at a time here; vLLM and SGLang go further (continuous batching: a request joins
or leaves the running batch at every decoding step, with paged attention). Left-padded greedy
generation gives the same tokens whatever the batch, so the captions do not depend on the load.

Decoding is greedy only: a request with ``temperature`` above 0 (or ``n`` above 1, or ``stream``)
is refused with 400, as is an image given by an ``http(s)`` URL (the server fetches nothing) and any
number of images but one. Errors use the OpenAI shape ``{"error": {"message", "type", "code"}}``.

Fault injection for tests only: ``PIRS_TEST_SERVE_FAULT="every:N"`` answers 503 to every N-th chat
request, ``"image:HEX"`` answers 500 to every request whose image bytes' sha256 starts with HEX,
``"delay:S"`` sleeps S seconds before answering (comma-separated to combine).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import queue
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FAULT_ENV = "PIRS_TEST_SERVE_FAULT"
MAX_BODY_BYTES = 64 << 20


class HTTPError(Exception):
    def __init__(self, status: int, message: str, kind: str = "BadRequestError"):
        super().__init__(message)
        self.status, self.kind = status, kind


@dataclass
class _Job:
    image: Any
    prompt: str
    max_tokens: int
    done: threading.Event = field(default_factory=threading.Event)
    result: tuple[str, dict] | None = None
    error: str | None = None


def parse_faults(spec: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {"every": 0, "images": [], "delay": 0.0}
    for part in (spec or "").split(","):
        if not part.strip():
            continue
        kind, _, value = part.strip().partition(":")
        if kind == "every":
            out["every"] = int(value)
        elif kind == "image":
            out["images"].append(value.lower())
        elif kind == "delay":
            out["delay"] = float(value)
        else:
            raise ValueError(f"{FAULT_ENV}: cannot parse {part!r} (want every:N, image:HEX or delay:SECONDS)")
    return out


class CaptionServer:
    """An OpenAI-compatible chat-completions server for one :class:`TransformersBackend`.

    ``port=0`` picks a free port (see :attr:`url`). :meth:`start` serves on background threads;
    :meth:`serve_forever` in this one. ``stats`` counts requests and the sizes of the batches run.
    """

    def __init__(self, backend, served_model: str | None = None, host: str = "127.0.0.1", port: int = 0,
                 max_batch: int = 16, batch_wait: float = 0.05, max_tokens_limit: int = 4096, verbose: bool = False,
                 api_key: str | None = None):
        if max_batch < 1 or batch_wait < 0 or max_tokens_limit < 1:
            raise ValueError("caption serve: --max-batch and --max-tokens-limit at least 1, --batch-wait at least 0")
        self.backend = backend
        self.served_model = served_model or backend.model_name
        self.max_batch, self.batch_wait, self.max_tokens_limit = max_batch, batch_wait, max_tokens_limit
        self.verbose, self._api_key = verbose, api_key
        self.faults = parse_faults(os.environ.get(FAULT_ENV))
        self.stats: dict[str, Any] = {"requests": 0, "chat_requests": 0, "batches": [], "faults": 0}
        self._queue: queue.Queue[_Job] = queue.Queue()
        self._open = 0  # chat requests being read or decoded, not yet queued
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        handler = type("Handler", (_Handler,), {"app": self})
        try:
            self.httpd = ThreadingHTTPServer((host, port), handler)
        except OSError as e:
            raise OSError(e.errno, f"cannot listen on {host}:{port}: {e.strerror or e}") from None
        self.httpd.daemon_threads = True
        self.host, self.port = host, self.httpd.server_address[1]

    @property
    def url(self) -> str:
        """The base URL clients use: ``http://HOST:PORT/v1``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"

    def start(self) -> CaptionServer:
        """Serve on background threads (returns at once)."""
        self._start_model()
        t = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True,
                             name="pirs-serve-http")
        t.start()
        self._threads.append(t)
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until :meth:`shutdown` (or Ctrl-C)."""
        self._start_model()
        try:
            self.httpd.serve_forever(poll_interval=0.2)
        finally:
            self._stop.set()

    def shutdown(self) -> None:
        self._stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        for t in self._threads:
            t.join(timeout=10)

    def __enter__(self) -> CaptionServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.shutdown()

    # -- the model thread ---------------------------------------------------------------------------------------

    def _start_model(self) -> None:
        t = threading.Thread(target=self._model_loop, daemon=True, name="pirs-serve-model")
        t.start()
        self._threads.append(t)

    def _model_loop(self) -> None:
        expected = 0  # requests likely to come soon: the last batch's clients, whose next requests follow
        while not self._stop.is_set():  # their answers, plus those that queued up while it ran
            try:
                batch = [self._queue.get(timeout=0.1)]
            except queue.Empty:
                expected = 0
                continue
            deadline = time.monotonic() + self.batch_wait
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                    continue
                except queue.Empty:
                    pass
                with self._lock:
                    want = min(self.max_batch, max(expected, len(batch) + self._open))
                left = deadline - time.monotonic()
                if len(batch) >= want or left <= 0:
                    break
                try:
                    batch.append(self._queue.get(timeout=left))
                except queue.Empty:
                    break
            groups: dict[int, list[_Job]] = {}
            for job in batch:
                groups.setdefault(job.max_tokens, []).append(job)
            for max_tokens, jobs in groups.items():
                self._generate(jobs, max_tokens)
            expected = len(batch) + self._queue.qsize()  # one client at a time: 1, no wait; N in step: N

    def _generate(self, jobs: list[_Job], max_tokens: int) -> None:
        try:
            outs = self.backend.generate_batch([j.image for j in jobs], [j.prompt for j in jobs], max_tokens)
        except Exception as e:  # the whole batch fails with the reason; the server goes on
            for j in jobs:
                j.error = f"generation failed: {type(e).__name__}: {' '.join(str(e).split())[:300]}"
                j.done.set()
            return
        with self._lock:
            self.stats["batches"].append(len(jobs))
        for j, out in zip(jobs, outs, strict=True):
            j.result = out
            j.done.set()

    # -- requests -----------------------------------------------------------------------------------------------

    def models(self) -> dict:
        from pathlib import Path

        root = self.backend.model_name
        if Path(root).exists():
            root = str(Path(root).resolve())
        return {"object": "list", "data": [{"id": self.served_model, "object": "model", "created": 0,
                                            "owned_by": "pirs", "root": root, "parent": None}]}

    def chat(self, body: dict, on_queue=None) -> dict:
        """Answer one chat-completions request (raises HTTPError); ``on_queue()`` once it waits for the model."""
        with self._lock:
            self.stats["chat_requests"] += 1
            n = self.stats["chat_requests"]
        if self.faults["delay"]:
            time.sleep(self.faults["delay"])
        if self.faults["every"] and n % self.faults["every"] == 0:
            with self._lock:
                self.stats["faults"] += 1
            raise HTTPError(503, "injected fault: every request number divisible by "
                                 f"{self.faults['every']} is refused", "ServiceUnavailableError")
        if not isinstance(body, dict):
            raise HTTPError(400, "the request body must be a JSON object")
        if body.get("model") != self.served_model:
            raise HTTPError(404, f"The model `{body.get('model')}` does not exist (this server serves "
                                 f"`{self.served_model}`).", "NotFoundError")
        if body.get("stream"):
            raise HTTPError(400, "streaming is not supported by this server")
        if body.get("n", 1) != 1:
            raise HTTPError(400, "n must be 1")
        temperature = body.get("temperature")
        if temperature is not None and (not isinstance(temperature, int | float) or temperature != 0):
            raise HTTPError(400, "this server decodes greedily only: temperature must be 0 (or absent)")
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens")) or self.max_tokens_limit
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or not 1 <= max_tokens:
            raise HTTPError(400, f"max_tokens must be a positive integer, got {max_tokens!r}")
        if max_tokens > self.max_tokens_limit:
            raise HTTPError(400, f"max_tokens {max_tokens} is over this server's limit of {self.max_tokens_limit}")
        messages, image, png = self._messages(body.get("messages"))
        if self.faults["images"] and any(hashlib.sha256(png).hexdigest().startswith(h) for h in self.faults["images"]):
            with self._lock:
                self.stats["faults"] += 1
            raise HTTPError(500, "injected fault: this image always fails", "InternalServerError")
        from .vlm import chat_prompt

        try:
            prompt = chat_prompt(self.backend.processor, self.backend.model_type, messages)
        except Exception as e:
            raise HTTPError(400, f"the chat template refused the messages: {' '.join(str(e).split())[:300]}") from None
        job = _Job(image, prompt, max_tokens)
        if on_queue is not None:
            on_queue()
        self._queue.put(job)
        job.done.wait()
        if job.error is not None:
            raise HTTPError(500, job.error, "InternalServerError")
        text, usage = job.result  # type: ignore[misc]
        return {"id": "chatcmpl-" + uuid.uuid4().hex, "object": "chat.completion", "created": int(time.time()),
                "model": self.served_model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": usage["finish_reason"], "logprobs": None}],
                "usage": {"prompt_tokens": usage["prompt_tokens"], "completion_tokens": usage["completion_tokens"],
                          "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"]}}

    def _messages(self, messages: Any) -> tuple[list[dict], Any, bytes]:
        """The conversation in transformers' form, the one image decoded, and its bytes."""
        from pirs.degrade.sources import BadInput, decode_png

        if not isinstance(messages, list) or not messages:
            raise HTTPError(400, "messages must be a non-empty list")
        out, images = [], []
        for m in messages:
            if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant"):
                raise HTTPError(400, "each message needs a role: system, user or assistant")
            content = m.get("content")
            if isinstance(content, str):
                out.append({"role": m["role"], "content": [{"type": "text", "text": content}]})
                continue
            if not isinstance(content, list):
                raise HTTPError(400, "message content must be a string or a list of parts")
            parts = []
            for part in content:
                kind = part.get("type") if isinstance(part, dict) else None
                if kind == "text" and isinstance(part.get("text"), str):
                    parts.append({"type": "text", "text": part["text"]})
                elif kind == "image_url":
                    url = (part.get("image_url") or {}).get("url") if isinstance(part.get("image_url"), dict) else None
                    images.append(_data_url_bytes(url))
                    parts.append({"type": "image"})
                else:
                    raise HTTPError(400, f"unsupported content part {kind!r} (text and image_url only)")
            out.append({"role": m["role"], "content": parts})
        if len(images) != 1:
            raise HTTPError(400, f"one image per request, got {len(images)}")
        try:
            image = decode_png(images[0])
        except BadInput as e:
            raise HTTPError(400, f"cannot decode the image: {e}") from None
        return out, image, images[0]


def _data_url_bytes(url: Any) -> bytes:
    if not isinstance(url, str) or not url.startswith("data:"):
        raise HTTPError(400, "images must be data: URLs (data:image/png;base64,...); this server fetches nothing")
    head, sep, payload = url.partition(",")
    if not sep or not head.endswith(";base64"):
        raise HTTPError(400, "a data: URL of an image must be base64 (data:image/png;base64,...)")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise HTTPError(400, "the image's data: URL is not valid base64") from None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "pirs-caption-serve"
    app: CaptionServer

    def log_message(self, fmt: str, *args) -> None:
        if self.app.verbose:
            sys.stderr.write(f"{self.address_string()} {fmt % args}\n")

    def _send(self, status: int, obj: dict) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        # headers and body in one write: two small writes wait for a delayed ACK (Nagle), ~40 ms a request
        self._headers_buffer.extend([b"\r\n", data])
        self.flush_headers()

    def _error(self, e: HTTPError) -> None:
        self._send(e.status, {"error": {"message": str(e), "type": e.kind, "param": None, "code": e.status}})

    def _authorized(self) -> bool:
        key = self.app._api_key
        if key and self.headers.get("Authorization", "") != f"Bearer {key}":
            self._error(HTTPError(401, "missing or wrong API key", "AuthenticationError"))
            return False
        return True

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        with self.app._lock:
            self.app.stats["requests"] += 1
        path = self.path.split("?", 1)[0].rstrip("/")
        if path != "/health" and not self._authorized():
            return
        if path == "/health":
            self._send(200, {"status": "ok"})
        elif path in ("/v1/models", "/models"):
            self._send(200, self.app.models())
        elif path == "/stats":  # pirs' own: requests, faults, and how many batches of each size ran
            with self.app._lock:
                st = dict(self.app.stats)
                sizes = st.pop("batches")
            st["batch_sizes"] = {str(n): sizes.count(n) for n in sorted(set(sizes))}
            self._send(200, st)
        else:
            self._error(HTTPError(404, f"no route {path}", "NotFoundError"))

    def do_POST(self) -> None:  # noqa: N802
        with self.app._lock:
            self.app.stats["requests"] += 1
            self.app._open += 1
        queued = False

        def on_queue() -> None:
            nonlocal queued
            with self.app._lock:
                self.app._open -= 1
                queued = True

        try:
            path = self.path.split("?", 1)[0].rstrip("/")
            if not self._authorized():
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(min(max(length, 0), MAX_BODY_BYTES))
                return
            if path not in ("/v1/chat/completions", "/chat/completions"):
                raise HTTPError(404, f"no route {path}", "NotFoundError")
            try:
                length = int(self.headers.get("Content-Length") or -1)
            except ValueError:
                length = -1
            if length < 0:
                raise HTTPError(411, "Content-Length required")
            if length > MAX_BODY_BYTES:
                raise HTTPError(413, f"request body over {MAX_BODY_BYTES} bytes")
            raw = self.rfile.read(length)
            try:
                body = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise HTTPError(400, "the request body is not JSON") from None
            self._send(200, self.app.chat(body, on_queue))
        except HTTPError as e:
            self._error(e)
        except Exception as e:  # a bug here must not kill the server
            self._error(HTTPError(500, f"{type(e).__name__}: {' '.join(str(e).split())[:300]}", "InternalServerError"))
        finally:
            if not queued:
                with self.app._lock:
                    self.app._open -= 1


def serve(model: str, port: int, host: str = "127.0.0.1", served_model: str | None = None, device: str = "auto",
          dtype: str = "auto", max_batch: int = 16, batch_wait: float = 0.05, max_tokens_limit: int = 4096,
          verbose: bool = False, api_key_env: str | None = None) -> None:
    """Load ``model`` and serve it until interrupted (the ``caption serve`` command).

    With ``api_key_env`` the server answers only requests carrying that variable's value as a bearer token.
    """
    api_key = os.environ.get(api_key_env) if api_key_env else None
    if api_key_env and not api_key:
        raise ValueError(f"caption serve: --api-key-env {api_key_env}: that environment variable is not set")
    from .vlm import TransformersBackend

    backend = TransformersBackend(model, batch_size=max_batch, max_new_tokens=max_tokens_limit, device=device,
                                  dtype=dtype)
    server = CaptionServer(backend, served_model, host, port, max_batch, batch_wait, max_tokens_limit, verbose,
                           api_key)
    print(f"caption serve: {backend.model_name} ({backend.settings['architecture']}, {backend.device}, "
          f"{backend.dtype}) as {server.served_model!r} at {server.url}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    finally:
        server.httpd.server_close()
