"""The planner that composes: meaning trees for what it can express, a reason for what it cannot.

A request is read by the composing parser (``parse.TreeParser``). If it refuses, the planner
proposes nothing and passes the reason on. Otherwise the parser's trees are compiled into programs
(``tree_compile``); when its best tree is one of the 20 question kinds the previous parser was
trained on (``tree_sample.is_question_kind``), that parser's candidates (``kinds``, e.g. the
workspace's adapted ``SemanticPlanner``) go first, because on those kinds it is the better reader;
for compositions the composed programs go first.
"""

from __future__ import annotations

from builder.planner.compose.model import OUTPUTS
from builder.planner.prompt import PlanRequest, Proposal, as_request
from builder.planner.tree import TreeError, nouns
from builder.planner.tree_compile import compile_tree
from builder.planner.tree_sample import is_question_kind


class ComposingPlanner:
    """Proposes programs from meaning trees, refusing what the engines cannot answer.

    ``closed_vocabulary``: the engine profile's detector sees only its own nouns (the shapes
    engines), so a request about any other noun is refused naming it; an open-vocabulary detector
    (OWLv2) gets ``find("truck")``.
    """

    prompt_style = "semantic"

    def __init__(self, kinds=None, parser=None, closed_vocabulary: bool = True, engines: str = "shapes"):
        self._kinds = kinds
        self._parser = parser
        self.closed_vocabulary = closed_vocabulary
        self.engines = engines  # the engine profile's name, for refusals

    @property
    def parser(self):
        """The composing parser (the committed one, loaded once per process, unless given)."""
        if self._parser is None:
            from builder.planner.compose.parse import TreeParser

            self._parser = TreeParser.load()
        return self._parser

    @property
    def kinds(self):
        """The 20-kind parser whose candidates lead for its own kinds (the default one unless given)."""
        if self._kinds is None:
            from builder.planner.semantic import load_semantic_planner

            self._kinds = load_semantic_planner()
        return self._kinds

    def prompt(self, request) -> str:
        """What the parsers read: the query alone (the request's shape restricts the readings)."""
        return as_request(request).query

    def plan(self, request: PlanRequest, k: int = 4, temperature: float = 1.0, top_p: float = 1.0) -> Proposal:
        """Up to ``k`` distinct programs for ``request``, best first, or a refusal with its reason.

        The programs are compiled to fit the request; ``plan_for_task`` checks them as it checks any
        planner's."""
        req = as_request(request)
        output = req.output if req.output in OUTPUTS else None
        parse = self.parser.parse(req.query, output=output, k=max(k, 8), closed_vocabulary=self.closed_vocabulary,
                                  engines=self.engines)
        if parse.refusal:
            return Proposal([], parse.refusal)
        trees = [tree for tree, _ in parse.candidates]
        composed = compile_candidates(req, trees)
        simple = self.kinds_lead(trees)
        known = self.kinds.propose([req], k=k, temperature=temperature, top_p=top_p)[0] if simple or not composed else []
        ordered = [*known, *composed] if simple else [*composed, *known]
        return Proposal(list(dict.fromkeys(ordered))[:k])

    @staticmethod
    def kinds_lead(trees: list[dict]) -> bool:
        """Whether the 20-kind parser's programs go first: the best tree is one of its kinds and names no
        open-vocabulary noun (which that parser cannot read)."""
        return bool(trees) and is_question_kind(trees[0]) and not nouns(trees[0])

    def propose(self, requests, k: int = 1, temperature: float = 1.0, top_p: float = 1.0) -> list[list[str]]:
        """The planner interface (``builder.planner.backends``): programs per request, refusals as []."""
        return [self.plan(r, k, temperature, top_p).programs for r in requests]


def compile_candidates(req: PlanRequest, trees: list[dict]) -> list[str]:
    """The programs of ``trees`` for the request's output and inputs, in order; a tree that cannot
    answer them (a count tree for a boxes request, a caption choice without captions) is skipped."""
    out = []
    for tree in trees:
        try:
            out.append(compile_tree(tree, req.output or "text", choices=req.choices is not None))
        except TreeError:
            continue
    return out

