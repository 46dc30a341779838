"""Compile a meaning tree (``builder.planner.tree``) into a readable program over the tool API.

Every set becomes a named list of patches, one line per operator, so the trace reads like the
tree. Programs stay correct when a set is empty (no ``[0]`` on an empty list) and never treat an
object as related to itself. The same tree therefore gives the same program every time, and the
program's answer on a scene agrees with ``tree_truth`` wherever the engines see correctly.
"""

from __future__ import annotations

import json

from builder.planner import tree as T
from builder.planner.meaning import ATTRIBUTE_QUESTION, RELATION_METHOD
from builder.planner.tree import BOOL, CHOICE, NUM, Tree, TreeError
from builder.planner.tree_text import render
from builder.tools.api import PROGRAM_API

SAME = "p.iou(q) > 0.5"  # two detections of one object (sets are compared by box overlap)


def signature(root_type: str, choices: bool = False) -> str:
    """The entry function for a request: several images for an image choice, choices for captions."""
    if root_type == CHOICE and not choices:
        return "def execute(images):"
    return "def execute(image, choices):" if choices else "def execute(image):"


def compile_tree(tree: Tree, output: str, choices: bool = False) -> str:
    """The program answering ``tree`` as ``output`` (count, bool, text, boxes or choice).

    Raises ``TreeError`` when the tree is malformed or cannot produce ``output``.
    """
    root = T.check(tree)
    if output not in T.OUTPUTS_OF[root]:
        raise TreeError(f"a {root} meaning cannot answer a {output} request")
    if (tree["op"] == "best_caption") != choices:
        raise TreeError("caption choice needs the request's captions" if not choices
                        else "only a caption choice takes captions")
    body = _Body()
    if root == CHOICE:
        _choice(body, tree)
    else:
        value = body.emit(tree)
        body.line(f"return {_as_output(value, root, output)}")
    return signature(root, choices) + "\n" + "".join(f"    {line}\n" for line in body.lines)


def _as_output(value: str, root: str, output: str) -> str:
    if root == BOOL and output == "text":
        return f'"yes" if {value} else "no"'
    if root == NUM and output == "text":
        return f"str({value})"
    return value


class _Body:
    """Lines of a function body; ``emit`` returns an expression (or variable) for a sub-tree."""

    def __init__(self, indent: str = ""):
        self.lines: list[str] = []
        self.indent = indent
        self.names: dict[str, int] = {}
        self.memo: dict[str, str] = {}

    def line(self, text: str) -> None:
        self.lines.append(self.indent + text)

    def var(self, stem: str, expr: str) -> str:
        """Assign ``expr`` to a fresh variable named after ``stem`` and return the name."""
        if stem in PROGRAM_API or stem in ("image", "images", "choices", "score", "scores", "p", "q"):
            stem += "_set"  # never shadow a tool function or a parameter
        n = self.names.get(stem, 0) + 1
        self.names[stem] = n
        name = stem if n == 1 else f"{stem}{n}"
        self.line(f"{name} = {expr}")
        return name

    def emit(self, tree: Tree) -> str:
        k = T.key(tree)
        if k not in self.memo:  # a sub-tree used twice is computed once
            self.memo[k] = _EMIT[tree["op"]](self, tree)
        return self.memo[k]


def _find_name(tree: Tree) -> str:
    noun = tree.get("noun") or tree.get("shape") or "object"
    return " ".join([w for w in (tree.get("size"), tree.get("color")) if w] + [noun])


def _stem(tree: Tree) -> str:
    words = [w for w in (tree.get("size"), tree.get("color"), tree.get("noun") or tree.get("shape")) if w]
    stem = "_".join(w.replace(" ", "_") for w in words) or "objects"
    return "".join(c for c in stem if c.isalnum() or c == "_").strip("_") or "objects"


def _objects(b: _Body, t: Tree) -> str:
    return b.emit(T.select())


def _select(b: _Body, t: Tree) -> str:
    return b.var(_stem(t), f"image.find({json.dumps(_find_name(t))})")


def _complement(b: _Body, t: Tree) -> str:
    inner = b.emit(t["set"])
    everything = b.emit(T.select())
    return b.var("others", f"[p for p in {everything} if not any({SAME} for q in {inner})]")


def _intersect(b: _Body, t: Tree) -> str:
    first, *rest = [b.emit(s) for s in t["sets"]]
    cond = " and ".join(f"any({SAME} for q in {r})" for r in rest)
    return b.var("both", f"[p for p in {first} if {cond}]")


def _union(b: _Body, t: Tree) -> str:
    names = [b.emit(s) for s in t["sets"]]
    out = b.var("either", f"list({names[0]})")
    for other in names[1:]:
        b.line(f"{out} += [p for p in {other} if not any({SAME} for q in {out})]")
    return out


def _related(b: _Body, t: Tree) -> str:
    objs, anchor = b.emit(t["set"]), b.emit(t["anchor"])
    method = RELATION_METHOD[t["rel"]]
    return b.var("related", f"[p for p in {objs} if any(q.iou(p) < 0.5 and p.{method}(q) for q in {anchor})]")


def _nearest(b: _Body, t: Tree) -> str:
    objs, anchor = b.emit(t["set"]), b.emit(t["anchor"])
    cands = b.var("candidates", f"[p for p in {objs} if {anchor} and p.iou({anchor}[0]) < 0.5]")
    dist = (f"lambda p: (p.center_x - {anchor}[0].center_x) ** 2 + (p.center_y - {anchor}[0].center_y) ** 2")
    return b.var("nearest", f"[min({cands}, key={dist})] if {cands} else []")


