"""Training of the shapes world's learned engines: data generation, losses, staged trainers.

Each trainer is driven by a frozen config dataclass whose field defaults are the single source of
its settings; ``visforge engines train-*`` builds its options from those fields.
"""
