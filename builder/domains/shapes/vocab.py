"""The shapes world's vocabulary and its one object-phrase parser.

Everything that reads shapes-world words reads them here: the world's generator and task cards,
the detector and the matcher (``builder.tools.backends.shapes``), the planner (through
``builder.domains.vocabulary``) and the methods. The vocabulary is closed: canonical values
(colours, shapes, sizes), their synonyms and inflections ("big", "giant" -> large; "discs" ->
circle; "teal" -> cyan), number words and relation words.

``parse_phrase`` reads an object phrase ("the two giant red circles", "objects", "a small star")
into one ``ObjectSpec``. Strict mode (names in task cards and programs) raises a ``UserError``
naming the first word it does not know; lenient mode (detector queries, captions) skips filler
words and reports the unknown ones in ``ObjectSpec.unknown``.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from functools import lru_cache

from builder.core.errors import UserError

# ---- canonical values ---------------------------------------------------------------------------
COLORS = ("red", "orange", "yellow", "green", "cyan", "blue", "purple")
SHAPES = ("circle", "square", "triangle", "star", "hexagon")
SIZES = ("small", "large")
RELATIONS = ("left of", "right of", "above", "below")
OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
# Other ways to say a relation (the matcher reads captions with them).
RELATION_SYNONYMS = {"on top of": "above", "under": "below", "beneath": "below"}
NUMBER_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
MAX_NUMBER = 20  # digits up to this are number words

# ---- synonyms and inflections -------------------------------------------------------------------
COLOR_SYNONYMS = {"violet": "purple", "turquoise": "cyan", "teal": "cyan", "reddish": "red", "bluish": "blue",
                  "greenish": "green", "scarlet": "red", "crimson": "red", "amber": "orange", "gold": "yellow",
                  "golden": "yellow", "lime": "green", "emerald": "green", "aqua": "cyan", "navy": "blue",
                  "azure": "blue", "magenta": "purple", "lilac": "purple", "lavender": "purple"}
SHAPE_FORMS = {
    "circle": ("circle", "circles", "circular", "disc", "discs", "disk", "disks", "round"),
    "square": ("square", "squares"),
    "triangle": ("triangle", "triangles", "triangular"),
    "star": ("star", "stars", "starshaped"),
    "hexagon": ("hexagon", "hexagons", "hexagonal", "hexes", "hex"),
}
SIZE_FORMS = {
    "small": ("small", "smaller", "tiny", "little", "mini", "smallsized"),
    "large": ("large", "larger", "big", "bigger", "huge", "giant", "largesized", "bigsized"),
}
# Nouns that name any object ("red objects", "the things").
ANY_NOUNS = ("object", "objects", "thing", "things", "shape", "shapes", "item", "items", "figure", "figures",
             "something", "anything")
# Words an object phrase may start with; "no" also makes the count zero ("no red circles").
DETERMINERS = ("the", "a", "an", "all", "any", "every", "each", "some", "no")
# Words lenient mode skips around a phrase ("find the red circles in the image").
FILLER = ("of", "find", "locate", "there", "is", "are", "in", "image", "picture", "please", "that", "which",
          "with", "and", "to")
SUFFIXES = ("coloured", "colored", "shaped", "sized")  # "red-coloured", "star-shaped"
FIELDS = ("none", "color", "shape", "size", "number")  # value-word fields (the planner's input feature)


def _build_lexicon() -> dict[str, tuple[str, str | int]]:
    lex: dict[str, tuple[str, str | int]] = {}
    for c in COLORS:
        lex[c] = lex[c + "s"] = ("color", c)  # "how many reds?"
    lex.update({w: ("color", c) for w, c in COLOR_SYNONYMS.items()})
    lex.update({w: ("shape", s) for s, forms in SHAPE_FORMS.items() for w in forms})
    lex.update({w: ("size", s) for s, forms in SIZE_FORMS.items() for w in forms})
    lex.update({w: ("number", n) for n, w in enumerate(NUMBER_NAMES)})
    lex.update({str(n): ("number", n) for n in range(MAX_NUMBER + 1)})
    return lex


# word -> (field, value): the one table every reader looks words up in.
LEXICON: dict[str, tuple[str, str | int]] = _build_lexicon()
_TYPO_CANDIDATES = [k for k in LEXICON if k.isalpha() and len(k) >= 4]
# The vocabulary's own words that are not values are never typos of values ("there" is not "three").
_NOT_TYPOS = frozenset(ANY_NOUNS + DETERMINERS + FILLER)
_WORD = re.compile(r"[A-Za-z]+(?:-[A-Za-z]+)*|\d+|[^\sA-Za-z\d]")


def split_words(text: str) -> list[str]:
    """Words, numbers and single punctuation marks ("red-coloured" stays one word)."""
    return _WORD.findall(text)


def lookup(word: str, known_words: frozenset[str] | set[str] = frozenset(),
           typos: bool = True) -> tuple[str, str | int] | None:
    """(field, value) of a value word ("giant" -> ("size", "large")), or None.

    Handles "red-coloured", "star-shaped" and "light-blue". With ``typos`` a misspelt word is
    matched to the nearest entry unless it is one of ``known_words`` (ordinary words).
    """
    w = word.lower().replace("-", "")
    if w in LEXICON:
        return LEXICON[w]
    for suffix in SUFFIXES:
        if w.endswith(suffix) and w[: -len(suffix)] in LEXICON:
            return LEXICON[w[: -len(suffix)]]
    parts = [LEXICON[p] for p in word.lower().split("-") if p in LEXICON]
    if "-" in word and len(parts) == 1:  # "red-object", "light-blue"
        return parts[0]
    if not typos or len(w) < 4 or not w.isalpha() or w in known_words or w in _NOT_TYPOS:
        return None
    close = difflib.get_close_matches(w, _TYPO_CANDIDATES, n=1, cutoff=0.8)
    return LEXICON[close[0]] if close else None


def with_article(phrase: str) -> str:
    """'a red circle' / 'an orange circle'."""
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


# ---- the object phrase ----------------------------------------------------------------------------
@dataclass(frozen=True)
class ObjectSpec:
    """What an object phrase names: attributes an object must have (None = any), a count when
    the phrase has a number, and the words lenient parsing did not know. ``known`` is False when
    the phrase's noun is unknown ("red banana"): such a phrase matches nothing."""

    size: str | None = None
    color: str | None = None
    shape: str | None = None
    count: int | None = None
    known: bool = True
    unknown: tuple[str, ...] = ()

    def matches(self, obj) -> bool:
        """True if ``obj`` (anything with ``size``, ``color``, ``shape``) has every attribute named here."""
        return self.known and all(v is None or getattr(obj, f) == v
                                  for f, v in (("size", self.size), ("color", self.color), ("shape", self.shape)))

    def partial(self, obj) -> float:
        """Fraction of the named attributes ``obj`` has (a tie-break for near misses)."""
        named = [(f, v) for f, v in (("size", self.size), ("color", self.color), ("shape", self.shape)) if v]
        if not self.known or not named:
            return 0.0
        return sum(getattr(obj, f) == v for f, v in named) / len(named)

    def name(self, plural: bool = False) -> str:
        """Canonical name, e.g. "large red circle" or "red objects"."""
        noun = self.shape or "object"
        words = [w for w in (self.size, self.color) if w] + [noun + ("s" if plural else "")]
        return " ".join(words)

    @property
    def attributes(self) -> dict[str, str]:
        """The named attributes, e.g. {"size": "large", "color": "red"}."""
        return {f: v for f, v in (("size", self.size), ("color", self.color), ("shape", self.shape)) if v}


