"""Training phrasings for the default planner: many ways customers ask each kind of question.

``generate(n, seed)`` samples meanings and renders each with one of many patterns per question
kind (questions, imperatives, business requirements, terse notes), with synonyms for objects,
sizes, relations, attributes and superlatives, plurals, varied word and clause order, casing and
typos. Each example records which role every value word plays ("A" the object asked about, "B"
the reference object, "P" the property in "are all the circles red?", "O" none), which is what
the parser learns besides the question kind.

The shapes world's held-out phrasings (``builder.domains.shapes.world.tasks.TEMPLATES`` with split "heldout")
never appear: a sampled query that any held-out template could have produced is dropped.
"""

from __future__ import annotations

import re
from functools import cache

import numpy as np

from builder.planner.meaning import (
    ATTRS,
    COLORS,
    EXTREMES,
    OPS,
    RELATIONS,
    SHAPES,
    SIZES,
    VOCAB,
    Caption,
    Meaning,
    Ref,
)

lookup, split_words = VOCAB.lookup, VOCAB.split_words
GENERIC = ("object", "item", "shape", "thing", "figure")
SIZE_WORDS = {"small": ("small", "small", "small", "tiny", "little"), "large": ("large", "large", "large", "big", "huge")}
REL_WORDS = {
    "left of": ("left of", "to the left of", "to the left of", "on the left of", "on the left side of",
                "further left than", "more to the left than"),
    "right of": ("right of", "to the right of", "to the right of", "on the right of", "on the right side of",
                 "further right than", "more to the right than"),
    "above": ("above", "above", "over", "on top of", "higher than", "higher up than", "further up than"),
    "below": ("below", "below", "under", "underneath", "beneath", "lower than", "further down than"),
}
ATTR_WORDS = {"color": ("color", "colour", "color", "colour", "hue"), "shape": ("shape", "shape", "form"),
              "size": ("size",)}
EXT_PRE = {"leftmost": ("leftmost", "left-most", "leftmost", "far-left"),
           "rightmost": ("rightmost", "right-most", "rightmost", "far-right"),
           "topmost": ("topmost", "top-most", "uppermost", "highest"),
           "bottommost": ("bottommost", "bottom-most", "lowest", "lowermost"),
           "largest": ("largest", "biggest"), "smallest": ("smallest", "tiniest")}
EXT_POST = {"leftmost": ("furthest to the left", "on the far left", "closest to the left edge", "farthest left"),
            "rightmost": ("furthest to the right", "on the far right", "closest to the right edge", "farthest right"),
            "topmost": ("nearest the top", "highest up", "at the very top", "closest to the top edge"),
            "bottommost": ("nearest the bottom", "furthest down", "at the very bottom", "closest to the bottom edge"),
            "largest": ("with the largest area", "that is biggest"),
            "smallest": ("with the smallest area", "that is smallest")}
NUMBER_WORDS = VOCAB.number_names

