"""The foundation layer: planners that write vision programs, and their prompts."""
