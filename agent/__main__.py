"""Entry point of `tp-agent`."""

import sys


def main() -> None:
    print("tp-agent: not available yet in this version of tpengine", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    main()