# Patterns per kind. Placeholders: {A} {As} {aA} (singular / plural / with article) for ref a,
# the same for {B}, {REL}, {ATTR}, {EXT} (the whole "leftmost circle" phrase), {P} (predicate of
# all_are), {CAP} (a caption phrase), {T}/{Ts} (ref a or a generic noun).
PATTERNS: dict[str, tuple[str, ...]] = {
    "count": (
        "How many {As} are there?", "How many {As} are in the image?", "How many {As} does the picture contain?",
        "How many {As} are visible?", "How many {As} do you see?", "Count the {As}.", "Count all {As}.",
        "Count how many {As} there are.", "Number of {As}?", "What's the number of {As} in the image?",
        "Give me the count of {As}.", "Report the number of {As}.", "The system must report how many {As} appear in each image.",
        "We need a count of {As} per photo.", "Tally the {As}.", "{As}: how many?", "How many {As}?",
        "Total number of {As} in the picture", "Return the {A} count.", "Please count every {A} in the image.",
        "count {As}", "how many {As} r there", "Determine how many {As} are present.", "Find out how many {As} there are.",
        "Our QA station needs to know how many {As} are on each image.", "How many {As} appear in the photo?",
        "Count the number of {As}.", "How many {As} can be seen in this image?", "Output the number of {As}.",
        "I want to know the number of {As}.", "Provide a count of the {As}.", "Quantity of {As}?",
        "How many {As} exist in the scene?", "What is the total count of {As}?", "In the image, how many {As} are there?",
        "The customer wants the {A} count for every image.", "How many {As} are shown?",
    ),
    "exists": (
        "Is there {aA}?", "Are there any {As}?", "Is there {aA} in the image?", "Is there at least one {A}?",
        "Does the picture have {aA}?", "Does the image show any {As}?", "Do you see {aA}?", "Are any {As} present?",
        "Is {aA} present?", "Is {aA} visible?", "Check whether there is {aA}.", "Check if any {As} appear.",
        "Detect whether the image has {aA}.", "We need to know if {aA} is in the photo.", "Any {As}?",
        "Is at least one {A} shown?", "Does {aA} appear anywhere?", "Are {As} present in the scene?",
        "Verify that the image includes {aA}.", "Does this photo include any {As}?", "Is there any {A} at all?",
        "Report whether {aA} exists.", "Does the image contain any {As}?", "Flag whether the picture has {aA}.",
        "Is {aA} in the picture?", "Does the scene include {aA}?", "Are there {As} in this image?",
        "Tell me whether there's {aA}.", "Can {aA} be found in the image?", "The inspection must detect if {aA} is present.",
        "Is there {aA} somewhere?", "Has the image got {aA}?", "presence of {aA}?", "Do any {As} appear?",
    ),
    "absent": (
        "Are there no {As}?", "Is there no {A}?", "Is it true that there are no {As}?", "Confirm that no {As} are present.",
        "Check that the image has no {As}.", "Verify there isn't {aA}.", "Is the image free of {As}?",
        "Does the picture lack {As}?", "Are {As} absent?", "Is {aA} missing from the image?",
        "Make sure there are no {As}.", "Is it the case that the image contains no {As}?", "Are there zero {As}?",
        "The image must not contain {As}: does it pass?", "Is there not a single {A}?", "Does the image have no {As} at all?",
        "Is the scene without any {As}?", "Confirm the absence of {As}.", "Verify that no {A} appears.",
        "Are {As} missing?", "Is the picture devoid of {As}?", "Ensure the image contains no {As}.",
        "Check there are no {As} in the photo.", "Is there a complete absence of {As}?", "Are no {As} visible?",
        "Report whether the image has no {As}.", "Is {aA} absent from the picture?", "No {As} allowed: is the image clean?",
    ),
    "attribute": (
        "What {ATTR} is the {A}?", "What is the {ATTR} of the {A}?", "Which {ATTR} is the {A}?",
        "What {ATTR} does the {A} have?", "Name the {ATTR} of the {A}.", "Identify the {ATTR} of the {A}.",
        "Report the {A}'s {ATTR}.", "The {A} is what {ATTR}?", "{A}: what {ATTR}?", "I need the {ATTR} of the {A}.",
        "What's the {ATTR} of the {A}?", "Give the {ATTR} of the {A}.", "Determine the {ATTR} of the {A}.",
        "For the {A}, report its {ATTR}.", "What {ATTR} has the {A} got?", "Tell me what {ATTR} the {A} is.",
        "What is the {A}'s {ATTR}?", "Return the {ATTR} of the {A}.", "What {ATTR} would you say the {A} is?",
        "Describe the {ATTR} of the {A}.", "{ATTR} of the {A}?", "Classify the {A} by {ATTR}.",
        "Our client needs the {ATTR} of the {A} in each photo.", "Look at the {A}. What {ATTR} is it?",
    ),
    "extreme_attribute": (
        "What {ATTR} is the {EXT}?", "What is the {ATTR} of the {EXT}?", "Which {ATTR} is the {EXT}?",
        "Name the {ATTR} of the {EXT}.", "Report the {ATTR} of the {EXT}.", "What {ATTR} does the {EXT} have?",
        "Tell me the {EXT}'s {ATTR}.", "Identify the {ATTR} of the {EXT}.", "The {EXT} is what {ATTR}?",
        "What's the {ATTR} of the {EXT}?", "Give the {ATTR} of the {EXT}.", "Determine the {ATTR} of the {EXT}.",
        "Look at the {EXT}: what {ATTR} is it?", "For the {EXT}, return its {ATTR}.",
    ),
    "relation": (
        "Is the {A} {REL} the {B}?", "Is the {A} positioned {REL} the {B}?", "Is the {A} located {REL} the {B}?",
        "Does the {A} appear {REL} the {B}?", "Is the {A} placed {REL} the {B}?", "Check whether the {A} is {REL} the {B}.",
        "Verify that the {A} lies {REL} the {B}.", "The {A} is {REL} the {B}: true or false?", "Is the {A} found {REL} the {B}?",
        "Does the {A} sit {REL} the {B}?", "Is the {A} {REL} the {B} or not?", "{A} {REL} {B}?",
        "Tell me if the {A} is {REL} the {B}.", "Can you confirm the {A} is {REL} the {B}?",
        "We must check that the {A} is {REL} the {B}.", "Is the {A} situated {REL} the {B}?",
        "Confirm the {A} is {REL} the {B}.", "Does the {A} lie {REL} the {B}?", "Is the {A} {REL} the {B} in the image?",
        "Determine whether the {A} is {REL} the {B}.", "Relative to the {B}, is the {A} {REL} it?",
    ),
    "relate_attr": (
        "What {ATTR} is the {T} {REL} the {B}?", "What is the {ATTR} of the {T} {REL} the {B}?",
        "Which {ATTR} is the {T} that is {REL} the {B}?", "What {ATTR} is the {T} located {REL} the {B}?",
        "Name the {ATTR} of the {T} {REL} the {B}.", "Tell me what {ATTR} the {T} {REL} the {B} is.",
        "What {ATTR} does the {T} {REL} the {B} have?", "Identify the {ATTR} of the {T} sitting {REL} the {B}.",
        "What's the {ATTR} of the {T} that's {REL} the {B}?", "Report the {ATTR} of the {T} positioned {REL} the {B}.",
        "Look {REL} the {B}: what {ATTR} is the {T} there?", "Give the {ATTR} of the {T} found {REL} the {B}.",
        "There is a {T} {REL} the {B}. What {ATTR} is it?", "For the {T} {REL} the {B}, report its {ATTR}.",
    ),
    "relational_count": (
        "How many {Ts} are {REL} the {B}?", "How many {Ts} are located {REL} the {B}?", "Count the {Ts} {REL} the {B}.",
        "Count the {Ts} that are {REL} the {B}.", "What number of {Ts} lie {REL} the {B}?", "Number of {Ts} {REL} the {B}?",
        "How many {Ts} can be found {REL} the {B}?", "Report how many {Ts} sit {REL} the {B}.",
        "Of the {Ts}, how many are {REL} the {B}?", "Give the count of {Ts} positioned {REL} the {B}.",
        "How many {Ts} appear {REL} the {B}?", "Count every {T} {REL} the {B}.", "How many {Ts} lie {REL} the {B}?",
        "Tally the {Ts} {REL} the {B}.", "How many {Ts} are there {REL} the {B}?",
    ),
    "compare.more": (
        "Are there more {As} than {Bs}?", "Are {As} more numerous than {Bs}?", "Do the {As} outnumber the {Bs}?",
        "Is the count of {As} higher than the count of {Bs}?", "Does the image have more {As} than {Bs}?",
        "Check whether {As} outnumber {Bs}.", "Is the number of {As} bigger than the number of {Bs}?",
        "Are there fewer {Bs} than {As}?", "Do {As} exceed {Bs} in number?", "More {As} than {Bs}?",
        "Does the picture contain more {As} than {Bs}?", "Are {Bs} outnumbered by {As}?",
    ),
    "compare.fewer": (
        "Are there fewer {As} than {Bs}?", "Are there less {As} than {Bs}?", "Is the number of {As} smaller than the number of {Bs}?",
        "Do the {Bs} outnumber the {As}?", "Are {As} less common than {Bs}?", "Is the count of {As} lower than the count of {Bs}?",
        "Are there more {Bs} than {As}?", "Does the image have fewer {As} than {Bs}?", "Fewer {As} than {Bs}?",
        "Check whether there are fewer {As} than {Bs}.", "Are {As} outnumbered by {Bs}?",
    ),
    "compare.same": (
        "Are there as many {As} as {Bs}?", "Is the number of {As} equal to the number of {Bs}?",
        "Are there the same number of {As} and {Bs}?", "Do the {As} and the {Bs} have equal counts?",
        "Is the count of {As} the same as the count of {Bs}?", "Are {As} and {Bs} equally numerous?",
        "Does the image have equally many {As} and {Bs}?", "Are the {As} as numerous as the {Bs}?",
        "Same number of {As} and {Bs}?", "Check that the {As} and {Bs} are equal in number.",
        "Do {As} and {Bs} appear the same number of times?",
    ),
    "all_are": (
        "Are all the {As} {P}?", "Are all {As} {P}?", "Is every {A} {Psg}?", "Is each {A} {Psg}?", "Are the {As} all {P}?",
        "Check that every {A} is {Psg}.", "Verify all {As} are {P}.", "Are {As} always {P}?",
        "Is it the case that every {A} is {Psg}?", "Are all of the {As} {P}?", "Do all {As} happen to be {P}?",
        "Confirm that all {As} are {P}.", "Is every single {A} {Psg}?", "Are the {As} {P}, all of them?",
    ),
    "same_attr": (
        "Are all the {As} the same {ATTR}?", "Do all the {As} have the same {ATTR}?", "Do the {As} share one {ATTR}?",
        "Are the {As} all of one {ATTR}?", "Is every {A} the same {ATTR}?", "Do the {As} all match in {ATTR}?",
        "Are the {As} uniform in {ATTR}?", "Check that the {As} are all the same {ATTR}.", "Is the {ATTR} identical across all {As}?",
        "Do the {As} share the same {ATTR}?", "Is the {ATTR} of all {As} the same?", "Do all {As} have one {ATTR}?",
        "Are the {As} consistent in {ATTR}?", "Verify that the {As} all have the same {ATTR}.",
    ),
    "same_color_count": (
        "How many other objects have the same {ATTR} as the {A}?", "How many objects besides the {A} share its {ATTR}?",
        "Count the other objects that are the same {ATTR} as the {A}.", "How many other shapes match the {ATTR} of the {A}?",
        "Apart from the {A}, how many objects are the same {ATTR}?", "How many more objects are coloured like the {A}?",
        "Number of other items with the {A}'s {ATTR}?", "Excluding the {A}, count the objects of the same {ATTR}.",
        "How many other things are colored like the {A}?", "How many objects other than the {A} have its {ATTR}?",
        "Count objects that match the {A} in {ATTR}, not counting the {A} itself.",
    ),
    "read": (
        "What is written on the {A}?", "What does the {A} say?", "What text is on the {A}?",
        "What does the label on the {A} read?", "Read the label of the {A}.", "Read the {A}'s label.",
        "What word is printed on the {A}?", "What's printed on the {A}?", "Transcribe the text on the {A}.",
        "Extract the text from the {A}.", "OCR the {A}.", "What code appears on the {A}?",
        "Report the label written on the {A}.", "Tell me what the {A} reads.", "What letters are on the {A}?",
        "Read out the {A}.", "What is the text of the {A}?", "Get the printed code on the {A}.",
    ),
    "locate": (
        "the {A}", "find the {A}", "Find the {A}.", "Where's the {A}?", "Where can I find the {A}?",
        "Where is the {A} located?", "Show me the {A}.", "Point to the {A}.", "Mark the {A}.", "Draw a box around the {A}.",
        "Box the {A}.", "Highlight the {A}.", "Give me the location of the {A}.", "Detect the {A}.",
        "Locate the {A} in the image.", "Return the bounding box of the {A}.", "Bounding box for the {A}",
        "Select the {A}.", "Pinpoint the {A}.", "Get the position of the {A}.", "I need the {A}'s box.",
        "Which one is the {A}?", "Position of the {A}?", "Please find the {A} in the picture.",
    ),
    "locate_all": (
        "all {As}", "find all {As}", "Find every {A}.", "Mark all the {As}.", "Box all {As}.", "Highlight each {A}.",
        "Show all the {As}.", "Detect all {As}.", "Return boxes for all {As}.", "Where are the {As}?",
        "Where are all the {As}?", "Give me the locations of all {As}.", "List every {A}.", "Select all {As}.",
        "Outline each {A} in the picture.", "Find the {As}.", "Get all the {As} in the image.", "Point out every {A}.",
        "the {As}", "each {A}", "Draw boxes around all {As}.", "Locate each {A}.", "Find all of the {As}.",
    ),
    "locate_extreme": (
        "the {EXT}", "find the {EXT}", "Find the {EXT}.", "Point to the {EXT}.", "Where's the {EXT}?", "Box the {EXT}.",
        "Mark the {EXT}.", "Show me the {EXT}.", "Select the {EXT}.", "Highlight the {EXT}.", "Detect the {EXT}.",
        "Get the location of the {EXT}.", "Return the box of the {EXT}.",
    ),
    "locate_relation": (
        "the {A} {REL} the {B}", "find the {A} {REL} the {B}", "Find the {A} that is {REL} the {B}.",
        "Where is the {A} {REL} the {B}?", "Mark the {A} located {REL} the {B}.", "Point to the {A} sitting {REL} the {B}.",
        "Box the {A} {REL} the {B}.", "Show the {A} which is {REL} the {B}.", "Select the {A} positioned {REL} the {B}.",
        "Which {A} is {REL} the {B}?", "Highlight the {A} {REL} the {B}.", "Detect the {A} that lies {REL} the {B}.",
    ),
    "caption_check": (
        'Does the caption "{CAP}" match the image?', 'Is the description "{CAP}" accurate?', 'Does "{CAP}" describe this picture?',
        'Check whether the caption "{CAP}" is correct.', 'Caption: "{CAP}". Does it fit?', "Verify the statement: {CAP}.",
        "True or false: {CAP}.", 'Is this caption right for the photo: "{CAP}"?', 'Does the text "{CAP}" correctly describe the image?',
        "Validate the caption '{CAP}'.", 'Is it accurate to say "{CAP}"?', 'Would "{CAP}" be a correct caption?',
        "Statement: {CAP}. Correct?", "Does the following description hold: {CAP}?", "Is the caption '{CAP}' true for this image?",
        'Check the claim "{CAP}" against the image.',
    ),
    "choose_caption": (
        "Which caption fits the image?", "Choose the caption that describes the image.", "Which of these captions best describes the picture?",
        "Select the correct description.", "Pick the best caption for this photo.", "Which description matches the image?",
        "Choose the right caption from the options.", "Out of the given captions, which one is correct?",
        "Find the caption that matches.", "Which sentence describes the image?", "Pick the matching description.",
        "Select the caption that fits best.", "Which option describes this image correctly?", "Match the image to one of the captions.",
    ),
    "choose_image": (
        "{CAPS}", "Which image shows {CAP}?", "Which picture has {CAP}?", "Pick the photo with {CAP}.",
        "Find the image containing {CAP}.", "Choose the picture that shows {CAP}.", "Which of these images contains {CAP}?",
        "In which photo is there {CAP}?", "Pick the image that matches: {CAP}.", "Select the image with {CAP}.",
        "Which photo matches the description '{CAP}'?", "Find the picture where there is {CAP}.",
    ),
}
PREFIXES = ("Please ", "Q: ", "Question: ", "Quick question: ", "For each image: ", "In this image, ", "Looking at the picture, ",
            "For our client: ", "Task: ", "Customer asks: ", "Requirement: ", "Hi, ")


