"""Data package: the template of an exported solution (``solution/``).

Not code to import: ``builder.methods.export`` reads these files through ``importlib.resources``
so that export works from an installed wheel as well as from a checkout.
"""
