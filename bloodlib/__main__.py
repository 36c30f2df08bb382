import sys

from bloodlib.cli import main

sys.exit(main())
