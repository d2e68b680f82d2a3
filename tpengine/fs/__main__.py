"""``python -m tpengine.fs --control-fd N [--read-only] MOUNT_POINT``: the FUSE daemon of
one engagement's volumes, started by the engine (see ``tpengine.fs._process``)."""

from tpengine.fs._process import main

main()