@cache
def _heldout_patterns() -> tuple[re.Pattern, ...]:
    """Regexes for every held-out world template (and held-out caption), any slot filling."""
    from builder.domains.shapes.world.tasks import _CAPTIONS, TEMPLATES

    texts = [t.text for t in TEMPLATES if t.split == "heldout"] + [c for _, (_, held) in _CAPTIONS.items() for c in held]
    out = []
    for text in texts:
        parts = re.split(r"\{[a-z_]+\}", text.rstrip(".?").lower())
        out.append(re.compile(".+".join(re.escape(p) for p in parts) + r"[.?]?"))
    return tuple(out)


def is_world_heldout(query: str) -> bool:
    """True if a world held-out template could have produced ``query`` (case and final mark ignored)."""
    q = " ".join(query.lower().split())
    return any(p.fullmatch(q) for p in _heldout_patterns())


# ---- sampling meanings ----------------------------------------------------------------------
def _pick(rng, items):
    return items[int(rng.integers(len(items)))]


def random_ref(rng, exclude=(), allow_empty=False, need_noun=False) -> Ref:
    """A random reference naming 1-3 attributes (none of ``exclude``)."""
    while True:
        kw = {}
        if "shape" not in exclude and rng.random() < 0.7:
            kw["shape"] = _pick(rng, SHAPES)
        if "color" not in exclude and rng.random() < 0.6:
            kw["color"] = _pick(rng, COLORS)
        if "size" not in exclude and rng.random() < 0.3:
            kw["size"] = _pick(rng, SIZES)
        ref = Ref(**kw)
        if need_noun and ref.shape is None and rng.random() < 0.5:
            continue
        if not ref.empty or allow_empty:
            return ref


