"""``./dev demo``: the main job against the built-in local cluster."""

from __future__ import annotations


def main() -> None:
    print(
        "tpengine demo: the built-in local cluster is not built yet.\n"
        "Once it is, this demo brings up a single-node cluster in network namespaces,\n"
        "deploys a sample web app, connects the laptop namespace with `tp connect`,\n"
        "reaches the app by name, intercepts it with a header filter, and tears it all down."
    )


if __name__ == "__main__":
    main()
