"""Small weights shipped for the embedded synthetic benchmark (see ``scores.py`` and ``manifest.json``)."""
