import sys

from stemd.cli.main import main

sys.exit(main())