def _extreme(b: _Body, t: Tree) -> str:
    objs = b.emit(t["set"])
    return b.var(t["by"], f"[{t['by']}({objs})] if {objs} else []")


def _sharing(b: _Body, t: Tree) -> str:
    objs, anchor = b.emit(t["set"]), b.emit(t["anchor"])
    if t["attr"] == "size":
        large = b.emit(T.select(size="large"))
        value = f"any(q.iou({{0}}) > 0.5 for q in {large})"
    else:
        value = f"{{0}}.query({json.dumps(ATTRIBUTE_QUESTION[t['attr']])})"
    want = b.var("wanted", value.format(f"{anchor}[0]") + f" if {anchor} else None")
    return b.var("sharing", f"[p for p in {objs} if p.iou({anchor}[0]) < 0.5 and {value.format('p')} == {want}]"
                 f" if {anchor} else []")


def _count(b: _Body, t: Tree) -> str:
    inner = t["set"]
    if inner["op"] in ("select", "objects"):
        return f"image.count({json.dumps(_find_name(inner if inner['op'] == 'select' else T.select()))})"
    return f"len({b.emit(inner)})"


def _number(b: _Body, t: Tree) -> str:
    return str(t["value"])


def _add(b: _Body, t: Tree) -> str:
    return "(" + " + ".join(b.emit(a) for a in t["args"]) + ")"


def _sub(b: _Body, t: Tree) -> str:
    left, right = (b.emit(a) for a in t["args"])
    return f"max({left} - {right}, 0)"


def _exists(b: _Body, t: Tree) -> str:
    return f"len({b.emit(t['set'])}) > 0"


def _compare(b: _Body, t: Tree) -> str:
    return f"({b.emit(t['left'])} {t['cmp']} {b.emit(t['right'])})"


def _every(b: _Body, t: Tree) -> str:
    objs, within = b.emit(t["set"]), b.emit(t["in"])
    return f"all(any({SAME} for q in {within}) for p in {objs})"


def _same(b: _Body, t: Tree) -> str:
    objs = b.emit(t["set"])
    if t["attr"] == "size":
        large = b.emit(T.select(size="large"))
        return f"len(set(any({SAME} for q in {large}) for p in {objs})) <= 1"
    return f"len(set(p.query({json.dumps(ATTRIBUTE_QUESTION[t['attr']])}) for p in {objs})) <= 1"


def _parity(b: _Body, t: Tree) -> str:
    return f"({b.emit(t['num'])}) % 2 == {0 if t['parity'] == 'even' else 1}"


def _not(b: _Body, t: Tree) -> str:
    return f"not ({b.emit(t['arg'])})"


def _all_of(b: _Body, t: Tree) -> str:
    return "(" + " and ".join(f"({b.emit(a)})" for a in t["args"]) + ")"


def _any_of(b: _Body, t: Tree) -> str:
    return "(" + " or ".join(f"({b.emit(a)})" for a in t["args"]) + ")"


def _attribute(b: _Body, t: Tree) -> str:
    objs = b.emit(t["set"])
    if t["attr"] in ATTRIBUTE_QUESTION:
        value = f"{objs}[0].query({json.dumps(ATTRIBUTE_QUESTION[t['attr']])})"
    else:
        large = b.emit(T.select(size="large"))
        value = f'("large" if any(q.iou({objs}[0]) > 0.5 for q in {large}) else "small")'
    answer = b.var("answer", f'{value} if {objs} else "none"')
    if t.get("options"):
        mapping = T.option_map(t["attr"], t["options"])
        answer = b.var("answer", f"{json.dumps(mapping)}.get({answer}, {answer})")
    return answer


def _read(b: _Body, t: Tree) -> str:
    objs = b.emit(t["set"])
    return b.var("text", f'{objs}[0].read_text() if {objs} else "none"')


def _choice(b: _Body, t: Tree) -> None:
    op = t["op"]
    if op == "best_caption":
        b.line("return best_text_match(image, choices)")
        return
    inner = _Body(indent="    ")  # score(image): the same names, one image at a time
    b.line("def score(image):")
    value = inner.emit(t["num"] if op != "first_image" else t["cond"])
    b.lines.extend(inner.lines)
    b.line(f"    return {value}")
    b.line("scores = [score(img) for img in images]")
    if op == "first_image":
        b.line("if True in scores:")
        b.line("    return scores.index(True)")
        b.line(f"return best_image_match(images, {json.dumps(render(t['cond']))})")  # the condition as a caption
    else:
        b.line(f"return scores.index({'max' if op == 'argmax_image' else 'min'}(scores))")


_EMIT = {
    "objects": _objects, "select": _select, "complement": _complement, "intersect": _intersect,
    "union": _union, "related": _related, "nearest": _nearest, "extreme": _extreme, "sharing": _sharing, "count": _count,
    "number": _number, "add": _add, "sub": _sub, "exists": _exists, "compare": _compare, "every": _every,
    "same": _same, "parity": _parity, "not": _not, "all_of": _all_of, "any_of": _any_of,
    "attribute": _attribute, "read": _read,
}
assert set(_EMIT) | {"argmax_image", "argmin_image", "first_image", "best_caption"} == set(T.OPS)
