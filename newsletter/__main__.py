"""``python -m newsletter``: the same as the ``newsletter`` command."""

from newsletter.cli import entry

# Guarded: a worker process of a cold scan imports this module again under another name.
if __name__ == "__main__":
    entry()
