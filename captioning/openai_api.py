"""The ``openai`` caption backend: a served model through the OpenAI-compatible chat-completions protocol.

vLLM, SGLang, LMDeploy and TGI all serve ``POST /v1/chat/completions`` and batch the requests in
flight on the GPU, which is several times faster than Hugging Face ``generate``. This backend sends
one request per (record, instruction): one user turn holding the image as a ``data:`` URL (the
shard's own PNG bytes, nothing re-encoded) followed by the instruction, verbatim, with
``temperature=0`` (greedy), a fixed ``seed`` and ``max_tokens``. ``concurrency`` requests are in flight
at once, spread over one or more endpoints (each request goes to the endpoint with the fewest in
flight; a retry prefers another one).

A request that times out, cannot connect, or gets a 5xx, 429 or 408 answer is retried ``retries``
times with exponential backoff (``backoff``, doubled each time, at most 60 s, with jitter); after the
last retry the record fails with the reason (listed in ``caption_failures.jsonl``; the next run
retries it). Any other answer (400: prompt too long, image refused; 404: unknown model) fails the
record at once. When no endpoint accepts connections any more (the server stopped) the backend raises
:class:`~pirs.captioning.backend.BackendUnavailable`: the run stops, keeping every finished shard,
and the same command resumes once a server is back.

The API key is read from the environment variable ``api_key_env`` (``OPENAI_API_KEY`` by default)
where the backend runs; it is sent only in the ``Authorization`` header and never written anywhere.
The provenance records the served model name, the model path the server reports for it
(``/v1/models``' ``root``, when it gives one), the endpoints and the generation settings.

Greedy decoding by a serving engine is deterministic for a given batch, but engines do not promise the
same tokens whatever else is in flight (vLLM and SGLang document batch-dependent numerics), so a
resumed run may caption a record differently than an uninterrupted one would have; pirs' own
``caption serve`` gives the same captions as the ``transformers`` backend whatever the batch.
"""

from __future__ import annotations

import base64
import io
import os
import random
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from .backend import Backend, BackendUnavailable, CaptionError, Instruction, Item

DEFAULT_API_KEY_ENV = "OPENAI_API_KEY"
DEFAULT_SEED = 0
RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})  # and every other 5xx
MAX_BACKOFF = 60.0


class EndpointError(ValueError):
    """An endpoint that cannot be used (unreachable, refusing the key, not serving the model)."""


def normalize_endpoint(url: str) -> str:
    """``http(s)://host:port[/path]`` as the client's base URL: ``/v1`` added when no path is given."""
    u = url.strip().rstrip("/")
    parts = urlsplit(u)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise EndpointError(f"--endpoint {url!r}: want http://HOST:PORT or https://HOST[:PORT][/PATH] "
                            "(for example http://127.0.0.1:8000/v1)")
    if parts.query or parts.fragment:
        raise EndpointError(f"--endpoint {url!r}: no query or fragment, please")
    return u if parts.path not in ("", "/") else u + "/v1"


def data_url(png: bytes | None, image: np.ndarray | None) -> str:
    """The image as a ``data:image/png;base64,...`` URL: the given PNG bytes, or the pixels encoded as PNG."""
    if png is None:
        if image is None:
            raise ValueError("no image")
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(image)).convert("RGB").save(buf, format="PNG")
        png = buf.getvalue()
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def chat_request(image_url: str, text: str) -> list[dict[str, Any]]:
    """The messages of one caption request: one user turn, the image then the instruction."""
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": image_url}},
                                         {"type": "text", "text": text}]}]


class _Retryable(Exception):
    """One attempt failed in a way worth another try."""

    def __init__(self, reason: str, unreachable: bool = False):
        super().__init__(reason)
        self.unreachable = unreachable


