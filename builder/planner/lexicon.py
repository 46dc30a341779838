"""Words that name values of the shapes world, and the word splitter the parser uses.

The parser learns *which role* a value word plays (the object asked about, the reference
object, the property) from context; which *value* a word names is looked up here, so values are
copied from the query rather than memorised. Synonyms and inflections are listed by hand (the
world's vocabulary is closed); misspellings are matched to the nearest entry when the word is
not an ordinary English word (MiniLM's vocabulary decides that).
"""

from __future__ import annotations

import difflib
import re

from builder.planner.meaning import COLORS, SHAPES

NUMBERS = {"zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
           "nine": 9, "ten": 10}

# word -> (field, value)
LEXICON: dict[str, tuple[str, str | int]] = {}
for _c in COLORS:
    LEXICON[_c] = ("color", _c)
    LEXICON[_c + "s"] = ("color", _c)  # "how many reds?"
LEXICON.update({"violet": ("color", "purple"), "turquoise": ("color", "cyan"), "teal": ("color", "cyan"),
                "reddish": ("color", "red"), "bluish": ("color", "blue"), "greenish": ("color", "green")})
_SHAPE_FORMS = {
    "circle": ["circle", "circles", "circular", "disc", "discs", "disk", "disks", "round"],
    "square": ["square", "squares"],
    "triangle": ["triangle", "triangles", "triangular"],
    "star": ["star", "stars", "starshaped"],
    "hexagon": ["hexagon", "hexagons", "hexagonal", "hexes", "hex"],
}
for _s, _forms in _SHAPE_FORMS.items():
    for _f in _forms:
        LEXICON[_f] = ("shape", _s)
for _w in ("small", "smaller", "tiny", "little", "mini", "smallsized"):
    LEXICON[_w] = ("size", "small")
for _w in ("large", "larger", "big", "bigger", "huge", "giant", "largesized", "bigsized"):
    LEXICON[_w] = ("size", "large")
for _w, _n in NUMBERS.items():
    LEXICON[_w] = ("number", _n)
for _n in range(0, 21):
    LEXICON[str(_n)] = ("number", _n)
assert set(SHAPES) <= {v for f, v in LEXICON.values() if f == "shape"}

FIELDS = ("none", "color", "shape", "size", "number")
_WORD = re.compile(r"[A-Za-z]+(?:-[A-Za-z]+)*|\d+|[^\sA-Za-z\d]")


def split_words(text: str) -> list[str]:
    """Words, numbers and single punctuation marks ("red-coloured" stays one word)."""
    return _WORD.findall(text)


def lookup(word: str, known_words: frozenset[str] | set[str] = frozenset()) -> tuple[str, str | int] | None:
    """(field, value) for a value word, or None. ``known_words`` are ordinary words never treated as typos."""
    w = word.lower().replace("-", "")
    if w in LEXICON:
        return LEXICON[w]
    for suffix in ("coloured", "colored", "shaped", "sized"):  # "red-coloured", "star-shaped"
        if w.endswith(suffix) and w[: -len(suffix)] in LEXICON:
            return LEXICON[w[: -len(suffix)]]
    parts = [LEXICON[p] for p in word.lower().split("-") if p in LEXICON]
    if "-" in word and len(parts) == 1:  # "red-object", "light-blue"
        return parts[0]
    if len(w) < 4 or not w.isalpha() or w in known_words:
        return None
    close = difflib.get_close_matches(w, [k for k in LEXICON if k.isalpha() and len(k) >= 4], n=1, cutoff=0.8)
    return LEXICON[close[0]] if close else None
