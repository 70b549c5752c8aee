import sys

from cdcsync.cli import main

sys.exit(main())
