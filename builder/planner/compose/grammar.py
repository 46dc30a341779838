"""Trees as grammar-constrained action sequences over a request's words, and back.

A tree is written in prefix order: an operator, then its fields in ``OPS`` order. Closed fields
(relation, attribute, comparison, ...) are fixed actions; vocabulary values, numbers, nouns and
answer options are *copied*: the action points at a word of the request, whose value the lexicon
gives (``copy`` actions are ``len(FIXED) + word index``). ``allowed`` says, for a parser state,
which actions keep the tree well typed, so a decoder constrained by it only writes trees that pass
``tree.check``. A state is an immutable stack of pending needs, cheap to share between beams;
steps with a single allowed action are taken without asking the model (``forced``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from builder.domains import vocabulary
from builder.planner import tree as T
from builder.planner.compose.sample import NOUNS
from builder.planner.tree import Tree

lookup = vocabulary("shapes").lookup

ENUMS = {"rel": T._WORDS["rel"], "attr": T.ATTRS, "extreme": T.EXTREMES, "cmp": T.CMPS, "parity": T.PARITIES}
FIXED = list(T.OPS) + [f"{k}:{v}" for k, vs in ENUMS.items() for v in vs] + ["NULL", "MORE", "END"]
FIX = {a: i for i, a in enumerate(FIXED)}
NULL, MORE, END = FIX["NULL"], FIX["MORE"], FIX["END"]
OPS_OF_TYPE = {t: [FIX[op] for op, (r, _) in T.OPS.items() if r == t] for t in T.TYPES}
MAX_LIST, MAX_NOUN_WORDS, MAX_DEPTH = 4, 3, 7
# Decoder contexts: which field of which operator an action fills.
NOUN_WORDS = frozenset(w for pair in NOUNS for n in pair for w in n.split())
CONTEXTS = ["root"] + [f"{op}.{f}{s}" for op, (_, fs) in T.OPS.items() for f in fs for s in ("", ".more", ".end")]
CTX = {c: i for i, c in enumerate(CONTEXTS)}
_IRREGULAR = {"people": "person", "men": "man", "women": "woman", "children": "child", "mice": "mouse",
              "feet": "foot", "teeth": "tooth", "leaves": "leaf", "knives": "knife", "shelves": "shelf"}


def singular(phrase: str) -> str:
    """The noun phrase with its last word singular ("traffic cones" -> "traffic cone")."""
    *head, last = phrase.lower().split()
    if last in _IRREGULAR:
        last = _IRREGULAR[last]
    elif last.endswith("ies") and len(last) > 4:
        last = last[:-3] + "y"
    elif re.search(r"(ses|xes|zes|ches|shes|oes)$", last) and not last.endswith(("oses", "uses")):
        last = last[:-2]
    elif last.endswith("s") and not last.endswith(("ss", "us", "is")) and len(last) > 3:
        last = last[:-1]
    return " ".join([*head, last])


@dataclass(frozen=True)
class Word:
    """One word of a request: its text and lexicon reading (field, value) or None."""

    text: str
    field: str | None
    value: str | int | None
    nounable: bool = True  # may be part of an open-vocabulary noun


def read_words(words: list[str], known: frozenset[str] = frozenset(),
               structure: frozenset[str] = frozenset()) -> list[Word]:
    """Lexicon readings of the request's words (any whole number counts as a number).

    ``structure`` are the words the training phrasings use around objects ("closest", "items",
    "located"): they are never copied into a noun, so "the object closest to" is not a noun.
    """
    out = []
    for w in words:
        found = lookup(w, known)
        if found is None and w.isdigit() and int(w) <= T.MAX_NUMBER:
            found = ("number", int(w))
        if found and found[0] == "number" and int(found[1]) > T.MAX_NUMBER:
            found = None
        low = w.lower()
        nounable = w.isalpha() and not found and (low not in structure or low in NOUN_WORDS)
        out.append(Word(w, *(found or (None, None)), nounable))
    return out


# ---- the state machine -------------------------------------------------------------------------
# Needs: ("type", T, ctx) | ("enum", kind, ctx) | ("sel", stage, has_shape, has_any, ctx)
#        ("nend", start, ctx) | ("int", ctx) | ("opts", count, ctx) | ("list", T, count, exact, ctx)
Need = tuple
State = tuple  # (stack of needs, depth budget per need is not tracked: MAX_DEPTH limits types)


def start(root_types: tuple[str, ...]) -> State:
    """The state before the first action: a tree of one of ``root_types``."""
    return (("root", root_types, "root", 0),)


def allowed(state: State, words: list[Word]) -> tuple[list[int], list[int]]:
    """(fixed action ids, word positions to copy) allowed next; both empty when the tree is complete."""
    if not state:
        return [], []
    need = state[-1]
    kind = need[0]
    if kind in ("root", "type"):
        types = need[1] if kind == "root" else (need[1],)
        depth = need[3]
        ops = [a for t in types for a in OPS_OF_TYPE[t]]
        if kind == "type":
            ops = [a for a in ops if FIXED[a] != "best_caption"]
        if depth >= MAX_DEPTH:  # only leaves that end the recursion
            ops = [a for a in ops if FIXED[a] in ("objects", "select", "number", "best_caption")]
        if not any(w.field == "number" for w in words):  # a literal number is copied, so needs a number word
            ops = [a for a in ops if a != FIX["number"]]
        return ops, []
    if kind == "enum":
        return [FIX[f"{need[1]}:{v}"] for v in ENUMS[need[1]]], []
    if kind == "sel":
        stage, has_shape, has_any = need[1], need[2], need[3]
        if stage < 3:
            field = ("color", "shape", "size")[stage]
            return [NULL], [i for i, w in enumerate(words) if w.field == field]
        if has_shape:
            return [NULL], []
        nouns = [i for i, w in enumerate(words) if w.nounable]
        return ([NULL] if has_any else []), nouns
    if kind == "nend":
        s = need[1]
        return [], [j for j in range(s, min(len(words), s + MAX_NOUN_WORDS))
                    if all(w.nounable for w in words[s:j + 1])]
    if kind == "int":
        return [], [i for i, w in enumerate(words) if w.field == "number"]
    if kind == "opts":
        count = need[1]
        pos = [i for i, w in enumerate(words) if w.text.isalpha()]
        if count == 0:
            return [NULL], pos
        return ([END] if count >= 2 else []), (pos if count < MAX_LIST else [])
    count, exact = need[2], need[3]
    more = count < (2 if exact else MAX_LIST)
    return ([MORE] if more else []) + ([END] if count >= 2 else []), []


def context(state: State) -> int:
    """The decoder context id of the next action."""
    need = state[-1]
    ctx = {"root": 2, "type": 2, "list": 4}.get(need[0], -1)
    ctx = need[ctx]
    if need[0] == "sel":
        ctx = f"select.{('color', 'shape', 'size', 'noun')[need[1]]}"
    elif need[0] == "nend":
        ctx = "select.noun.end"
    elif need[0] == "list":
        ctx = ctx + ".more"
    elif need[0] == "opts" and need[1] > 0:
        ctx = ctx + ".more"
    return CTX[ctx]


def _field_needs(op: str, depth: int) -> list[Need]:
    needs = []
    for name, kind in T.OPS[op][1].items():
        ctx, base = f"{op}.{name}", kind.rstrip("?+2")
        if base in T.TYPES and kind[-1] in "+2":
            needs.append(("list", base, 0, kind.endswith("2"), ctx, depth))
        elif base in T.TYPES:
            needs.append(("type", base, ctx, depth + 1))
        elif base in ENUMS:
            needs.append(("enum", base, ctx))
        elif base == "int":
            needs.append(("int", ctx))
        elif base == "options":
            needs.append(("opts", 0, ctx))
    return needs


def advance(state: State, action: int) -> State:
    """The state after ``action`` (which must be allowed)."""
    rest, need = state[:-1], state[-1]
    kind = need[0]
    if kind in ("root", "type"):
        op = FIXED[action]
        if op == "select":
            return rest + (("sel", 0, False, False, "select"),)
        return rest + tuple(reversed(_field_needs(op, need[3])))
    if kind == "sel":
        stage, has_shape, has_any = need[1], need[2], need[3]
        if stage < 3:
            copied = action != NULL
            return rest + (("sel", stage + 1, has_shape or (copied and stage == 1), has_any or copied, "select"),)
        return rest if action == NULL else rest + (("nend", action - len(FIXED), "select"),)
    if kind == "opts":
        return rest if action in (NULL, END) else rest + (("opts", need[1] + 1, need[2]),)
    if kind == "list":
        if action == END:
            return rest
        _, base, count, exact, ctx, depth = need
        return rest + (("list", base, count + 1, exact, ctx, depth), ("type", base, ctx, depth + 1))
    return rest  # enum, int, nend: one action


# ---- trees to actions and back -----------------------------------------------------------------
class Unreadable(ValueError):
    """A tree value does not appear in the request, so no copy action can write it."""


def gold_actions(tree: Tree, words: list[Word]) -> list[tuple[int, list[int]]]:
    """(teacher action, every equally right action) per step, in ``advance`` order."""
    out: list[tuple[int, list[int]]] = []
    _emit(tree, words, out)
    return out


def _copy(positions: list[int]) -> tuple[int, list[int]]:
    if not positions:
        raise Unreadable("value not in the request")
    acts = [len(FIXED) + i for i in positions]
    return acts[0], acts


def _emit(t: Tree, words: list[Word], out: list) -> None:
    op = t["op"]
    out.append((FIX[op], [FIX[op]]))
    if op == "select":
        for field in ("color", "shape", "size"):
            v = t.get(field)
            out.append(_copy([i for i, w in enumerate(words) if w.field == field and w.value == v])
                       if v else (NULL, [NULL]))
        noun = t.get("noun")
        if not noun:
            out.append((NULL, [NULL]))
            return
        spans = [(i, j) for i in range(len(words)) for j in range(i, min(len(words), i + MAX_NOUN_WORDS))
                 if singular(" ".join(w.text for w in words[i:j + 1])) == noun.lower()]
        if not spans:
            raise Unreadable(f"noun {noun!r} not in the request")
        out.append(_copy([s for s, _ in spans]))
        out.append(_copy([e for s, e in spans if s == spans[0][0]]))
        return
    for name, kind in T.OPS[op][1].items():
        base, v = kind.rstrip("?+2"), t.get(name)
        if base in T.TYPES and kind[-1] in "+2":
            for item in v:
                out.append((MORE, [MORE]))
                _emit(item, words, out)
            out.append((END, [END]))
        elif base in T.TYPES:
            _emit(v, words, out)
        elif base in ENUMS:
            out.append((FIX[f"{base}:{v}"], [FIX[f"{base}:{v}"]]))
        elif base == "int":
            out.append(_copy([i for i, w in enumerate(words) if w.field == "number" and w.value == v]))
        elif base == "options":
            if not v:
                out.append((NULL, [NULL]))
                continue
            for o in v:
                out.append(_copy([i for i, w in enumerate(words) if w.text.lower() == o.lower()]))
            out.append((END, [END]))


def build(actions: list[int], words: list[Word]) -> Tree:
    """The tree written by a complete action sequence (inverse of ``gold_actions``)."""
    it = iter(actions)
    tree = _build(it, words)
    return tree


def _word(a: int, words: list[Word]) -> Word:
    return words[a - len(FIXED)]


def _build(it, words: list[Word]) -> Tree:
    op = FIXED[next(it)]
    t: Tree = {"op": op}
    if op == "select":
        for field in ("color", "shape", "size"):
            a = next(it)
            t[field] = None if a == NULL else _word(a, words).value
        a = next(it)
        if a == NULL:
            t["noun"] = None
        else:
            s, e = a - len(FIXED), next(it) - len(FIXED)
            t["noun"] = singular(" ".join(w.text for w in words[s:e + 1]))
        return t
    for name, kind in T.OPS[op][1].items():
        base = kind.rstrip("?+2")
        if base in T.TYPES and kind[-1] in "+2":
            items = []
            while next(it) == MORE:
                items.append(_build(it, words))
            t[name] = items
        elif base in T.TYPES:
            t[name] = _build(it, words)
        elif base in ENUMS:
            t[name] = FIXED[next(it)].split(":", 1)[1]
        elif base == "int":
            t[name] = int(_word(next(it), words).value)
        elif base == "options":
            opts, a = [], next(it)
            while a not in (NULL, END):
                opts.append(_word(a, words).text.lower())
                a = next(it)
            t[name] = opts or None
    return t
