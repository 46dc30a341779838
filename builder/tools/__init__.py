"""The tool layer: the program-facing API (``api``, imported in the sandbox), engine protocols and
backends, the host that serves tool calls, the tool table, profiles, the result cache, traces and
video tracking."""
