"""The composing parser: requests read into meaning trees (``docs/meaning.md``), or refused with a reason.

``phrasings`` generates (tree, request, output) training pairs, ``grammar`` turns trees into
grammar-constrained action sequences and back, ``model`` is the decoder over frozen MiniLM word
states, ``parse`` the public ``TreeParser`` with its abstention checks, ``train`` the trainer.
"""
