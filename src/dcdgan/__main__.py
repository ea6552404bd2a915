"""``python -m dcdgan`` (and ``accelerate launch -m dcdgan``)."""

import sys

from dcdgan.cli import main

sys.exit(main())