def _short(text: str, limit: int = 60) -> str:
    """``text`` cut to ``limit`` characters (with an ellipsis) for an error message."""
    return text if len(text) <= limit else text[:limit - 1] + "…"


def parse_phrase(text: str, strict: bool = False) -> ObjectSpec:
    """Read an object phrase: ``[determiner] [number] [size] [colour] (shape | object)[s]``,
    with any synonym of a value ("two giant teal discs").

    ``strict``: every word must be a determiner, a value word or a generic noun; otherwise a
    ``UserError`` names the word. Lenient: filler words are skipped, other unknown words are
    listed in ``unknown``, and the last content word is the noun (an unknown noun gives
    ``known=False``; an unknown modifier such as "shiny" does not).
    """
    if not isinstance(text, str):
        raise TypeError(f"an object phrase must be a string, got {type(text).__name__}")
    spec, filler = _parse(text)
    if strict:
        refused = filler + spec.unknown
        if refused:
            # the user's words once, shortened: a pasted page must not fill the message twice
            word = _short(refused[0])
            where = "" if _short(text) == word else f" in object name {_short(text)!r}"
            raise UserError(f"unknown word {word!r}{where}; "
                            f"an object name is [size] [colour] shape, e.g. 'large red circle' "
                            f"(shapes: {', '.join(SHAPES)}; colours: {', '.join(COLORS)})")
        if not spec.known:
            raise UserError(f"empty object name {text!r}")
    return spec


@lru_cache(maxsize=8192)
def _parse(text: str) -> tuple[ObjectSpec, tuple[str, ...]]:
    """(the phrase's spec, the filler words it skipped)."""
    values: dict[str, str | int] = {}
    unknown: list[str] = []
    filler: list[str] = []
    noun_known, saw_content = True, False
    for raw in split_words(text.lower()):
        if not raw[0].isalnum():
            continue  # punctuation
        if raw in DETERMINERS:
            if raw == "no":
                values["number"] = 0
            continue
        if raw in FILLER:
            filler.append(raw)  # lenient mode skips filler; strict refuses it
            continue
        saw_content = True
        value = lookup(raw, typos=False)
        if value is not None:
            values[value[0]] = value[1]
        elif raw not in ANY_NOUNS:
            unknown.append(raw)
            noun_known = False  # unknown so far; a later known word makes it a modifier
            continue
        noun_known = True
    spec = ObjectSpec(values.get("size"), values.get("color"), values.get("shape"), values.get("number"),
                      noun_known and saw_content, tuple(unknown))
    return spec, tuple(filler)
