"""Core data: task cards, workspaces, atomic writes, images, metrics and the user-error base.

The lowest layer: it imports nothing else from VisForge.
"""
