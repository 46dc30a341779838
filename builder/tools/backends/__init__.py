"""Engine backends: Hugging Face models (``hf``), RapidOCR (``ocr``) and the shapes-world default
engines (``shapes``)."""
