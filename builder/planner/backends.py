"""Planner backends: a local ``transformers`` causal LM, or any OpenAI-compatible HTTP endpoint.

Both share one interface::

    planner.propose(requests, k=8, temperature=1.0, top_p=1.0) -> list[list[str]]

``requests`` are ``PlanRequest`` objects (or (family, query) tuples, or bare query strings); the
answer holds k candidate program sources per request, extracted from the completions (a
completion with no extractable ``def execute`` is returned as is, so that ``check_program`` and
the executor report why it fails and the reward is 0).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path

from builder.core.artifacts import CONFIG_FILE, TRANSFORMERS_KEY, Artifact, read_record
from builder.core.errors import UserError
from builder.planner.prompt import (
    ExampleRetriever,
    as_request,
    compact_prompt,
    extract_program,
    full_prompt,
    split_prompt,
)


class Completion(str):
    """A completion's text; ``truncated`` is True when generation stopped at the token limit
    (only then may ``extract_program`` trim an unfinished tail)."""

    truncated: bool = False

    def __new__(cls, text: str, truncated: bool = False):
        """A completion of ``text``; ``truncated`` marks one cut off at the token limit."""
        obj = super().__new__(cls, text)
        obj.truncated = truncated
        return obj


class PlannerError(UserError, RuntimeError):
    """A planner could not produce completions (bad model path, HTTP error, malformed reply)."""


class Planner:
    """Common base: renders prompts (compact or full with retrieved shots) and extracts programs."""

    prompt_style: str = "full"

    def __init__(self, prompt_style: str = "full", retriever: ExampleRetriever | None = None, shots: int = 4):
        if prompt_style not in ("full", "compact"):
            raise ValueError(f"prompt_style must be 'full' or 'compact', got {prompt_style!r}")
        self.prompt_style = prompt_style
        self.retriever = retriever
        self.shots = shots

    def prompt(self, request) -> str:
        """The prompt text for one request (before any chat template)."""
        req = as_request(request)
        if self.prompt_style == "compact":
            return compact_prompt(req)
        shots = self.retriever.nearest(req.query, self.shots, req.family) if self.retriever else []
        return full_prompt(req, shots)

    def complete(self, prompts: list[str], k: int, temperature: float, top_p: float,
                 max_new_tokens: int | None = None) -> list[list[str]]:
        """k raw completions per prompt (implemented by each backend)."""
        raise NotImplementedError

    def propose(self, requests: Sequence, k: int = 1, temperature: float = 1.0, top_p: float = 1.0,
                max_new_tokens: int | None = None) -> list[list[str]]:
        """k candidate programs per request (temperature 0 means greedy: k identical candidates)."""
        if k < 1:
            raise ValueError("k must be at least 1")
        prompts = [self.prompt(r) for r in requests]
        raw = self.complete(prompts, k, temperature, top_p, max_new_tokens) if prompts else []
        return [[extract_program(c) or c for c in cands] for cands in raw]


class TransformersPlanner(Planner, Artifact):
    """A causal LM from any model id or local path, sampling k candidates per prompt in batches.

    When the tokenizer has a chat template, the prompt is sent as a system turn (the task
    description) and a user turn (tools, examples, query); otherwise it is completed as raw text.
    """

    architecture = "transformers-planner"
    transformers_folder = True

    def __init__(self, model, tokenizer, prompt_style: str = "full", retriever: ExampleRetriever | None = None,
                 shots: int = 4, max_new_tokens: int = 256, batch_size: int = 16, seed: int | None = None):
        super().__init__(prompt_style, retriever, shots)
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.seed = seed
        self.info: dict = {}  # how it was trained (saved in config.json)
        self._lock = threading.Lock()  # generate() is not re-entrant on a shared model
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "left"  # decoder-only: pad on the left so generation continues the prompt

    @classmethod
    def from_pretrained(cls, path_or_id: str | os.PathLike, dtype=None, **kwargs) -> TransformersPlanner:
        """Load model and tokenizer from a model id or folder. A folder saved by ``save_pretrained``
        records the prompt style and generation length (``builder.core.artifacts``); a plain
        transformers folder or hub id (a code LLM of your own) loads with the given ``kwargs``."""
        config, info = {}, {}
        if _has_record(path_or_id):
            record = read_record(path_or_id)
            if record["architecture"] != cls.architecture:
                raise PlannerError(f"{path_or_id}: holds a {record['architecture']!r}, not a causal-LM planner")
            config, info = record["config"], record.get("info") or {}
        planner = cls._load(path_or_id, config, dtype, **kwargs)
        planner.info = info
        return planner

    @classmethod
    def _from_files(cls, folder: Path, config: dict, info: dict) -> TransformersPlanner:
        planner = cls._load(folder, config)
        planner.info = info
        return planner

    @classmethod
    def _load(cls, path_or_id, config: dict, dtype=None, **kwargs) -> TransformersPlanner:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            if config.get("tokenizer_class") == "PreTrainedTokenizerFast":
                # AutoTokenizer would pick the architecture's tokenizer class (Qwen2Tokenizer for a
                # qwen2 config), which in transformers 5 replaces a custom pre-tokenizer with its own.
                from transformers import PreTrainedTokenizerFast

                tok = PreTrainedTokenizerFast.from_pretrained(str(path_or_id))
            else:
                tok = AutoTokenizer.from_pretrained(str(path_or_id))
            model = AutoModelForCausalLM.from_pretrained(str(path_or_id), dtype=dtype)
        except OSError as e:
            raise PlannerError(f"cannot load a planner from {path_or_id}: {e}") from None
        for key in ("prompt_style", "max_new_tokens"):
            if key in config:
                kwargs.setdefault(key, config[key])
        return cls(model, tok, **kwargs)

    def artifact_config(self) -> dict:
        """Prompt style and token limit, plus the tokenizer class where loading must force it (``_load``)."""
        config = {"prompt_style": self.prompt_style, "max_new_tokens": self.max_new_tokens}
        if type(self.tokenizer).__name__ in ("PreTrainedTokenizerFast", "TokenizersBackend"):
            config["tokenizer_class"] = "PreTrainedTokenizerFast"  # see _load
        return config

    def artifact_info(self) -> dict:
        """The record of how the planner was made (a copy)."""
        return dict(self.info)

    def _save_files(self, folder: Path) -> None:
        """Weights and tokenizer, as transformers writes them (LoRA adapters merged first)."""
        model = self.model.merge_and_unload() if hasattr(self.model, "merge_and_unload") else self.model
        model.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)

    def render(self, prompt: str) -> str:
        """The text the model actually sees: the chat template applied when the tokenizer has one."""
        if not getattr(self.tokenizer, "chat_template", None):
            return prompt
        system, user = split_prompt(prompt)
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def complete(self, prompts: list[str], k: int, temperature: float, top_p: float,
                 max_new_tokens: int | None = None) -> list[list[str]]:
        """``k`` completions per prompt, each prompt rendered through the chat template first (``render``)."""
        return self.complete_raw([self.render(p) for p in prompts], k, temperature, top_p, max_new_tokens)

    def complete_raw(self, texts: list[str], k: int, temperature: float, top_p: float,
                     max_new_tokens: int | None = None) -> list[list[str]]:
        """k completions per text, the text used verbatim (no chat template)."""
        import torch

        sample = temperature > 0
        out: list[list[str]] = []
        gen_kwargs = {"max_new_tokens": max_new_tokens or self.max_new_tokens, "do_sample": sample,
                      "pad_token_id": self.tokenizer.pad_token_id, "eos_token_id": self.tokenizer.eos_token_id}
        if sample:
            gen_kwargs.update(temperature=temperature, top_p=top_p, top_k=0, num_return_sequences=k)
        # Keep about batch_size sequences per forward pass whatever k is.
        per = max(1, self.batch_size // (k if sample else 1))
        with self._lock, torch.no_grad():
            if self.seed is not None:
                torch.manual_seed(self.seed)
            for i in range(0, len(texts), per):
                chunk = texts[i: i + per]
                enc = self.tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
                gen = self.model.generate(**enc, **gen_kwargs)
                new = gen[:, enc["input_ids"].shape[1]:]
                limit = gen_kwargs["max_new_tokens"]
                cut = [new.shape[1] >= limit and not (row == self.tokenizer.eos_token_id).any() for row in new]
                decoded = [Completion(text, bool(c)) for text, c in
                           zip(self.tokenizer.batch_decode(new, skip_special_tokens=True), cut, strict=True)]
                n = k if sample else 1
                for j in range(len(chunk)):
                    cands = decoded[j * n: (j + 1) * n]
                    out.append(cands if sample else cands * k)
        return out


class OpenAIPlanner(Planner):
    """An OpenAI-compatible endpoint (vLLM, Ollama, llama.cpp server, hosted APIs) over httpx.

    ``mode="chat"`` posts to ``/v1/chat/completions`` (system + user turns), ``mode="completions"``
    to ``/v1/completions`` (the raw prompt); both ask for ``n=k`` samples. The API key is read
    from the environment variable ``api_key_env`` (sent as a Bearer token when set).
    """

    def __init__(self, base_url: str, model: str, mode: str = "chat", api_key_env: str = "OPENAI_API_KEY",
                 timeout: float = 120.0, prompt_style: str = "full", retriever: ExampleRetriever | None = None,
                 shots: int = 4, max_tokens: int = 256, stop: list[str] | None = None, client=None):
        super().__init__(prompt_style, retriever, shots)
        if mode not in ("chat", "completions"):
            raise ValueError(f"mode must be 'chat' or 'completions', got {mode!r}")
        import httpx

        self.base_url = base_url.rstrip("/")
        if not self.base_url.endswith("/v1"):
            self.base_url += "/v1"
        self.model = model
        self.mode = mode
        self.max_tokens = max_tokens
        self.stop = stop
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(api_key_env) if api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._client = client or httpx.Client(timeout=httpx.Timeout(timeout, connect=min(10.0, timeout)),
                                              headers=headers)

    def close(self) -> None:
        """Close the HTTP client's connections."""
        self._client.close()

    def _post(self, route: str, body: dict) -> dict:
        import httpx

        url = f"{self.base_url}/{route}"
        try:
            resp = self._client.post(url, json=body)
        except httpx.TimeoutException:
            raise PlannerError(f"planner endpoint {url} timed out") from None
        except httpx.HTTPError as e:
            raise PlannerError(f"cannot reach planner endpoint {url}: {type(e).__name__}: {e}") from None
        if resp.status_code != 200:
            raise PlannerError(f"planner endpoint {url} answered HTTP {resp.status_code}: {resp.text[:500]}")
        try:
            return resp.json()
        except ValueError:
            raise PlannerError(f"planner endpoint {url} answered with non-JSON text: {resp.text[:200]!r}") from None

    def complete(self, prompts: list[str], k: int, temperature: float, top_p: float,
                 max_new_tokens: int | None = None) -> list[list[str]]:
        """``k`` completions per prompt from the endpoint.

        A server that caps ``n`` is asked again for the rest (at most ``k`` requests); if it still
        returns fewer, its texts are repeated to make ``k``. No texts at all is a ``PlannerError``.
        """
        out = []
        for prompt in prompts:
            texts: list[str] = []
            # Some servers cap or ignore n: ask again for the rest (at most k requests).
            for _ in range(k):
                texts += self._request(prompt, k - len(texts), temperature, top_p, max_new_tokens)
                if len(texts) >= k:
                    break
            if not texts:
                raise PlannerError("the planner endpoint returned no choices")
            out.append((texts * k)[:k])
        return out

    def _request(self, prompt: str, n: int, temperature: float, top_p: float, max_new_tokens: int | None) -> list[str]:
        body = {"model": self.model, "n": n, "temperature": temperature, "top_p": top_p,
                "max_tokens": max_new_tokens or self.max_tokens}
        if self.stop:
            body["stop"] = self.stop
        if self.mode == "chat":
            system, user = split_prompt(prompt) if self.prompt_style == "full" else ("", prompt)
            body["messages"] = ([{"role": "system", "content": system}] if system else []) + [
                {"role": "user", "content": user}]
            data = self._post("chat/completions", body)
        else:
            body["prompt"] = prompt
            data = self._post("completions", body)
        try:
            choices = sorted(data["choices"], key=lambda c: c.get("index", 0))
            return [Completion((c["message"]["content"] if self.mode == "chat" else c["text"]) or "",
                               c.get("finish_reason") == "length") for c in choices]
        except (KeyError, TypeError, AttributeError) as e:
            raise PlannerError(f"malformed reply from the planner endpoint (missing {e}): {str(data)[:300]}") from None


def _has_record(path_or_id) -> bool:
    """True for a local folder whose transformers config.json holds an artifact record."""
    path = Path(path_or_id) / CONFIG_FILE
    try:
        return path.is_file() and TRANSFORMERS_KEY in json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
