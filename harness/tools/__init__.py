"""Small maintenance tools for results folders (``python -m harness.tools.<name>``)."""