def random_caption(rng) -> Caption:
    """A random caption claim to check against a scene: an existence, a count (0-9) or a relation."""
    kind = _pick(rng, ("exists", "count", "relation"))
    a = random_ref(rng)
    if kind == "count":
        return Caption("count", a, k=int(rng.integers(0, 10)))
    if kind == "relation":
        return Caption("relation", Ref(a.size, a.color, a.shape or _pick(rng, SHAPES)), random_ref(rng),
                       _pick(rng, RELATIONS))
    return Caption("exists", a)


def random_meaning(rng, kind: str) -> Meaning:
    """A random well-formed meaning of ``kind``."""
    if kind in ("count", "locate_all"):
        return Meaning(kind, a=random_ref(rng, allow_empty=rng.random() < 0.15))
    if kind in ("exists", "absent", "locate", "read", "same_color_count"):
        excl = ("color",) if kind == "same_color_count" else ()
        return Meaning(kind, a=random_ref(rng, exclude=excl))
    if kind == "attribute":
        attr = _pick(rng, ATTRS)
        return Meaning(kind, attr=attr, a=random_ref(rng, exclude=(attr,)))
    if kind in ("extreme_attribute", "locate_extreme"):
        extreme = _pick(rng, EXTREMES)
        excl = ("size",) if extreme in ("largest", "smallest") else ()
        attr = _pick(rng, ATTRS) if kind == "extreme_attribute" else None
        a = random_ref(rng, exclude=excl + ((attr,) if attr else ()), allow_empty=rng.random() < 0.3)
        return Meaning(kind, attr=attr, extreme=extreme, a=a)
    if kind in ("relation", "locate_relation"):
        a, b = random_ref(rng), random_ref(rng)
        return Meaning(kind, a=a, rel=_pick(rng, RELATIONS), b=b) if a != b else random_meaning(rng, kind)
    if kind == "relate_attr":
        attr = _pick(rng, ("color", "shape", "color", "shape", "size"))
        a = random_ref(rng, exclude=(attr,), allow_empty=True) if rng.random() < 0.4 else Ref()
        return Meaning(kind, attr=attr, a=a, rel=_pick(rng, RELATIONS), b=random_ref(rng))
    if kind == "relational_count":
        a = random_ref(rng, allow_empty=True) if rng.random() < 0.8 else Ref()
        return Meaning(kind, a=a, rel=_pick(rng, RELATIONS), b=random_ref(rng))
    if kind == "compare":
        a, b = random_ref(rng), random_ref(rng)
        return Meaning(kind, op=_pick(rng, OPS), a=a, b=b) if a != b else random_meaning(rng, kind)
    if kind == "all_are":
        a = random_ref(rng, allow_empty=rng.random() < 0.2)
        free = [f for f in ("color", "size", "shape") if getattr(a, f) is None]
        if not free:
            return random_meaning(rng, kind)
        f = _pick(rng, free)
        values = {"color": COLORS, "size": SIZES, "shape": SHAPES}[f]
        return Meaning(kind, a=a, p=Ref(**{f: _pick(rng, values)}))
    if kind == "same_attr":
        attr = _pick(rng, ("color", "shape", "size", "color"))
        return Meaning(kind, attr=attr, a=random_ref(rng, exclude=(attr,), allow_empty=rng.random() < 0.3))
    if kind == "caption_check":
        return Meaning(kind, caption=random_caption(rng))
    if kind == "choose_image":
        return Meaning(kind, caption=random_caption(rng))
    if kind == "choose_caption":
        return Meaning(kind)
    raise ValueError(kind)


