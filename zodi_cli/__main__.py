import sys

from zodi_cli import main

sys.exit(main())
