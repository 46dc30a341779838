"""Interfaces: the `visforge` CLI, the Panel app, the scripted/notebook demo and shared HTML views.

Thin layers over the workflow API (`builder.workflow`); nothing below imports them.
"""
