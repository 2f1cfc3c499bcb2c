"""``python -m listening_test ...``: the same commands as ``flask --app listening_test ...``."""

from .cli import main

if __name__ == "__main__":
    main()
