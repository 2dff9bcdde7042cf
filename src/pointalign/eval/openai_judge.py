"""A judge behind any OpenAI-compatible chat-completions endpoint: vLLM, Ollama, DashScope, OpenAI.

Requests run in parallel threads; each is retried with exponential backoff on connection errors, timeouts, 429 and
5xx answers and on bodies that are not a chat completion. Every finished item is appended to a cache file (JSON
lines keyed by task, object id and judge model) before the next is counted, so an interrupted run resumes without
asking again. A reply's *content* is never retried: an empty, malformed or out-of-range reply is a judge verdict
and is counted INVALID by the accounting.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from pointalign.eval import judge_prompts as jp

RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class JudgeRequestError(RuntimeError):
    """A request that failed for good (a 4xx other than the retryable ones, or retries exhausted)."""


@dataclass
class OpenAIJudge:
    base_url: str  # e.g. http://127.0.0.1:8000/v1
    model: str
    api_key: str | None = None
    temperature: float | None = None  # None = the server's default
    max_tokens: int = 256
    timeout: float = 60.0
    retries: int = 5
    backoff: float = 1.0  # seconds before the first retry; doubles each time
    workers: int = 8

    def complete(self, messages: list[dict]) -> str:
        """One chat completion's text, with retries (see the module docstring)."""
        body = {"model": self.model, "messages": messages, "max_tokens": self.max_tokens}
        if self.temperature is not None:
            body["temperature"] = self.temperature
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        url = self.base_url.rstrip("/") + "/chat/completions"
        last = "no attempt"
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as resp:
                    payload = json.loads(resp.read().decode())
                content = payload["choices"][0]["message"]["content"]
                return content if isinstance(content, str) else ""
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code}"
                if exc.code not in RETRYABLE_STATUS:
                    raise JudgeRequestError(f"{url}: {last} ({exc.read()[:200]!r})") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            except (json.JSONDecodeError, KeyError, IndexError, TypeError, UnicodeDecodeError) as exc:
                last = f"not a chat completion ({type(exc).__name__})"
        raise JudgeRequestError(f"{url}: gave up after {self.retries + 1} attempts ({last})")


class ReplyCache:
    """Thread-safe append-only JSON-lines cache of judge replies."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.replies: dict[str, str] = {}
        if path.is_file():
            for line in path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by an interruption
                self.replies[rec["key"]] = rec["reply"]

    def put(self, key: str, reply: str) -> None:
        with self.lock:
            self.replies[key] = reply
            with open(self.path, "a") as f:
                f.write(json.dumps({"key": key, "reply": reply}) + "\n")
                f.flush()


def openai_replies(judge: OpenAIJudge, cache_path: Path, print_fn=print) -> callable:
    """A ``reply_fn`` for ``run_judge``: replies from the endpoint, through the cache."""

    def reply_fn(kind: str, results: list[dict], class_names: list[str]) -> list[str | None]:
        cache = ReplyCache(cache_path)
        keys = [f"{kind}|{judge.model}|{r['object_id']}" for r in results]
        todo = [i for i, k in enumerate(keys) if k not in cache.replies]
        errors: list[str] = []

        def work(i: int) -> None:
            r = results[i]
            try:
                reply = judge.complete(jp.messages(kind, str(r["ground_truth"]), r["model_output"], class_names))
            except JudgeRequestError as exc:
                errors.append(str(exc))
                return
            cache.put(keys[i], reply)

        with ThreadPoolExecutor(max_workers=judge.workers) as pool:
            list(pool.map(work, todo))
        if errors:
            print_fn(f"judge: {len(errors)} requests failed; first: {errors[0]}")
        return [cache.replies.get(k) for k in keys]

    return reply_fn
