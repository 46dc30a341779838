"""One shapes vocabulary: every object phrase built from it reads the same to every reader.

The readers are the planner (its per-word lexicon look-up, ``builder.planner.semantic``), the
detector engine (``ShapesDetector.detect``'s phrase parser) and the search matcher
(``parse_caption``, which hybrid search re-ranks with). Phrases are built from the vocabulary's
own tables, synonyms and inflections included, so a word added to one reader only fails here.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from builder.core.errors import UserError
from builder.domains import vocabulary
from builder.domains.shapes import vocab
from builder.domains.shapes.world.scene import render_array, sample_scene
from builder.planner import semantic
from builder.tools.backends import shapes as backend

# Every surface form of every value, with the value it names (None: the slot is left out).
SIZE_FORMS = [(None, None)] + [(w, s) for s, forms in vocab.SIZE_FORMS.items() for w in forms]
COLOR_FORMS = [(None, None)] + [(w, c) for w, (f, c) in vocab.LEXICON.items() if f == "color"]
NOUN_FORMS = [(w, s) for s, forms in vocab.SHAPE_FORMS.items() for w in forms] + [(w, None) for w in vocab.ANY_NOUNS]
NUMBER_FORMS = [(None, None)] + [(w, n) for w, (f, n) in vocab.LEXICON.items() if f == "number"]
DETERMINERS = ("", "the ", "all ")


def phrases():
    """(phrase, (size, colour, shape, count)) for every size x colour x noun form, and every number
    form with a few of them (the full product with numbers would be ~600k phrases)."""
    for (sw, s), (cw, c), (nw, n) in itertools.product(SIZE_FORMS, COLOR_FORMS, NOUN_FORMS):
        words = [w for w in (sw, cw, nw) if w]
        yield " ".join(words), (s, c, n, None)
    for (kw, k), (sw, s), (nw, n) in itertools.product(NUMBER_FORMS, SIZE_FORMS, NOUN_FORMS[::3]):
        words = [w for w in (kw, sw, "red", nw) if w]
        yield " ".join(words), (s, "red", n, k)


def planner_reading(phrase: str) -> tuple:
    """What the planner reads: each word's (field, value) from its lexicon look-up."""
    fields: dict = {}
    for word in semantic.split_words(phrase):
        value = semantic.lookup(word)
        if value is not None:
            fields[value[0]] = value[1]
    return fields.get("size"), fields.get("color"), fields.get("shape"), fields.get("number")


def spec_reading(spec) -> tuple:
    assert spec.known and not spec.unknown, spec
    return spec.size, spec.color, spec.shape, spec.count


def search_reading(phrase: str) -> tuple:
    """What the matcher (hybrid search) reads: the caption's one object constraint (a clause that
    names no attribute, such as "objects", constrains nothing)."""
    constraints = backend.parse_caption(phrase)
    if not constraints:
        return None, None, None, None
    assert len(constraints) == 1 and constraints[0][0] in ("exists", "count"), (phrase, constraints)
    return spec_reading(constraints[0][1])


def test_the_vocabulary_lists_the_synonyms_the_issue_names():
    v = vocabulary("shapes")
    for word, size in (("big", "large"), ("giant", "large"), ("huge", "large"), ("large", "large"),
                       ("tiny", "small"), ("small", "small"), ("little", "small")):
        assert v.lookup(word) == ("size", size)
    assert v.values["size"] == vocab.SIZES and v.parse is vocab.parse_phrase
    with pytest.raises(UserError, match="unknown domain 'cars'"):
        vocabulary("cars")


def test_every_phrase_reads_the_same_to_planner_detector_and_search():
    n, disagreements = 0, []
    for base, expected in phrases():
        for det in DETERMINERS:
            phrase = det + base
            readings = {"built": expected, "planner": planner_reading(phrase),
                        "detector": spec_reading(backend.parse_phrase(phrase)),
                        "strict": spec_reading(vocab.parse_phrase(phrase, strict=True)),
                        "search": search_reading(phrase)}
            if len(set(readings.values())) != 1:
                disagreements.append((phrase, readings))
            n += 1
    assert n > 50_000
    assert not disagreements, disagreements[:5]


def test_unknown_word_is_refused_by_strict_mode_and_reported_by_lenient_mode():
    for phrase, word in (("red banana", "banana"), ("shiny red circle", "shiny"), ("giant red zorgle", "zorgle"),
                         ("find the red circle", "find")):
        with pytest.raises(UserError, match=repr(word)):
            vocab.parse_phrase(phrase, strict=True)
    lenient = vocab.parse_phrase("shiny giant red circle")
    assert (lenient.size, lenient.color, lenient.shape, lenient.unknown) == ("large", "red", "circle", ("shiny",))
    assert not vocab.parse_phrase("red banana").known  # an unknown noun matches nothing
    assert vocab.parse_phrase("no red circles").count == 0


def test_the_detector_honours_size_synonyms():
    """ "giant red circle" finds what "large red circle" finds (the detector used to drop "giant")."""
    det = backend.ShapesDetector()
    for seed in range(200):  # a scene where the detector sees one kind of object in both sizes
        img = render_array(sample_scene(np.random.default_rng([seed, 5]), "clean"))
        objs = det.objects(img)
        kinds = {(o.color, o.shape) for o in objs if o.size == "large"} & {(o.color, o.shape) for o in objs
                                                                            if o.size == "small"}
        if kinds:
            break
    else:
        pytest.skip("no scene with one kind of object in both sizes")
    color, shape = sorted(kinds)[0]
    boxes = {size: sorted(o.box for o in objs if (o.color, o.shape, o.size) == (color, shape, size))
             for size in vocab.SIZES}
    for word, size in (("giant", "large"), ("big", "large"), ("huge", "large"), ("tiny", "small"), ("little", "small")):
        assert sorted(d.box for d in det.detect(img, f"{word} {color} {shape}")) == boxes[size], word
    assert len(det.detect(img, f"{color} {shape}s")) == len(boxes["large"]) + len(boxes["small"])
