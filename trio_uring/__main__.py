"""``python -m trio_uring``: the command line lives in `trio_uring._cli`."""
import sys

from trio_uring._cli import entry_point

if __name__ == "__main__":
    sys.exit(entry_point())
