"""A process for ``tests/unit/test_zygote.py``: prints its argv and one variable of its environment, then exits with
the status it is given, or (``sleep``) waits to be signalled."""

import os
import sys
import time

if __name__ == "__main__":
    print("argv", sys.argv[1:], "RJ_ECHO", os.environ.get("RJ_ECHO"), "HOME", os.environ.get("HOME"), flush=True)
    if sys.argv[1:] == ["sleep"]:
        time.sleep(60)
    sys.exit(int(sys.argv[1]) if sys.argv[1:] and sys.argv[1].isdigit() else 0)
