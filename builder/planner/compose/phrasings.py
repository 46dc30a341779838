"""Training and held-out data for the composing parser: (tree, request, output kind) triples.

``generate(n, seed, split)`` draws request-like trees (``sample.TreeSampler``) and writes each as
English (``Phraser``): questions, imperatives, ticket-style requirements, terse keyword notes and
polite long sentences, with synonyms and occasional typos. Splits:

- ``train``: training templates and nouns; trees holding a held-out combination are dropped;
- ``template``: held-out templates (``Realiser`` modes), training trees;
- ``noun``: held-out open-vocabulary nouns;
- ``combo``: trees that hold one of ``sample.HELDOUT_COMBOS`` (never seen in training).

Out-of-scope and other-language sentences for abstention are in ``compose.scope``.
"""

from __future__ import annotations

from builder.core.seeding import numpy_rng
from builder.planner import tree as T
from builder.planner.compose.realise import ATTR_WORDS, CMP_NUM, CMP_SENT, Realiser
from builder.planner.compose.sample import HELDOUT_NOUNS, NOUNS, TRAIN_NOUNS, TreeSampler, combos
from builder.planner.tree import Tree

OUTPUT_OF = {T.SET: "boxes", T.NUM: "count", T.BOOL: "bool", T.TEXT: "text", T.CHOICE: "choice"}
SPLITS = ("train", "template", "noun", "combo")


