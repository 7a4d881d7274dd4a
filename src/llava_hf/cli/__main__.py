"""`python -m llava_hf.cli`: the `llava-hf` command."""

import sys

from . import main

sys.exit(main())
