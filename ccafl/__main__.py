import sys

from ccafl.cli import main

sys.exit(main())
