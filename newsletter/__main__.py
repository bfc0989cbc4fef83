"""``python -m newsletter``: the same as the ``newsletter`` command."""

from newsletter.cli import entry

# Guarded: importing the module (as a tool that walks the package does) runs nothing.
if __name__ == "__main__":
    entry()
