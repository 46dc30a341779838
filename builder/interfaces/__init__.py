"""Interfaces: the `visforge` CLI, the Panel app, the scripted/notebook demo and shared HTML views.

Thin layers over the public API (`builder.api`); nothing below imports them.
"""