# ---- rendering ----------------------------------------------------------------------------------
def _noun(rng, ref: Ref, plural: bool) -> list[tuple[str, str]]:
    """(word, slot) pieces of a noun phrase; slot is "v" for value words, "" otherwise."""
    words: list[tuple[str, str]] = []
    noun = ref.shape or _pick(rng, GENERIC)
    noun = noun + ("es" if plural and noun.endswith("x") else "s" if plural else "")
    size = _pick(rng, SIZE_WORDS[ref.size]) if ref.size else None
    style = rng.random()
    if ref.color and style < 0.08:  # "circles that are red"
        if size:
            words.append((size, "v"))
        words += [(noun, "v" if ref.shape else ""), ("that are" if plural else "that is", ""), (ref.color, "v")]
        return words
    if ref.color and style < 0.13:  # "circles in red"
        if size:
            words.append((size, "v"))
        return words + [(noun, "v" if ref.shape else ""), ("in", ""), (ref.color, "v")]
    if ref.shape and not ref.color and style < 0.17:  # "star-shaped objects"
        generic = _pick(rng, GENERIC) + ("s" if plural else "")
        return ([(size, "v")] if size else []) + [(f"{ref.shape}-shaped", "v"), (generic, "")]
    if size:
        words.append((size, "v"))
    if ref.color:
        words.append((f"{ref.color}-coloured" if style > 0.97 else ref.color, "v"))
    words.append((noun, "v" if ref.shape else ""))
    return words


