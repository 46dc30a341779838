"""The shapes world domain: a procedural CLEVR-like world with exact ground truth.

``vocab`` holds its one vocabulary and object-phrase parser; ``world`` the scenes, tasks and
datasets; ``detector`` the classical-CV detector; ``nets`` the learned engines' networks and
``training`` their data generation and trainers. Engines over them live in
``builder.tools.backends.shapes``.
"""
