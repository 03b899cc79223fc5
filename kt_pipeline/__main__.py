"""``python -m kt_pipeline`` runs the CLI."""

import sys

from kt_pipeline.cli import main

sys.exit(main())