def _article(words: list[tuple[str, str]]) -> list[tuple[str, str]]:
    first = words[0][0]
    return [("an" if first[0] in "aeiou" else "a", "")] + words


def _caption_phrase(rng, cap: Caption, sentence: bool) -> list[tuple[str, str, str]]:
    """(word, slot, role) pieces of a caption phrase."""
    def tag(pieces, role):
        return [(w, s, role) for w, s in pieces]

    if cap.kind == "count":
        k = str(cap.k) if rng.random() < 0.5 else NUMBER_WORDS[cap.k]
        body = [(k, "v", "A")] + tag(_noun(rng, cap.a, cap.k != 1), "A")
        if sentence or rng.random() < 0.3:
            lead = ("There are", "", "O") if cap.k != 1 else ("There is", "", "O")
            mid = [("exactly", "", "O")] if rng.random() < 0.4 else []
            return [lead] + mid + body
        return ([("exactly", "", "O")] if rng.random() < 0.3 else []) + body
    head = tag(_article(_noun(rng, cap.a, False)), "A")
    if cap.kind == "relation":
        head += [(_pick(rng, REL_WORDS[cap.rel]), "", "O")] + tag(_article(_noun(rng, cap.b, False)), "B")
    if sentence or rng.random() < 0.3:
        return [("There is", "", "O")] + head
    return head


