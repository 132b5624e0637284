import sys

from airbourne.cli import main

sys.exit(main())