class OpenAIBackend(Backend):
    """Captions with a model served behind the OpenAI chat-completions protocol (vLLM, SGLang, LMDeploy, TGI).

    ``endpoints``: base URLs (``http://host:8000/v1``); ``served_model``: the name the server serves
    the model under (``--served-model-name`` of vLLM). ``check=False`` skips asking the endpoints
    for ``/v1/models`` (the provenance then lacks the model root).
    """

    concurrent = True  # the run sends every instruction's requests at once; the pool bounds them together

    def __init__(self, endpoints: list[str] | str, served_model: str, concurrency: int = 8, timeout: float = 120.0,
                 max_new_tokens: int = 128, seed: int = DEFAULT_SEED, retries: int = 4, backoff: float = 1.0,
                 api_key_env: str = DEFAULT_API_KEY_ENV, check: bool = True):
        if isinstance(endpoints, str):
            endpoints = [e for e in endpoints.split(",") if e.strip()]
        if not endpoints:
            raise EndpointError("--backend openai needs --endpoint URL (one, or several separated by commas)")
        if not served_model:
            raise EndpointError("--backend openai needs --served-model NAME (the name the server serves the model "
                                "under; GET ENDPOINT/models lists it)")
        if concurrency < 1 or timeout <= 0 or max_new_tokens < 1 or retries < 0 or backoff < 0:
            raise ValueError("openai: --concurrency and --max-new-tokens must be at least 1, --timeout above 0, "
                             "--retries and the backoff at least 0")
        self.endpoints = list(dict.fromkeys(normalize_endpoint(e) for e in endpoints))
        self.served_model, self.concurrency, self.timeout = served_model, concurrency, float(timeout)
        self.max_new_tokens, self.seed, self.retries, self.backoff = max_new_tokens, seed, retries, backoff
        self.api_key_env = api_key_env
        self._lock = threading.Lock()
        self._clients: dict[str, Any] = {}
        self._in_flight = dict.fromkeys(self.endpoints, 0)
        self._down: dict[str, tuple[int, float]] = {}  # endpoint -> (refusals in a row, avoid until)
        self._pool: ThreadPoolExecutor | None = None
        self.requests = self.retried = 0  # counters, for the curious
        root = self._check() if check else None
        super().__init__(name="openai", needs_pixels=True, settings={
            "model": served_model, "served_model": served_model, "model_root": root,
            "endpoint": self.endpoints[0] if len(self.endpoints) == 1 else list(self.endpoints),
            "protocol": "openai-chat-completions", "max_new_tokens": max_new_tokens, "temperature": 0.0,
            "seed": seed, "greedy": True, "concurrency": concurrency, "timeout": self.timeout})

    # -- plumbing ----------------------------------------------------------------------------------------------

    def __getstate__(self) -> dict:  # clients, locks and threads stay in the process that made them
        state = dict(self.__dict__)
        state.update(_lock=None, _clients={}, _pool=None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _key(self) -> str:
        return os.environ.get(self.api_key_env) or "EMPTY"  # vLLM's convention for "no key"

    def _client(self, endpoint: str):
        with self._lock:
            if endpoint not in self._clients:
                try:
                    import openai
                except ModuleNotFoundError:
                    raise EndpointError("--backend openai needs the openai client: pip install openai") from None
                self._clients[endpoint] = openai.OpenAI(base_url=endpoint, api_key=self._key(), max_retries=0,
                                                        timeout=self.timeout)
            return self._clients[endpoint]

    def _check(self) -> str | None:
        """Ask every endpoint for its models; the served model must be listed. Returns the model's root."""
        import openai

        roots = {}
        for ep in self.endpoints:
            try:
                models = self._client(ep).models.list(timeout=min(self.timeout, 30.0))
                ids = {m.id: getattr(m, "root", None) for m in models.data}
            except openai.AuthenticationError:
                have = "is set" if os.environ.get(self.api_key_env) else "is not set"
                raise EndpointError(f"{ep} refused the API key (401); it is read from ${self.api_key_env}, which "
                                    f"{have} here") from None
            except openai.APIStatusError as e:
                raise EndpointError(f"{ep}/models answered HTTP {e.status_code}: {_server_message(e)}") from None
            except openai.APIConnectionError as e:
                raise EndpointError(f"cannot reach {ep} ({_cause(e)}); is the server up? (vllm serve ... "
                                    "--port PORT, then --endpoint http://HOST:PORT/v1)") from None
            if self.served_model not in ids:
                raise EndpointError(f"{ep} does not serve {self.served_model!r} (it serves: "
                                    f"{', '.join(sorted(ids)) or 'nothing'}); pass --served-model with one of those")
            roots[ep] = ids[self.served_model]
        if len(set(roots.values())) > 1:
            raise EndpointError("the endpoints serve different models under one name: " +
                                "; ".join(f"{ep}: {r}" for ep, r in roots.items()))
        return next(iter(roots.values()))

    def _pick(self, avoid: str | None) -> str:
        """The endpoint for the next attempt: one not refusing connections lately, the fewest in flight."""
        now = time.monotonic()
        with self._lock:
            order = sorted(self.endpoints, key=lambda e: (self._down.get(e, (0, 0.0))[1] > now, e == avoid,
                                                          self._in_flight[e], random.random()))
            self._in_flight[order[0]] += 1
            return order[0]

    def _release(self, endpoint: str, refused: bool | None) -> None:
        """Done with ``endpoint``; ``refused`` True marks it down for a while (longer each time), False up."""
        with self._lock:
            self._in_flight[endpoint] -= 1
            if refused:
                n = self._down.get(endpoint, (0, 0.0))[0] + 1
                self._down[endpoint] = (n, time.monotonic() + min(MAX_BACKOFF, 2.0 ** n))
            elif refused is False:
                self._down.pop(endpoint, None)

    # -- one request -------------------------------------------------------------------------------------------

    def _attempt(self, endpoint: str, messages: list[dict]) -> tuple[str, str]:
        """One request: ``(text, finish_reason)``; raises _Retryable or CaptionError."""
        import openai

        try:
            r = self._client(endpoint).chat.completions.create(
                model=self.served_model, messages=messages, temperature=0.0, seed=self.seed,
                max_tokens=self.max_new_tokens, n=1, timeout=self.timeout)
        except openai.APITimeoutError:
            raise _Retryable(f"{endpoint}: no answer within {self.timeout:g} s (--timeout)") from None
        except openai.APIConnectionError as e:
            raise _Retryable(f"{endpoint}: {_cause(e)}", unreachable=_refused(e)) from None
        except openai.APIStatusError as e:
            reason = f"{endpoint}: HTTP {e.status_code}: {_server_message(e)}"
            if e.status_code in RETRY_STATUS or e.status_code >= 500:
                raise _Retryable(reason) from None
            raise CaptionError(reason) from None
        choice = r.choices[0] if r.choices else None
        if choice is None or choice.message is None:
            raise CaptionError(f"{endpoint}: an answer without a choice")
        return (choice.message.content or "").strip(), str(choice.finish_reason)

    def request(self, messages: list[dict]) -> str:
        """The caption for one request, after retries; CaptionError when it fails for good."""
        endpoint = None
        for attempt in range(self.retries + 1):
            endpoint = self._pick(avoid=endpoint if len(self.endpoints) > 1 else None)
            refused: bool | None = None
            try:
                with self._lock:
                    self.requests += 1
                text, _ = self._attempt(endpoint, messages)
                refused = False
                return text
            except _Retryable as e:
                refused, reason = e.unreachable, str(e)
            except CaptionError:
                refused = False
                raise
            finally:
                self._release(endpoint, refused)
            if attempt < self.retries:
                with self._lock:
                    self.retried += 1
                delay = min(MAX_BACKOFF, self.backoff * 2 ** attempt)
                time.sleep(delay * random.uniform(0.5, 1.0))
        if refused:  # the last attempt could not even connect: not this record, the server is gone
            raise BackendUnavailable(f"the server stopped answering: {reason} (after {self.retries + 1} attempts "
                                     f"over {len(self.endpoints)} endpoint(s))")
        raise CaptionError(f"{reason} (after {self.retries + 1} attempts)")

    # -- the backend interface ---------------------------------------------------------------------------------

    def caption(self, items: list[Item], instruction: Instruction) -> list[str]:
        """One caption per item, ``concurrency`` requests in flight; CaptionError (with ``failed`` and
        ``captions``) naming the items that failed after their retries."""
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="pirs-openai")
            pool = self._pool
        captions: list[str | None] = [None] * len(items)
        failed: dict[str, str] = {}

        def one(i: int) -> None:
            item = items[i]
            if item.image is None and item.data is None:
                failed[item.key] = "no image given to the openai backend"
                return
            try:
                text = self.request(chat_request(data_url(item.data, item.image), instruction.text))
            except CaptionError as e:
                failed[item.key] = str(e)
                return
            if text:
                captions[i] = text
            else:
                failed[item.key] = f"empty output from {self.served_model} for instruction {instruction.name!r}"

        futures = [pool.submit(one, i) for i in range(len(items))]
        done, pending = wait(futures, return_when=FIRST_EXCEPTION)
        for f in done:
            if f.exception() is not None:
                for p in pending:
                    p.cancel()
                wait(pending)
                raise f.exception()
        if failed:
            err = CaptionError(f"openai: {len(failed)} of {len(items)} record(s) not captioned ({instruction.name}): "
                               + "; ".join(f"{k}: {r}" for k, r in failed.items()))
            err.failed, err.captions = failed, captions
            raise err
        return captions  # type: ignore[return-value]

    def close(self) -> None:
        """Stop the request threads and close the connections."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        for c in self._clients.values():
            c.close()
        self._clients.clear()


def _cause(e: BaseException) -> str:
    """The innermost cause of a connection error, in a few words."""
    while e.__cause__ is not None or e.__context__ is not None:
        e = e.__cause__ or e.__context__
    return " ".join(str(e).split())[:200] or type(e).__name__


def _refused(e: BaseException) -> bool:
    """A connection that could not be made at all (refused, unknown host, unreachable network), as opposed to
    one cut mid-answer: the HTTP client's ``ConnectError`` or the OS's refusal anywhere in the chain."""
    while e is not None:
        if isinstance(e, ConnectionRefusedError) or type(e).__name__ == "ConnectError":
            return True
        e = e.__cause__ or e.__context__
    return False


def _server_message(e) -> str:
    """The error message a server put in its JSON body (``{"error": {"message": ...}}`` or ``{"message"}``)."""
    body = getattr(e, "body", None)
    msg = None
    if isinstance(body, dict):
        inner = body.get("error", body)
        msg = inner.get("message") if isinstance(inner, dict) else inner
    return " ".join(str(msg or e.message or "").split())[:300]
