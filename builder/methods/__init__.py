"""Methods of the application layer: self-training, fine-tuning, selective decomposition,
parameter tuning and export. Each has a workspace-level entry point that `builder.api` calls.
"""
