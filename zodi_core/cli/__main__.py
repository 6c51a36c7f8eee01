import sys

from zodi_core.cli import main

sys.exit(main())