def _extreme_phrase(rng, m: Meaning) -> list[tuple[str, str, str]]:
    a = m.a or Ref()
    noun = [(w, s, "A") for w, s in _noun(rng, a, False)]
    if rng.random() < 0.6:
        return [(_pick(rng, EXT_PRE[m.extreme]), "", "O")] + noun
    return noun + [(_pick(rng, EXT_POST[m.extreme]), "", "O")]


def _predicate(rng, p: Ref, plural: bool) -> list[tuple[str, str]]:
    if p.shape:
        return _noun(rng, p, plural) if plural else _article(_noun(rng, p, False))
    return [(_pick(rng, SIZE_WORDS[p.size]) if p.size else p.color, "v")]


def render(rng, m: Meaning, pattern: str) -> list[tuple[str, str, str]]:
    """The query for ``m`` in ``pattern`` as (text, slot, role) pieces."""
    pieces: list[tuple[str, str, str]] = []
    for part in re.split(r"(\{[A-Za-z]+\})", pattern):
        if not part:
            continue
        if not part.startswith("{"):
            pieces.append((part, "", "O"))
            continue
        name = part[1:-1]
        if name in ("A", "As", "aA", "T", "Ts"):
            ref = m.a or Ref()
            words = _noun(rng, ref, name in ("As", "Ts"))
            pieces += [(w, s, "A") for w, s in (_article(words) if name == "aA" else words)]
        elif name in ("B", "Bs", "aB"):
            words = _noun(rng, m.b, name == "Bs")
            pieces += [(w, s, "B") for w, s in (_article(words) if name == "aB" else words)]
        elif name == "REL":
            pieces.append((_pick(rng, REL_WORDS[m.rel]), "", "O"))
        elif name == "ATTR":
            pieces.append((_pick(rng, ATTR_WORDS[m.attr or "color"]), "", "O"))
        elif name == "EXT":
            pieces += _extreme_phrase(rng, m)
        elif name in ("P", "Psg"):
            pieces += [(w, s, "P") for w, s in _predicate(rng, m.p, name == "P")]
        elif name in ("CAP", "CAPS"):
            pieces += _caption_phrase(rng, m.caption, name == "CAPS")
            if name == "CAPS":
                pieces.append((".", "", "O"))
        else:
            raise ValueError(f"unknown placeholder {part}")
    return pieces


