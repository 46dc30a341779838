"""Networks of the shapes world's learned engines (VQA, image-text dual encoder) and their save/load."""
