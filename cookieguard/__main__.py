import sys

from cookieguard.cli import main

sys.exit(main())