class Phraser(Realiser):
    """Whole requests: a question or instruction for the tree's root, then a style."""

    def request(self, t: Tree, output: str) -> str:
        """A question or instruction for the root type of ``t``, in a random style (``output`` is unused)."""
        root = T.result_type(t)
        body = {T.SET: self.find, T.NUM: self.how_many, T.BOOL: self.ask, T.TEXT: self.what,
                T.CHOICE: self.which}[root](t)
        return self.style(body)

    # ---- sets ---------------------------------------------------------------------------------
    def find(self, t: Tree) -> str:
        """An instruction to locate a set; singular wording for ``extreme`` and ``nearest``."""
        one = t["op"] in ("extreme", "nearest")
        np_ = self.np(t, not one)
        if one:
            return self.pick((f"Find the {np_}.", f"Where is the {np_}?", f"Locate the {np_}.",
                              f"Box the {np_}.", f"Point out the {np_}.", f"Show me the {np_}.",
                              f"Highlight the {np_}.", f"Mark the {np_}.", f"find {np_}"))
        return self.pick((f"Find the {np_}.", f"Locate all {np_}.", f"Where are the {np_}?", f"Box every {self.np(t, False)}.",
                          f"Show me the {np_}.", f"Highlight the {np_}.", f"Draw a box around each of the {np_}.",
                          f"Mark all the {np_}.", f"Detect the {np_}.", f"find {np_}", f"Put boxes on the {np_}.",
                          f"Which objects are {self.pred(t)}? Box them."))

    # ---- numbers ------------------------------------------------------------------------------
    def how_many(self, t: Tree) -> str:
        """A question for a number: counts, totals and differences of counts get their own templates."""
        if t["op"] == "count":
            s = self.np(t["set"])
            return self.pick((f"How many {s} are there?", f"Count the {s}.", f"How many {s} are in the image?",
                              f"Number of {s}?", f"How many {s} do you see?", f"count {s}",
                              f"What is the number of {s}?", f"Tell me how many {s} there are.",
                              f"How many {s} can be seen?", f"Give me the count of {s}.",
                              f"Count all {s} in the picture.", f"{s}: how many?"))
        if t["op"] == "add" and all(a["op"] == "count" for a in t["args"]):
            s = self.join([self.np(a["set"]) for a in t["args"]], "and")
            return self.pick((f"How many {s} are there altogether?", f"How many {s} are there in total?",
                              f"Count the {s} together.", f"What is the total number of {s}?",
                              f"How many {s} combined?", f"Give me the combined count of {s}.",
                              f"Count {s} and add them up.", f"sum of {s}"))
        if t["op"] == "sub" and all(a["op"] == "count" for a in t["args"]):
            a, b = (self.np(x["set"]) for x in t["args"])
            return self.pick((f"How many more {a} than {b} are there?", f"By how many do the {a} outnumber the {b}?",
                              f"How many more {a} are there than {b}?",
                              f"What is the number of {a} minus the number of {b}?",
                              f"How many extra {a} are there compared to {b}?",
                              f"Subtract the number of {b} from the number of {a}."))
        phrase = self.num_phrase(t)
        return self.pick((f"What is {phrase}?", f"Compute {phrase}.", f"Give me {phrase}.", f"Report {phrase}."))

    # ---- truth values ---------------------------------------------------------------------------
    def statement(self, t: Tree) -> str:
        """A declarative clause ("there are more circles than stars")."""
        op = t["op"]
        if op == "exists":
            return self.pick(("there is ", "there exists ", "the image has ", "there is ")) + \
                self.article(self.np(t["set"], False)) if self.coin(0.5) else \
                self.pick(("there are ", "there are some ", "the image contains ", "there are ")) + self.np(t["set"])
        if op == "compare":
            return self.compare_clause(t)
        if op == "every":
            return self.pick(("all the ", "all ", "every one of the ", "each of the ")) + \
                f"{self.np(t['set'])} are {self.pred(t['in'])}"
        if op == "same":
            return f"all the {self.np(t['set'])} have the same {self.pick(ATTR_WORDS[t['attr']])}"
        if op == "parity":
            return f"{self.num_phrase(t['num'])} is {t['parity']}"
        if op == "not":
            arg = t["arg"]
            if arg["op"] == "exists":
                return self.pick(("there are no ", "there is no ", "the image has no ", "there are no ")) + self.np(arg["set"])
            return self.pick(("it is not the case that ", "it is false that ", "it is not true that ",
                              "it isn't so that ")) + self.statement(arg)
        word = "and" if op == "all_of" else "or"
        return self.join([self.statement(a) for a in t["args"]], word)

    def article(self, phrase: str) -> str:
        """``phrase`` with "a" or "an" in front, chosen by its first letter."""
        return ("an " if phrase[0] in "aeiou" else "a ") + phrase

    def compare_clause(self, t: Tree) -> str:
        """A comparison as a clause ("there are more than three stars", "more circles than stars", ...)."""
        cmp, left, right = t["cmp"], t["left"], t["right"]
        if left["op"] == "count" and right["op"] == "number":
            return f"there are {self.pick(CMP_NUM[cmp])} {self.num_word(right['value'])} {self.np(left['set'])}"
        if left["op"] == "count" and right["op"] == "count" and cmp in (">", "<", "==") and self.coin(0.7):
            a, b = self.np(left["set"]), self.np(right["set"])
            return {">": f"there are more {a} than {b}", "<": f"there are fewer {a} than {b}",
                    "==": f"there are as many {a} as {b}"}[cmp]
        return f"{self.num_phrase(left)} is {self.pick(CMP_SENT[cmp])} {self.num_phrase(right)}"

    def ask(self, t: Tree) -> str:
        """A yes/no question for a truth value; falls back to wrapping ``statement``."""
        op = t["op"]
        if op == "exists" and self.coin(0.7):
            s = t["set"]
            return self.pick((f"Is there {self.article(self.np(s, False))}?", f"Are there any {self.np(s)}?",
                              f"Does the image contain any {self.np(s)}?", f"Can you see {self.article(self.np(s, False))}?",
                              f"Do any {self.np(s)} appear?", f"Is {self.article(self.np(s, False))} present?",
                              f"any {self.np(s)}?", f"Check whether there is {self.article(self.np(s, False))}."))
        if op == "not" and t["arg"]["op"] == "exists" and self.coin(0.7):
            s = t["arg"]["set"]
            return self.pick((f"Are there no {self.np(s)}?", f"Is there no {self.np(s, False)}?",
                              f"Is the image free of {self.np(s)}?", f"Does the picture lack {self.np(s)}?",
                              f"Are {self.np(s)} absent?", f"Confirm that no {self.np(s)} are present.",
                              f"Check that there are no {self.np(s)}.", f"Is it true that no {self.np(s)} appear?"))
        if op == "compare" and t["left"]["op"] == "count" and t["right"]["op"] == "number" and self.coin(0.6):
            n, s = self.num_word(t["right"]["value"]), self.np(t["left"]["set"])
            c = self.pick(CMP_NUM[t["cmp"]])
            return self.pick((f"Are there {c} {n} {s}?", f"Does the image contain {c} {n} {s}?",
                              f"Do we have {c} {n} {s}?", f"Check if there are {c} {n} {s}."))
        if op == "every" and self.coin(0.6):
            return self.pick((f"Are all the {self.np(t['set'])} {self.pred(t['in'])}?",
                              f"Is every {self.np(t['set'], False)} {self.pred(t['in'], False)}?",
                              f"Are all {self.np(t['set'])} {self.pred(t['in'])}?",
                              f"Is each {self.np(t['set'], False)} {self.pred(t['in'], False)}?"))
        if op == "same" and self.coin(0.6):
            a = self.pick(ATTR_WORDS[t["attr"]])
            return self.pick((f"Do all the {self.np(t['set'])} have the same {a}?",
                              f"Are all the {self.np(t['set'])} the same {a}?",
                              f"Do the {self.np(t['set'])} share one {a}?",
                              f"Is the {a} of all {self.np(t['set'])} identical?"))
        if op == "parity" and t["num"]["op"] == "count" and self.coin(0.6):
            s = self.np(t["num"]["set"])
            return self.pick((f"Is the number of {s} {t['parity']}?", f"Is there an {t['parity']} number of {s}?",
                              f"Is the count of {s} {t['parity']}?", f"Are the {s} {t['parity']} in number?"))
        st = self.statement(t)
        return self.pick((f"Is it true that {st}?", f"Check whether {st}.", f"Tell me if {st}.", f"Verify that {st}.",
                          f"Confirm whether {st}.", f"Does it hold that {st}?", f"I want to know if {st}.",
                          f"Yes or no: {st}?"))

    # ---- text and choices -----------------------------------------------------------------------
    def what(self, t: Tree) -> str:
        """A question for the text read from a set, or for an attribute, with its options when given."""
        s = self.np(t["set"], False)
        if t["op"] == "read":
            return self.pick((f"What does the {s} say?", f"What is written on the {s}?", f"Read the text on the {s}.",
                              f"What's the label on the {s}?", f"What word is on the {s}?",
                              f"Tell me the text printed on the {s}.", f"Read the {s}.", f"OCR the {s}."))
        a = self.pick(ATTR_WORDS[t["attr"]])
        opts = t.get("options")
        if opts:
            o = self.join([self.article(w) if t["attr"] == "shape" else w for w in opts], "or")
            return self.pick((f"Is the {s} {o}?", f"Which {a} is the {s}: {o}?", f"Is the {s} {o}? Answer with one.",
                              f"The {s}, is it {o}?", f"Tell me whether the {s} is {o}."))
        return self.pick((f"What {a} is the {s}?", f"What is the {a} of the {s}?", f"Which {a} does the {s} have?",
                          f"Name the {a} of the {s}.", f"Tell me the {a} of the {s}.", f"{a} of the {s}?",
                          f"What's the {s}'s {a}?", f"Report the {a} of the {s}.", f"Identify the {s}'s {a}."))

    def which(self, t: Tree) -> str:
        """A question picking an image (by a count, number or condition) or the best caption."""
        op = t["op"]
        if op == "best_caption":
            return self.pick(("Which caption describes the image best?", "Pick the caption that fits the picture.",
                              "Choose the best description of this image.", "Which of these captions matches?",
                              "Select the sentence that describes the photo."))
        if op == "first_image":
            st = self.statement(t["cond"])
            return self.pick((f"Which image shows that {st}?", f"Pick the picture where {st}.",
                              f"In which photo is it true that {st}?", f"Find the image in which {st}.",
                              f"Choose the image where {st}."))
        most = op == "argmax_image"
        num = t["num"]
        if num["op"] == "count" and self.coin(0.7):
            s = self.np(num["set"])
            w = self.pick(("most", "most", "largest number of", "greatest number of") if most else
                          ("fewest", "least", "smallest number of", "lowest number of"))
            return self.pick((f"Which image has the {w} {s}?", f"Pick the photo with the {w} {s}.",
                              f"In which picture are there the {w} {s}?", f"Choose the image showing the {w} {s}."))
        w = self.pick(("largest", "highest", "greatest", "biggest") if most else ("smallest", "lowest", "least",
                                                                                  "minimal"))
        return self.pick((f"Which image has the {w} {self.num_phrase(num)}?",
                          f"Pick the photo where {self.num_phrase(num)} is {w}."))

    # ---- styles -----------------------------------------------------------------------------------
    def style(self, body: str) -> str:
        """``body`` sometimes given a polite or ticket lead, lower-cased, a scene tail, or a typo."""
        r = self.rng.random()
        if r < 0.12:
            lead = self.pick(("Could you please tell me: ", "Hi! I'd like to know the following. ",
                              "Hello team, quick request: ", "Please help: ", "We need your help with this. ",
                              "Dear support, ", "I have a question about our images. "))
            tail = self.pick(("", " Thanks!", " Thank you very much.", " Many thanks in advance.", " Cheers."))
            body = lead + body + tail
        elif r < 0.2:
            lead = self.pick(("TICKET-{n}: ", "Requirement: ", "[QA] ", "Task {n} - ", "Feature request: ",
                              "Spec: ", "JIRA-{n}: "))
            body = lead.format(n=int(self.rng.integers(10, 9999))) + body
        elif r < 0.27:
            body = body.lower().rstrip(".?!")
        elif r < 0.32:
            tail = self.pick((" in the image", " in this photo", " in the picture", " on the conveyor",
                              " in each frame"))
            body = body.rstrip(".?!") + tail + body[-1] if body[-1] in ".?!" else body + tail
        if self.coin(0.08):
            body = self.typo(body)
        return body

    def typo(self, text: str) -> str:
        """``text`` with two adjacent letters swapped in one random word of five or more letters."""
        words = text.split(" ")
        long = [i for i, w in enumerate(words) if len(w) >= 5 and w.isalpha()]
        if not long:
            return text
        i = long[int(self.rng.integers(len(long)))]
        w = words[i]
        j = int(self.rng.integers(1, len(w) - 2))
        words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2:]
        return " ".join(words)


def _accept(tree: Tree, split: str) -> bool:
    held = combos(tree)
    return bool(held) if split == "combo" else not held


def generate(n: int, seed: int = 0, split: str = "train") -> list[dict]:
    """``n`` examples {"tree", "request", "output", "split"} of ``split`` (see the module doc)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    rng = numpy_rng(seed, "compose", split)
    nouns = HELDOUT_NOUNS if split == "noun" else TRAIN_NOUNS
    sampler = TreeSampler(rng, nouns, p_noun=1.0 if split == "noun" else 0.12)
    phraser = Phraser(rng, "heldout" if split == "template" else "train", dict(NOUNS))
    out: list[dict] = []
    while len(out) < n:
        tree = sampler.tree()
        if not _accept(tree, split) or (split == "noun" and '"noun": "' not in _json(tree)):
            continue
        root = T.result_type(tree)
        output = OUTPUT_OF[root] if rng.random() < 0.85 or root not in (T.NUM, T.BOOL) else "text"
        out.append({"tree": tree, "request": phraser.request(tree, output), "output": output, "split": split})
    return out


def _json(tree: Tree) -> str:
    import json

    return json.dumps(tree)
