"""Domains: the closed worlds VisForge plans and perceives in (the shapes world is the embedded one).

A domain is a package under ``builder/domains/`` holding its world (scenes, tasks, ground truth),
its vocabulary and the networks and training code of its learned engines. Code above the domain
layer reads words only through ``vocabulary(name)``, a ``Vocabulary``: the domain's values and
their synonyms, its number and relation words, one word table and one object-phrase parser. A
second domain adds a package beside ``shapes`` and one entry in ``_VOCABULARIES``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from builder.core.errors import UserError


@dataclass(frozen=True)
class Vocabulary:
    """A domain's closed vocabulary (read-only).

    ``values``: field -> canonical values (e.g. "color" -> ("red", ...)); ``lexicon``: every word
    that names a value, synonyms and inflections included -> (field, value); ``fields``: the
    value-word fields in a fixed order; ``generic_nouns``: nouns naming any object ("objects") ("none" first); ``lookup(word, known_words, typos)``:
    one word's (field, value) or None; ``split_words(text)``: the tokenizer every reader uses;
    ``parse(text, strict=False)``: the domain's one object-phrase parser.
    """

    name: str
    values: Mapping[str, tuple[str, ...]]
    relations: tuple[str, ...]
    number_names: tuple[str, ...]
    generic_nouns: tuple[str, ...]
    lexicon: Mapping[str, tuple[str, str | int]]
    fields: tuple[str, ...]
    lookup: Callable[..., tuple[str, str | int] | None]
    split_words: Callable[[str], list[str]]
    parse: Callable[..., Any]


def _shapes() -> Vocabulary:
    from builder.domains.shapes import vocab as v

    return Vocabulary("shapes", {"color": v.COLORS, "shape": v.SHAPES, "size": v.SIZES}, v.RELATIONS,
                      v.NUMBER_NAMES, v.ANY_NOUNS, v.LEXICON, v.FIELDS, v.lookup, v.split_words, v.parse_phrase)


_VOCABULARIES: dict[str, Callable[[], Vocabulary]] = {"shapes": _shapes}


@cache
def vocabulary(name: str = "shapes") -> Vocabulary:
    """The vocabulary of domain ``name`` (raises ``UserError`` naming the known domains)."""
    if name not in _VOCABULARIES:
        raise UserError(f"unknown domain {name!r}; known domains: {', '.join(sorted(_VOCABULARIES))}")
    return _VOCABULARIES[name]()


__all__ = ["Vocabulary", "vocabulary"]