def _typo(rng, word: str) -> str:
    if len(word) < 4:
        return word
    i = int(rng.integers(1, len(word) - 1))
    op = rng.random()
    if op < 0.4:
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if op < 0.7:
        return word[:i] + word[i + 1:]
    return word[:i] + word[i] + word[i:]


def detokenize(words: list[str]) -> str:
    """Join words with spaces, except before punctuation, inside quotes and around a possessive 's."""
    out, in_quote, after_open = "", False, False
    for i, w in enumerate(words):
        prev = words[i - 1] if i else ""
        possessive = w == "'" and prev.isalnum() and words[i + 1: i + 2] == ["s"]
        if possessive or (prev == "'" and w == "s" and i >= 2 and words[i - 2].isalnum()):
            glue = True
        elif w in ("'", '"'):
            glue = in_quote  # a closing quote sticks to the word before it
            in_quote = not in_quote
        else:
            glue = w in "?.,:;!" or after_open
        after_open = w in ("'", '"') and in_quote and not possessive
        out += w if (glue or not out) else " " + w
    return out


def to_example(rng, m: Meaning, pieces) -> dict:
    """Join pieces into a query; every word gets a role label (value words keep their piece's role)."""
    words, roles = [], []
    typo_at = int(rng.integers(0, 40)) if rng.random() < 0.12 else -1
    for text, _slot, role in pieces:
        for w in split_words(text) if text.strip() else []:
            if len(words) == typo_at:
                w = _typo(rng, w)
            words.append(w)
            roles.append(role if lookup(w) is not None else "O")
    query = detokenize(words)
    if rng.random() < 0.15:
        query = query.lower()
    elif rng.random() < 0.02:
        query = query.upper()
    if rng.random() < 0.2:
        query = query.rstrip("?.")
    final = split_words(query)
    return {"query": query, "words": final, "roles": roles[: len(final)], "meaning": m.to_dict()}


def generate(n: int, seed: int = 0, kinds: tuple[str, ...] | None = None,
             patterns_per_kind: int | None = None) -> list[dict]:
    """``n`` training examples {"query", "words", "roles", "meaning"}, balanced over question kinds,
    none a world held-out phrasing. ``patterns_per_kind`` keeps only the first few patterns of each
    kind (a planner with room to improve, for self-training benchmarks)."""
    from builder.planner.meaning import KIND_NAMES

    rng = np.random.default_rng(seed)
    kinds = kinds or KIND_NAMES
    out, seen = [], set()
    while len(out) < n:
        kind = kinds[len(out) % len(kinds)]
        m = random_meaning(rng, kind)
        key = kind + (f".{m.op}" if kind == "compare" else "")
        pattern = _pick(rng, PATTERNS[key][:patterns_per_kind])
        if rng.random() < 0.12 and not pattern[0].islower() and "{" != pattern[0]:
            pattern = _pick(rng, PREFIXES) + pattern[0].lower() + pattern[1:]
        ex = to_example(rng, m, render(rng, m, pattern))
        if is_world_heldout(ex["query"]) or ex["query"] in seen:
            continue
        seen.add(ex["query"])
        out.append(ex)
    return out
