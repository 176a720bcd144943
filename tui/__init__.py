"""mlxft\x27s Textual terminal UI."""
