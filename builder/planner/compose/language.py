"""Is a request English? MiniLM and the training phrasings are English only, so others are refused.

A hand-kept list of very common words per language names the language; letters outside the
Latin script, or a request whose words are mostly unknown English, are refused without a name.
"""

from __future__ import annotations

import re
import unicodedata

FUNCTION_WORDS = {
    "Spanish": {"cuántos", "cuántas", "hay", "los", "las", "del", "una", "qué", "imagen", "cuenta", "encuentra",
                "izquierda", "derecha", "es", "el", "la", "en", "más", "círculo", "cuadrado", "estrella"},
    "French": {"combien", "il", "y", "a-t-il", "les", "des", "sur", "quelle", "est", "une", "trouve", "compte",
               "le", "la", "l'image", "étoile", "carré", "cercle", "de", "du", "au-dessus", "plus"},
    "German": {"wie", "viele", "sind", "im", "bild", "welche", "farbe", "hat", "das", "die", "der", "gibt", "es",
               "einen", "zähle", "finde", "den", "kreis", "stern", "über", "größten", "ist", "und"},
    "Italian": {"quanti", "quante", "ci", "sono", "nella", "di", "che", "colore", "è", "conta", "trova", "il",
                "più", "cerchi", "stella", "quadrato", "sotto", "foto"},
    "Portuguese": {"quantos", "quantas", "existem", "na", "imagem", "qual", "é", "cor", "do", "um", "conte",
                   "encontre", "mais", "os", "à", "estrela"},
    "Dutch": {"hoeveel", "staan", "er", "op", "de", "het", "zoek", "tel", "een", "links", "van", "rode",
              "groene", "kleinste", "cirkel", "cirkels", "sterren", "vierkant"},
}


def not_english(query: str, known: frozenset[str] | set[str]) -> str | None:
    """A refusal naming the language when ``query`` is not English, else None."""
    words = re.findall(r"[^\W\d_]+(?:[-'][^\W\d_]+)*", query)
    letters = [c for w in words for c in w if c.isalpha()]
    if not letters:
        return None
    non_latin = [c for c in letters if not unicodedata.name(c, "").startswith("LATIN")]
    lower = [w.lower() for w in words if any(c.isalpha() for c in w)]
    hits = {lang: sum(w in fw for w in lower) for lang, fw in FUNCTION_WORDS.items()}
    lang, best = max(hits.items(), key=lambda kv: kv[1])
    unknown = sum(w not in known for w in lower) / max(1, len(lower))
    accented = sum(not c.isascii() for c in letters)
    if len(non_latin) > len(letters) / 3:
        return "cannot read this request: it is not in English (the planner reads English only)"
    if (best >= 2 and unknown > 0.35) or (accented and unknown > 0.5) or (best >= 3 and unknown > 0.25):
        return f"cannot read this request: it looks like {lang} (the planner reads English only)" if best >= 2 else \
            "cannot read this request: it is not in English (the planner reads English only)"
    return None
