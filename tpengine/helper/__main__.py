"""Entry point of `tp-helper`."""

import sys


def main() -> None:
    print("tp-helper: not available yet in this version of tpengine", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    main()
