"""Render a meaning tree as plain English (a canonical paraphrase).

Used where a tree must be read by people (the planner's notes, evaluation reports) or by a
sentence encoder (ranking candidate trees by their similarity to the request), and as the
caption a program falls back to when no image meets a condition.
"""

from __future__ import annotations

from builder.planner.tree import Tree

_CMP = {">": "more than", ">=": "at least", "<": "fewer than", "<=": "at most", "==": "exactly",
        "!=": "not exactly"}


def render(tree: Tree) -> str:
    """The tree as an English phrase or question-like statement."""
    return _RENDER[tree["op"]](tree)


def _noun_phrase(t: Tree) -> str:
    if t["op"] == "objects":
        return "objects"
    if t["op"] != "select":
        return render(t)
    noun = t.get("noun") or t.get("shape") or "object"
    noun = noun if noun.endswith("s") and t.get("noun") else noun + "s"
    return " ".join([w for w in (t.get("size"), t.get("color")) if w] + [noun])


def _join(parts: list[str], word: str) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + f" {word} " + parts[-1]


_RENDER = {
    "objects": lambda t: "objects",
    "select": _noun_phrase,
    "complement": lambda t: f"objects that are not {_noun_phrase(t['set'])}",
    "intersect": lambda t: " that are also ".join(_noun_phrase(s) for s in t["sets"]),
    "union": lambda t: _join([_noun_phrase(s) for s in t["sets"]], "or"),
    "related": lambda t: f"{_noun_phrase(t['set'])} {t['rel']} the {_noun_phrase(t['anchor'])}",
    "nearest": lambda t: f"the one of the {_noun_phrase(t['set'])} nearest to the {_noun_phrase(t['anchor'])}",
    "extreme": lambda t: f"the {t['by']} of the {_noun_phrase(t['set'])}",
    "sharing": lambda t: f"{_noun_phrase(t['set'])} with the same {t['attr']} as the {_noun_phrase(t['anchor'])}",
    "count": lambda t: f"the number of {_noun_phrase(t['set'])}",
    "number": lambda t: str(t["value"]),
    "add": lambda t: _join([render(a) for a in t["args"]], "plus"),
    "sub": lambda t: f"{render(t['args'][0])} minus {render(t['args'][1])}",
    "exists": lambda t: f"there are {_noun_phrase(t['set'])}",
    "compare": lambda t: f"{render(t['left'])} is {_CMP[t['cmp']]} {render(t['right'])}",
    "every": lambda t: f"all {_noun_phrase(t['set'])} are {_noun_phrase(t['in'])}",
    "same": lambda t: f"all {_noun_phrase(t['set'])} have the same {t['attr']}",
    "parity": lambda t: f"{render(t['num'])} is {t['parity']}",
    "not": lambda t: f"it is not true that {render(t['arg'])}",
    "all_of": lambda t: _join([render(a) for a in t["args"]], "and"),
    "any_of": lambda t: _join([render(a) for a in t["args"]], "or"),
    "attribute": lambda t: (f"the {t['attr']} of the {_noun_phrase(t['set'])}"
                            + (f", {_join(t['options'], 'or')}" if t.get("options") else "")),
    "read": lambda t: f"the text on the {_noun_phrase(t['set'])}",
    "argmax_image": lambda t: f"the image with the largest {render(t['num'])}",
    "argmin_image": lambda t: f"the image with the smallest {render(t['num'])}",
    "first_image": lambda t: f"the image where {render(t['cond'])}",
    "best_caption": lambda t: "the caption that describes the image",
}
