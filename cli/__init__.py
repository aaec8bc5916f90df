"""The `nanogpt` command line (click). Each command lives in its own module; `main.py` puts them together."""
